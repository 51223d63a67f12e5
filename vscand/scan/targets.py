"""TARGET strings → :class:`~vscand.scan.model.PortTask`\\ s, behind an allow/deny policy.

Everything here is pure except name resolution, which goes through an injected
*resolver* (a callable ``name -> Deferred[list[str]]`` or ``name -> list[str]``);
:func:`system_resolver` builds the default one on a reactor's thread pool.

The pipeline, as :func:`plan_tasks` runs it:

1. :func:`parse_target` turns each TARGET string into a :class:`Target`: an IPv4 or
   IPv6 address, a CIDR network, a hostname, or a ``HOST:PORT[/udp]`` endpoint.
   Parsing is strict: IPv4 is four decimal octets without leading zeros; the
   spellings ``inet_aton`` would accept (``0x7f.0.0.1``, ``2130706433``, ``127.1``,
   ``0127.0.0.1``) are refused rather than guessed, and never sent to a resolver.
2. :func:`check_targets` applies the :class:`TargetPolicy`. IPv6 addresses that
   embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64 ``64:ff9b::/96``) are
   canonicalised to that IPv4 address, which is both the address checked and the
   address dialled. Hostnames are resolved once and chosen from as Nmap does
   (:func:`choose_address`): the first answer of the scan's family (IPv4: vscan has
   no ``-6``) is checked and dialled; every other answer, of either family and in
   the resolver's order, is kept as the target's other (unscanned) addresses, which
   the normal output lists ("Other addresses for NAME (not scanned): ...").
3. :func:`iter_tasks` yields one task per (address, protocol, port), deduplicated,
   ordered by address (IPv4 first), then tcp before udp, then port.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from vscand.ports import PortSpecError, ServicesTable, load_services, parse_port_spec
from vscand.scan.model import PortTask, Protocol

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: name -> its addresses, as text, best first (synchronously or as a Deferred)
Resolver: TypeAlias = Callable[[str], "Deferred[list[str]] | list[str]"]

#: the family a hostname is scanned in. Nmap scans a name's first IPv4 address unless
#: given ``-6``; vscan has no ``-6`` (nor a job field for it), so a name is scanned over
#: IPv4. IPv6 is scanned when the target is an IPv6 address or network.
HOSTNAME_FAMILY = 4
DEFAULT_ALLOW: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
DEFAULT_MAX_CIDR_ADDRESSES = 65536
DEFAULT_TOP_PORTS = 1000

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")
SIXTOFOUR_PREFIX = ipaddress.IPv6Network("2002::/16")
TEREDO_PREFIX = ipaddress.IPv6Network("2001::/32")
#: IPv6 ranges whose addresses carry an IPv4 address
EMBEDDING_PREFIXES = (IPV4_MAPPED_PREFIX, NAT64_PREFIX, SIXTOFOUR_PREFIX, TEREDO_PREFIX)

_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_BRACKETED = re.compile(r"\[([^\[\]]+)\](?::([^/]*)(?:/(.*))?)?")
_PROTO_PREFIX = re.compile(r"\b[TUSPtusp]:")
_NEEDS_SERVICES = re.compile(r"[A-Za-z*?\[]")
_PREFIX_LEN = re.compile(r"0|[1-9][0-9]{0,2}")


class TargetError(ValueError):
    """A TARGET that cannot be parsed, resolved, or is refused by the policy.

    The message is one line and names the target as the user wrote it.
    """


@dataclass(frozen=True)
class Target:
    """One parsed TARGET string.

    Exactly one of ``address``, ``network`` and ``hostname`` is set. ``port`` is
    set for ``HOST:PORT[/udp]`` endpoints, which skip port selection.
    """

    text: str
    address: IPAddress | None = None
    network: IPNetwork | None = None
    hostname: str | None = None
    port: int | None = None
    protocol: Protocol = "tcp"

    @property
    def is_endpoint(self) -> bool:
        return self.port is not None


@dataclass(frozen=True)
class CheckedTarget:
    """A target that passed the policy: the address (or network) to dial."""

    target: Target
    address: IPAddress | None = None
    network: IPNetwork | None = None
    #: the name the user gave (output, TLS SNI); None for literals
    hostname: str | None = None
    #: the name's other addresses, not scanned (Nmap's ``unscanned_addrs``), in the
    #: resolver's order; empty for literals
    other_addresses: tuple[IPAddress, ...] = ()

    def addresses(self) -> Iterator[IPAddress]:
        """The addresses to dial: the address, or each address of the network, canonical."""
        if self.network is None:
            assert self.address is not None
            yield self.address
        elif isinstance(self.network, ipaddress.IPv6Network) and any(
            self.network.overlaps(prefix) for prefix in EMBEDDING_PREFIXES
        ):
            yield from map(canonical_address, self.network)
        else:
            yield from self.network


# --------------------------------------------------------------------------- parsing


def _label(text: str) -> str:
    return f"target {text!r}"


def _numeric_spelling(host: str) -> bool:
    """True if ``inet_aton`` (hence a system resolver) would read *host* as IPv4."""
    labels = host.removesuffix(".").split(".")
    return all(_NUMERIC_LABEL.fullmatch(label) for label in labels)


def parse_ipv4(text: str, label: str | None = None) -> ipaddress.IPv4Address:
    """Four decimal octets, no leading zeros; anything else is a TargetError."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise TargetError(
            f"{label or _label(text)}: {text!r} is not a valid IPv4 address "
            "(write four decimal octets without leading zeros, e.g. 127.0.0.1)"
        ) from None


def parse_address(text: str, label: str | None = None) -> IPAddress:
    """A strict IPv4 or IPv6 literal (an IPv6 zone ``%eth0`` is accepted)."""
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError as e:
            raise TargetError(f"{label or _label(text)}: bad IPv6 address: {e}") from None
    return parse_ipv4(text, label)


def _parse_network(text: str, label: str) -> IPNetwork:
    address_text, _, prefix = text.partition("/")
    if not _PREFIX_LEN.fullmatch(prefix):
        raise TargetError(f"{label}: bad prefix length {prefix!r} (CIDR is ADDRESS/BITS)")
    address = parse_address(address_text, label)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise TargetError(f"{label}: a network cannot carry a zone (%{address.scope_id})")
    try:
        # host bits may be set, as Nmap allows: 127.0.0.5/30 is 127.0.0.4/30
        return ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    except ValueError as e:
        raise TargetError(f"{label}: bad network: {e}") from None


def _check_hostname(host: str, label: str) -> str:
    if _numeric_spelling(host):
        raise TargetError(
            f"{label}: {host!r} is not a valid IPv4 address (write four decimal octets "
            "without leading zeros, e.g. 127.0.0.1; octal, hex and short forms are refused)"
        )
    if not host.isascii():
        raise TargetError(f"{label}: hostname {host!r} is not ASCII (use its xn-- form)")
    name = host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(part) for part in labels):
        raise TargetError(f"{label}: {host!r} is not a valid hostname or address")
    if labels[-1].isdigit():
        raise TargetError(f"{label}: {host!r} is not a valid hostname (numeric last label)")
    return host


def _parse_port(text: str, label: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise TargetError(f"{label}: bad port {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"{label}: port {port} is out of range (1-65535)")
    return port


def _parse_protocol(text: str | None, label: str) -> Protocol:
    if text is None:
        return "tcp"
    lowered = text.lower()
    if lowered == "tcp":
        return "tcp"
    if lowered == "udp":
        return "udp"
    raise TargetError(f"{label}: bad protocol {text!r} (tcp or udp)")


def _host(text: str, label: str) -> tuple[IPAddress | None, str | None]:
    """An address literal or a hostname (never a network)."""
    if ":" in text:
        return parse_address(text, label), None
    try:
        return ipaddress.IPv4Address(text), None
    except ValueError:
        return None, _check_hostname(text, label)


def parse_target(text: str) -> Target:
    """Parse one TARGET: address, CIDR, hostname or ``HOST:PORT[/udp]`` endpoint.

    >>> parse_target("[::1]:443/udp").protocol
    'udp'
    """
    raw = text.strip()
    label = _label(raw)
    if not raw:
        raise TargetError("empty target")
    if any(ch.isspace() for ch in raw):
        raise TargetError(f"{label}: whitespace inside a target")
    if raw.startswith("["):
        m = _BRACKETED.fullmatch(raw)
        if m is None:
            raise TargetError(f"{label}: bad bracketed address (write [IPV6]:PORT[/udp])")
        inner, port_text, proto_text = m.groups()
        if ":" not in inner:
            raise TargetError(f"{label}: brackets are for IPv6 addresses")
        literal = parse_address(inner, label)
        if port_text is None:
            return Target(raw, address=literal)
        port = _parse_port(port_text, label)
        return Target(raw, address=literal, port=port, protocol=_parse_protocol(proto_text, label))
    colons = raw.count(":")
    if colons == 1:
        host_text, rest = raw.split(":")
        port_text, slash, proto_text = rest.partition("/")
        if not host_text:
            raise TargetError(f"{label}: missing host before ':'")
        if "/" in host_text:
            raise TargetError(f"{label}: an endpoint names one host, not a network")
        host_address, hostname = _host(host_text, label)
        return Target(
            raw,
            address=host_address,
            hostname=hostname,
            port=_parse_port(port_text, label),
            protocol=_parse_protocol(proto_text if slash else None, label),
        )
    if "/" in raw:
        if colons == 0 and not _numeric_spelling(raw.partition("/")[0]):
            raise TargetError(f"{label}: a network must be an address/bits, not a hostname")
        return Target(raw, network=_parse_network(raw, label))
    address, hostname = _host(raw, label)
    return Target(raw, address=address, hostname=hostname)


def parse_targets(texts: Iterable[str]) -> list[Target]:
    return [parse_target(text) for text in texts]


def parse_target_list(text: str, source: str = "-iL") -> list[Target]:
    """An ``-iL`` file's text: targets separated by whitespace, ``#`` starts a comment.

    Nmap's ``-iL`` reads the same way (one per line is the usual layout). An
    error names *source* and the line: ``hosts.txt:3: target '127.1': ...``.
    """
    targets = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            try:
                targets.append(parse_target(word))
            except TargetError as e:
                raise TargetError(f"{source}:{number}: {e}") from None
    return targets


def read_target_list(path: str, stdin: TextIO | None = None) -> list[Target]:
    """Read an ``-iL FILE``; ``-`` reads *stdin* (default ``sys.stdin``)."""
    if path == "-":
        return parse_target_list((stdin or sys.stdin).read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"cannot read target list {path!r}: {e}") from None
    return parse_target_list(text, path)


# --------------------------------------------------------------------------- policy


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or Teredo address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        # (server, client): packets to a Teredo address end at the client
        return address.teredo[1]
    return None


def canonical_address(address: IPAddress) -> IPAddress:
    """The address to check and dial: the embedded IPv4 address if there is one."""
    embedded = embedded_ipv4(address)
    return embedded if embedded is not None else address


def _canonical_network(network: IPNetwork) -> IPNetwork:
    """IPv4-mapped and NAT64 networks of /96 or longer, as the IPv4 network they hold."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        for prefix in (IPV4_MAPPED_PREFIX, NAT64_PREFIX):
            if network.subnet_of(prefix):
                low = int(network.network_address) & 0xFFFFFFFF
                return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return network


def _policy_network(value: IPNetwork | str, kind: str) -> IPNetwork:
    if isinstance(value, str):
        try:
            value = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as e:
            raise TargetError(f"bad {kind} network {value!r}: {e}") from None
    return _canonical_network(value)


def _contains(networks: Sequence[IPNetwork], address: IPAddress) -> IPNetwork | None:
    for network in networks:
        if network.version == address.version and address in network:
            return network
    return None


def address_text(address: IPAddress) -> str:
    """``str(address)``, the same on every Python: an IPv4-mapped IPv6 address in its
    RFC 5952 form, ``::ffff:127.0.0.2`` (what Python 3.13 prints; 3.11 printed
    ``::ffff:7f00:2``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


class TargetPolicy:
    """Which addresses may be scanned: ``allow`` minus ``deny`` (deny wins).

    The default allows loopback only (``127.0.0.0/8``, ``::1/128``). An address
    is allowed when its canonical form (see :func:`canonical_address`) is in an
    allowed network and neither it nor the address as written is denied. A
    network target is allowed only if every address in it is, and only up to
    ``max_cidr_addresses`` addresses.
    """

    def __init__(
        self,
        allow: Iterable[IPNetwork | str] | None = None,
        deny: Iterable[IPNetwork | str] = (),
        max_cidr_addresses: int = DEFAULT_MAX_CIDR_ADDRESSES,
        allow_names: Iterable[str] = ("*",),
    ) -> None:
        """*allow_names*: shell patterns (``fnmatch``, case-insensitive) of the hostnames
        that may be resolved at all; a name matching none is refused before any lookup.
        The default here (``*``) is the command line's; the daemon's is ``localhost``."""
        allowed = DEFAULT_ALLOW if allow is None else allow
        self.allow_names: tuple[str, ...] = tuple(p.strip().lower() for p in allow_names)
        self.allow: tuple[IPNetwork, ...] = tuple(_policy_network(n, "allow") for n in allowed)
        self.deny: tuple[IPNetwork, ...] = tuple(_policy_network(n, "deny") for n in deny)
        if max_cidr_addresses < 1:
            raise ValueError("max_cidr_addresses must be at least 1")
        self.max_cidr_addresses = max_cidr_addresses

    def __repr__(self) -> str:
        allow = ", ".join(map(str, self.allow))
        deny = ", ".join(map(str, self.deny))
        return f"TargetPolicy(allow=[{allow}], deny=[{deny}])"

    def check_name(self, name: str, label: str | None = None) -> None:
        """Raise :class:`TargetError` unless *name* may be resolved (``allow_names``)."""
        folded = name.removesuffix(".").lower()
        if any(fnmatch.fnmatchcase(folded, pattern) for pattern in self.allow_names):
            return
        allowed = ", ".join(self.allow_names) or "none"
        raise TargetError(
            f"{label or _label(name)}: hostname {name!r} is not allowed (allow_names: {allowed}); "
            "names are resolved only when the daemon's policy allows them"
        )

    def _allowed_text(self) -> str:
        return ", ".join(map(str, self.allow)) or "none"

    def check_address(self, address: IPAddress, label: str | None = None) -> IPAddress:
        """Return the address to dial, or raise :class:`TargetError`."""
        label = label or _label(address_text(address))
        canonical = canonical_address(address)
        described = (
            address_text(address)
            if canonical == address
            else f"{address_text(address)} (IPv4 {canonical})"
        )
        for candidate in (canonical, address):
            denied = _contains(self.deny, candidate)
            if denied is not None:
                raise TargetError(f"{label}: {described} is denied by deny {denied}")
        if _contains(self.allow, canonical) is None:
            raise TargetError(
                f"{label}: {described} is outside the allowed networks ({self._allowed_text()})"
            )
        return canonical

    def check_network(self, network: IPNetwork, label: str | None = None) -> None:
        """Raise :class:`TargetError` unless every address of *network* is allowed."""
        label = label or _label(str(network))
        if network.num_addresses > self.max_cidr_addresses:
            raise TargetError(
                f"{label}: {network} has {network.num_addresses} addresses, more than the "
                f"limit of {self.max_cidr_addresses}"
            )
        embeds = isinstance(network, ipaddress.IPv6Network) and any(
            network.overlaps(prefix) for prefix in EMBEDDING_PREFIXES
        )
        if not embeds:
            same = [n for n in self.allow if n.version == network.version]
            inside = any(network.subnet_of(n) for n in same)  # type: ignore[arg-type]
            if inside and not any(
                network.overlaps(n) for n in self.deny if n.version == network.version
            ):
                return
        # slow path (bounded by max_cidr_addresses): find and name the first refused address
        for address in network:
            self.check_address(address, label)


# --------------------------------------------------------------------------- resolution


def ntop(address: IPAddress) -> str:
    """*address* as Nmap prints a name's other addresses: ``inet_ntop``'s text, which
    has no IPv6 zone (``inet_ntop_ez`` in nbase/nbase_misc.c)."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return socket.inet_ntop(socket.AF_INET6, address.packed)


@dataclass(frozen=True)
class NameAddresses:
    """A hostname's resolver answers, split as Nmap splits them."""

    #: the first answer of the scan's family: the address checked and dialled
    scanned: IPAddress
    #: every other answer, of either family, in the resolver's order (not scanned)
    others: tuple[IPAddress, ...]


def choose_address(
    name: str, answers: Sequence[str], label: str, family: int = HOSTNAME_FAMILY
) -> NameAddresses:
    """Nmap's choice among a name's addresses (``NetBlockHostname::resolve``,
    TargetGroup.cc): the first answer of *family* (4, or 6 under Nmap's ``-6``) is
    scanned, the rest are "Other addresses for NAME (not scanned)". A name with no
    answer of *family* is an error, as Nmap's "resolves, but not to any IPv4
    address" warning skips it. Every answer is parsed strictly.

    >>> choose_address("localhost", ["::1", "127.0.0.1"], "target 'localhost'")
    NameAddresses(scanned=IPv4Address('127.0.0.1'), others=(IPv6Address('::1'),))
    """
    if not answers:
        raise TargetError(f"{label}: {name!r} resolves to no address")
    parsed = [parse_address(a, f"{label} (resolver answer {a!r})") for a in answers]
    for index, address in enumerate(parsed):
        if address.version == family:
            return NameAddresses(address, tuple(parsed[:index] + parsed[index + 1 :]))
    found = ", ".join(map(ntop, parsed))
    if family == 4:
        hint = (
            "vscan scans a name's IPv4 address, as Nmap does without -6; "
            "give the IPv6 address itself to scan it"
        )
    else:
        hint = "give the IPv4 address itself to scan it"
    raise TargetError(
        f"{label}: {name!r} resolves, but not to any IPv{family} address ({found}); {hint}"
    )


def check_targets(
    targets: Sequence[Target],
    policy: TargetPolicy,
    resolved: Mapping[str, Sequence[str]] | None = None,
) -> list[CheckedTarget]:
    """Apply *policy*; *resolved* maps each hostname to its addresses, in the resolver's
    order. A name's address is chosen by :func:`choose_address`; that address, the one
    dialled, is the one checked."""
    checked = []
    for target in targets:
        label = _label(target.text)
        if target.network is not None:
            policy.check_network(target.network, label)
            network = _canonical_network(target.network)
            checked.append(CheckedTarget(target, network=network))
        elif target.address is not None:
            address = policy.check_address(target.address, label)
            checked.append(CheckedTarget(target, address=address))
        else:
            assert target.hostname is not None
            answers = (resolved or {}).get(target.hostname) or ()
            name = choose_address(target.hostname, answers, label)
            dialled = policy.check_address(name.scanned, f"{label} (resolved to {name.scanned})")
            checked.append(
                CheckedTarget(
                    target, address=dialled, hostname=target.hostname, other_addresses=name.others
                )
            )
    return checked


def resolve_targets(
    targets: Sequence[Target], policy: TargetPolicy, resolver: Resolver
) -> Deferred[list[CheckedTarget]]:
    """Check literals, resolve each distinct hostname once, then check those.

    Literal targets are checked before any name is looked up, so a refused
    literal costs no DNS query. Fails with :class:`TargetError`.
    """
    return Deferred.fromCoroutine(_resolve_targets(targets, policy, resolver))


async def _resolve_targets(
    targets: Sequence[Target], policy: TargetPolicy, resolver: Resolver
) -> list[CheckedTarget]:
    literals = iter(check_targets([t for t in targets if t.hostname is None], policy))
    names = list(dict.fromkeys(t.hostname for t in targets if t.hostname is not None))
    for name in names:
        policy.check_name(name)  # before any lookup: a refused name costs no DNS query
    resolved: dict[str, list[str]] = {}
    if names:
        lookups = [_lookup(resolver, name) for name in names]
        outcomes = await DeferredList(lookups, consumeErrors=True)
        for name, (ok, value) in zip(names, outcomes, strict=True):
            if not ok:
                assert isinstance(value, Failure)
                raise TargetError(
                    f"{_label(name)}: cannot resolve {name!r}: {value.getErrorMessage()}"
                )
            resolved[name] = list(value)
    named = iter(check_targets([t for t in targets if t.hostname is not None], policy, resolved))
    return [next(named if t.hostname is not None else literals) for t in targets]


def _lookup(resolver: Resolver, name: str) -> Deferred[list[str]]:
    try:
        answer = resolver(name)
    except Exception:
        return fail()
    return answer if isinstance(answer, Deferred) else succeed(answer)


def system_addresses(name: str) -> list[str]:
    """*name*'s addresses from ``getaddrinfo`` (any family, in its order): a blocking
    :data:`Resolver` (:func:`system_resolver` runs it off the reactor thread)."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_resolver(reactor: IReactorThreads) -> Resolver:
    """The system resolver (``getaddrinfo``) on *reactor*'s thread pool."""

    def resolve(name: str) -> Deferred[list[str]]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), system_addresses, name)

    return resolve


# --------------------------------------------------------------------------- ports and tasks


def select_ports(
    spec: str | None,
    services: ServicesTable | None = None,
    protocols: Sequence[str] = ("tcp",),
    top: int = DEFAULT_TOP_PORTS,
) -> dict[str, list[int]]:
    """Ports per protocol for ``-p SPEC``; default: the top *top* TCP ports.

    Unprefixed ports go to *protocols*; ``services`` is loaded when needed
    (service names, ``[...]``, the default).
    """
    if spec is None:
        return {"tcp": (services or load_services()).top_ports(top)}
    needs_table = _NEEDS_SERVICES.search(_PROTO_PREFIX.sub("", spec)) is not None
    table = services if services is not None or not needs_table else load_services()
    resolved = parse_port_spec(spec, table).resolved(tuple(protocols))
    if "sctp" in resolved:
        raise PortSpecError("SCTP ports are not supported (version detection is TCP and UDP)")
    out: dict[str, list[int]] = {}
    if "tcp" in resolved:
        out["tcp"] = resolved["tcp"]
    if "udp" in resolved:
        out["udp"] = resolved["udp"]
    return out


def _address_key(address: IPAddress) -> tuple[int, int, str]:
    scope = address.scope_id if isinstance(address, ipaddress.IPv6Address) else None
    return (address.version, int(address), scope or "")


class _HostPlan:
    __slots__ = ("hostname", "other_addresses", "tcp", "udp")

    def __init__(self, hostname: str | None, other_addresses: tuple[str, ...]) -> None:
        self.hostname = hostname
        self.other_addresses = other_addresses
        self.tcp: list[Sequence[int]] = []
        self.udp: list[Sequence[int]] = []

    def add(self, protocol: Protocol, ports: Sequence[int]) -> None:
        if ports:
            (self.tcp if protocol == "tcp" else self.udp).append(ports)

    @staticmethod
    def merged(sources: list[Sequence[int]]) -> Sequence[int]:
        if len(sources) == 1:
            return sources[0]
        return sorted(set().union(*sources))


def iter_tasks(
    checked: Iterable[CheckedTarget], ports: Mapping[str, Sequence[int]]
) -> Iterator[PortTask]:
    """Tasks for every address × *ports* (sorted lists) plus endpoints, deduplicated.

    Ordered by address (IPv4 first), then tcp before udp, then port. A host
    named twice keeps the first hostname given, and that name's other addresses
    (in :func:`ntop`'s text). Port lists are shared, not
    copied, so a /16 with default ports stays small until iterated.
    """
    hosts: dict[IPAddress, _HostPlan] = {}
    tcp = sorted(set(ports.get("tcp", ())))
    udp = sorted(set(ports.get("udp", ())))

    def plan(address: IPAddress, hostname: str | None, others: tuple[str, ...]) -> _HostPlan:
        found = hosts.get(address)
        if found is None:
            found = hosts[address] = _HostPlan(hostname, others)
        elif found.hostname is None:
            found.hostname = hostname
            found.other_addresses = others
        return found

    for item in checked:
        others = tuple(map(ntop, item.other_addresses))
        port = item.target.port
        if port is not None:
            assert item.address is not None
            plan(item.address, item.hostname, others).add(item.target.protocol, (port,))
            continue
        for address in item.addresses():
            host = plan(address, item.hostname, others)
            host.add("tcp", tcp)
            host.add("udp", udp)

    for address in sorted(hosts, key=_address_key):
        host = hosts[address]
        text = str(address)
        for protocol, sources in (("tcp", host.tcp), ("udp", host.udp)):
            if not sources:
                continue
            proto: Protocol = "tcp" if protocol == "tcp" else "udp"
            for port in _HostPlan.merged(sources):
                yield PortTask(text, port, proto, host.hostname, host.other_addresses)


def build_tasks(
    checked: Iterable[CheckedTarget], ports: Mapping[str, Sequence[int]]
) -> list[PortTask]:
    return list(iter_tasks(checked, ports))


def plan_tasks(
    targets: Iterable[str | Target],
    policy: TargetPolicy,
    resolver: Resolver,
    ports: Mapping[str, Sequence[int]],
) -> Deferred[list[PortTask]]:
    """Parse, resolve, check and expand: the tasks of a scan (fails with TargetError).

    *ports* applies to every target that is not an endpoint (see :func:`select_ports`).
    """
    return Deferred.fromCoroutine(_plan_tasks(targets, policy, resolver, ports))


async def _plan_tasks(
    targets: Iterable[str | Target],
    policy: TargetPolicy,
    resolver: Resolver,
    ports: Mapping[str, Sequence[int]],
) -> list[PortTask]:
    parsed = [t if isinstance(t, Target) else parse_target(t) for t in targets]
    checked = await resolve_targets(parsed, policy, resolver)
    return build_tasks(checked, ports)
