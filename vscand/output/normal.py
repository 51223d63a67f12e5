"""Nmap's normal output (``-oN`` and the table on stdout), SPEC §8.2.

Layout as Nmap 7.93 prints it (checked against local scans of 127.0.0.1)::

    Nmap scan report for localhost (127.0.0.1)
    Host is up.
    Other addresses for localhost (not scanned): ::1   <- when the name has others
    Not shown: 36 closed tcp ports (conn-refused)      <- or an empty line
    PORT     STATE SERVICE VERSION
    3306/tcp open  mysql   MySQL 5.5.5-10.11.19-MariaDB-0+deb12u1
    | script-id: first line of its output                <- each script's output, by id
    |_last line                                           <- (Nmap's formatScriptOutput)
    N service(s) unrecognized despite returning data. ...
    SF-Port...
    Service Info: Host: ...; OS: ...
                                                        <- empty line ends a host
    Service detection performed. Please report any incorrect results at ...

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vscand.output.hosts import (
    Host,
    Result,
    ScanMeta,
    ctime,
    done_summary,
    group_hosts,
    ignored_groups,
    plural,
)
from vscand.output.table import script_rows, service_column, service_info_line, version_column

#: fingerprints printed per host at most (Nmap keeps 9)
MAX_FINGERPRINTS = 9
FP_SEPARATOR = "==============NEXT SERVICE FINGERPRINT (SUBMIT INDIVIDUALLY)=============="
FOOTER = (
    "Service detection performed. Please report any incorrect results at https://nmap.org/submit/ ."
)


def format_table(rows: Sequence[Sequence[str] | str]) -> list[str]:
    """Nmap's output table (``NmapOutputTable``): each column as wide as its widest
    cell, one space apart; a cell is padded only while cells with text follow it in
    its row (no trailing blanks are added; a cell's own are kept). A ``str`` row is a
    *full row* (the port's script output): written as is, counted in no width.
    Rows with nothing in them are left out.
    """
    cell_rows = [row for row in rows if not isinstance(row, str)]
    columns = max((len(row) for row in cell_rows), default=0)
    widths = [max((len(r[c]) for r in cell_rows if c < len(r)), default=0) for c in range(columns)]
    lines: list[str] = []
    for row in rows:
        if isinstance(row, str):
            if row:
                lines.extend(row.split("\n"))
            continue
        items = sum(1 for cell in row if cell)
        if not items:
            continue
        text, written = "", 0
        for c, cell in enumerate(row):
            text += cell
            written += bool(cell)
            if written < items:
                text += " " * (widths[c] - len(cell) + 1)
        lines.append(text)
    return lines


def not_shown_line(ports: Sequence[Result]) -> str:
    """``Not shown: 36 closed tcp ports (conn-refused), ...`` ('' if nothing is hidden)."""
    parts = []
    for group in ignored_groups(ports):
        for proto, reason, numbers in group.reasons:
            parts.append(f"{plural(len(numbers), f'{group.state} {proto} port')} ({reason})")
    return ("Not shown: " + ", ".join(parts)) if parts else ""


def fingerprint_block(fingerprints: Sequence[str]) -> list[str]:
    """The "unrecognized despite returning data" paragraph (at most 9 fingerprints)."""
    shown = list(fingerprints[:MAX_FINGERPRINTS])
    if not shown:
        return []
    n = len(shown)
    many = n > 1
    lines = [
        f"{n} service{'s' if many else ''} unrecognized despite returning data. If you know "
        f"the service/version, please submit the following fingerprint{'s' if many else ''} "
        "at https://nmap.org/cgi-bin/submit.cgi?new-service :"
    ]
    for text in shown:
        if many:
            lines.append(FP_SEPARATOR)
        lines.append(text)
    return lines


def other_addresses_line(host: Host) -> str:
    """``Other addresses for NAME (not scanned): ADDR ...`` ('' without a name or others).

    Nmap writes it right after the host status (``write_host_header``, output.cc),
    to the normal output and the terminal only: not to XML.
    """
    if not host.hostname or not host.other_addresses:
        return ""
    return f"Other addresses for {host.hostname} (not scanned): {' '.join(host.other_addresses)}"


def port_row(result: Result, version_scan: bool = True) -> list[str]:
    service = result.get("service") or {}
    state = str(result.get("state"))
    row = [
        f"{result['port']}/{result.get('protocol', 'tcp')}",
        state,
        service_column(
            service.get("name"),
            service.get("tunnel"),
            int(service.get("conf") or 0),
            state,
            version_scan=version_scan,
        ),
    ]
    if version_scan:
        row.append(
            version_column(service.get("product"), service.get("version"), service.get("extrainfo"))
        )
    return row


def format_host(
    host: Host,
    version_scan: bool = True,
    ptr_name: str | None = None,
    script_output: bool = False,
) -> list[str]:
    """One host's report, ending with the empty line Nmap writes after each host.

    ``script_output``: each port's row is followed by its version scripts' output
    (``|``/``|_`` lines, by script id), as ``nmap -sV --script=version`` prints it.

    ``ptr_name`` is the address's reverse-DNS name, if one was looked up: Nmap
    leaves that name (compared case-insensitively) out of ``Service Info``.
    A name the user typed is *not* left out (checked: ``nmap -n localhost``).
    """
    lines = [f"Nmap scan report for {host.name_ip()}", "Host is up."]
    others = other_addresses_line(host)
    if others:
        lines.append(others)
    ports = host.ports
    groups = ignored_groups(ports)
    hidden = {g.state for g in groups}
    shown = [r for r in ports if str(r.get("state")) not in hidden]
    not_shown = not_shown_line(ports)
    if not shown:
        if ports:
            lines.append(
                f"{'The' if len(ports) == 1 else 'All'} {plural(len(ports), 'scanned port')} "
                f"on {host.name_ip()} {'is' if len(ports) == 1 else 'are'} in ignored states."
            )
        else:
            lines.append(f"0 ports scanned on {host.name_ip()}")
        if not_shown:
            lines.append(not_shown)
        lines.append("")
        return lines
    lines.append(not_shown)  # '' when nothing is hidden: Nmap's empty line
    header = ["PORT", "STATE", "SERVICE"] + (["VERSION"] if version_scan else [])
    rows: list[Sequence[str] | str] = [header]
    for r in shown:
        rows.append(port_row(r, version_scan))
        if script_output:
            rows.extend(script_rows(r.get("service")))
    lines.extend(format_table(rows))
    fingerprints = [
        str((r.get("service") or {}).get("fingerprint"))
        for r in shown
        if (r.get("service") or {}).get("fingerprint")
    ]
    lines.extend(fingerprint_block(fingerprints))
    if version_scan:
        info = service_info_line(
            [r.get("service") or {} for r in shown if r.get("state") == "open"],
            own_name=ptr_name,
        )
        if info:
            lines.append(info)
    lines.append("")
    return lines


def format_hosts(
    results: Iterable[Result],
    version_scan: bool = True,
    ptr_names: Mapping[str, str] | None = None,
    script_output: bool = False,
) -> str:
    """The per-host reports (the table vscan prints on stdout) plus the footer."""
    lines: list[str] = []
    results = list(results)
    for host in group_hosts(results):
        ptr_name = (ptr_names or {}).get(host.address)
        lines.extend(format_host(host, version_scan, ptr_name, script_output))
    if version_scan:
        lines.append(FOOTER)
    lines.extend(interrupted_lines(results))
    return "\n".join(lines) + ("\n" if lines else "")


def interrupted_lines(results: Iterable[Result], shown: int = 20) -> list[str]:
    """A note after the table for ports a cancel, a job timeout or a shutdown stopped before
    their scan ended (results with ``interrupted``): they print like the others in the
    table (Nmap's columns have no place for it), and are not findings."""
    stopped = [r for r in results if r.get("interrupted")]
    if not stopped:
        return []
    names = [f"{r['host']} {r['port']}/{r.get('protocol') or 'tcp'}" for r in stopped[:shown]]
    more = f" and {len(stopped) - shown} more" if len(stopped) > shown else ""
    return [
        f"Interrupted before their scan ended ({len(stopped)}; not findings): "
        + ", ".join(names)
        + more
    ]


def format_normal(
    results: Iterable[Result], meta: ScanMeta, ptr_names: Mapping[str, str] | None = None
) -> str:
    """A complete ``-oN`` file: ``#`` start line, hosts, footer, ``#`` done line."""
    hosts = group_hosts(results)
    lines = [f"# {meta.program} scan initiated {ctime(meta.start)} as: {meta.args}"]
    for host in hosts:
        ptr_name = (ptr_names or {}).get(host.address)
        lines.extend(format_host(host, meta.version_scan, ptr_name, meta.script_output))
    if meta.version_scan:
        lines.append(FOOTER)
    summary = done_summary(len(hosts), meta.hosts_down, meta.end - meta.start)
    if meta.interrupted:
        lines.append(f"# {meta.program} interrupted at {ctime(meta.end)}: {meta.interrupted}")
    lines.append(f"# {meta.program} done at {ctime(meta.end)} -- {summary}")
    return "\n".join(lines) + "\n"
