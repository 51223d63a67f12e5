"""The ``service`` object of the result format (DESIGN.md), built from a match.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from typing import Any

from vscand.probes.matcher import ServiceMatch

SERVICE_KEYS = (
    "name",
    "product",
    "version",
    "extrainfo",
    "hostname",
    "ostype",
    "devicetype",
    "tunnel",
    "method",
    "conf",
    "cpe",
    "fingerprint",
    "rpc",
    "tls",
    "scripts",
)


def empty_service(name: str | None = None, method: str = "table", conf: int = 3) -> dict[str, Any]:
    service: dict[str, Any] = dict.fromkeys(SERVICE_KEYS)
    service.update(name=name, method=method, conf=conf, cpe=[], scripts={})
    return service


def service_from_match(found: ServiceMatch) -> dict[str, Any]:
    """A match line's result as Nmap reports it: ``ssl/x`` means x over TLS.

    Only a *hard* match does that; a softmatch line named ``ssl/x`` is reported
    with that very name and no tunnel (verified with nmap 7.93, tests/test_oracle.py).
    """
    name = found.service
    tunnel = None
    if name.startswith("ssl/") and not found.soft:
        name = name[4:]
        tunnel = "ssl"
    service = empty_service(name, method="probed", conf=10)
    info = found.info
    service.update(
        product=info.product,
        version=info.version,
        extrainfo=info.extrainfo,
        hostname=info.hostname,
        ostype=info.ostype,
        devicetype=info.devicetype,
        tunnel=tunnel,
        cpe=list(info.cpes),
    )
    return service
