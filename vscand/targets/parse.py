"""TARGET strings → :class:`Target`\\ s: strict parsing, nothing resolved, nothing dialled.

:func:`parse_target` turns each TARGET string into a :class:`Target`: an IPv4 or IPv6
address, a CIDR network, a hostname, or a ``HOST:PORT[/udp]`` endpoint. Parsing is
strict: IPv4 is four decimal octets without leading zeros; the spellings ``inet_aton``
would accept (``0x7f.0.0.1``, ``2130706433``, ``127.1``, ``0127.0.0.1``) are refused
rather than guessed, and never sent to a resolver.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from vscand.scan.model import Protocol

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_BRACKETED = re.compile(r"\[([^\[\]]+)\](?::([^/]*)(?:/(.*))?)?")
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


def target_label(text: str) -> str:
    """How an error names a target: ``target 'TEXT'``."""
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
            f"{label or target_label(text)}: {text!r} is not a valid IPv4 address "
            "(write four decimal octets without leading zeros, e.g. 127.0.0.1)"
        ) from None


def parse_address(text: str, label: str | None = None) -> IPAddress:
    """A strict IPv4 or IPv6 literal (an IPv6 zone ``%eth0`` is accepted)."""
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError as e:
            raise TargetError(f"{label or target_label(text)}: bad IPv6 address: {e}") from None
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
    label = target_label(raw)
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
