"""Masks for the outputs of vscand's first 12 version scripts (issue 16), by script id.

Registered in ``compare.SCRIPT_MASKS`` on import (the differential suites import
this module); each is listed in DESIGN.md.

* rpcinfo, docker-version, xmpp-info: NSE prints plain Lua tables in Lua's hash
  order, which changes from one Nmap run to the next: keys (and xmpp-info's
  value sets) are compared sorted.
* mqtt-subscribe: the same, and the broker's ``$SYS`` counters (uptime, bytes,
  messages, clients, load) change between the two scans: every ``$SYS/``
  payload but ``$SYS/broker/version`` is masked.
"""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.compare import SCRIPT_MASKS, sort_fields

_SYS_LINE = re.compile(r"^(\s*\$SYS/(?!broker/version:)[^:]*): .*$", re.MULTILINE)


def _mask_sys(value: Any) -> Any:
    if isinstance(value, str):
        return _SYS_LINE.sub(r"\1: *", value)
    if isinstance(value, list):
        return [_mask_sys(v) for v in value]
    if isinstance(value, tuple) and len(value) == 3:
        kind, key, inner = value
        if kind == "elem" and isinstance(key, str) and key.startswith("$SYS/"):
            return (kind, key, inner if key == "$SYS/broker/version" else "*")
        return (kind, key, _mask_sys(inner))
    return value


def mask_mqtt(value: Any) -> Any:
    return sort_fields(_mask_sys(value))


SCRIPT_MASKS.update(
    {
        "rpcinfo": sort_fields,
        "docker-version": sort_fields,
        "xmpp-info": sort_fields,
        "mqtt-subscribe": mask_mqtt,
    }
)
