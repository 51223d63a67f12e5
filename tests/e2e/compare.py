"""Reading nmap's and vscan's ``-oX`` files and comparing them port by port."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SERVICE_FIELDS = (
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
)

#: the fingerprint fields that legitimately differ between two runs (date and time)
_VOLATILE = re.compile(r"%(D|Time)=[^%]*")


def mask_fingerprint(fp: str) -> str:
    return _VOLATILE.sub(lambda m: f"%{m.group(1)}=*", fp)


def _elements(node: ET.Element) -> list[Any]:
    """A ``<script>``'s or ``<table>``'s children as comparable data, in order."""
    items: list[Any] = []
    for child in node:
        if child.tag == "table":
            items.append(("table", child.get("key"), _elements(child)))
        elif child.tag == "elem":
            items.append(("elem", child.get("key"), child.text or ""))
    return items


def parse_scripts(port: ET.Element) -> dict[str, dict[str, Any]]:
    """A port's ``<script>`` elements: id -> its output string and structured elements."""
    return {
        script.get("id", ""): {"output": script.get("output"), "elements": _elements(script)}
        for script in port.findall("script")
    }


#: ``nmap -sV`` runs the version scripts but prints their results only when a
#: script selection is given (output.cc writes ``<script>`` under ``o.script``):
#: the differential suites add this to nmap's command line to see them
NMAP_SCRIPT_OUTPUT = ["--script=version"]


def without_script(records: dict[int, dict[str, Any]], script_id: str) -> dict[int, dict[str, Any]]:
    """The records with one script's output left out (a script another helper owns)."""
    for rec in records.values():
        (rec.get("scripts") or {}).pop(script_id, None)
    return records


def xml_without_script(src: Path, dest: Path, script_id: str) -> Path:
    """A copy of an ``-oX`` file without one script's ``<script>`` elements (for ndiff,
    which crashes on any script difference: Debian's ndiff compares a list with 0)."""
    tree = ET.parse(src)
    for port in tree.getroot().iter("port"):
        for script in port.findall("script"):
            if script.get("id") == script_id:
                port.remove(script)
    tree.write(dest, encoding="utf-8", xml_declaration=True)
    return dest


def sort_fields(value: Any) -> Any:
    """A mask for outputs NSE prints in Lua's hash order (plain Lua tables):
    keyed elements sorted at every level; the output string's sibling lines
    (with their indented children) sorted at every level."""
    if isinstance(value, str):
        return _sort_lines(value.split("\n"), 0)
    if isinstance(value, list):
        items = [sort_fields(v) if isinstance(v, (list, tuple)) else v for v in value]
        return sorted(items, key=repr)
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "table":
        return ("table", value[1], sort_fields(value[2]))
    return value


def _sort_lines(lines: list[str], depth: int) -> str:
    blocks: list[list[str]] = []
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if blocks and indent > depth:
            blocks[-1].append(line)
        else:
            blocks.append([line])
    rendered = [b[0] + ("\n" + _sort_lines(b[1:], depth + 2) if b[1:] else "") for b in blocks]
    return "\n".join(sorted(rendered))


#: per script id, a function masking what depends on time or randomness in its output
#: (both the string and the elements pass through it); listed in DESIGN.md
SCRIPT_MASKS: dict[str, Any] = {}


def _masked(script_id: str, value: Any) -> Any:
    mask = SCRIPT_MASKS.get(script_id)
    return value if mask is None else mask(value)


def parse_xml(path: Path) -> dict[int, dict[str, Any]]:
    """Per TCP port of 127.0.0.1: state and every service attribute, CPEs, servicefp."""
    root = ET.parse(path).getroot()
    ports: dict[int, dict[str, Any]] = {}
    for host in root.iter("host"):
        for port in host.iter("port"):
            state = port.find("state")
            svc = port.find("service")
            rec: dict[str, Any] = {
                "protocol": port.get("protocol"),
                "state": state.get("state") if state is not None else None,
                "reason": state.get("reason") if state is not None else None,
                "service": svc is not None,
            }
            for key in SERVICE_FIELDS:
                rec[key] = svc.get(key) if svc is not None else None
            rec["cpe"] = [c.text or "" for c in svc.findall("cpe")] if svc is not None else []
            rec["servicefp"] = svc.get("servicefp") if svc is not None else None
            rec["scripts"] = parse_scripts(port)
            ports[int(port.get("portid", "0"))] = rec
    return ports


def parse_jsonl(path: Path) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            results[int(record["port"])] = record
    return results


def differences(nmap: dict[str, Any] | None, vscan: dict[str, Any] | None) -> list[str]:
    """Every way vscan's record of a port differs from nmap's (empty: they agree)."""
    if nmap is None or vscan is None:
        return [f"port missing: nmap={nmap is not None} vscan={vscan is not None}"]
    diffs = []
    for key in ("state", "service", *SERVICE_FIELDS, "cpe"):
        if nmap[key] != vscan[key]:
            diffs.append(f"{key}: nmap={nmap[key]!r} vscan={vscan[key]!r}")
    n_fp, v_fp = nmap["servicefp"], vscan["servicefp"]
    if (n_fp is None) != (v_fp is None):
        diffs.append(f"servicefp present: nmap={n_fp is not None} vscan={v_fp is not None}")
    elif n_fp is not None and v_fp is not None:
        n_masked, v_masked = mask_fingerprint(n_fp), mask_fingerprint(v_fp)
        if n_masked != v_masked:
            diffs.append(f"servicefp (%D/%Time masked):\n  nmap ={n_masked}\n  vscan={v_masked}")
    n_scripts, v_scripts = nmap.get("scripts") or {}, vscan.get("scripts") or {}
    for script_id in sorted(set(n_scripts) | set(v_scripts)):
        n_out, v_out = n_scripts.get(script_id), v_scripts.get(script_id)
        if n_out is None or v_out is None:
            diffs.append(f"script {script_id}: nmap={n_out!r} vscan={v_out!r}")
            continue
        for part in ("output", "elements"):
            n_part, v_part = _masked(script_id, n_out[part]), _masked(script_id, v_out[part])
            if n_part != v_part:
                diffs.append(f"script {script_id} {part}:\n  nmap ={n_part!r}\n  vscan={v_part!r}")
    return diffs


#: ndiff's header: "-Nmap 7.93 scan initiated ... as: ..." / "+... scan initiated ..."
_NDIFF_HEADER = re.compile(r"^[-+ ]?(Nmap|vscan|vscand)\b.*\bscan initiated\b")


def ndiff(ndiff_exe: str, before: Path, after: Path) -> tuple[int, str, list[str]]:
    """Runs ``ndiff before after``; returns (exit code, output, the lines that differ).

    The differing lines are those starting with ``-`` or ``+`` other than the scan
    header (program, start time and command line differ by nature).
    """
    proc = subprocess.run(
        [ndiff_exe, str(before), str(after)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    changed = [
        line
        for line in proc.stdout.splitlines()
        if line[:1] in "-+" and line.strip() and not _NDIFF_HEADER.match(line)
    ]
    return proc.returncode, proc.stdout + proc.stderr, changed
