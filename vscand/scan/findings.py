"""The final report of a port: Nmap's final state → reported service (SPEC §8.1).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vscand.probes.matcher import ServiceMatch
from vscand.service import empty_service

EXCLUDED_PRODUCT = "Excluded from version scan"
VERSION_FIELDS = ("product", "version", "extrainfo", "hostname", "ostype", "devicetype")


class FinalState(enum.Enum):
    HARDMATCHED = "hardmatched"
    SOFTMATCHED = "softmatched"
    NOMATCH = "nomatch"
    TCPWRAPPED = "tcpwrapped"
    EXCLUDED = "excluded"
    INCOMPLETE = "incomplete"


@dataclass
class Findings:
    """What matching has found on a port so far (soft fields kept under hard ones)."""

    service: str | None = None
    soft_found: bool = False
    hard: bool = False
    fields: dict[str, str] = field(default_factory=dict)
    cpe: dict[str, str] = field(default_factory=dict)
    #: (probe, matched chain member, line number, soft) for each match applied
    trace: list[tuple[str, str, int, bool]] = field(default_factory=list)

    def apply(self, found: ServiceMatch, probe_name: str) -> bool:
        """Apply a match as Nmap does; returns True when it was a hard match.

        A soft match is recorded only when none was found before; a hard match
        copies its name and each non-empty field over what is there.
        """
        if found.soft and self.soft_found:
            return False
        self.trace.append((probe_name, found.matched_probe, found.line.lineno, found.soft))
        info = found.info
        for name in VERSION_FIELDS:
            value = getattr(info, name)
            if value:
                self.fields[name] = value
        for part, value in (("a", info.cpe_a), ("h", info.cpe_h), ("o", info.cpe_o)):
            if value:
                self.cpe[part] = value
        self.service = found.service
        if found.soft:
            self.soft_found = True
            return False
        self.hard = True
        return True

    def reset(self) -> None:
        """The SSL restart clears everything found in plain text."""
        self.service = None
        self.soft_found = False
        self.hard = False
        self.fields.clear()
        self.cpe.clear()


def build_service(
    state: FinalState,
    findings: Findings,
    *,
    table_name: str | None,
    tunnel_ssl: bool,
    intensity: int,
    fingerprint: str | None,
) -> dict[str, Any]:
    """The ``service`` object for a port that ended in ``state``."""
    service = empty_service()
    tunnel = "ssl" if tunnel_ssl else None
    keep_fp = fingerprint if intensity >= 7 else None
    if state is FinalState.HARDMATCHED:
        name = findings.service
        if name and name.startswith("ssl/"):
            name = name[4:]
            tunnel = "ssl"
        service.update(name=name, method="probed", conf=10)
        _copy_fields(service, findings)
    elif state is FinalState.SOFTMATCHED:
        service.update(name=findings.service, method="probed", conf=10, fingerprint=keep_fp)
        _copy_fields(service, findings)
    elif state is FinalState.TCPWRAPPED:
        service.update(name="tcpwrapped", method="probed", conf=8, fingerprint=keep_fp)
        _copy_fields(service, findings)
    elif state is FinalState.NOMATCH:
        service.update(name=table_name, method="table", conf=3, fingerprint=fingerprint)
    elif state is FinalState.EXCLUDED:
        service.update(name=table_name, method="table", conf=3, product=EXCLUDED_PRODUCT)
    else:  # INCOMPLETE
        name = findings.service if findings.soft_found else table_name
        service.update(name=name, method="table", conf=3, fingerprint=keep_fp)
        _copy_fields(service, findings)
    service["tunnel"] = tunnel
    return service


def _copy_fields(service: dict[str, Any], findings: Findings) -> None:
    for name in VERSION_FIELDS:
        service[name] = findings.fields.get(name)
    service["cpe"] = [findings.cpe[p] for p in ("a", "h", "o") if p in findings.cpe]


def table_service(name: str | None) -> dict[str, Any]:
    """The service of a closed or filtered port: the nmap-services name only."""
    return empty_service(name, method="table", conf=3)
