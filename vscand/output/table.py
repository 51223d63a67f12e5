"""Nmap's normal-output formatting of services (SPEC §8.2).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

VERSION_COLUMN_MAX = 159


def service_column(name: str | None, tunnel: str | None, conf: int, state: str = "open") -> str:
    """``[ssl/]<name>[?]``: ``?`` for an open port identified with conf <= 5."""
    shown = name or "unknown"
    text = ("ssl/" if tunnel == "ssl" else "") + shown
    if shown != "unknown" and state == "open" and conf <= 5:
        text += "?"
    return text


def version_column(product: str | None, version: str | None, extrainfo: str | None) -> str:
    """``product version (extrainfo)`` within Nmap's 159-character budget."""
    parts: list[str] = []
    left = VERSION_COLUMN_MAX
    for value in (product, version):
        if not value:
            continue
        if parts:
            left -= 1
        if left < 8:
            break
        shown = value if len(value) <= left else value[: left - 3] + "..."
        parts.append(shown)
        left -= len(shown)
    if extrainfo:
        if parts:
            left -= 1
        if left >= 8:
            text = f"({extrainfo})"
            if len(text) > left:
                text = "(" + extrainfo[: left - 5] + "...)"
            parts.append(text)
    return " ".join(parts)


def service_info_line(services: Iterable[Mapping[str, Any]], own_name: str | None = None) -> str:
    """The ``Service Info:`` line from the open ports' services ('' if none)."""
    hosts: list[str] = []
    oses: list[str] = []
    devices: list[str] = []
    cpes: list[str] = []

    def add(bucket: list[str], value: str | None, fold: bool = False) -> None:
        if not value or len(bucket) >= 5:
            return
        key = value.lower() if fold else value
        if any((v.lower() if fold else v) == key for v in bucket):
            return
        bucket.append(value)

    for svc in services:
        hostname = svc.get("hostname")
        if hostname and not (own_name and hostname.lower() == own_name.lower()):
            add(hosts, hostname, fold=True)
        add(oses, svc.get("ostype"))
        add(devices, svc.get("devicetype"))
        for cpe in svc.get("cpe") or ():
            if cpe.startswith(("cpe:/h", "cpe:/o")):
                add(cpes, cpe)
    segments = []
    for label, values in (("Host", hosts), ("OS", oses), ("Device", devices)):
        if values:
            segments.append(f"{label}{'s' if len(values) > 1 else ''}: {', '.join(values)}")
    if cpes:
        segments.append("CPE: " + ", ".join(cpes))
    return ("Service Info: " + "; ".join(segments)) if segments else ""
