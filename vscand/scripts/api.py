"""The version-script interface: what a script sees, what it may change.

A *version script* is our equivalent of an NSE script of the ``version``
category (SPEC §7.2, §8.7). It declares

* ``name`` and ``dependencies`` (names of scripts that must run first; they
  decide the *runlevel*, as in NSE),
* ``portrule(port, ctx) -> bool``: a pure function of the port's result so far
  (:class:`PortView`) and the scan's settings (:class:`RuleContext`: intensity,
  the probe file's ``Exclude``),
* ``async def action(run) -> str | None``: the work. ``run`` (a
  :class:`ScriptRun`) gives the port, its host's other ports, an
  :class:`~vscand.scripts.exchange.Exchange` (bounded connections to the
  host), and ``set_version`` — Nmap's ``nmap.set_port_version``. The returned
  string is the script's short output (``service.scripts[name]``).

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from vscand.output.script_output import ScriptOutput
    from vscand.scripts.exchange import Exchange

__all__ = [
    "KEEP",
    "SCRIPT_SET_REASON",
    "MatchState",
    "PortState",
    "PortView",
    "RpcInfo",
    "RuleContext",
    "ScriptRun",
    "VersionScript",
    "VersionUpdate",
    "apply_update",
]

#: Nmap's ``set_port_version`` states (SPEC §8.1 maps them to method/conf)
MatchState = Literal["hardmatched", "softmatched", "nomatch", "tcpwrapped", "incomplete"]
#: the states ``nmap.set_port_state`` accepts
PortState = Literal["open", "closed"]
#: the reason Nmap records for a state a script set (its ``ER_SCRIPT``)
SCRIPT_SET_REASON = "script-set"
PortKey = tuple[int, str]

#: the states NSE hands to port rules (nse_main iterates these)
SCRIPTED_STATES = frozenset({"open", "open|filtered", "unfiltered"})


class _Keep(enum.Enum):
    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


#: a :class:`VersionUpdate` field left at KEEP keeps the port's current value
KEEP = _Keep.KEEP


@dataclass(frozen=True)
class RpcInfo:
    """The result's ``rpc`` object: an ONC RPC program found on the port."""

    program: int
    name: str | None
    low: int
    high: int

    def as_dict(self) -> dict[str, Any]:
        return {"program": self.program, "name": self.name, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PortView:
    """A port as a rule or action sees it (NSE's ``port`` table, read-only).

    ``name`` is the service name (``port.service``), ``method`` Nmap's
    ``service_dtype`` (``table``/``probed``), ``conf`` its ``name_confidence``,
    ``fingerprint`` its ``service_fp``, ``tunnel`` ``"ssl"`` or None.
    """

    address: str
    number: int
    protocol: str
    state: str
    name: str | None = None
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    tunnel: str | None = None
    method: str | None = None
    conf: int = 0
    cpe: tuple[str, ...] = ()
    fingerprint: str | None = None
    #: the name the user gave for the host, if any (NSE's ``host.targetname``)
    target_name: str | None = None

    @property
    def key(self) -> PortKey:
        return (self.number, self.protocol)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> PortView:
        service = result.get("service") or {}
        return cls(
            address=result["host"],
            number=int(result["port"]),
            protocol=result["protocol"],
            state=result["state"],
            name=service.get("name"),
            product=service.get("product"),
            version=service.get("version"),
            extrainfo=service.get("extrainfo"),
            hostname=service.get("hostname"),
            ostype=service.get("ostype"),
            devicetype=service.get("devicetype"),
            tunnel=service.get("tunnel"),
            method=service.get("method"),
            conf=int(service.get("conf") or 0),
            cpe=tuple(service.get("cpe") or ()),
            fingerprint=service.get("fingerprint"),
            target_name=result.get("hostname"),
        )


@dataclass(frozen=True)
class RuleContext:
    """What a port rule may consult besides the port: the scan's settings."""

    intensity: int = 7
    #: Nmap's ``port_is_excluded`` (the probe file's ``Exclude``), (port, protocol) -> bool
    excluded: Callable[[int, str], bool] = field(default=lambda _port, _proto: False)
    #: the Nmap release reproduced ("7.93", "7.95", …): a script that changed between
    #: releases follows the one reproduced
    release: str = "7.93"

    def is_excluded(self, port: int, protocol: str) -> bool:
        return self.excluded(port, protocol)


@dataclass(frozen=True)
class VersionUpdate:
    """What ``set_port_version`` writes: every field at KEEP keeps its current value.

    As in NSE, the script starts from the port's current version table and
    changes some fields; the whole table is then stored with ``state``.
    ``rpc`` (ours, not Nmap's) fills the result's ``rpc`` object.
    """

    name: str | _Keep | None = KEEP
    product: str | _Keep | None = KEEP
    version: str | _Keep | None = KEEP
    extrainfo: str | _Keep | None = KEEP
    hostname: str | _Keep | None = KEEP
    ostype: str | _Keep | None = KEEP
    devicetype: str | _Keep | None = KEEP
    tunnel: str | _Keep | None = KEEP
    cpe: tuple[str, ...] | _Keep = KEEP
    rpc: RpcInfo | _Keep | None = KEEP


#: Nmap's storage limits (portlist.cc ``cstringSanityCheck``), bytes without the NUL
_FIELD_LIMITS = {
    "product": 80,
    "version": 80,
    "extrainfo": 256,
    "hostname": 80,
    "ostype": 32,
    "devicetype": 32,
}
_TEXT_FIELDS = ("name", *_FIELD_LIMITS)


def _sanitize(value: str | None, limit: int) -> str | None:
    """Cut to ``limit`` characters and make non-printable characters ``.`` (as Nmap)."""
    if value is None:
        return None
    value = value[:limit]
    return "".join(c if " " <= c <= "~" else "." for c in value)


def apply_update(
    service: Mapping[str, Any],
    update: VersionUpdate,
    state: MatchState,
    *,
    table_name: str | None = None,
) -> dict[str, Any]:
    """The ``service`` object after ``set_port_version(update, state)``.

    Nmap's ``setServiceProbeResults`` as NSE calls it: hardmatched and
    softmatched → probed/10, tcpwrapped → probed/8 (name ``tcpwrapped`` when
    none), nomatch/incomplete → table/3 (the ``nmap-services`` name when
    none); text fields cut to Nmap's limits with non-printables as ``.``. A
    hard match drops the fingerprint; otherwise it is kept (nmap 7.93 keeps
    ``servicefp`` after a soft ``set_port_version``, checked with
    http-server-header). ``scripts`` is carried over.
    """
    new = dict(service)
    for key in (*_TEXT_FIELDS, "tunnel", "cpe", "rpc"):
        value = getattr(update, key)
        if value is not KEEP:
            new[key] = value
    name: str | None = new.get("name")
    if state in ("hardmatched", "softmatched"):
        method, conf = "probed", 10
    elif state == "tcpwrapped":
        method, conf = "probed", 8
        name = name if name is not None else "tcpwrapped"
    else:
        method, conf = "table", 3
        name = name if name is not None else table_name
    new.update(method=method, conf=conf)
    if state == "hardmatched":
        new["fingerprint"] = None
    new["name"] = _sanitize(name, 128) if name is not None else None
    for field_name, limit in _FIELD_LIMITS.items():
        new[field_name] = _sanitize(new.get(field_name) or None, limit)
    new["cpe"] = [c[:80] for c in new.get("cpe") or ()]
    if new.get("tunnel") not in ("ssl", None):
        raise ValueError(f"tunnel must be 'ssl' or None, not {new.get('tunnel')!r}")
    rpc = new.get("rpc")
    if isinstance(rpc, RpcInfo):
        new["rpc"] = rpc.as_dict()
    new["scripts"] = dict(service.get("scripts") or {})
    if service.get("script_results"):
        new["script_results"] = list(service["script_results"])
    return new


class HostPorts(Protocol):
    """The other ports of the host (NSE's ``nmap.get_port_state``)."""

    def port(self, number: int, protocol: str) -> PortView | None: ...


class ScriptRun(Protocol):
    """What an action gets: its port, the host, connections, and set_version."""

    @property
    def port(self) -> PortView: ...

    @property
    def host(self) -> HostPorts: ...

    @property
    def intensity(self) -> int: ...

    @property
    def exchange(self) -> Exchange: ...

    @property
    def release(self) -> str:
        """The Nmap release reproduced (``RuleContext.release``)."""

    def set_version(
        self,
        update: VersionUpdate,
        state: MatchState = "hardmatched",
        *,
        port: PortKey | None = None,
    ) -> None:
        """Nmap's ``set_port_version``; ``port`` names another port of the host."""

    def set_state(self, state: PortState, *, port: PortKey | None = None) -> None:
        """Nmap's ``set_port_state``: the port becomes ``state`` (reason ``script-set``)
        unless it is already in it; applied when the action returns, like set_version."""

    def set_port_state(self, state: Literal["open", "closed"]) -> None:
        """``set_state(state)`` on this port (the name the UDP scripts were written with)."""


class VersionScript(Protocol):
    """A version script (see the module docstring)."""

    name: str
    dependencies: tuple[str, ...]
    #: True when the action may call ``set_version`` on *other* ports of the host:
    #: such a script runs in the host phase, after every port of the host ended
    updates_other_ports: bool

    def may_apply(self, number: int, protocol: str) -> bool:
        """Before any result exists: could the rule ever hold for this port?

        Only consulted for scripts that update other ports, to decide whether a
        host's results must be held until all its ports ended.
        """

    def portrule(self, port: PortView, ctx: RuleContext) -> bool: ...

    async def action(self, run: ScriptRun) -> str | ScriptOutput | None: ...


class BaseScript:
    """Defaults for the optional parts of :class:`VersionScript`."""

    name: str = ""
    dependencies: tuple[str, ...] = ()
    updates_other_ports: bool = False

    def may_apply(self, number: int, protocol: str) -> bool:
        return True
