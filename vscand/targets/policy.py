"""Which addresses may be scanned: canonical addresses and the allow/deny :class:`TargetPolicy`.

IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64
``64:ff9b::/96``) are canonicalised to that IPv4 address, which is both the address
checked and the address dialled (:func:`canonical_address`). A :class:`CheckedTarget`
is a target that passed the policy.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from vscand.targets.defaults import DEFAULT_ALLOW, DEFAULT_DENY
from vscand.targets.parse import IPAddress, IPNetwork, Target, TargetError, target_label

DEFAULT_MAX_CIDR_ADDRESSES = 65536

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")
SIXTOFOUR_PREFIX = ipaddress.IPv6Network("2002::/16")
TEREDO_PREFIX = ipaddress.IPv6Network("2001::/32")
#: IPv6 ranges whose addresses carry an IPv4 address
EMBEDDING_PREFIXES = (IPV4_MAPPED_PREFIX, NAT64_PREFIX, SIXTOFOUR_PREFIX, TEREDO_PREFIX)


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


def canonical_network(network: IPNetwork) -> IPNetwork:
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
    return canonical_network(value)


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
        deny: Iterable[IPNetwork | str] = DEFAULT_DENY,
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
        where = label or target_label(name)
        raise TargetError(
            f"{where}: hostname {name!r} is not allowed (allow_names: {allowed}); "
            "names are resolved only when the daemon's policy allows them"
        )

    def _allowed_text(self) -> str:
        return ", ".join(map(str, self.allow)) or "none"

    def check_address(self, address: IPAddress, label: str | None = None) -> IPAddress:
        """Return the address to dial, or raise :class:`TargetError`."""
        label = label or target_label(address_text(address))
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
        label = label or target_label(str(network))
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
