"""The port walk's decisions (SPEC §4), pure: probe events in, decisions out, no reactor."""

from __future__ import annotations

from vscand.probes.matcher import Matcher
from vscand.probes.model import Probe, ProbeDatabase
from vscand.probes.parser import parse_probe_text
from vscand.scan.findings import FinalState
from vscand.scan.walk import (
    EndKind,
    Finish,
    ProbeWalk,
    RestartInTunnel,
    SendProbe,
    WalkSettings,
)

PROBES = rb"""Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssl m|^\x16\x03|
softmatch ftp m|^220 |

Probe TCP GenericLines q|\r\n\r\n|
rarity 1
ports 21
match ftp m|^220 [^\r\n]*\r\n500 | p/GenericFTP/

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
sslports 443
match http m|^HTTP/1\.[01] | p/http/

Probe TCP Rare q|RARE\r\n|
rarity 8
match rare m|^RAREOK|
"""


def walk_for(port: int = 21, intensity: int = 7) -> tuple[ProbeWalk, ProbeDatabase, Matcher]:
    db = parse_probe_text(PROBES, "walk.probes")
    walk = ProbeWalk(
        db,
        "TCP",
        port,
        WalkSettings(intensity),
        tunnel_services=frozenset({"ssl"}),
        wallclock=lambda: 1_700_000_000.0,
    )
    return walk, db, Matcher(db=db)


def probe_named(db: ProbeDatabase, name: str) -> Probe:
    return next(p for p in db.probes if p.name == name)


def test_null_first_then_the_port_listed_probe() -> None:
    walk, db, _ = walk_for()
    first = walk.plan.next()
    assert first is not None and first.is_null
    decision = walk.ended(first, EndKind.DEADLINE, b"", 6000.0, reusable=True)
    # a NULL probe that timed out hands its connection to the next probe
    assert decision == SendProbe(probe_named(db, "GenericLines"), True)
    assert not walk.tcpwrap_possible  # a read timeout


def test_close_inside_the_tcpwrapped_window_ends_tcpwrapped() -> None:
    walk, _, _ = walk_for()
    null = walk.plan.next()
    assert null is not None
    for kind in (EndKind.EOF, EndKind.RESET):
        assert walk.ended(null, kind, b"", 10.0, reusable=False) == Finish(FinalState.TCPWRAPPED)


def test_close_after_the_window_goes_on_on_a_new_connection() -> None:
    walk, db, _ = walk_for()
    null = walk.plan.next()
    assert null is not None
    decision = walk.ended(null, EndKind.EOF, b"", 3500.0, reusable=False)
    assert decision == SendProbe(probe_named(db, "GenericLines"), False)
    assert walk.tcpwrap_possible and walk.fingerprint is None


def test_unreachable_and_a_failed_connect_end_incomplete() -> None:
    walk, db, _ = walk_for()
    probe = probe_named(db, "GenericLines")
    assert walk.ended(probe, EndKind.CONNECT_FAILED, b"", 0.0, reusable=False) == Finish(
        FinalState.INCOMPLETE
    )
    assert walk.ended(probe, EndKind.UNREACHABLE, b"x", 5.0, reusable=False) == Finish(
        FinalState.INCOMPLETE
    )
    assert not walk.tcpwrap_possible


def test_soft_match_prunes_the_plan_and_the_end_is_softmatched() -> None:
    walk, db, matcher = walk_for(port=2121)
    null = walk.plan.next()
    assert null is not None
    walk.heard()
    assert walk.matched(null, matcher.match(null, b"220 hello\r\n")) is None
    assert walk.findings.soft_found and walk.findings.service == "ftp"
    # EOF after data: fingerprinted, then only probes with an ftp line are left
    decision = walk.ended(null, EndKind.EOF, b"220 hello\r\n", 100.0, reusable=False)
    generic = probe_named(db, "GenericLines")
    assert decision == SendProbe(generic, False)
    assert walk.fingerprint is not None
    # GetRequest (http) is pruned: the plan ends, soft-matched
    decision = walk.ended(generic, EndKind.DEADLINE, b"", 5000.0, reusable=True)
    assert decision == Finish(FinalState.SOFTMATCHED)


def test_hard_ssl_restarts_inside_the_tunnel_once() -> None:
    walk, _, matcher = walk_for(port=443)
    null = walk.plan.next()
    assert null is not None
    decision = walk.matched(null, matcher.match(null, b"\x16\x03\x01"))
    # the restart starts over: the NULL probe again, inside TLS
    assert isinstance(decision, RestartInTunnel) and decision.probe is not None
    assert decision.probe.is_null and walk.tunnel_ssl
    assert walk.findings.service is None
    # inside the tunnel a hard ssl match is final
    assert walk.matched(null, matcher.match(null, b"\x16\x03\x01")) == Finish(
        FinalState.HARDMATCHED
    )


def test_the_plan_runs_out_nomatch() -> None:
    walk, _, _ = walk_for(port=2121, intensity=0)
    null = walk.plan.next()
    assert null is not None
    decision = walk.ended(null, EndKind.DEADLINE, b"junk", 6000.0, reusable=True)
    assert decision == Finish(FinalState.NOMATCH)
    assert walk.fingerprint is not None and b"junk" in walk.fingerprint.text().encode()
