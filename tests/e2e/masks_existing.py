"""Masks for the outputs of vscand's first 12 version scripts (issue 16), by script id.

Registered in ``compare.SCRIPT_MASKS`` on import (the differential suites import
this module); each is listed in DESIGN.md.

* rpcinfo, docker-version, xmpp-info: NSE prints plain Lua tables in Lua's hash
  order, which changes from one Nmap run to the next: keys (and xmpp-info's
  value sets) are compared sorted.
* mqtt-subscribe: the same, and which ``$SYS`` topics arrive in the listening
  window and their payloads (uptime, byte/message/client counters, load) depend
  on when each scanner subscribes and on the broker's ``$SYS`` interval: every
  ``$SYS/`` topic but ``$SYS/broker/version`` is left out.
* snmp-info: ``snmpEngineTime`` (the agent's uptime) moves between the scans:
  masked.
* xmpp-info: ``stream_id`` is the server's random id of each stream (prosody:
  a UUID): masked.
"""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.compare import SCRIPT_MASKS, sort_fields

_SYS_LINE = re.compile(r"\n[ ]*\$SYS/(?!broker/version:)[^\n]*")
_VERSION = "$SYS/broker/version"
_STREAM_ID = re.compile(r"^(\s*stream_id: ).*$", re.MULTILINE)


def _drop_sys(value: Any) -> Any:
    if isinstance(value, str):
        return _SYS_LINE.sub("", value)
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, tuple) and len(item) == 3 and item[0] == "elem":
                key = item[1]
                if (
                    isinstance(key, str)
                    and key.startswith("$SYS/")
                    and key != "$SYS/broker/version"
                ):
                    continue
            kept.append(_drop_sys(item))
        return kept
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "table":
        return (value[0], value[1], _drop_sys(value[2]))
    return value


def mask_mqtt(value: Any) -> Any:
    return sort_fields(_drop_sys(value))


def _mask_stream_id(value: Any) -> Any:
    if isinstance(value, str):
        return _STREAM_ID.sub(r"\1*", value)
    if isinstance(value, list):
        return [_mask_stream_id(v) for v in value]
    if isinstance(value, tuple) and len(value) == 3:
        kind, key, inner = value
        if kind == "elem" and key == "stream_id":
            return (kind, key, "*")
        return (kind, key, _mask_stream_id(inner))
    return value


_ENGINE_TIME = re.compile(r"^(\s*snmpEngineTime: ).*$", re.MULTILINE)


def mask_snmp(value: Any) -> Any:
    if isinstance(value, str):
        return _ENGINE_TIME.sub(r"\1*", value)
    if isinstance(value, list):
        return [
            ("elem", "snmpEngineTime", "*")
            if isinstance(v, tuple) and v[:2] == ("elem", "snmpEngineTime")
            else v
            for v in value
        ]
    return value


def mask_xmpp(value: Any) -> Any:
    return sort_fields(_mask_stream_id(value))


SCRIPT_MASKS.update(
    {
        "rpcinfo": sort_fields,
        "docker-version": sort_fields,
        "xmpp-info": mask_xmpp,
        "mqtt-subscribe": mask_mqtt,
        "snmp-info": mask_snmp,
    }
)
