"""NSE's ``shortport`` rules, as the version scripts use them: the port number or the
service name on a protocol and state, and for ``version`` scripts also "not excluded
by the probe file" and "intensity at least the rarity".

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vscand.scripts.api import PortView, RuleContext

__all__ = [
    "LIKELY_HTTP_PORTS",
    "LIKELY_HTTP_SERVICES",
    "likely_http",
    "port_or_service",
    "version_port_or_service",
]


def port_or_service(
    ports: Iterable[int] = (),
    services: Iterable[str] = (),
    protocols: Iterable[str] = ("tcp",),
    states: Iterable[str] = ("open", "open|filtered"),
) -> Callable[[PortView], bool]:
    """``shortport.port_or_service``: the port number or the service name, on
    one of ``protocols``, in one of ``states``."""
    port_set, service_set = frozenset(ports), frozenset(services)
    proto_set, state_set = frozenset(protocols), frozenset(states)

    def rule(port: PortView) -> bool:
        return (
            port.protocol in proto_set
            and port.state in state_set
            and (port.number in port_set or port.name in service_set)
        )

    return rule


def version_port_or_service(
    ports: Iterable[int] = (),
    services: Iterable[str] = (),
    protocols: Iterable[str] = ("tcp",),
    states: Iterable[str] = ("open", "open|filtered"),
    rarity: int = 7,
) -> Callable[[PortView, RuleContext], bool]:
    """``shortport.version_port_or_service``: :func:`port_or_service`, the port
    not excluded by the probe file, and intensity at least ``rarity`` (7)."""
    base = port_or_service(ports, services, protocols, states)

    def rule(port: PortView, ctx: RuleContext) -> bool:
        return (
            base(port)
            and not ctx.is_excluded(port.number, port.protocol)
            and ctx.intensity >= rarity
        )

    return rule


#: shortport.LIKELY_HTTP_PORTS / LIKELY_HTTP_SERVICES (7.93)
LIKELY_HTTP_PORTS = (80, 443, 631, 7080, 8080, 8443, 8088, 5800, 3872, 8180, 8000)
LIKELY_HTTP_SERVICES = (
    "http",
    "https",
    "ipp",
    "http-alt",
    "https-alt",
    "vnc-http",
    "oem-agent",
    "soap",
    "http-proxy",
    "caldav",
    "carddav",
    "webdav",
)

#: ``shortport.http``
likely_http = port_or_service(LIKELY_HTTP_PORTS, LIKELY_HTTP_SERVICES)
