"""Fast mode against faithful mode, deterministically (Clock, in-memory peers).

Each case scans the same scripted service twice — with the faithful machine
(``TCPPortScan``) and with the fast one (``FastTCPPortScan``) — and compares the
whole answer: port state and reason, the ``service`` object (name, fields, CPE,
tunnel, method, conf, fingerprint) and the list of matches applied, in order.
Every scan ends with no pending call on the clock.

By default (``fast_wait = 0``: every probe waits its full time) fast mode's answer is
faithful mode's by construction (DESIGN.md, "Fast mode: the guarantee"): the cases
below, slow greeters at every delay around the NULL probe's 6 s, services that serve
one connection at a time, and generated server timelines (hypothesis). The opt-in
quiet windows (``fast_wait > 0``) leave the guarantee: their documented exceptions
differ with a 1 s window and agree again by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from tests.fakenet import FakeNetwork, Peer, PeerConnection, peer, run_until_result
from vscand.probes.matcher import Matcher, ServiceMatch
from vscand.probes.model import Probe
from vscand.probes.parser import parse_probe_text
from vscand.scan.fast import FastTCPPortScan
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.records import LaneBudget
from vscand.scan.tcp import TCPPortScan

PROBES = rb"""Exclude T:9100
Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssh m|^SSH-2\.0-OpenSSH_(\S+)\r\n| p/OpenSSH/ v/$1/ o/Linux/ cpe:/a:openbsd:openssh:$1/
softmatch ssh m|^SSH-2\.0-| i/soft info/
match ftp m|^220 ProFTPD (\S+) Server| p/ProFTPD/ v/$1/
match smtp m|^220 ([-.\w]+) ESMTP Postfix| p/Postfix smtpd/ h/$1/
softmatch ftp m|^220 | h/softhost/

Probe TCP GenericLines q|\r\n\r\n|
rarity 1
ports 21
match ftp m|^220 [^\r\n]*\r\n500 | p/GenericFTP/

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
ports 80
match http m|^HTTP/1\.[01] \d\d\d .*\r\nServer: Apache/([\d.]+)|s p/Apache httpd/ v/$1/
match ssl m|^\x15\x03[\x00-\x03]\0\x02\x02|

Probe TCP HTTPOptions q|OPTIONS / HTTP/1.0\r\n\r\n|
rarity 4
fallback GetRequest
match rtsp m|^RTSP/1\.0 200 OK| p/someRTSP/

Probe TCP Help q|HELP\r\n|
rarity 3
match ftp m|^214 ftpd (\S+)| p/HelpFTP/ v/$1/

Probe TCP Rare q|RARE\r\n|
rarity 8
match ftp m|RAREFTP (\S+)| p/RareFTP/ v/$1/
match rare m|^RAREOK|
"""

APACHE = b"HTTP/1.0 200 OK\r\nServer: Apache/2.4.1\r\n\r\n"
BAD = b"HTTP/1.0 400 Bad Request\r\n\r\n"
ALERT = b"\x15\x03\x01\x00\x02\x02\x28"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(db=parse_probe_text(PROBES, "fast.probes"))


@dataclass
class Outcome:
    result: dict[str, Any]
    net: FakeNetwork
    seconds: float

    @property
    def answer(self) -> tuple[Any, ...]:
        r = self.result
        return (r["state"], r["reason"], r["service"], r.get("final_state"), r.get("matches"))

    @property
    def name(self) -> str | None:
        return self.result["service"]["name"]  # type: ignore[no-any-return]


def scan(
    matcher: Matcher,
    make_peer: Any,
    *,
    fast: bool,
    port: int = 7001,
    intensity: int = 7,
    fast_wait: float = 0.0,  # the product's default (exact); quiet-window cases say 1.0
    lanes: int = 32,
    budget: LaneBudget | None = None,
    match_delay: float = 0.0,
    late_loss: bool = False,
) -> Outcome:
    clock = Clock()
    net = FakeNetwork(clock, make_peer())
    net.late_loss = late_loss

    def match(probe: Probe, buffer: bytes) -> defer.Deferred[ServiceMatch | None]:
        found = matcher.match(probe, buffer)
        if not match_delay:
            return defer.succeed(found)
        call: list[IDelayedCall] = []
        d: defer.Deferred[ServiceMatch | None] = defer.Deferred(lambda _: call[0].cancel())
        call.append(clock.callLater(match_delay, d.callback, found))
        return d

    options = ScanOptions(intensity=intensity, fast=fast, fast_wait=fast_wait, fast_lanes=lanes)
    common: dict[str, Any] = dict(
        db=matcher.db,
        match=match,
        dial=net,
        clock=clock,
        options=options,
        table_name="afs3-callback" if port == 7001 else None,
        wallclock=lambda: 1_700_000_000.0,
    )
    machine: TCPPortScan
    if fast:
        machine = FastTCPPortScan(PortTask("127.0.0.1", port), budget=budget, **common)
    else:
        machine = TCPPortScan(PortTask("127.0.0.1", port), **common)
    results: list[dict[str, Any]] = []
    machine.run().addCallback(results.append)
    run_until_result(clock, results)
    clock.advance(0)  # the losses reported a turn later (late_loss)
    assert len(results) == 1
    assert not clock.getDelayedCalls(), f"pending calls: {clock.getDelayedCalls()}"
    assert net.open_now == 0, "a connection was left open"
    assert results[0].get("fast", False) is fast
    return Outcome(results[0], net, clock.seconds())


def _faithful_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in kwargs.items() if k in ("port", "intensity", "match_delay", "late_loss")
    }


def both(matcher: Matcher, make_peer: Any, **kwargs: Any) -> tuple[Outcome, Outcome]:
    faithful = scan(matcher, make_peer, fast=False, **_faithful_kwargs(kwargs))
    fast = scan(matcher, make_peer, fast=True, **kwargs)
    return faithful, fast


# -- the services -------------------------------------------------------------------


def banner(data: bytes, delay: float = 0.0, **attributes: Any) -> Any:
    return lambda: peer(lambda c: c.send(data, delay), **attributes)


def banner_then_reply(greeting: bytes, reply: bytes, *, close: bool = False) -> Any:
    def connected(c: PeerConnection) -> None:
        c.send(greeting)

    def received(c: PeerConnection, data: bytes) -> None:
        c.send(reply)
        if close:
            c.close()

    return lambda: peer(connected, received)


def http_silent(**attributes: Any) -> Any:
    """Silent until a request header; GET gets Apache, anything else a 400; then close."""

    def received(c: PeerConnection, data: bytes) -> None:
        if c.received.startswith(b"GET "):
            c.send(APACHE)
            c.close()
        elif b"\r\n\r\n" in c.received:
            c.send(BAD)
            c.close()

    return lambda: peer(received=received, **attributes)


def options_only() -> Any:
    """OPTIONS gets an Apache reply (only GetRequest's line, a fallback, knows it)."""

    def received(c: PeerConnection, data: bytes) -> None:
        if c.received.startswith(b"OPTIONS "):
            c.send(b"HTTP/1.0 200 OK\r\nServer: Apache/2.2.0\r\n\r\n")
        elif c.received.startswith(b"GET "):
            c.send(b"HTTP/1.0 404 Not Found\r\n\r\n")
        else:
            return
        c.close()

    return lambda: peer(received=received)


def close_after(delay: float) -> Any:
    return lambda: peer(lambda c: c.close(delay))


def reset_on_data() -> Any:
    return lambda: peer(received=lambda c, data: c.reset())


def silent() -> Any:
    return Peer


def reply_and_close(greeting: bytes) -> Any:
    def received(c: PeerConnection, data: bytes) -> None:
        c.send(b"REPLY to %d bytes\r\n" % len(data))
        c.close()

    return lambda: peer(lambda c: c.send(greeting), received)


def tls_port() -> Any:
    """Plain text: a TLS alert to anything; through TLS: an OpenSSH banner."""

    def connected(c: PeerConnection) -> None:
        if c.tls:
            c.send(b"SSH-2.0-OpenSSH_9.0\r\n")

    def received(c: PeerConnection, data: bytes) -> None:
        if not c.tls:
            c.send(ALERT)
            c.close()

    return lambda: peer(connected, received)


def soft_then_rare() -> Any:
    """A soft ftp banner; only the rarity-8 probe (reached after the soft match) knows it."""

    def received(c: PeerConnection, data: bytes) -> None:
        if data.startswith(b"RARE"):
            c.send(b"RAREFTP 1.0\r\n")

    return lambda: peer(lambda c: c.send(b"220 x\r\n"), received)


def in_parts(*parts: tuple[float, bytes]) -> Any:
    def connected(c: PeerConnection) -> None:
        for delay, data in parts:
            c.send(data, delay)

    return lambda: peer(connected)


def closed_port() -> Any:
    return lambda: peer(refuse=True)


# -- equality -------------------------------------------------------------------------

EQUAL_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("hard-banner", banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"), {}),
    ("soft-then-hard-reuse", banner_then_reply(b"220 hello there\r\n", b"500 what?\r\n"),
     {"port": 21}),
    ("soft-only-pruned", banner(b"220 nothing known\r\n"), {}),
    ("soft-two-parts", in_parts((0.0, b"SSH-2.0-"), (0.4, b"OpenSSH_8.0\r\n")), {}),
    ("http-silent", http_silent(), {}),
    ("http-silent-listed", http_silent(), {"port": 80}),
    ("fallback", options_only(), {}),
    ("tcpwrapped", close_after(0.0), {}),
    ("tcpwrapped-reset", lambda: peer(lambda c: c.reset()), {}),
    ("reset-on-data", reset_on_data(), {}),
    ("silent", silent(), {}),
    ("silent-intensity-9", silent(), {"intensity": 9}),
    ("unknown-reply-close", reply_and_close(b"WELCOME zzqq\r\n"), {}),
    ("unknown-banner-kept-open", banner_then_reply(b"HELLO\r\n", b"what?\r\n"), {}),
    ("read-cap", banner(b"A" * 5000), {}),
    ("ssl-restart", tls_port(), {}),
    ("soft-brings-rare-probe", soft_then_rare(), {}),
    ("closed", closed_port(), {}),
    ("excluded", banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"), {"port": 9100}),
    ("one-connection-at-a-time", http_silent(max_open=1), {}),
    ("async-matching", http_silent(), {"match_delay": 0.002}),
    ("async-matching-banner-parts",
     in_parts((0.0, b"220 "), (0.0005, b"ProFTPD 1.3 Server\r\n")), {"match_delay": 0.003}),
    ("no-lanes", soft_then_rare(), {"lanes": 0}),
    ("empty-budget", http_silent(), {"budget": LaneBudget(0)}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make_peer", "kwargs"), [(c[1], c[2]) for c in EQUAL_CASES], ids=[c[0] for c in EQUAL_CASES]
)
def test_fast_answers_as_faithful(matcher: Matcher, make_peer: Any, kwargs: dict[str, Any]) -> None:
    faithful, fast = both(matcher, make_peer, **kwargs)
    assert fast.answer == faithful.answer


@pytest.mark.parametrize(
    ("make_peer", "kwargs"), [(c[1], c[2]) for c in EQUAL_CASES], ids=[c[0] for c in EQUAL_CASES]
)
def test_quiet_windows_answer_as_faithful_on_prompt_services(
    matcher: Matcher, make_peer: Any, kwargs: dict[str, Any]
) -> None:
    """The opt-in ``fast_wait = 1 s``: these services all react within the window."""
    faithful, fast = both(matcher, make_peer, fast_wait=1.0, **kwargs)
    assert fast.answer == faithful.answer


def test_the_cases_test_what_they_say(matcher: Matcher) -> None:
    """Faithful mode's answers are the ones each case was written to provoke."""
    names = {
        cid: scan(matcher, make, fast=False, **_faithful_kwargs(kw)).result
        for cid, make, kw in EQUAL_CASES
    }
    service = {cid: r["service"] for cid, r in names.items()}
    assert service["hard-banner"]["product"] == "OpenSSH"
    assert service["soft-then-hard-reuse"]["product"] == "GenericFTP"
    assert service["soft-then-hard-reuse"]["hostname"] == "softhost"
    assert (service["soft-only-pruned"]["name"], names["soft-only-pruned"]["final_state"]) == (
        "ftp",
        "softmatched",
    )
    assert service["http-silent"]["product"] == "Apache httpd"
    assert service["fallback"]["product"] == "Apache httpd"
    assert names["fallback"]["matches"][-1]["matched_probe"] == "GetRequest"
    assert service["tcpwrapped"]["name"] == "tcpwrapped"
    assert service["silent"]["method"] == "table"
    assert service["unknown-reply-close"]["fingerprint"] is not None
    assert "HELLO" in service["unknown-banner-kept-open"]["fingerprint"]
    assert (service["ssl-restart"]["tunnel"], service["ssl-restart"]["product"]) == (
        "ssl",
        "OpenSSH",
    )
    assert service["soft-brings-rare-probe"]["product"] == "RareFTP"
    assert names["closed"]["state"] == "closed"
    assert service["excluded"]["product"] == "Excluded from version scan"


def test_fast_is_sooner_and_uses_lanes(matcher: Matcher) -> None:
    faithful, fast = both(matcher, http_silent())
    assert fast.answer == faithful.answer
    assert fast.seconds < faithful.seconds
    assert fast.net.max_open > 1  # probes ran in parallel


def test_hard_banner_opens_no_lane(matcher: Matcher) -> None:
    """A banner that hard-matches at once ends the port before any lane starts."""
    fast = scan(matcher, banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"), fast=True)
    assert fast.net.dials == 1


def test_lanes_per_port_are_bounded(matcher: Matcher) -> None:
    fast = scan(matcher, silent(), fast=True, intensity=9, lanes=2)
    assert fast.net.max_open <= 1 + 2 + 1  # C0, the lanes, one probe dialled on demand
    faithful = scan(matcher, silent(), fast=False, intensity=9)
    assert fast.answer == faithful.answer


def test_budget_is_given_back(matcher: Matcher) -> None:
    budget = LaneBudget(3)
    for make in (http_silent(), silent(), soft_then_rare(), tls_port()):
        scan(matcher, make, fast=True, budget=budget)
        assert budget.in_use == 0


def test_cancel_keeps_what_was_found(matcher: Matcher) -> None:
    clock = Clock()
    net = FakeNetwork(clock, banner(b"220 nothing known\r\n")())
    machine = FastTCPPortScan(
        PortTask("127.0.0.1", 7001),
        db=matcher.db,
        match=lambda p, b: defer.succeed(matcher.match(p, b)),
        dial=net,
        clock=clock,
        options=ScanOptions(fast=True),
        table_name=None,
    )
    results: list[dict[str, Any]] = []
    d = machine.run()
    d.addCallback(results.append)
    for _ in range(50):  # 0.5 s in small steps: the banner arrives, lanes start
        clock.advance(0.01)
    assert net.dials > 1
    d.cancel()
    assert results and results[0]["interrupted"] is True
    svc = results[0]["service"]
    assert (svc["name"], svc["method"]) == ("ftp", "table")
    assert not clock.getDelayedCalls()
    assert net.open_now == 0


# -- the opt-in quiet windows' documented exceptions -------------------------------------


def test_exception_banner_after_the_quiet_window(matcher: Matcher) -> None:
    """A banner later than the quiet window, from a service that hangs up on early data.

    Faithful mode waits 6 s in silence and reads the banner; fast mode sends the next
    probe after 1 s of silence, and this service closes on it.  With full waits the
    answers agree again.
    """

    def make() -> Peer:
        def connected(c: PeerConnection) -> None:
            c.send(b"220 ProFTPD 1.3.8 Server\r\n", 2.0)

        return peer(connected, lambda c, data: c.close())

    faithful, fast = both(matcher, make, fast_wait=1.0)
    assert faithful.result["service"]["product"] == "ProFTPD"
    assert fast.result["service"]["product"] is None
    _, full = both(matcher, make)
    assert full.answer == faithful.answer


def test_exception_close_on_its_own_timer(matcher: Matcher) -> None:
    """Closes every connection 3.5 s after accepting, never a byte (SPEC §4.8).

    Faithful mode walks every probe and still reports tcpwrapped (no read ever
    timed out); fast mode's quiet window ends the NULL probe first, which is a read
    timeout: the port is no longer tcpwrapped.
    """
    faithful, fast = both(matcher, close_after(3.5), fast_wait=1.0)
    assert faithful.name == "tcpwrapped"
    assert fast.name == "afs3-callback"
    _, full = both(matcher, close_after(3.5))
    assert full.answer == faithful.answer


def test_exception_pause_inside_a_banner(matcher: Matcher) -> None:
    """A banner with a pause longer than the quiet window: fast mode reads only its start.

    Faithful mode reads both parts within the NULL probe's 6 s and hard-matches
    OpenSSH; fast mode ends the NULL probe after 1 s of silence with a soft ``ssh``
    match, which prunes every later probe (none has an ssh line here): soft match.
    """
    make = in_parts((0.0, b"SSH-2.0-"), (1.5, b"OpenSSH_7.4\r\n"))
    faithful, fast = both(matcher, make, fast_wait=1.0)
    assert faithful.result["service"]["product"] == "OpenSSH"
    assert fast.result["final_state"] == "softmatched"
    assert fast.result["service"]["product"] is None
    _, full = both(matcher, make)
    assert full.answer == faithful.answer


def test_quiet_window_grows_with_the_round_trip(matcher: Matcher) -> None:
    fast = FastTCPPortScan(
        PortTask("127.0.0.1", 7001),
        db=matcher.db,
        match=lambda p, b: defer.succeed(None),
        dial=FakeNetwork(Clock(), Peer()),
        clock=Clock(),
        options=ScanOptions(fast=True, fast_wait=1.0),
        table_name=None,
    )
    null = matcher.db.null_probe
    assert null is not None
    assert fast.quiet_window(null) == 1.0
    for _ in range(20):
        fast.rtt.sample(0.5)
    window = fast.quiet_window(null)
    assert window is not None and window >= 2.0
    fast.rtt.sample(3.0)
    assert fast.quiet_window(null) is None  # over the probe's own 6 s: wait it all


# -- the guarantee: slow greeters, one connection at a time, generated timelines -------------

GREETINGS = {
    "ssh": b"SSH-2.0-OpenSSH_9.2p1\r\n",
    "smtp": b"220 mail.example.com ESMTP Postfix\r\n",
    "ftp": b"220 ProFTPD 1.3.8 Server\r\n",
}
#: around the NULL probe's 6 s: within it, just either side, on the next probe's
#: connection (reused), and past both
GREETING_DELAYS = [1.0, 3.0, 5.9, 6.1, 7.0, 12.0]


def slow_greeter(greeting: bytes, delay: float, *, hang_up_on_early_data: bool) -> Any:
    """Greets ``delay`` s after the connect; ignores input, or (greet-pause, postscreen)
    hangs up on a client that speaks first."""

    def received(c: PeerConnection, data: bytes) -> None:
        if hang_up_on_early_data and not c.sent_first:
            c.close()

    def connected(c: PeerConnection) -> None:
        def greet() -> None:
            c.sent_first = True
            c.protocol.dataReceived(greeting)

        c.later(delay, greet)

    return lambda: peer(connected, received)


@pytest.mark.parametrize("delay", GREETING_DELAYS)
@pytest.mark.parametrize("protocol", sorted(GREETINGS))
@pytest.mark.parametrize("hang_up", [False, True], ids=["patient", "hangs-up-on-early-data"])
def test_slow_greeters_answer_as_faithful(
    matcher: Matcher, protocol: str, delay: float, hang_up: bool
) -> None:
    make = slow_greeter(GREETINGS[protocol], delay, hang_up_on_early_data=hang_up)
    faithful, fast = both(matcher, make)
    assert fast.answer == faithful.answer, (protocol, delay)
    if delay < 6 and not hang_up:  # within the NULL probe's wait: its banner names it
        assert faithful.name == protocol
    assert fast.seconds <= faithful.seconds + 1e-6


def one_at_a_time(make: Any) -> Any:
    def made() -> Peer:
        service: Peer = make()
        service.serial = True
        return service

    return made


def tls_port_serial() -> Any:
    """``openssl s_server`` in miniature: one connection at a time, a TLS alert to
    anything in plain text, an OpenSSH banner through TLS."""
    return one_at_a_time(tls_port())


SERIAL_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("tls", tls_port_serial(), {}),
    ("http-silent", one_at_a_time(http_silent()), {}),
    ("http-silent-listed", one_at_a_time(http_silent()), {"port": 80}),
    ("soft-banner-then-rare", one_at_a_time(soft_then_rare()), {}),
    ("unknown-reply-close", one_at_a_time(reply_and_close(b"WELCOME zzqq\r\n")), {}),
    ("silent", one_at_a_time(silent()), {}),
    ("slow-greeter-0.2s", one_at_a_time(slow_greeter(GREETINGS["ftp"], 0.2,
                                                      hang_up_on_early_data=False)), {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make_peer", "kwargs"), [(c[1], c[2]) for c in SERIAL_CASES], ids=[c[0] for c in SERIAL_CASES]
)
def test_one_connection_at_a_time_is_walked_sequentially(
    matcher: Matcher, make_peer: Any, kwargs: dict[str, Any]
) -> None:
    faithful, fast = both(matcher, make_peer, **kwargs)
    assert fast.answer == faithful.answer


def tls_then_help_serial() -> Any:
    """One connection at a time: in plain text a TLS alert to anything (the connection left
    open: the scanner closes it); through TLS a 400 to anything but HELP, which gets an
    ftpd banner; a close after each reply."""

    def received(c: PeerConnection, data: bytes) -> None:
        if not c.tls:
            c.send(ALERT)
            return
        if c.received.startswith(b"HELP"):
            c.send(b"214 ftpd 9\r\n")
        else:
            c.send(BAD)
        c.close()

    return one_at_a_time(lambda: peer(received=received))


def test_the_tls_phase_settles_on_its_own_c0(matcher: Matcher) -> None:
    """With losses reported a turn late (as Twisted does), the plain C0 closed for the TLS
    restart is reported lost inside the TLS phase: it must not count as that phase's C0
    closing (the settle window would start early and a queued lane's silence be taken)."""
    faithful, fast = both(matcher, tls_then_help_serial(), late_loss=True, port=80)
    assert (faithful.result["service"]["tunnel"], faithful.result["service"]["product"]) == (
        "ssl",
        "HelpFTP",
    )
    assert fast.answer == faithful.answer


def test_one_connection_at_a_time_is_detected(matcher: Matcher) -> None:
    """Without the detection, the queued lanes' silence was read as the answer: no
    ``ssl`` (the DESIGN.md example, found by hand with ``openssl s_server -www``)."""
    faithful, fast = both(matcher, tls_port_serial())
    assert (faithful.result["service"]["tunnel"], faithful.name) == ("ssl", "ssh")
    assert fast.answer == faithful.answer


#: what a generated service may say: hard, soft and unknown greetings and replies
_SAYINGS = [
    b"SSH-2.0-OpenSSH_8.0\r\n",
    b"SSH-2.0-",
    b"220 ProFTPD 1.3 Server\r\n",
    b"220 hello\r\n",
    b"220 mail.example.com ESMTP Postfix\r\n",
    b"500 what?\r\n",
    APACHE,
    BAD,
    ALERT,
    b"RAREFTP 2.0\r\n",
    b"214 ftpd 9\r\n",
    b"ZZ unknown\r\n",
]
_TRIGGERS = [b"\r\n\r\n", b"GET ", b"OPTIONS ", b"HELP", b"RARE"]
_DELAYS = st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5, 4.9, 5.1, 5.9, 6.1, 7.0, 7.4, 12.0])
_QUICK = st.sampled_from([0.0, 0.05, 0.3])
_REACTION = st.one_of(
    st.none(),
    st.tuples(_DELAYS, st.one_of(st.none(), st.sampled_from(_SAYINGS)), st.booleans()),
)


@st.composite
def timelines(draw: st.DrawFn) -> dict[str, Any]:
    """A connection-independent service: a greeting after a delay, a reaction per probe
    (after a delay: bytes, a close, or both), maybe a close on its own timer; or a
    one-connection-at-a-time service inside the guarantee's detection: it reacts to
    every connection it takes (a byte or a close) within the settle window (DESIGN.md,
    "Fast mode: the guarantee")."""
    serial = draw(st.booleans())
    if serial:
        reaction = st.one_of(
            st.tuples(_QUICK, st.sampled_from(_SAYINGS), st.booleans()),
            st.tuples(_QUICK, st.none(), st.just(True)),
        )
        delays = _QUICK
    else:
        reaction = _REACTION
        delays = _DELAYS
    return {
        "serial": serial,
        "greeting": draw(st.one_of(st.none(), st.tuples(delays, st.sampled_from(_SAYINGS)))),
        "reactions": {t: draw(reaction) for t in _TRIGGERS},
        "other": draw(reaction),
        "timer": None if serial else draw(st.one_of(st.none(), _DELAYS)),
        "intensity": draw(st.sampled_from([2, 7, 9])),
        "port": draw(st.sampled_from([7001, 21, 80])),  # 21, 80: a probe listed after NULL
        "late_loss": draw(st.booleans()),  # losses reported a turn late, as Twisted does
    }


def timeline_peer(spec: dict[str, Any]) -> Any:
    def connected(c: PeerConnection) -> None:
        if spec["greeting"] is not None:
            delay, data = spec["greeting"]
            c.send(data, delay)
        if spec["timer"] is not None:
            c.close(spec["timer"])

    def received(c: PeerConnection, data: bytes) -> None:
        if len(c.received) != len(data):
            return  # reacts to the first write of the connection only
        trigger = next((t for t in _TRIGGERS if c.received.startswith(t)), None)
        reaction = spec["reactions"][trigger] if trigger is not None else spec["other"]
        if reaction is None:
            return
        delay, reply, close = reaction
        if reply is not None:
            c.send(reply, delay)
        if close:
            c.close(delay)

    return lambda: peer(connected, received, serial=spec["serial"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=timelines())
def test_generated_timelines_answer_as_faithful(matcher: Matcher, spec: dict[str, Any]) -> None:
    faithful, fast = both(
        matcher,
        timeline_peer(spec),
        intensity=spec["intensity"],
        port=spec["port"],
        late_loss=spec["late_loss"],
    )
    assert fast.answer == faithful.answer
