"""Probe order (SPEC §3) on the installed 7.93 file, against the orders Nmap was seen to use."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vscand.probes.matcher import Matcher
from vscand.probes.model import ProbeDatabase
from vscand.scan.plan import ProbePlan, plan_wait_seconds

#: ports some probe lists (plain or sslports), where the plan's order differs
LISTED_PORTS = [21, 22, 25, 53, 80, 111, 123, 137, 161, 443, 993, 1433, 3306, 5060, 6379, 8080]

# SPEC §3.1 (verified with nmap 7.93): a TCP port with no port-listed probe, intensity 7
TCP_ORDER_I7 = [
    "NULL",
    "GenericLines",
    "GetRequest",
    "HTTPOptions",
    "RTSPRequest",
    "RPCCheck",
    "DNSVersionBindReqTCP",
    "DNSStatusRequestTCP",
    "Help",
    "SSLSessionReq",
    "TerminalServerCookie",
    "TLSSessionReq",
    "Kerberos",
    "SMBProgNeg",
    "X11Probe",
    "FourOhFourRequest",
    "LPDString",
    "LDAPSearchReq",
    "LDAPBindReq",
    "SIPOptions",
    "LANDesk-RC",
    "TerminalServer",
    "NCP",
    "NotesRPC",
    "JavaRMI",
    "WMSRequest",
    "oracle-tns",
    "ms-sql-s",
    "afp",
    "giop",
]
UDP_ORDER_I7 = [
    "RPCCheck",
    "DNSVersionBindReq",
    "DNSStatusRequest",
    "NBTStat",
    "Help",
    "SIPOptions",
    "Sqlping",
    "NTPRequest",
    "SNMPv1public",
    "SNMPv3GetRequest",
    "xdmcp",
    "AFSVersionRequest",
    "DNS-SD",
    "Citrix",
    "Kerberos",
    "sybaseanywhere",
    "NetMotionMobility",
    "DTLSSessionReq",
    "QUIC",
]


def walk(
    db: ProbeDatabase, protocol: str, port: int, intensity: int, soft: str | None = None
) -> list[str]:
    plan = ProbePlan(db, protocol, port, intensity)
    names = []
    while (probe := plan.next(soft)) is not None:
        names.append(probe.name)
    return names


def unlisted_port(db: ProbeDatabase, protocol: str) -> int:
    for port in range(7001, 8000):
        if not any(port in p.ports for p in db.probes if p.protocol == protocol):
            return port
    raise AssertionError("no unlisted port")


def test_tcp_order_at_default_intensity(matcher: Matcher) -> None:
    db = matcher.db
    assert walk(db, "TCP", unlisted_port(db, "TCP"), 7) == TCP_ORDER_I7


def test_udp_order_at_default_intensity(matcher: Matcher) -> None:
    db = matcher.db
    assert walk(db, "UDP", unlisted_port(db, "UDP"), 7) == UDP_ORDER_I7


def test_port_listed_probes_first_and_regardless_of_rarity(matcher: Matcher) -> None:
    db = matcher.db
    # port 7002 is in GetRequest's ports (SPEC §3.1): GetRequest comes before GenericLines
    order = walk(db, "TCP", 7002, 7)
    assert order.index("GetRequest") < order.index("GenericLines")
    # at intensity 0, only NULL and the port-listed probes remain
    listed = [p.name for p in db.probes if p.protocol == "TCP" and 7002 in p.ports]
    assert walk(db, "TCP", 7002, 0) == ["NULL", *listed]


def test_intensity_nine_takes_every_probe_of_the_protocol(matcher: Matcher) -> None:
    db = matcher.db
    port = unlisted_port(db, "TCP")
    everything = [p.name for p in db.probes if p.protocol == "TCP"]
    assert walk(db, "TCP", port, 9) == ["NULL", *everything]
    # and a soft match does not prune at intensity 9
    assert walk(db, "TCP", port, 9, soft="ftp") == ["NULL", *everything]


def test_soft_match_keeps_only_probes_that_can_name_the_service(matcher: Matcher) -> None:
    """SPEC §3.2 (verified): after a soft `ftp` on port 7016, GenericLines, Help,
    SSLSessionReq and SMBProgNeg — regardless of rarity."""
    db = matcher.db
    plan = ProbePlan(db, "TCP", 7016, 7)
    first = plan.next()
    assert first is not None and first.name == "NULL"
    after = []
    while (probe := plan.next("ftp")) is not None:
        after.append(probe.name)
    assert after == ["GenericLines", "Help", "SSLSessionReq", "SMBProgNeg"]


def test_version_light_and_zero_on_udp(matcher: Matcher) -> None:
    db = matcher.db
    port = unlisted_port(db, "UDP")
    assert walk(db, "UDP", port, 2) == [
        p.name for p in db.probes if p.protocol == "UDP" and p.rarity <= 2
    ]
    # intensity 0 on an unlisted UDP port: no probe at all (SPEC §3.3)
    assert walk(db, "UDP", port, 0) == []


@settings(max_examples=300, deadline=None)
@given(
    protocol=st.sampled_from(["TCP", "UDP", "tcp", "udp"]),
    port=st.one_of(st.integers(1, 65535), st.sampled_from(LISTED_PORTS)),
    intensity=st.integers(-1, 10),
    tunnel_ssl=st.booleans(),
)
def test_the_plans_wait_is_the_walks_sum(
    matcher: Matcher, protocol: str, port: int, intensity: int, tunnel_ssl: bool
) -> None:
    # the progress display's ETA and the hostile bounds: no walk, the same seconds
    plan = ProbePlan(matcher.db, protocol, port, intensity, tunnel_ssl=tunnel_ssl)
    walked = 0
    while (probe := plan.next()) is not None:
        walked += probe.totalwaitms
    got = plan_wait_seconds(matcher.db, protocol, port, intensity, tunnel_ssl=tunnel_ssl)
    assert got == walked / 1000.0
