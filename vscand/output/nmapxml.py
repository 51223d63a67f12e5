"""Nmap-compatible XML (``-oX``), valid against Nmap's ``nmap.dtd`` (1.05).

The layout follows Nmap 7.93's own files byte for byte where the data allow
(line breaks, attribute order, escaping), so ndiff, Metasploit, IVRE and other
readers of Nmap XML take it as is. SPEC §8.5.

``scanner`` is ``nmap``: the DTD declares ``scanner (nmap) #REQUIRED``, so any
other value makes the file invalid; the producing program is named in the
leading comment instead.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vscand.output.hosts import (
    Host,
    Result,
    ScanMeta,
    ctime,
    done_summary,
    group_hosts,
    ignored_groups,
    port_ranges,
)
from vscand.output.script_output import protect_xml, script_items
from vscand.scan.fingerprint import servicefp

XML_OUTPUT_VERSION = "1.05"
STYLESHEET = "file:///usr/share/nmap/nmap.xsl"
_SCAN_TYPES = {"tcp": "connect", "udp": "udp"}
_SERVICE_ATTRS = ("product", "version", "extrainfo", "hostname", "ostype", "devicetype")
_NAMED = {
    "<": "&lt;",
    ">": "&gt;",
    "&": "&amp;",
    '"': "&quot;",
    "'": "&apos;",
}


def escape(value: object) -> str:
    """Nmap's XML escaping of attribute values and text (SPEC §8.5)."""
    out: list[str] = []
    prev = ""
    for char in str(value):
        named = _NAMED.get(char)
        if named is not None:
            out.append(named)
        elif char == "-" and prev == "-":
            out.append("&#45;")
        elif ord(char) < 0x20 or ord(char) > 0x7F:
            out.append(f"&#x{ord(char):x};")
        else:
            out.append(char)
        prev = char
    return "".join(out)


def _attrs(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f' {key}="{escape(value)}"' for key, value in pairs)


def _cpe_order(cpe: str) -> int:
    part = cpe[5:6] if cpe.startswith("cpe:/") else ""
    return {"a": 0, "h": 1, "o": 2}.get(part, 3)


def service_element(service: Mapping[str, Any]) -> str:
    """``<service …/>`` with attributes in Nmap's order and ``<cpe>`` children a, h, o."""
    pairs: list[tuple[str, object]] = [("name", service.get("name") or "unknown")]
    for key in _SERVICE_ATTRS:
        if service.get(key):
            pairs.append((key, service[key]))
    if service.get("fingerprint"):
        pairs.append(("servicefp", servicefp(str(service["fingerprint"]))))
    if service.get("tunnel") == "ssl":
        pairs.append(("tunnel", "ssl"))
    pairs.append(("method", service.get("method") or "table"))
    pairs.append(("conf", int(service.get("conf") or 0)))
    cpes = sorted(service.get("cpe") or (), key=_cpe_order)
    head = "<service" + _attrs(pairs)
    if not cpes:
        return head + "/>"
    return head + ">" + "".join(f"<cpe>{escape(c)}</cpe>" for c in cpes) + "</service>"


def _script_items(items: Iterable[Mapping[str, Any]]) -> str:
    """NSE's ``format_xml``: ``<elem key=…>`` for a value, ``<table key=…>`` for a table."""
    parts: list[str] = []
    for item in items:
        key = item.get("key")
        attr = f' key="{escape(protect_xml(str(key)))}"' if key is not None else ""
        if "table" in item:
            parts.append(f"<table{attr}>\n{_script_items(item['table'])}</table>\n")
        else:
            parts.append(f"<elem{attr}>{escape(protect_xml(str(item['value'])))}</elem>\n")
    return "".join(parts)


def script_element(item: Mapping[str, Any]) -> str:
    """``<script id=… output=…>`` (``ScriptResult::write_xml``): the printed string, then
    the structured table, if the script returned one (an item of
    :func:`~vscand.output.script_output.script_items`: well formed, bounded)."""
    head = f'<script id="{escape(item["id"])}" output="{escape(protect_xml(item["output"]))}"'
    elements = item.get("elements")
    if elements is None:
        return head + "/>"
    return head + ">" + _script_items(elements) + "</script>"


def port_element(result: Result, script_output: bool = False) -> str:
    state = _attrs(
        (
            ("state", result.get("state")),
            ("reason", result.get("reason") or "unknown"),
            ("reason_ttl", 0),
        )
    )
    text = (
        f'<port protocol="{escape(result.get("protocol", "tcp"))}" portid="{int(result["port"])}">'
        f"<state{state}/>"
    )
    service = result.get("service")
    if service and (service.get("name") or service.get("fingerprint") or service.get("tunnel")):
        text += service_element(service)
    if script_output:
        for item in script_items(service):
            text += script_element(item)
    return text + "</port>"


def host_element(host: Host, meta: ScanMeta) -> list[str]:
    start, end = host.times(meta)
    lines = [
        f'<host starttime="{start}" endtime="{end}">'
        '<status state="up" reason="user-set" reason_ttl="0"/>',
        f'<address addr="{escape(host.address)}" addrtype="{host.addrtype}"/>',
        "<hostnames>",
    ]
    if host.hostname:
        lines.append(f'<hostname name="{escape(host.hostname)}" type="user"/>')
    lines.append("</hostnames>")
    groups = ignored_groups(host.ports)
    hidden = {g.state for g in groups}
    body = "<ports>"
    for group in groups:
        body += f'<extraports state="{escape(group.state)}" count="{group.count}">\n'
        for proto, reason, numbers in group.reasons:
            body += (
                f'<extrareasons reason="{escape(reason)}" count="{len(numbers)}" '
                f'proto="{escape(proto)}" ports="{port_ranges(numbers)}"/>\n'
            )
        body += "</extraports>\n"
    shown = [
        port_element(r, meta.script_output) for r in host.ports if str(r.get("state")) not in hidden
    ]
    if shown:
        body += "\n".join(shown) + "\n"
    lines.append(body + "</ports>")
    lines.append("</host>")
    return lines


def _scaninfo(results: Sequence[Result], meta: ScanMeta) -> list[str]:
    requested: dict[str, set[int]] = {}
    if meta.ports is not None:
        for proto, numbers in meta.ports.items():
            requested[proto] = set(numbers)
    else:
        for result in results:
            requested.setdefault(str(result.get("protocol", "tcp")), set()).add(int(result["port"]))
    lines = []
    for proto in ("tcp", "udp"):
        wanted = requested.get(proto)
        if wanted:
            lines.append(
                f'<scaninfo type="{_SCAN_TYPES[proto]}" protocol="{proto}" '
                f'numservices="{len(wanted)}" services="{port_ranges(wanted)}"/>'
            )
    return lines


def format_xml(
    results: Iterable[Result], meta: ScanMeta, stylesheet: str | None = STYLESHEET
) -> str:
    """The whole ``-oX`` document for these per-port results."""
    results = list(results)
    hosts = group_hosts(results)
    startstr = ctime(meta.start)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<!DOCTYPE nmaprun>"]
    if stylesheet:
        lines.append(f'<?xml-stylesheet href="{escape(stylesheet)}" type="text/xsl"?>')
    comment_args = escape(meta.args)
    lines.append(
        f"<!-- {meta.program} (Nmap {meta.nmap_version} XML) scan initiated {startstr} "
        f"as: {comment_args} -->"
    )
    lines.append(
        "<nmaprun"
        + _attrs(
            (
                ("scanner", "nmap"),
                ("args", meta.args),
                ("start", int(meta.start)),
                ("startstr", startstr),
                ("version", meta.nmap_version),
                ("xmloutputversion", XML_OUTPUT_VERSION),
            )
        )
        + ">"
    )
    lines.extend(_scaninfo(results, meta))
    lines.append('<verbose level="0"/>')
    lines.append('<debugging level="0"/>')
    for host in hosts:
        lines.extend(host_element(host, meta))
    elapsed = max(0.0, meta.end - meta.start)
    endstr = ctime(meta.end)
    summary = f"Nmap done at {endstr}; {done_summary(len(hosts), meta.hosts_down, elapsed)}"
    lines.append(
        "<runstats><finished"
        + _attrs(
            (
                ("time", int(meta.end)),
                ("timestr", endstr),
                ("summary", summary),
                ("elapsed", f"{elapsed:.2f}"),
                ("exit", "error" if meta.interrupted else "success"),
                *((("errormsg", meta.interrupted),) if meta.interrupted else ()),
            )
        )
        + f'/><hosts up="{len(hosts)}" down="{meta.hosts_down}" '
        f'total="{len(hosts) + meta.hosts_down}"/>'
    )
    lines.append("</runstats>")
    lines.append("</nmaprun>")
    return "\n".join(lines) + "\n"
