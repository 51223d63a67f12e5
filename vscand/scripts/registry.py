"""The built-in version scripts, and how a scan gets its script phase.

``builtin_scripts(settings)`` lists one instance of every built-in script;
data files (``nmap-rpc``) are located once here and injected. A new script is
added by writing its module under ``vscand/scripts/builtin/`` and listing its
class in :data:`BUILTIN`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vscand.probes.grammar import release_key
from vscand.rpc.programs import RpcPrograms, load_rpc_programs
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.pacing import ConnectLimiter
from vscand.scripts.api import VersionScript
from vscand.scripts.builtin.amqp_info import AmqpInfo
from vscand.scripts.builtin.docker_version import DockerVersion
from vscand.scripts.builtin.http_server_header import HttpServerHeader
from vscand.scripts.builtin.iax2_version import Iax2Version
from vscand.scripts.builtin.ike_version import IkeVersion
from vscand.scripts.builtin.mqtt_subscribe import MqttSubscribe
from vscand.scripts.builtin.murmur_version import MurmurVersion
from vscand.scripts.builtin.pptp_version import PptpVersion
from vscand.scripts.builtin.rpc import RpcGrind, RpcInfoScript
from vscand.scripts.builtin.skypev2_version import SkypeV2Version
from vscand.scripts.builtin.snmp_info import SnmpInfo
from vscand.scripts.builtin.stun_version import StunVersion
from vscand.scripts.builtin.tftp_version import TftpVersion
from vscand.scripts.builtin.ubiquiti_discovery import UbiquitiDiscovery
from vscand.scripts.builtin.wdb_version import WdbVersion
from vscand.scripts.builtin.xmpp_info import XmppInfo
from vscand.scripts.runner import ScriptPhase, ScriptRunner, rule_context

__all__ = ["BUILTIN", "ScriptSettings", "builtin_scripts", "make_phase"]


@dataclass(frozen=True)
class ScriptSettings:
    """What the built-in scripts need from the configuration."""

    #: ``nmap-rpc`` (None: the default search path)
    rpc_file: str | None = None
    #: rpc-grind's workers per port (NSE's ``rpc-grind.threads``)
    rpc_threads: int = 4
    #: the time all scripts together may spend on one port, seconds
    port_budget: float = 120.0
    #: names of scripts to leave out
    disabled: frozenset[str] = frozenset()


@functools.cache
def _rpc_programs(path: str | None) -> RpcPrograms:
    """nmap-rpc, read once per path; a missing file means no programs (the
    RPC scripts then change nothing, as NSE's do without the file)."""
    try:
        return load_rpc_programs(path)
    except OSError:
        return RpcPrograms(())


#: script factories: settings -> script
BUILTIN: list[Callable[[ScriptSettings], VersionScript]] = [
    lambda _settings: HttpServerHeader(),
    lambda _settings: DockerVersion(),
    lambda _settings: SkypeV2Version(),
    lambda settings: RpcInfoScript(_rpc_programs(settings.rpc_file)),
    lambda settings: RpcGrind(_rpc_programs(settings.rpc_file), threads=settings.rpc_threads),
    lambda _settings: AmqpInfo(),
    lambda _settings: MqttSubscribe(),
    lambda _settings: XmppInfo(),
    lambda _settings: SnmpInfo(),
    lambda _settings: PptpVersion(),
    lambda _settings: StunVersion(),
    lambda _settings: IkeVersion(),
    # VoIP and devices
    lambda _settings: MurmurVersion(),
    lambda _settings: Iax2Version(),
    lambda _settings: UbiquitiDiscovery(),
    lambda _settings: WdbVersion(),
    lambda _settings: TftpVersion(),
]


#: scripts that joined the version category in a later Nmap release: name -> first release
#: (7.93's script.db has 45, 7.95's 47); a scan runs the set of the release it reproduces
SINCE: dict[str, str] = {
    "tftp-version": "7.95",  # VoIP and devices
}


def in_release(name: str, release: str | None) -> bool:
    """Is the script part of the ``version`` category of Nmap ``release`` (None: 7.93)?"""
    first = SINCE.get(name)
    return first is None or release_key(release or "7.93") >= release_key(first)


def builtin_scripts(
    settings: ScriptSettings | None = None, release: str | None = None
) -> list[VersionScript]:
    settings = settings or ScriptSettings()
    scripts = [make(settings) for make in BUILTIN]
    return [s for s in scripts if s.name not in settings.disabled and in_release(s.name, release)]


def make_phase(
    reactor: Any,
    *,
    tasks: Sequence[PortTask],
    sink: Callable[[Result], None],
    options: ScanOptions,
    excluded: Callable[[str, int, Sequence[str]], bool],
    table_name: Callable[[int, str], str | None],
    limiter: ConnectLimiter | None,
    settings: ScriptSettings | None = None,
    scripts: Sequence[VersionScript] | None = None,
    release: str | None = None,
) -> ScriptPhase:
    """The script phase of one scan: the engine's results go through it to ``sink``.

    ``excluded(PROTOCOL, port, scanned_protocols)`` is the probe file's
    ``ExcludeSpec.excludes``. ``release``: the Nmap release reproduced (the
    probe database's ``nmap_release``), which decides the script set.
    """
    settings = settings or ScriptSettings()
    chosen = list(scripts) if scripts is not None else builtin_scripts(settings, release)
    runner = ScriptRunner(
        reactor,
        chosen,
        limiter=limiter,
        table_name=table_name,
        port_budget=settings.port_budget,
    )
    scanned = [p.upper() for p in options.scanned_protocols]
    ctx = rule_context(options, lambda port, proto: excluded(proto.upper(), port, scanned), release)
    return ScriptPhase(runner, tasks, sink, ctx)
