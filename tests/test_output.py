"""Report writers: normal output (§8.2), Nmap XML (§8.5), JSON lines."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import nmap_or_skip
from vscand.output.hosts import ScanMeta, port_ranges
from vscand.output.jsonl import RESULT_KEYS, dumps, write_jsonl
from vscand.output.nmapxml import escape, format_xml, service_element
from vscand.output.normal import (
    FOOTER,
    FP_SEPARATOR,
    fingerprint_block,
    format_hosts,
    format_normal,
    format_table,
    not_shown_line,
)
from vscand.output.table import service_column, service_info_line, version_column
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.service import SERVICE_KEYS, empty_service

DTD = Path("/usr/share/nmap/nmap.dtd")
META = ScanMeta(args="vscan scan -p 1-40 127.0.0.1", start=1795348049.0, end=1795348051.5)


def result(
    port: int,
    state: str = "open",
    reason: str | None = None,
    protocol: str = "tcp",
    host: str = "127.0.0.1",
    hostname: str | None = None,
    **service: Any,
) -> dict[str, Any]:
    svc = empty_service(service.pop("name", "x"))
    svc.update(service)
    return {
        "job": None,
        "host": host,
        "hostname": hostname,
        "port": port,
        "protocol": protocol,
        "state": state,
        "reason": reason or {"open": "syn-ack", "closed": "conn-refused"}.get(state, "no-response"),
        "service": svc,
        "tags": {},
        "worker": None,
        "scanned_at": "2026-11-22T10:00:00Z",
        "duration_ms": 812,
    }


def with_service(r: dict[str, Any], **service: Any) -> dict[str, Any]:
    r["service"].update(service)
    return r


def fingerprint(port: int, data: bytes = b"hello") -> str:
    f = ServiceFingerprint(port, "TCP", 7, False, 1795348049.0)
    f.add("NULL", data)
    text = f.text()
    assert text is not None
    return text


# -- VERSION column -------------------------------------------------------------------------


def test_version_column_parts() -> None:
    assert version_column(None, None, None) == ""
    assert version_column("OpenSSH", None, None) == "OpenSSH"
    assert version_column(None, "1.0", None) == "1.0"
    assert version_column(None, None, "x") == "(x)"
    assert version_column("OpenSSH", "8.9", "protocol 2.0") == "OpenSSH 8.9 (protocol 2.0)"
    assert version_column("", "", "") == ""


def test_version_column_cuts_product_and_version() -> None:
    long = "P" * 200
    assert version_column(long, "1.0", "x") == "P" * 156 + "..."
    # 150 + space leaves 8: version cut to 5 + "..."
    assert version_column("P" * 150, "V" * 20, "x") == "P" * 150 + " " + "VVVVV..."
    # 152 leaves 7 (< 8): no version, no extrainfo
    assert version_column("P" * 152, "V" * 20, "x") == "P" * 152


def test_version_column_eight_rule_is_checked_before_the_space() -> None:
    # 151 used, 8 left: the space takes one, "(" + 2 + "...)" fills the other 7
    assert version_column("P" * 78, "V" * 72, "I" * 40) == "P" * 78 + " " + "V" * 72 + " (II...)"
    assert len(version_column("P" * 78, "V" * 72, "I" * 40)) == 159
    assert version_column("P" * 78, "V" * 73, "I" * 40) == "P" * 78 + " " + "V" * 73
    # an extrainfo that just fits is not cut
    assert version_column("P" * 78, "V" * 70, "III") == "P" * 78 + " " + "V" * 70 + " (III)"
    assert version_column("P" * 78, "V" * 70, "I" * 7) == "P" * 78 + " " + "V" * 70 + " (IIIIIII)"
    assert version_column("P" * 78, "V" * 70, "I" * 8) == "P" * 78 + " " + "V" * 70 + " (IIII...)"


def test_version_column_extrainfo_cut() -> None:
    text = version_column("short", "1.0", "I" * 200)
    assert text == "short 1.0 (" + "I" * 144 + "...)"
    assert len(text) == 159
    assert (
        version_column("Q" * 60, "V" * 40, "I" * 55)
        == "Q" * 60 + " " + "V" * 40 + " (" + "I" * 55 + ")"
    )
    assert version_column("Q" * 60, "V" * 40, "I" * 56).endswith(" (" + "I" * 52 + "...)")


# -- SERVICE column and Service Info --------------------------------------------------------


def test_service_column() -> None:
    assert service_column("ssh", None, 10) == "ssh"
    assert service_column("afs3-callback", None, 3) == "afs3-callback?"
    assert service_column("http", "ssl", 10) == "ssl/http"
    assert service_column("elcn", "ssl", 3) == "ssl/elcn?"
    assert service_column(None, None, 3) == "unknown"
    assert service_column("unknown", None, 3) == "unknown"
    assert service_column("dlip", None, 3, "open|filtered") == "dlip"
    assert service_column("ceph", None, 3, "closed") == "ceph"
    assert service_column("tcpwrapped", None, 8) == "tcpwrapped"
    assert service_column("redis", None, 3, version_scan=False) == "redis"


def test_service_info_line() -> None:
    services = [
        {"hostname": "myhost", "ostype": "myos", "devicetype": "dev", "cpe": ["cpe:/h:hw:abc"]},
        {"hostname": "MYHOST", "ostype": "myos", "cpe": ["cpe:/a:app:x", "cpe:/o:os:x"]},
    ]
    assert service_info_line(services) == (
        "Service Info: Host: myhost; OS: myos; Device: dev; CPE: cpe:/h:hw:abc, cpe:/o:os:x"
    )
    assert service_info_line([{}]) == ""
    many = [{"hostname": f"h{i}", "ostype": f"o{i}"} for i in range(7)]
    assert service_info_line(many) == (
        "Service Info: Hosts: h0, h1, h2, h3, h4; OSs: o0, o1, o2, o3, o4"
    )
    assert service_info_line([{"hostname": "LocalHost"}, {"hostname": "b"}], "localhost") == (
        "Service Info: Host: b"
    )


# -- normal output --------------------------------------------------------------------------


def test_format_table_widths_and_no_trailing_blanks() -> None:
    rows = [
        ["PORT", "STATE", "SERVICE", "VERSION"],
        ["1883/tcp", "open", "mosquitto version 2.0.11", ""],
        ["3300/tcp", "closed", "ceph", ""],
        ["3306/tcp", "open", "mysql", "MySQL 5.5.5"],
    ]
    assert format_table(rows) == [
        "PORT     STATE  SERVICE                  VERSION",
        "1883/tcp open   mosquitto version 2.0.11",
        "3300/tcp closed ceph",
        "3306/tcp open   mysql                    MySQL 5.5.5",
    ]


def test_not_shown_collapses_above_25() -> None:
    ports = [result(p, "closed") for p in range(1, 26)] + [result(80)]
    assert not_shown_line(ports) == ""
    ports.append(result(26, "closed"))
    assert not_shown_line(ports) == "Not shown: 26 closed tcp ports (conn-refused)"


def test_not_shown_reasons_and_states_by_count() -> None:
    ports = (
        [result(p, "filtered", "no-response") for p in range(1, 40)]
        + [result(p, "filtered", "host-unreach") for p in range(40, 41)]
        + [result(p, "closed") for p in range(100, 130)]
        + [result(p, "open|filtered", protocol="udp") for p in range(1, 27)]
    )
    assert not_shown_line(ports) == (
        "Not shown: 39 filtered tcp ports (no-response), 1 filtered tcp port (host-unreach), "
        "30 closed tcp ports (conn-refused), 26 open|filtered udp ports (no-response)"
    )


def test_open_ports_are_never_collapsed() -> None:
    ports = [result(p) for p in range(1, 40)]
    assert not_shown_line(ports) == ""


def test_host_report_with_table_fingerprints_and_service_info() -> None:
    fp1, fp2 = fingerprint(4222), fingerprint(7001, b"x" * 200)
    ports = [result(p, "closed", name="svc") for p in range(3270, 3300)] + [
        result(
            22,
            name="ssh",
            method="probed",
            conf=10,
            product="OpenSSH",
            version="8.9p1",
            extrainfo="protocol 2.0",
            ostype="Linux",
            cpe=["cpe:/a:openbsd:openssh:8.9p1", "cpe:/o:linux:linux_kernel"],
        ),
        result(4222, name="vrml-multi-use", fingerprint=fp1),
        result(7001, name="afs3-callback", fingerprint=fp2),
        with_service(
            result(443, name="http", tunnel="ssl", method="probed", conf=10), hostname="web1"
        ),
        result(53, "open|filtered", protocol="udp", name="domain"),
    ]
    for r in ports:
        r["hostname"] = "localhost"
    text = format_hosts(ports)
    assert text == "\n".join(
        [
            "Nmap scan report for localhost (127.0.0.1)",
            "Host is up.",
            "Not shown: 30 closed tcp ports (conn-refused)",
            "PORT     STATE         SERVICE         VERSION",
            "22/tcp   open          ssh             OpenSSH 8.9p1 (protocol 2.0)",
            "443/tcp  open          ssl/http",
            "4222/tcp open          vrml-multi-use?",
            "7001/tcp open          afs3-callback?",
            "53/udp   open|filtered domain",
            "2 services unrecognized despite returning data. If you know the service/version, "
            "please submit the following fingerprints at "
            "https://nmap.org/cgi-bin/submit.cgi?new-service :",
            FP_SEPARATOR,
            fp1,
            FP_SEPARATOR,
            fp2,
            "Service Info: Host: web1; OS: Linux; CPE: cpe:/o:linux:linux_kernel",
            "",
            FOOTER,
            "",
        ]
    )


def test_no_hidden_ports_gives_an_empty_line_before_the_table() -> None:
    text = format_hosts([result(6379, name="redis")], version_scan=False)
    assert text.splitlines()[:4] == [
        "Nmap scan report for 127.0.0.1",
        "Host is up.",
        "",
        "PORT     STATE SERVICE",
    ]
    assert FOOTER not in text


def test_all_ports_ignored() -> None:
    ports = [result(p, "closed", hostname="localhost") for p in range(1, 41)]
    assert format_hosts(ports, version_scan=False).splitlines() == [
        "Nmap scan report for localhost (127.0.0.1)",
        "Host is up.",
        "All 40 scanned ports on localhost (127.0.0.1) are in ignored states.",
        "Not shown: 40 closed tcp ports (conn-refused)",
        "",
    ]


def named(r: dict[str, Any], others: list[str]) -> dict[str, Any]:
    """*r* as a port of ``localhost`` that also resolved to *others* (not scanned)."""
    r["hostname"] = "localhost"
    r["other_addresses"] = others
    return r


def test_other_addresses_line_after_the_host_status() -> None:
    # Nmap 7.95 in Debian 13 (/etc/hosts: ::1 localhost), `nmap -sV -sT -Pn -n -p N localhost`
    text = format_hosts([named(result(6379, name="redis"), ["::1"])], version_scan=False)
    assert text.splitlines()[:4] == [
        "Nmap scan report for localhost (127.0.0.1)",
        "Host is up.",
        "Other addresses for localhost (not scanned): ::1",
        "",
    ]
    # several, space separated in the resolver's order; also before "Not shown" and in -oN
    ports = [named(result(p, "closed"), ["::1", "127.0.0.2"]) for p in range(1, 41)]
    lines = format_normal(ports, META).splitlines()
    assert lines[1:5] == [
        "Nmap scan report for localhost (127.0.0.1)",
        "Host is up.",
        "Other addresses for localhost (not scanned): ::1 127.0.0.2",
        "All 40 scanned ports on localhost (127.0.0.1) are in ignored states.",
    ]


def test_other_addresses_line_only_for_a_name_with_others() -> None:
    for r in (result(22), named(result(22), []), {**result(22), "other_addresses": ["::1"]}):
        assert "Other addresses" not in format_hosts([r])
    # results of one host agree; the first result that names the host gives its others
    ports = [result(21), named(result(22), ["::1"]), named(result(23), ["::2"])]
    assert "Other addresses for localhost (not scanned): ::1\n" in format_hosts(ports)


def test_other_addresses_are_not_in_xml() -> None:
    # write_host_header prints them with LOG_PLAIN (normal output and terminal) only
    plain = format_xml([result(22, hostname="localhost")], META)
    assert format_xml([named(result(22), ["::1"])], META) == plain


def test_fingerprint_block_singular_and_at_most_nine() -> None:
    one = fingerprint_block(["SF-A;"])
    assert one == [
        "1 service unrecognized despite returning data. If you know the service/version, "
        "please submit the following fingerprint at "
        "https://nmap.org/cgi-bin/submit.cgi?new-service :",
        "SF-A;",
    ]
    many = fingerprint_block([f"SF-{i};" for i in range(12)])
    assert many[0].startswith("9 services unrecognized")
    assert many.count(FP_SEPARATOR) == 9
    assert many[-1] == "SF-8;"
    assert fingerprint_block([]) == []


def test_format_normal_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    try:
        text = format_normal([result(22, name="ssh", conf=10, method="probed")], META)
    finally:
        monkeypatch.undo()
        time.tzset()
    lines = text.splitlines()
    assert (
        lines[0]
        == "# vscan scan initiated Sun Nov 22 11:47:29 2026 as: vscan scan -p 1-40 127.0.0.1"
    )
    assert lines[-2] == FOOTER
    assert lines[-1] == (
        "# vscan done at Sun Nov 22 11:47:31 2026 -- "
        "1 IP address (1 host up) scanned in 2.50 seconds"
    )


def test_hosts_in_first_seen_order_ports_tcp_then_udp() -> None:
    results = [
        result(53, protocol="udp", host="10.0.0.2"),
        result(80, host="10.0.0.1"),
        result(22, host="10.0.0.2"),
    ]
    text = format_hosts(results, version_scan=False)
    assert text.index("10.0.0.2") < text.index("10.0.0.1")
    assert text.index("22/tcp") < text.index("53/udp")


# -- XML ------------------------------------------------------------------------------------


def test_xml_escape() -> None:
    assert escape("<a & 'b' \"c\">") == "&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;"
    assert escape("a--b---c-") == "a-&#45;b-&#45;&#45;c-"
    assert escape("x\ty\x01z\xe9") == "x&#x9;y&#x1;z&#xe9;"


def test_service_element_order_and_cpes() -> None:
    svc = empty_service("ssh", method="probed", conf=10)
    svc.update(
        product="OpenSSH",
        version="8.9p1 Ubuntu 3",
        extrainfo="Ubuntu Linux; protocol 2.0",
        ostype="Linux",
        cpe=["cpe:/o:linux:linux_kernel", "cpe:/a:openbsd:openssh:8.9p1"],
    )
    assert service_element(svc) == (
        '<service name="ssh" product="OpenSSH" version="8.9p1 Ubuntu 3" extrainfo="Ubuntu Linux;'
        ' protocol 2.0" ostype="Linux" method="probed" conf="10">'
        "<cpe>cpe:/a:openbsd:openssh:8.9p1</cpe><cpe>cpe:/o:linux:linux_kernel</cpe></service>"
    )
    wrapped = empty_service("tcpwrapped", method="probed", conf=8)
    assert service_element(wrapped) == '<service name="tcpwrapped" method="probed" conf="8"/>'
    full = empty_service(None)
    full.update(
        hostname="h",
        devicetype="d",
        tunnel="ssl",
        fingerprint=fingerprint(7001, b'"' * 60),
        product="p",
    )
    element = service_element(full)
    assert element.startswith('<service name="unknown" product="p" hostname="h" devicetype="d" ')
    assert ' servicefp="SF-Port7001-TCP:V=7.93%I=7%D=' in element
    assert "\n" not in element and "SF:" not in element.replace("SF-Port", "")
    assert element.endswith('tunnel="ssl" method="table" conf="3"/>')
    assert "&quot;" in element


def test_port_ranges() -> None:
    assert port_ranges([3, 1, 2, 5, 7, 8]) == "1-3,5,7-8"
    assert port_ranges([]) == ""


def rich_results() -> list[dict[str, Any]]:
    return (
        [result(p, "closed", name="svc", hostname="localhost") for p in range(1, 31)]
        + [
            result(
                22,
                name="ssh",
                method="probed",
                conf=10,
                product="OpenSSH",
                version="8.9p1",
                cpe=["cpe:/o:linux:linux_kernel", "cpe:/a:openbsd:openssh:8.9p1"],
                hostname="localhost",
            ),
            result(
                7001,
                name="afs3-callback",
                fingerprint=fingerprint(7001, bytes(range(256))),
                hostname="localhost",
            ),
            result(443, name="https", tunnel="ssl", hostname="localhost"),
            result(53, "open|filtered", protocol="udp", name="domain", hostname="localhost"),
        ]
        + [result(80, host="::1", name="http", extrainfo="a--b <&>")]
    )


def xmllint_or_skip() -> str:
    found = shutil.which("xmllint")
    if found is None or not DTD.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("xmllint (libxml2-utils) and nmap's DTD are required in CI")
        pytest.skip("xmllint or /usr/share/nmap/nmap.dtd missing")
    return found


def test_xml_document_layout() -> None:
    doc = format_xml(rich_results(), META)
    lines = doc.splitlines()
    assert lines[0] == '<?xml version="1.0" encoding="UTF-8"?>'
    assert lines[1] == "<!DOCTYPE nmaprun>"
    assert '<nmaprun scanner="nmap" args="vscan scan -p 1-40 127.0.0.1" start="1795348049"' in doc
    assert 'version="7.93" xmloutputversion="1.05">' in doc
    assert (
        '<scaninfo type="connect" protocol="tcp" numservices="33" services="1-30,22,80,443,7001"/>'
        not in doc
    )
    assert (
        '<scaninfo type="connect" protocol="tcp" numservices="33" services="1-30,80,443,7001"/>'
        in doc
    )
    assert '<scaninfo type="udp" protocol="udp" numservices="1" services="53"/>' in doc
    assert (
        '<ports><extraports state="closed" count="30">\n'
        '<extrareasons reason="conn-refused" count="30" proto="tcp" ports="1-30"/>\n'
        "</extraports>\n"
        '<port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="0"/>'
    ) in doc
    assert '<address addr="::1" addrtype="ipv6"/>\n<hostnames>\n</hostnames>' in doc
    assert '<hostname name="localhost" type="user"/>' in doc
    assert 'extrainfo="a-&#45;b &lt;&amp;&gt;"' in doc
    assert '<hosts up="2" down="0" total="2"/>' in doc
    assert 'elapsed="2.50" exit="success"/>' in doc


def test_xml_validates_against_nmap_dtd(tmp_path: Path) -> None:
    xmllint = xmllint_or_skip()
    path = tmp_path / "ours.xml"
    path.write_text(format_xml(rich_results(), META))
    done = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # a scanner other than "nmap" is not allowed by the DTD (why we write "nmap")
    path.write_text(path.read_text().replace('scanner="nmap"', 'scanner="vscan"'))
    done = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0


def ndiff_or_skip() -> str:
    found = shutil.which("ndiff")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ndiff is required in CI")
        pytest.skip("ndiff is not installed")
    return found


def run_ndiff(ndiff: str, a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([ndiff, str(a), str(b)], check=False, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done


def test_ndiff_reads_our_files(tmp_path: Path) -> None:
    ndiff = ndiff_or_skip()
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_text(format_xml(rich_results(), META))
    b.write_text(format_xml(rich_results(), META))
    same = run_ndiff(ndiff, a, b)
    assert same.returncode == 0 and same.stdout == ""
    changed = rich_results()
    for r in changed:
        if r["port"] == 22:
            r["service"]["version"] = "9.2p1"
    b.write_text(format_xml(changed, META))
    diff = run_ndiff(ndiff, a, b)
    assert diff.returncode == 1
    assert "-22/tcp open  ssh     OpenSSH 8.9p1" in diff.stdout
    assert "+22/tcp open  ssh     OpenSSH 9.2p1" in diff.stdout


@pytest.mark.oracle_live
def test_ndiff_between_nmap_and_us_on_closed_ports(tmp_path: Path) -> None:
    nmap = nmap_or_skip()
    ndiff = ndiff_or_skip()
    theirs = tmp_path / "nmap.xml"
    subprocess.run(
        [nmap, "-sT", "-Pn", "-n", "-p", "1-40", "127.0.0.1", "-oX", str(theirs)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if "conn-refused" not in theirs.read_text() or 'count="40"' not in theirs.read_text():
        pytest.skip("something listens on 127.0.0.1 ports 1-40")
    ours = tmp_path / "ours.xml"
    ports = [result(p, "closed", name="svc") for p in range(1, 41)]
    ours.write_text(format_xml(ports, META))
    done = run_ndiff(ndiff, theirs, ours)
    # only the run-level header may differ (args and times), no host or port lines
    changed = [
        line
        for line in done.stdout.splitlines()
        if line[:1] in "+-" and not re.match(r"[+-]Nmap \d+\.\d+ scan initiated ", line)
    ]
    assert changed == [], done.stdout
    xmllint = xmllint_or_skip()
    check = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(theirs), str(ours)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


# -- JSON lines -----------------------------------------------------------------------------


def test_jsonl_key_order_and_ascii() -> None:
    r = result(22, name="ssh", product="caf\xe9")
    r["other_addresses"] = ["::1"]
    shuffled = dict(reversed(list(r.items())))
    shuffled["service"] = dict(reversed(list(r["service"].items())))
    shuffled["extra"] = 1
    line = dumps(shuffled)
    assert "\n" not in line and line.isascii()
    assert "caf\\u00e9" in line
    back = json.loads(line)
    assert list(back) == [*RESULT_KEYS, "extra"]
    assert list(back["service"]) == list(SERVICE_KEYS)


def test_write_jsonl() -> None:
    out = io.StringIO()
    assert write_jsonl([result(1), result(2)], out) == 2
    rows = out.getvalue().splitlines()
    assert [json.loads(r)["port"] for r in rows] == [1, 2]


def test_host_times_end_at_scanned_at_and_lie_inside_the_run() -> None:
    """``scanned_at`` is when a port's scan ended: the host ends at the last one and starts at
    the first one's start (``scanned_at - duration``), within the run's own times (the host's
    endtime used to be scanned_at + duration: later than the run's end)."""
    from vscand.output.hosts import Host, parse_time

    at = parse_time("2026-11-22T10:00:00Z")
    assert at is not None
    ports = (
        {**result(22), "scanned_at": "2026-11-22T10:00:50Z", "duration_ms": 4000},
        {**result(80), "scanned_at": "2026-11-22T10:00:52Z", "duration_ms": 9000},
    )
    host = Host(address="127.0.0.1", hostname=None, ports=ports)  # type: ignore[arg-type]
    run = ScanMeta(args="vscan scan", start=at + 40.2, end=at + 52.7)
    assert host.times(run) == (int(at + 43), int(at + 52))
    # whole-second scanned_at could put the start before the run's own: clamped
    late_start = ScanMeta(args="vscan scan", start=at + 48.5, end=at + 52.7)
    assert host.times(late_start) == (int(at + 48.5), int(at + 52))


def test_interrupted_ports_are_marked_after_the_table() -> None:
    """A cancelled job's ports that the cancel stopped print like the others (Nmap's
    columns have no place for it); a note after the table names them."""
    from vscand.output.normal import format_hosts

    plain = [result(22, product="OpenSSH"), result(80, state="closed", reason="conn-refused")]
    stopped = {**result(443, state="open"), "interrupted": True}
    assert "Interrupted" not in format_hosts(plain)
    text = format_hosts([*plain, stopped])
    assert text.splitlines()[-1] == (
        "Interrupted before their scan ended (1; not findings): 127.0.0.1 443/tcp"
    )
    assert "\n443/tcp open" in text.split("Interrupted")[0]  # its row is in the table as ever
