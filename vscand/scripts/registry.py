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
from vscand.scripts.builtin.allseeingeye_info import AllSeeingEyeInfo
from vscand.scripts.builtin.amqp_info import AmqpInfo
from vscand.scripts.builtin.bacnet_info import BacnetInfo
from vscand.scripts.builtin.cccam_version import CccamVersion
from vscand.scripts.builtin.db2_das_info import Db2DasInfo
from vscand.scripts.builtin.docker_version import DockerVersion
from vscand.scripts.builtin.drda_info import DrdaInfo
from vscand.scripts.builtin.enip_info import EnipInfo
from vscand.scripts.builtin.fingerprint_strings import FingerprintStrings
from vscand.scripts.builtin.fox_info import FoxInfo
from vscand.scripts.builtin.freelancer_info import FreelancerInfo
from vscand.scripts.builtin.hnap_info import HnapInfo
from vscand.scripts.builtin.http_server_header import HttpServerHeader
from vscand.scripts.builtin.http_trane_info import HttpTraneInfo
from vscand.scripts.builtin.https_redirect import HttpsRedirect
from vscand.scripts.builtin.iax2_version import Iax2Version
from vscand.scripts.builtin.iec61850_mms import Iec61850Mms
from vscand.scripts.builtin.ike_version import IkeVersion
from vscand.scripts.builtin.jdwp_version import JdwpVersion
from vscand.scripts.builtin.maxdb_info import MaxdbInfo
from vscand.scripts.builtin.mcafee_epo_agent import McafeeEpoAgent
from vscand.scripts.builtin.mqtt_subscribe import MqttSubscribe
from vscand.scripts.builtin.murmur_version import MurmurVersion
from vscand.scripts.builtin.ndmp_version import NdmpVersion
from vscand.scripts.builtin.netbus_version import NetbusVersion
from vscand.scripts.builtin.omron_info import OmronInfo
from vscand.scripts.builtin.openlookup_info import OpenlookupInfo
from vscand.scripts.builtin.oracle_tns_version import OracleTnsVersion
from vscand.scripts.builtin.ovs_agent_version import OvsAgentVersion
from vscand.scripts.builtin.pptp_version import PptpVersion
from vscand.scripts.builtin.quake1_info import Quake1Info
from vscand.scripts.builtin.quake3_info import Quake3Info
from vscand.scripts.builtin.rfc868_time import Rfc868Time
from vscand.scripts.builtin.rpc import RpcGrind, RpcInfoScript
from vscand.scripts.builtin.s7_info import S7Info
from vscand.scripts.builtin.skypev2_version import SkypeV2Version
from vscand.scripts.builtin.snmp_info import SnmpInfo
from vscand.scripts.builtin.stun_version import StunVersion
from vscand.scripts.builtin.teamspeak2_version import TeamSpeak2Version
from vscand.scripts.builtin.tftp_version import TftpVersion
from vscand.scripts.builtin.ubiquiti_discovery import UbiquitiDiscovery
from vscand.scripts.builtin.ventrilo_info import VentriloInfo
from vscand.scripts.builtin.vmware_version import VmwareVersion
from vscand.scripts.builtin.wdb_version import WdbVersion
from vscand.scripts.builtin.weblogic_t3_info import WeblogicT3Info
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
    # HTTP and unrecognised services
    lambda _settings: FingerprintStrings(),
    lambda _settings: HttpsRedirect(),
    lambda _settings: HnapInfo(),
    lambda _settings: HttpTraneInfo(),
    # games over UDP
    lambda _settings: Quake1Info(),
    lambda _settings: Quake3Info(),
    lambda _settings: AllSeeingEyeInfo(),
    lambda _settings: FreelancerInfo(),
    lambda _settings: TeamSpeak2Version(),
    lambda _settings: VentriloInfo(),
    # enterprise middleware
    lambda _settings: OracleTnsVersion(),
    lambda _settings: WeblogicT3Info(),
    lambda _settings: Db2DasInfo(),
    lambda _settings: DrdaInfo(),
    lambda _settings: MaxdbInfo(),
    lambda _settings: NdmpVersion(),
    lambda _settings: JdwpVersion(),
    # agents and small TCP services (issue 16)
    lambda _settings: VmwareVersion(),
    lambda _settings: OvsAgentVersion(),
    lambda _settings: McafeeEpoAgent(),
    lambda _settings: NetbusVersion(),
    lambda _settings: OpenlookupInfo(),
    lambda _settings: Rfc868Time(),
    lambda _settings: CccamVersion(),
    # industrial protocols
    lambda _settings: S7Info(),
    lambda _settings: EnipInfo(),
    lambda _settings: BacnetInfo(),
    lambda _settings: FoxInfo(),
    lambda _settings: OmronInfo(),
    lambda _settings: Iec61850Mms(),
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
    # industrial protocols
    "iec61850-mms": "7.95",
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
