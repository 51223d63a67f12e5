"""TARGET parsing, the allow/deny policy, resolution and task building.

Nothing here opens a socket: names go through fake resolvers, and the one
pipeline test that includes a scheduler gives it a recording fake dialler.
"""

from __future__ import annotations

import io
import ipaddress
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vscand.ports import PortSpecError, parse_services
from vscand.probes.grammar import grammar_for
from vscand.scan.model import PortTask, Result
from vscand.scan.scheduler import Scheduler
from vscand.targets.parse import (
    Target,
    TargetError,
    parse_address,
    parse_target,
    parse_target_list,
    read_target_list,
)
from vscand.targets.policy import (
    DEFAULT_MAX_CIDR_ADDRESSES,
    TargetPolicy,
    canonical_address,
    embedded_ipv4,
)
from vscand.targets.resolve import (
    check_targets,
    choose_address,
    ntop,
    resolve_targets,
    system_resolver,
)
from vscand.targets.tasks import build_tasks, iter_tasks, plan_tasks, select_ports

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
#: the brief's policy: loopback allowed, 127.0.0.2 denied
POLICY = TargetPolicy(allow=["127.0.0.0/8"], deny=["127.0.0.2"])
#: a Teredo address whose (obfuscated) client is 127.0.0.3
TEREDO_127_0_0_3 = "2001:0:4136:e378:8000:63bf:80ff:fffc"


def result_of(d: Deferred[Any]) -> Any:
    return SynchronousTestCase().successResultOf(d)


def failure_of(d: Deferred[Any]) -> Failure:
    return SynchronousTestCase().failureResultOf(d)


class FakeResolver:
    """name -> addresses from a table; records every lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, name: str) -> Deferred[list[str]]:
        self.asked.append(name)
        if name not in self.table:
            return fail(OSError(f"[Errno -2] Name or service not known: {name}"))
        return succeed(list(self.table[name]))


def no_resolver(name: str) -> list[str]:
    raise AssertionError(f"unexpected lookup of {name!r}")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Target("127.0.0.1", address=V4("127.0.0.1"))),
        ("  127.0.0.1 ", Target("127.0.0.1", address=V4("127.0.0.1"))),
        ("::1", Target("::1", address=V6("::1"))),
        ("[::1]", Target("[::1]", address=V6("::1"))),
        ("fe80::1%lo", Target("fe80::1%lo", address=V6("fe80::1%lo"))),
        ("localhost", Target("localhost", hostname="localhost")),
        ("db1.example.com.", Target("db1.example.com.", hostname="db1.example.com.")),
        ("_svc.internal", Target("_svc.internal", hostname="_svc.internal")),
        ("127.0.0.0/30", Target("127.0.0.0/30", network=ipaddress.ip_network("127.0.0.0/30"))),
        ("127.0.0.5/30", Target("127.0.0.5/30", network=ipaddress.ip_network("127.0.0.4/30"))),
        ("::1/128", Target("::1/128", network=ipaddress.ip_network("::1/128"))),
        ("fd00::/126", Target("fd00::/126", network=ipaddress.ip_network("fd00::/126"))),
        ("127.0.0.1:22", Target("127.0.0.1:22", address=V4("127.0.0.1"), port=22)),
        ("127.0.0.1:22/tcp", Target("127.0.0.1:22/tcp", address=V4("127.0.0.1"), port=22)),
        ("[::1]:443", Target("[::1]:443", address=V6("::1"), port=443)),
        (
            "[::1]:53/udp",
            Target("[::1]:53/udp", address=V6("::1"), port=53, protocol="udp"),
        ),
        (
            "host:53/udp",
            Target("host:53/udp", hostname="host", port=53, protocol="udp"),
        ),
        (
            "127.0.0.1:161/UDP",
            Target("127.0.0.1:161/UDP", address=V4("127.0.0.1"), port=161, protocol="udp"),
        ),
        ("web:65535", Target("web:65535", hostname="web", port=65535)),
    ],
)
def test_accepted_targets(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0x7f.0.0.1",
        "0x7f.0.0.2",
        "0x7f000001",
        "2130706433",
        "2130706434",
        "127.1",
        "127.0.1",
        "0127.0.0.1",
        "127.0.0.01",
        "127.000.0.1",
        "0177.0.0.1",
        "127.0.0.1.",
        "1.2.3.4.5",
        "256.0.0.1",
        "0x7f.0.0.1:22",
        "2130706433:22/udp",
    ],
)
def test_odd_ipv4_spellings_are_refused_not_interpreted(text: str) -> None:
    with pytest.raises(TargetError, match="is not a valid IPv4 address") as info:
        parse_target(text)
    assert "\n" not in str(info.value)


def test_odd_spellings_never_reach_the_resolver() -> None:
    resolver = FakeResolver({"2130706434": ["127.0.0.2"]})
    d = plan_tasks(["2130706434"], POLICY, resolver, {"tcp": [22]})
    assert "not a valid IPv4 address" in str(failure_of(d).value)
    assert resolver.asked == []


def test_names_outside_allow_names_never_reach_the_resolver() -> None:
    policy = TargetPolicy(allow=["127.0.0.0/8"], allow_names=["localhost", "*.lab.test"])
    resolver = FakeResolver({"db.lab.test": ["127.0.0.5"], "evil.example": ["127.0.0.6"]})
    d = plan_tasks(["127.0.0.1", "evil.example", "db.lab.test"], policy, resolver, {"tcp": [22]})
    message = str(failure_of(d).value)
    assert "hostname 'evil.example' is not allowed (allow_names: localhost, *.lab.test)" in message
    assert resolver.asked == []  # refused before any lookup, the allowed name's included
    plan_tasks(["db.lab.test"], policy, resolver, {"tcp": [22]})
    assert resolver.asked == ["db.lab.test"]  # an allowed name is looked up as before
    policy.check_name("DB.Lab.Test.")  # case-insensitive, root dot ignored
    with pytest.raises(TargetError, match="not allowed"):
        TargetPolicy(allow_names=[]).check_name("localhost")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty target"),
        ("   ", "empty target"),
        ("a b", "whitespace"),
        ("[::1", "bad bracketed address"),
        ("[127.0.0.1]:22", "brackets are for IPv6"),
        ("[::1]:", "bad port ''"),
        ("[::1]:http", "bad port 'http'"),
        ("[::1]:22/sctp", "bad protocol 'sctp'"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:022", "bad port '022'"),
        ("127.0.0.1:22/", "bad protocol ''"),
        (":22", "missing host"),
        ("127.0.0.0/30:22", "one host, not a network"),
        ("::1/udp", "bad prefix length 'udp'"),
        ("127.0.0.0/33", "bad network"),
        ("127.0.0.0/030", "bad prefix length '030'"),
        ("127.0.0.0/255.0.0.0", "bad prefix length"),
        ("0x7f.0.0.0/8", "not a valid IPv4 address"),
        ("::1:2:3:4:5:6:7:8:9", "bad IPv6 address"),
        ("fe80::%lo/64", "a network cannot carry a zone"),
        ("example.com/24", "not a hostname"),
        ("exa$mple", "not a valid hostname or address"),
        ("a..b", "not a valid hostname or address"),
        ("-rf", "not a valid hostname or address"),
        ("x" * 64 + ".com", "not a valid hostname or address"),
        ("host.123", "numeric last label"),
        ("bücher.example", "not ASCII"),
    ],
)
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_names_the_target_as_written() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("127.0.0.1:99999")
    assert str(info.value) == "target '127.0.0.1:99999': port 99999 is out of range (1-65535)"


def test_parse_address_is_strict() -> None:
    assert parse_address("127.0.0.1") == V4("127.0.0.1")
    assert parse_address("::ffff:127.0.0.1") == V6("::ffff:7f00:1")
    with pytest.raises(TargetError):
        parse_address("127.1")
    with pytest.raises(TargetError):
        parse_address("::ffff:0127.0.0.1")


# --------------------------------------------------------------------------- -iL


def test_target_list_comments_blank_lines_and_words() -> None:
    text = (
        "# inventory\n"
        "127.0.0.1\n"
        "\n"
        "  ::1   # the v6 loopback\n"
        "127.0.0.4/31 127.0.0.9:22/udp\n"
        "#127.0.0.5\n"
    )
    targets = parse_target_list(text)
    assert [t.text for t in targets] == ["127.0.0.1", "::1", "127.0.0.4/31", "127.0.0.9:22/udp"]


def test_target_list_error_names_source_and_line() -> None:
    with pytest.raises(TargetError) as info:
        parse_target_list("127.0.0.1\n# fine\n127.1\n", "hosts.txt")
    assert str(info.value).startswith("hosts.txt:3: target '127.1': ")


def test_read_target_list_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "hosts.txt"
    path.write_text("127.0.0.1\n[::1]:443\n", encoding="utf-8")
    assert [t.text for t in read_target_list(str(path))] == ["127.0.0.1", "[::1]:443"]
    stdin = io.StringIO("127.0.0.3 # from a pipe\n")
    assert [t.text for t in read_target_list("-", stdin=stdin)] == ["127.0.0.3"]
    with pytest.raises(TargetError, match="<stdin>:1: "):
        read_target_list("-", stdin=io.StringIO("0x7f.0.0.1\n"))
    with pytest.raises(TargetError, match="cannot read target list"):
        read_target_list(str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- policy


def check(policy: TargetPolicy, text: str) -> str:
    checked = check_targets([parse_target(text)], policy)
    return str(checked[0].address)


def test_brief_policy_examples() -> None:
    assert check(POLICY, "127.0.0.3") == "127.0.0.3"
    with pytest.raises(TargetError, match=re.escape("127.0.0.2 is denied by deny 127.0.0.2/32")):
        check(POLICY, "127.0.0.2:22")
    with pytest.raises(TargetError) as info:
        check(POLICY, "::ffff:127.0.0.2")
    assert str(info.value) == (
        "target '::ffff:127.0.0.2': ::ffff:127.0.0.2 (IPv4 127.0.0.2) "
        "is denied by deny 127.0.0.2/32"
    )
    with pytest.raises(TargetError, match=re.escape("is denied by deny 127.0.0.2/32")):
        check(POLICY, "127.0.0.2")
    for spelling in ("0x7f.0.0.2", "2130706434"):
        with pytest.raises(TargetError, match="is not a valid IPv4 address"):
            check(POLICY, spelling)


@pytest.mark.parametrize(
    ("text", "embedded"),
    [
        ("::ffff:127.0.0.3", "127.0.0.3"),
        ("64:ff9b::127.0.0.3", "127.0.0.3"),
        ("64:ff9b::7f00:3", "127.0.0.3"),
        ("2002:7f00:3::1", "127.0.0.3"),
        (TEREDO_127_0_0_3, "127.0.0.3"),
    ],
)
def test_embedded_ipv4_is_checked_and_dialled(text: str, embedded: str) -> None:
    address = parse_address(text)
    assert embedded_ipv4(address) == V4(embedded)
    assert canonical_address(address) == V4(embedded)
    assert check(POLICY, text) == embedded
    denied = TargetPolicy(allow=["127.0.0.0/8"], deny=[embedded])
    with pytest.raises(TargetError, match=f"\\(IPv4 {embedded}\\) is denied"):
        check(denied, text)


def test_embedded_ipv4_of_a_private_address_is_refused() -> None:
    for text in ("::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1"):
        with pytest.raises(TargetError, match=r"\(IPv4 10.0.0.1\) is outside the allowed"):
            check(TargetPolicy(), text)


def test_plain_ipv6_is_not_canonicalised() -> None:
    assert embedded_ipv4(V6("::1")) is None
    assert embedded_ipv4(V4("127.0.0.1")) is None
    assert canonical_address(V6("fd00::1")) == V6("fd00::1")


def test_default_policy_is_loopback_only() -> None:
    policy = TargetPolicy()
    assert check(policy, "127.255.255.254") == "127.255.255.254"
    assert check(policy, "::1") == "::1"
    for text in ("10.0.0.1", "192.0.2.10", "8.8.8.8", "::2", "fd00::1", "0.0.0.0", "::"):
        with pytest.raises(TargetError) as info:
            check(policy, text)
        assert str(info.value).endswith("is outside the allowed networks (127.0.0.0/8, ::1/128)"), (
            text
        )


def test_deny_wins_and_matches_the_address_as_written() -> None:
    policy = TargetPolicy(allow=["127.0.0.0/8", "::/0"], deny=["2002::/16"])
    assert check(policy, "::ffff:127.0.0.3") == "127.0.0.3"
    with pytest.raises(TargetError, match="denied by deny 2002::/16"):
        check(policy, "2002:7f00:3::1")


def test_policy_networks_in_mapped_form_are_canonicalised() -> None:
    policy = TargetPolicy(allow=["::ffff:127.0.0.0/104"], deny=["::ffff:127.0.0.2/128"])
    assert policy.allow == (ipaddress.ip_network("127.0.0.0/8"),)
    assert policy.deny == (ipaddress.ip_network("127.0.0.2/32"),)
    assert check(policy, "127.0.0.3") == "127.0.0.3"
    with pytest.raises(TargetError, match="denied"):
        check(policy, "127.0.0.2")


def test_bad_policy_networks() -> None:
    with pytest.raises(TargetError, match=re.escape("bad allow network '127.0.0.1/8'")):
        TargetPolicy(allow=["127.0.0.1/8"])
    with pytest.raises(TargetError, match="bad deny network"):
        TargetPolicy(deny=["not-a-net"])
    with pytest.raises(ValueError, match="max_cidr_addresses"):
        TargetPolicy(max_cidr_addresses=0)


def test_empty_allow_refuses_everything() -> None:
    with pytest.raises(TargetError, match=r"outside the allowed networks \(none\)"):
        check(TargetPolicy(allow=[]), "127.0.0.1")


def test_cidr_is_refused_if_any_address_is_outside() -> None:
    targets = [parse_target("127.0.0.0/30")]
    with pytest.raises(TargetError) as info:
        check_targets(targets, POLICY)
    assert str(info.value) == "target '127.0.0.0/30': 127.0.0.2 is denied by deny 127.0.0.2/32"
    with pytest.raises(TargetError) as info:
        check_targets([parse_target("126.255.255.254/31")], POLICY)
    assert str(info.value) == (
        "target '126.255.255.254/31': 126.255.255.254 is outside the allowed networks (127.0.0.0/8)"
    )
    narrow = TargetPolicy(allow=["127.0.0.0/31", "::1/128"])
    with pytest.raises(TargetError, match=re.escape("127.0.0.2 is outside the allowed networks")):
        check_targets([parse_target("127.0.0.0/30")], narrow)
    assert len(check_targets([parse_target("127.0.0.4/30")], POLICY)) == 1


def test_mapped_cidr_is_checked_per_embedded_address() -> None:
    with pytest.raises(TargetError, match=r"\(IPv4 127.0.0.2\) is denied"):
        check_targets([parse_target("::ffff:127.0.0.0/126")], POLICY)
    with pytest.raises(TargetError, match=r"\(IPv4 10.0.0.0\) is outside"):
        check_targets([parse_target("2002:a00::/126")], TargetPolicy())


def test_cidr_size_cap() -> None:
    assert DEFAULT_MAX_CIDR_ADDRESSES == 65536
    policy = TargetPolicy()
    assert check_targets([parse_target("127.0.0.0/16")], policy)
    with pytest.raises(TargetError) as info:
        check_targets([parse_target("127.0.0.0/15")], policy)
    assert str(info.value) == (
        "target '127.0.0.0/15': 127.0.0.0/15 has 131072 addresses, more than the limit of 65536"
    )
    small = TargetPolicy(max_cidr_addresses=4)
    assert check_targets([parse_target("127.0.0.0/30")], small)
    with pytest.raises(TargetError, match="has 8 addresses, more than the limit of 4"):
        check_targets([parse_target("127.0.0.0/29")], small)
    with pytest.raises(TargetError, match="more than the limit"):
        check_targets([parse_target("::/0")], TargetPolicy(allow=["::/0"]))


# --------------------------------------------------------------------------- resolution


def test_hostname_resolving_outside_is_refused_and_never_dialled() -> None:
    resolver = FakeResolver({"db1.example": ["10.0.0.1"]})
    dialled: list[PortTask] = []

    def scan_port(task: PortTask) -> Deferred[Result]:
        dialled.append(task)
        return succeed({"host": task.address})

    clock = Clock()
    scheduler = Scheduler(clock, scan_port, lambda result: None)
    d = plan_tasks(["db1.example"], POLICY, resolver, {"tcp": [22]})
    d.addCallback(scheduler.run)
    error = failure_of(d).value
    assert isinstance(error, TargetError)
    assert str(error) == (
        "target 'db1.example' (resolved to 10.0.0.1): 10.0.0.1 is outside the allowed "
        "networks (127.0.0.0/8)"
    )
    assert resolver.asked == ["db1.example"]
    assert dialled == []
    assert not clock.getDelayedCalls()


def test_hostname_checked_address_is_the_dialled_address() -> None:
    # 127.0.0.2 is denied, but it is not dialled: only listed as another address
    resolver = FakeResolver({"svc.test": ["127.0.0.3", "127.0.0.2"]})
    tasks = result_of(plan_tasks(["svc.test"], POLICY, resolver, {"tcp": [22, 80]}))
    assert tasks == [
        PortTask("127.0.0.3", 22, "tcp", "svc.test", ("127.0.0.2",)),
        PortTask("127.0.0.3", 80, "tcp", "svc.test", ("127.0.0.2",)),
    ]


def test_hostname_first_address_denied() -> None:
    resolver = FakeResolver({"svc.test": ["::1", "127.0.0.2", "127.0.0.3"]})
    d = plan_tasks(["svc.test"], POLICY, resolver, {"tcp": [22]})
    assert str(failure_of(d).value) == (
        "target 'svc.test' (resolved to 127.0.0.2): 127.0.0.2 is denied by deny 127.0.0.2/32"
    )


# Nmap's choice (NetBlockHostname::resolve, TargetGroup.cc): the name is looked up for any
# family; its first address of the scan's family (IPv4: vscan has no -6) is scanned, every
# other address, either family, in the resolver's order, is "not scanned".


def test_hostname_ipv6_first_dials_the_first_ipv4_address() -> None:
    # Debian 13's getaddrinfo("localhost"): ::1 before 127.0.0.1
    resolver = FakeResolver({"localhost": ["::1", "127.0.0.1"]})
    tasks = result_of(plan_tasks(["localhost"], POLICY, resolver, {"tcp": [22]}))
    assert tasks == [PortTask("127.0.0.1", 22, "tcp", "localhost", ("::1",))]


def test_hostname_other_addresses_keep_the_resolver_order() -> None:
    answers = ["fe80::1%eth0", "127.0.0.5", "::1", "127.0.0.6", "::ffff:127.0.0.9", "127.0.0.5"]
    resolver = FakeResolver({"many.test": answers})
    tasks = result_of(plan_tasks(["many.test"], POLICY, resolver, {"tcp": [22]}))
    # written as inet_ntop writes them (Nmap's inet_ntop_ez): no IPv6 zone
    assert tasks == [
        PortTask(
            "127.0.0.5",
            22,
            "tcp",
            "many.test",
            ("fe80::1", "::1", "127.0.0.6", "::ffff:127.0.0.9", "127.0.0.5"),
        )
    ]


def test_hostname_ipv4_only_has_no_other_addresses() -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    tasks = result_of(plan_tasks(["localhost"], POLICY, resolver, {"tcp": [22]}))
    assert tasks == [PortTask("127.0.0.1", 22, "tcp", "localhost")]
    assert tasks[0].other_addresses == ()


def test_hostname_without_ipv4_is_refused() -> None:
    resolver = FakeResolver({"ip6-localhost": ["::1", "fe80::1%lo"]})
    d = plan_tasks(["ip6-localhost"], POLICY_V6, resolver, {"tcp": [22]})
    assert str(failure_of(d).value) == (
        "target 'ip6-localhost': 'ip6-localhost' resolves, but not to any IPv4 address "
        "(::1, fe80::1); vscan scans a name's IPv4 address, as Nmap does without -6; "
        "give the IPv6 address itself to scan it"
    )


def test_hostname_other_addresses_are_not_checked() -> None:
    # outside the policy and never dialled: the IPv4 address alone is checked
    resolver = FakeResolver({"svc.test": ["2001:db8::1", "127.0.0.3", "10.0.0.1"]})
    tasks = result_of(plan_tasks(["svc.test"], POLICY, resolver, {"tcp": [22]}))
    assert [(t.address, t.other_addresses) for t in tasks] == [
        ("127.0.0.3", ("2001:db8::1", "10.0.0.1"))
    ]
    resolver = FakeResolver({"svc.test": ["::1", "10.0.0.1", "127.0.0.3"]})
    d = plan_tasks(["svc.test"], POLICY_V6, resolver, {"tcp": [22]})
    assert "(resolved to 10.0.0.1): 10.0.0.1 is outside the allowed" in str(failure_of(d).value)


def test_hostname_embedding_ipv4_is_ipv6_for_the_choice() -> None:
    # an IPv4-mapped answer is an IPv6 (AF_INET6) answer: not the one scanned
    resolver = FakeResolver({"svc.test": ["::ffff:127.0.0.2", "127.0.0.3"]})
    tasks = result_of(plan_tasks(["svc.test"], POLICY, resolver, {"tcp": [22]}))
    assert tasks == [PortTask("127.0.0.3", 22, "tcp", "svc.test", ("::ffff:127.0.0.2",))]


def test_hostname_endpoint_and_repeated_names_share_the_choice() -> None:
    resolver = FakeResolver({"localhost": ["::1", "127.0.0.1"]})
    targets = ["localhost:8080", "127.0.0.1", "localhost"]
    tasks = result_of(plan_tasks(targets, POLICY, resolver, {"tcp": [22]}))
    assert resolver.asked == ["localhost"]
    assert tasks == [
        PortTask("127.0.0.1", 22, "tcp", "localhost", ("::1",)),
        PortTask("127.0.0.1", 8080, "tcp", "localhost", ("::1",)),
    ]
    # a literal first: the name given later still names the host, with its others
    tasks = result_of(plan_tasks(["127.0.0.1", "localhost"], POLICY, resolver, {"tcp": [22]}))
    assert tasks == [PortTask("127.0.0.1", 22, "tcp", "localhost", ("::1",))]


def test_choose_address_by_family() -> None:
    answers = ["::1", "127.0.0.1", "::2", "127.0.0.2"]
    four = choose_address("x.test", answers, "target 'x.test'")
    assert (four.scanned, four.others) == (V4("127.0.0.1"), (V6("::1"), V6("::2"), V4("127.0.0.2")))
    six = choose_address("x.test", answers, "target 'x.test'", family=6)
    assert (six.scanned, six.others) == (V6("::1"), (V4("127.0.0.1"), V6("::2"), V4("127.0.0.2")))
    with pytest.raises(TargetError, match="resolves, but not to any IPv6 address"):
        choose_address("x.test", ["127.0.0.1"], "target 'x.test'", family=6)
    with pytest.raises(TargetError, match="resolves to no address"):
        choose_address("x.test", [], "target 'x.test'")
    # every answer is read strictly, not only the one scanned
    with pytest.raises(TargetError, match=re.escape("resolver answer '0x7f.0.0.3'")):
        choose_address("x.test", ["127.0.0.1", "0x7f.0.0.3"], "target 'x.test'")


def test_ntop_is_inet_ntop() -> None:
    for text in ["127.0.0.1", "::1", "::ffff:127.0.0.2", "2001:db8::1:0:0:1", "64:ff9b::7f00:7"]:
        family = socket.AF_INET6 if ":" in text else socket.AF_INET
        expected = socket.inet_ntop(family, socket.inet_pton(family, text))
        assert ntop(parse_address(text)) == expected
    assert ntop(parse_address("fe80::1%eth0")) == "fe80::1"


def test_each_name_is_resolved_once() -> None:
    resolver = FakeResolver({"svc.test": ["127.0.0.3"]})
    targets = ["svc.test", "svc.test:8080", "svc.test:53/udp", "127.0.0.4"]
    tasks = result_of(plan_tasks(targets, POLICY, resolver, {"tcp": [22]}))
    assert resolver.asked == ["svc.test"]
    assert tasks == [
        PortTask("127.0.0.3", 22, "tcp", "svc.test"),
        PortTask("127.0.0.3", 8080, "tcp", "svc.test"),
        PortTask("127.0.0.3", 53, "udp", "svc.test"),
        PortTask("127.0.0.4", 22, "tcp", None),
    ]


def test_refused_literal_costs_no_lookup() -> None:
    resolver = FakeResolver({"svc.test": ["127.0.0.3"]})
    d = plan_tasks(["svc.test", "10.1.2.3"], POLICY, resolver, {"tcp": [22]})
    assert "target '10.1.2.3'" in str(failure_of(d).value)
    assert resolver.asked == []


def test_resolver_failures_become_target_errors() -> None:
    resolver = FakeResolver({"empty.test": []})
    d = plan_tasks(["missing.test"], POLICY, resolver, {"tcp": [22]})
    assert str(failure_of(d).value) == (
        "target 'missing.test': cannot resolve 'missing.test': "
        "[Errno -2] Name or service not known: missing.test"
    )
    d = plan_tasks(["empty.test"], POLICY, resolver, {"tcp": [22]})
    assert "resolves to no address" in str(failure_of(d).value)

    def raising(name: str) -> list[str]:
        raise OSError("resolver exploded")

    d = plan_tasks(["any.test"], POLICY, raising, {"tcp": [22]})
    assert "cannot resolve 'any.test': resolver exploded" in str(failure_of(d).value)


def test_resolver_answer_is_parsed_strictly() -> None:
    resolver = FakeResolver({"odd.test": ["0x7f.0.0.3"]})
    d = plan_tasks(["odd.test"], POLICY, resolver, {"tcp": [22]})
    assert "resolver answer '0x7f.0.0.3'" in str(failure_of(d).value)


def test_sync_and_late_resolvers() -> None:
    def sync(name: str) -> list[str]:
        return ["127.0.0.9"]

    tasks = result_of(plan_tasks(["a.test"], POLICY, sync, {"tcp": [1]}))
    assert tasks == [PortTask("127.0.0.9", 1, "tcp", "a.test")]

    pending: dict[str, Deferred[list[str]]] = {}

    def late(name: str) -> Deferred[list[str]]:
        pending[name] = Deferred()
        return pending[name]

    d = plan_tasks(["a.test", "b.test"], POLICY, late, {"tcp": [1]})
    assert not d.called
    # b answers with a refused address first; a's error-free answer comes later
    pending["b.test"].callback(["10.0.0.1"])
    assert not d.called
    pending["a.test"].callback(["127.0.0.9"])
    assert "target 'b.test' (resolved to 10.0.0.1)" in str(failure_of(d).value)


def test_resolve_targets_returns_dialled_addresses() -> None:
    resolver = FakeResolver({"svc.test": ["64:ff9b::7f00:8", "127.0.0.7"]})
    targets = [parse_target("svc.test"), parse_target("::1")]
    checked = result_of(resolve_targets(targets, POLICY_V6, resolver))
    assert [(str(c.address), c.hostname, c.other_addresses) for c in checked] == [
        ("127.0.0.7", "svc.test", (V6("64:ff9b::7f00:8"),)),
        ("::1", None, ()),
    ]


POLICY_V6 = TargetPolicy(allow=["127.0.0.0/8", "::1/128"], deny=["127.0.0.2"])


class _SyncThreadPool:
    def callInThreadWithCallback(
        self, on_result: Callable[[bool, object], None], f: Callable[..., object], *args: object
    ) -> None:
        try:
            value = f(*args)
        except BaseException as e:
            on_result(False, Failure(e))
        else:
            on_result(True, value)


class _SyncThreadsReactor:
    """Enough of IReactorThreads for deferToThreadPool, run inline."""

    def getThreadPool(self) -> _SyncThreadPool:
        return _SyncThreadPool()

    def callFromThread(self, f: Callable[..., object], *args: object, **kw: object) -> None:
        f(*args, **kw)


def test_system_resolver_numeric_name() -> None:
    # a numeric name: getaddrinfo answers without any DNS query
    resolve = system_resolver(_SyncThreadsReactor())  # type: ignore[arg-type]
    assert result_of(resolve("127.0.0.1")) == ["127.0.0.1"]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tasks


def test_cidr_expansion() -> None:
    tasks = result_of(plan_tasks(["127.0.0.4/30"], POLICY, no_resolver, {"tcp": [22]}))
    assert [t.address for t in tasks] == ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"]
    tasks = result_of(plan_tasks(["::1/128"], TargetPolicy(), no_resolver, {"tcp": [22]}))
    assert tasks == [PortTask("::1", 22, "tcp", None)]
    mapped = result_of(plan_tasks(["::ffff:127.0.0.4/127"], POLICY, no_resolver, {"tcp": [7]}))
    assert [t.address for t in mapped] == ["127.0.0.4", "127.0.0.5"]
    teredo = result_of(plan_tasks([TEREDO_127_0_0_3 + "/128"], POLICY, no_resolver, {"tcp": [7]}))
    assert [t.address for t in teredo] == ["127.0.0.3"]


def test_endpoints_skip_port_selection() -> None:
    targets = ["127.0.0.1:22", "[::1]:443", "127.0.0.1:53/udp", "[::1]:53/udp"]
    tasks = result_of(plan_tasks(targets, TargetPolicy(), no_resolver, {"tcp": [80, 8080]}))
    assert tasks == [
        PortTask("127.0.0.1", 22, "tcp"),
        PortTask("127.0.0.1", 53, "udp"),
        PortTask("::1", 443, "tcp"),
        PortTask("::1", 53, "udp"),
    ]


def test_tasks_are_deduplicated_and_ordered() -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    targets = [
        "::1",
        "127.0.0.10",
        "127.0.0.1:80/udp",
        "127.0.0.0/31",
        "127.0.0.1:22",
        "localhost",
        "127.0.0.1:9999",
        "127.0.0.2:22",
    ]
    policy = TargetPolicy(max_cidr_addresses=256)
    tasks = result_of(
        plan_tasks(targets, policy, resolver, {"tcp": [80, 22], "udp": [53, 53]}),
    )
    assert [(t.address, t.protocol, t.port, t.hostname) for t in tasks] == [
        ("127.0.0.0", "tcp", 22, None),
        ("127.0.0.0", "tcp", 80, None),
        ("127.0.0.0", "udp", 53, None),
        ("127.0.0.1", "tcp", 22, "localhost"),
        ("127.0.0.1", "tcp", 80, "localhost"),
        ("127.0.0.1", "tcp", 9999, "localhost"),
        ("127.0.0.1", "udp", 53, "localhost"),
        ("127.0.0.1", "udp", 80, "localhost"),
        ("127.0.0.2", "tcp", 22, None),
        ("127.0.0.10", "tcp", 22, None),
        ("127.0.0.10", "tcp", 80, None),
        ("127.0.0.10", "udp", 53, None),
        ("::1", "tcp", 22, None),
        ("::1", "tcp", 80, None),
        ("::1", "udp", 53, None),
    ]
    assert len(set(tasks)) == len(tasks)


def test_iter_tasks_is_lazy_and_shares_port_lists() -> None:
    checked = check_targets([parse_target("127.0.0.0/16")], TargetPolicy())
    ports = {"tcp": list(range(1, 1001))}
    tasks = iter_tasks(checked, ports)
    first = [next(tasks) for _ in range(3)]
    assert first == [PortTask("127.0.0.0", p) for p in (1, 2, 3)]
    assert build_tasks(check_targets([parse_target("127.0.0.1")], TargetPolicy()), {}) == []


# --------------------------------------------------------------------------- ports

SERVICES = parse_services(
    "ssh\t22/tcp\t0.18\n"
    "http\t80/tcp\t0.48\n"
    "telnet\t23/tcp\t0.22\n"
    "domain\t53/udp\t0.21\n"
    "domain\t53/tcp\t0.04\n"
    "sctp-thing\t9/sctp\t0.5\n"
)


def test_select_ports() -> None:
    assert select_ports(None, SERVICES, top=2) == {"tcp": [23, 80]}
    assert select_ports("22,80-81", SERVICES) == {"tcp": [22, 80, 81]}
    assert select_ports("T:22,U:53") == {"tcp": [22], "udp": [53]}
    assert select_ports("22,U:53", protocols=("tcp", "udp")) == {"tcp": [22], "udp": [22, 53]}
    assert select_ports("ssh,U:domain", SERVICES) == {"tcp": [22], "udp": [53]}
    with pytest.raises(PortSpecError, match="SCTP ports are not supported"):
        select_ports("S:9", SERVICES)
    with pytest.raises(PortSpecError, match="out of range"):
        select_ports("70000", SERVICES)


def test_select_ports_default_is_top_1000_tcp() -> None:
    from vscand.ports import load_services

    try:
        services = load_services()
    except FileNotFoundError:
        pytest.skip("nmap-services is not installed")
    ports = select_ports(None, services)
    assert list(ports) == ["tcp"]
    assert len(ports["tcp"]) == 1000
    assert {22, 80, 443} <= set(ports["tcp"])
    assert ports["tcp"] == sorted(ports["tcp"])


# ---------------------------------------------------------------- nmap-services per release

NAMED_UNKNOWN = parse_services(
    "unknown\t914/tcp\t0.000075\n"  # Nmap 7.93's nmap-services names 914/tcp so
    "unknown\t55697/udp\t0.000000\n"
    "snmp\t161/udp\t0.433467\n"
    "unknown\t161/udp\t0.1\n"  # a second line for a port: ignored, the first wins
)


@pytest.mark.parametrize(
    ("release", "tcp_914", "udp_55697"), [("7.93", "unknown", "unknown"), ("7.95", None, None)]
)
def test_a_port_named_unknown_has_no_name_from_nmap_7_94(
    release: str, tcp_914: str | None, udp_55697: str | None
) -> None:
    """Nmap 7.94+ stores an nmap-services name ``unknown`` as NULL (services.cc,
    b7c76ea08): version detection's table answer has no name, as for an unlisted port."""
    table = NAMED_UNKNOWN.for_release(grammar_for(release))
    assert (table.name(914, "tcp"), table.name(55697, "udp")) == (tcp_914, udp_55697)
    assert table.name(161, "udp") == "snmp"
    assert table.name(7, "udp") is None
    # port lists by name still see it: addportsfromservmask reads NULL as "unknown"
    assert table.ports_named("unknown", "udp") == [55697]
    assert table.has_port(55697, "udp")


def test_for_release_keeps_the_table_when_nothing_changes() -> None:
    assert NAMED_UNKNOWN.for_release(grammar_for("7.93")) is NAMED_UNKNOWN
    later = NAMED_UNKNOWN.for_release(grammar_for("7.95"))
    assert later.for_release(grammar_for("7.991")) is later
    assert later.for_release(grammar_for("7.93")).name(914, "tcp") == "unknown"


def test_services_file_named_else_beside_the_probe_file_else_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vscand import ports

    installed = tmp_path / "usr-share-nmap" / "nmap-services"
    installed.parent.mkdir()
    installed.write_text("ssh\t22/tcp\t0.18\n")
    monkeypatch.setattr(ports, "DEFAULT_SERVICES_PATHS", (str(installed),))
    release = tmp_path / "root" / "usr" / "share" / "nmap"
    release.mkdir(parents=True)
    (release / "nmap-service-probes").write_text("")
    probes = str(release / "nmap-service-probes")
    # a probe file without nmap-services beside it: the installed table
    assert ports.find_services_file(None, probes) == str(installed)
    (release / "nmap-services").write_text("rift-lies\t914/tcp\t0.000075\n")
    assert ports.find_services_file(None, probes) == str(release / "nmap-services")
    assert ports.load_services(probes_file=probes).name(914, "tcp") == "rift-lies"
    assert ports.find_services_file(str(installed), probes) == str(installed), "named wins"
    assert ports.find_services_file() == str(installed)
    with pytest.raises(FileNotFoundError, match=r"nmap-services file .*missing not found"):
        ports.find_services_file(str(tmp_path / "missing"))
    monkeypatch.setattr(ports, "DEFAULT_SERVICES_PATHS", ())
    with pytest.raises(FileNotFoundError, match="set services_file"):
        ports.find_services_file()


def test_the_default_policy_is_the_packages_data_file() -> None:
    """vscand/data/targets.conf is where the defaults live: loopback allowed, no
    exclusions; the daemon's configuration and ``vscan scan`` start from it."""
    from vscand.config import DaemonConfig
    from vscand.targets.defaults import DEFAULT_ALLOW, DEFAULT_DENY

    assert (DEFAULT_ALLOW, DEFAULT_DENY) == (("127.0.0.0/8", "::1/128"), ())
    assert (DaemonConfig().allow, DaemonConfig().deny) == (DEFAULT_ALLOW, DEFAULT_DENY)
    policy = TargetPolicy()
    assert str(policy.check_address(ipaddress.ip_address("127.0.0.9"))) == "127.0.0.9"
    assert str(policy.check_address(ipaddress.ip_address("::1"))) == "::1"
    with pytest.raises(TargetError, match="outside the allowed networks"):
        policy.check_address(ipaddress.ip_address("192.0.2.1"))
