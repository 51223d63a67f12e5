"""Nmap's normal-output formatting of services (SPEC §8.2).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vscand.output.script_output import screen_text, script_items

VERSION_COLUMN_MAX = 159


def service_column(
    name: str | None,
    tunnel: str | None,
    conf: int,
    state: str = "open",
    *,
    version_scan: bool = True,
) -> str:
    """``[ssl/]<name>[?]``: ``?`` when -sV ran and an open port's conf is <= 5."""
    shown = name or "unknown"
    text = ("ssl/" if tunnel == "ssl" else "") + shown
    if version_scan and shown != "unknown" and state == "open" and conf <= 5:
        text += "?"
    return text


def version_column(product: str | None, version: str | None, extrainfo: str | None) -> str:
    """``product version (extrainfo)`` within Nmap's 159-character budget (SPEC §8.2).

    A part is considered only while at least 8 characters of budget remain
    (checked *before* the separating space is taken); a product or version
    that does not fit ends in ``...``, an extrainfo in ``...)``.
    """
    text = ""
    left = VERSION_COLUMN_MAX
    for value in (product, version):
        if not value or left < 8:
            continue
        if text:
            text += " "
            left -= 1
        if len(value) > left:
            text += value[: left - 3] + "..."
            left = 0
        else:
            text += value
            left -= len(value)
    if extrainfo and left >= 8:
        if text:
            text += " "
            left -= 1
        if len(extrainfo) > left - 2:
            text += "(" + extrainfo[: left - 5] + "...)"
        else:
            text += "(" + extrainfo + ")"
    return text


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


def script_row(script_id: str, output: str) -> str:
    """Nmap's ``formatScriptOutput``: the output escaped for the screen, its lines
    prefixed ``| `` and the last ``|_``, the id on the first (``''``: no row)."""
    text = screen_text(output)
    if not text:
        return ""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # C's line splitting: a final newline starts no new line
    rows = []
    for i, line in enumerate(lines):
        head = "| " if i < len(lines) - 1 else "|_"
        rows.append(head + (f"{script_id}: " if i == 0 else "") + line)
    return "\n".join(rows)


def script_rows(service: Mapping[str, Any] | None) -> list[str]:
    """The port's script rows of the port table (by id, as stored), without empty ones."""
    rows = (script_row(item["id"], item["output"]) for item in script_items(service))
    return [row for row in rows if row]
