"""Hostname resolution, once per name, and the policy check of every target.

Resolution goes through an injected *resolver* (a callable ``name -> Deferred[list[str]]``
or ``name -> list[str]``); :func:`system_resolver` builds the default one on a reactor's
thread pool. Hostnames are resolved once and chosen from as Nmap does
(:func:`choose_address`): the first answer of the scan's family (IPv4: vscan has no
``-6``) is checked and dialled; every other answer, of either family and in the
resolver's order, is kept as the target's other (unscanned) addresses, which the normal
output lists ("Other addresses for NAME (not scanned): ...").
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from vscand.targets.parse import IPAddress, Target, TargetError, parse_address, target_label
from vscand.targets.policy import CheckedTarget, TargetPolicy, canonical_network

#: name -> its addresses, as text, best first (synchronously or as a Deferred)
Resolver: TypeAlias = Callable[[str], "Deferred[list[str]] | list[str]"]


#: the family a hostname is scanned in. Nmap scans a name's first IPv4 address unless
#: given ``-6``; vscan has no ``-6`` (nor a job field for it), so a name is scanned over
#: IPv4. IPv6 is scanned when the target is an IPv6 address or network.
HOSTNAME_FAMILY = 4


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
        label = target_label(target.text)
        if target.network is not None:
            policy.check_network(target.network, label)
            network = canonical_network(target.network)
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
                    f"{target_label(name)}: cannot resolve {name!r}: {value.getErrorMessage()}"
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
