"""The ``vscan`` command line: output, exit codes and one-line errors.

A few cases run the installed console script in a subprocess (what a user
runs); the rest call :func:`vscand.cli.main` in-process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.releases import debian13, probe_file_facts, require
from vscand.cachedir import user_cache_dir
from vscand.cli import build_parser, main
from vscand.cli.scan_options import REFUSED_NMAP_OPTIONS, apply_timing
from vscand.probes.release import installed_release

REPO = Path(__file__).resolve().parent.parent
VSCAN = REPO / ".venv" / "bin" / "vscan"
SSH_BANNER = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n"
SSH_SERVICE = {
    "name": "ssh",
    "product": "OpenSSH",
    "version": "8.9p1 Ubuntu 3ubuntu0.1",
    "extrainfo": "Ubuntu Linux; protocol 2.0",
    "hostname": None,
    "ostype": "Linux",
    "devicetype": None,
    "tunnel": None,
    "method": "probed",
    "conf": 10,
    "cpe": ["cpe:/a:openbsd:openssh:8.9p1", "cpe:/o:linux:linux_kernel"],
}


def cache_dir() -> str:
    configured = os.environ.get("VSCAND_CACHE_DIR")
    return configured if configured else str(user_cache_dir())


def run_script(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    if not VSCAN.exists():
        pytest.skip(f"console script {VSCAN} is not installed")
    env = dict(os.environ, VSCAND_CACHE_DIR=cache_dir())
    return subprocess.run(
        [str(VSCAN), *args], input=stdin, capture_output=True, env=env, timeout=120, check=False
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args[:2], *args[2:], "--cache-dir", cache_dir()] if args else [])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vscan: error: ")
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def ssh_file(tmp_path: Path) -> Path:
    path = tmp_path / "ssh.bin"
    path.write_bytes(SSH_BANNER)
    return path


# --- the console script ------------------------------------------------------------------------


def test_script_match_table(ssh_file: Path) -> None:
    proc = run_script("match", "NULL", str(ssh_file))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["SERVICE", "VERSION"]
    assert lines[1].split(None, 1) == [
        "ssh",
        "OpenSSH 8.9p1 Ubuntu 3ubuntu0.1 (Ubuntu Linux; protocol 2.0)",
    ]
    assert "Service Info: OS: Linux; CPE: cpe:/o:linux:linux_kernel" in lines
    assert lines[-1].startswith("(hard match: NULL matched with NULL line ")


def test_script_stdin_json() -> None:
    proc = run_script("match", "NULL", "-", "--json", stdin=SSH_BANNER)
    assert proc.returncode == 0, proc.stderr
    service = json.loads(proc.stdout)
    assert {k: service[k] for k in SSH_SERVICE} == SSH_SERVICE


def test_script_no_match_exit_code() -> None:
    proc = run_script("match", "NULL", "-", stdin=b"\x01\x02 nothing known \x03")
    assert proc.returncode == 1
    assert b"No match for" in proc.stdout


def test_script_unknown_probe() -> None:
    proc = run_script("match", "NoSuchProbe", "-", stdin=SSH_BANNER)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert_one_line_error(proc.stderr.decode(), "NoSuchProbe")


def test_script_probes_stats_json() -> None:
    proc = run_script("probes", "--stats", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    # the installed file: Nmap 7.93's on Debian 12 (PCRE 8.39), 7.95's on Debian 13 (PCRE2)
    expected = INSTALLED_FILE_STATS.get(stats["regex_engine"]["nmap_release"])
    if expected is None:
        pytest.skip(f"no counts known for Nmap {stats['regex_engine']['nmap_release']}'s file")
    counts, library = expected
    assert (stats["probes"], stats["tcp_probes"], stats["udp_probes"]) == counts[:3]
    assert (stats["match"], stats["softmatch"]) == counts[3:5]
    assert stats["null_probe_lines"] == counts[5]
    assert stats["fallbacks"] == counts[6]
    assert stats["exclude"]["tcp"] == [[9100, 9107]]
    assert stats["pcre"].startswith(library)


#: Nmap release -> ((probes, TCP, UDP, match, softmatch, NULL probe lines, fallbacks),
#: regex library version prefix) of its installed nmap-service-probes
INSTALLED_FILE_STATS = {
    "7.93": ((148, 100, 48, 11721, 196, 4029, 11), "8.39"),
    "7.95": ((185, 101, 84, 11949, 203, 4072, 12), "10."),
}


# --- in-process ------------------------------------------------------------------------------


def test_match_json_service_object(capsys: pytest.CaptureFixture[str], ssh_file: Path) -> None:
    code, out, err = run_main(capsys, "match", "NULL", str(ssh_file), "--json")
    assert code == 0, err
    service = json.loads(out)
    assert {k: service[k] for k in SSH_SERVICE} == SSH_SERVICE


def test_match_plain_path_gives_the_same_json(
    capsys: pytest.CaptureFixture[str], ssh_file: Path
) -> None:
    code, out, _ = run_main(capsys, "match", "NULL", str(ssh_file), "--json", "--no-prefilter")
    assert code == 0
    service = json.loads(out)
    assert {k: service[k] for k in SSH_SERVICE} == SSH_SERVICE


def test_match_through_a_fallback_with_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    response = tmp_path / "http.bin"
    response.write_bytes(SSH_BANNER)
    code, out, err = run_main(capsys, "match", "GetRequest", str(response), "--trace")
    assert code == 0
    assert "ssh" in out.splitlines()[1]
    assert "Probe GetRequest matched with NULL line" in err
    assert "hard match" in err


def test_match_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SSH_BANNER)))
    code, out, _ = run_main(capsys, "match", "NULL", "-", "--json")
    assert code == 0
    assert json.loads(out)["product"] == "OpenSSH"


def test_no_match_json_is_null(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, out, _ = run_main(capsys, "match", "NULL", "-", "--json")
    assert code == 1
    assert out.strip() == "null"


def test_udp_probe_by_protocol(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    response = tmp_path / "r.bin"
    response.write_bytes(b"\x01\x02")
    code, out, err = run_main(capsys, "match", "UDP/DNSVersionBindReq", str(response))
    assert code == 1
    assert "UDP DNSVersionBindReq chain" in out
    assert err == ""


def test_unknown_probe(capsys: pytest.CaptureFixture[str], ssh_file: Path) -> None:
    code, out, err = run_main(capsys, "match", "UDP/NULL", str(ssh_file))
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "UDP/NULL")


def test_unreadable_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    code, out, err = run_main(capsys, "match", "NULL", str(missing))
    assert code == 2
    assert out == ""
    assert_one_line_error(err, str(missing))
    code, _, err = run_main(capsys, "match", "NULL", str(tmp_path))
    assert code == 2
    assert_one_line_error(err, str(tmp_path))


def test_bad_extra_probe_file(
    capsys: pytest.CaptureFixture[str], ssh_file: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.probes"
    extra.write_bytes(b"Probe TCP NULL q||\nmatch broken m|(unclosed|\n")
    code, out, err = run_main(capsys, "match", "NULL", str(ssh_file), "--extra-probes", str(extra))
    assert code == 2
    assert out == ""
    assert_one_line_error(err, f"{extra}:2:")


def test_good_extra_probe_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "extra.probes"
    extra.write_bytes(b"Probe TCP NULL q||\nmatch vscand-test m|^VSCAND (\\d+)| v/$1/\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"VSCAND 42\n")))
    code, out, _ = run_main(
        capsys, "match", "NULL", "-", "--json", "--no-prefilter", "--extra-probes", str(extra)
    )
    assert code == 0
    service = json.loads(out)
    assert (service["name"], service["version"]) == ("vscand-test", "42")


def test_missing_probes_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none"
    code, _, err = run_main(capsys, "probes", "--stats", "--probes", str(missing))
    assert code == 2
    assert_one_line_error(err, str(missing))


def test_probes_stats_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "probes", "--stats", "--json", "--no-prefilter")
    assert code == 0
    stats = json.loads(out)
    want = probe_file_facts(stats["grammar"])  # the installed file's release
    assert (stats["probes"], stats["match"], stats["softmatch"]) == (
        want["probes"],
        want["match"],
        want["softmatch"],
    )
    assert stats["prefilter"] == "disabled"


def test_probes_stats_of_debian_13_s_file(capsys: pytest.CaptureFixture[str]) -> None:
    # Nmap 7.95's file (the Debian 13 root, tests/releases.py): read as 7.95 reads it, by
    # default (the file is recognised) or when named; as 7.93 reads it when asked
    release = require(debian13())
    probes = str(release.probes_file)
    for extra, grammar in (
        ([], "7.95"),
        (["--nmap-release", "7.95"], "7.95"),
        (["--nmap-release", "7.93"], "7.93"),
    ):
        code, out, _ = run_main(
            capsys, "probes", "--stats", "--json", "--no-prefilter", "--probes", probes, *extra
        )
        assert code == 0
        stats = json.loads(out)
        want = probe_file_facts(release.version)
        assert (stats["probes"], stats["match"], stats["softmatch"]) == (
            want["probes"],
            want["match"],
            want["softmatch"],
        )
        assert stats["grammar"] == grammar
        assert stats["regex_engine"]["name"] == "pcre2"
        # no-payload (UDP Sqlping) means something from 7.94 on only
        assert stats["no_payload_probes"] == (1 if grammar == "7.95" else 0)


def test_unknown_nmap_release(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "probes", "--stats", "--nmap-release", "6.47")
    assert code == 2
    assert_one_line_error(err, "--nmap-release", "6.47")


def test_probes_listing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "probes", "--json", "--no-prefilter")
    assert code == 0
    rows = {(r["protocol"], r["name"]): r for r in json.loads(out)}
    found = installed_release()
    assert found is not None
    want = probe_file_facts(found[0])
    assert len(rows) == want["probes"]
    assert rows[("TCP", "DNSVersionBindReqTCP")]["fallback"] == ["DNSVersionBindReq", "NULL"]
    assert rows[("TCP", "NULL")]["totalwaitms"] == 6000
    assert rows[("TCP", "NULL")]["lines"] == want["null"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["scan", "127.0.0.1", "--concurrency", "0"], ["--concurrency", "'0'"]),
        (["scan", "127.0.0.1", "--concurrency", "x"], ["--concurrency", "'x'"]),
        (["scan", "127.0.0.1", "--per-host", "-1"], ["--per-host"]),
        (["scan", "127.0.0.1", "--connect-rate", "nan"], ["--connect-rate"]),
        (["scan", "127.0.0.1", "--connect-rate", "inf"], ["--connect-rate"]),
        (["scan", "127.0.0.1", "--fast-lanes", "0"], ["--fast-lanes"]),
        (["scan", "127.0.0.1", "--fast-wait", "-5"], ["--fast-wait"]),
        (["scan", "127.0.0.1", "--bogus"], ["unrecognized arguments: --bogus"]),
        ([], ["required: COMMAND"]),
        (["nonsense"], ["invalid choice"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, *words, "--help)")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out, _ = capsys.readouterr()
    assert out.startswith("vscan 0.") and "Twisted" in out


@pytest.mark.parametrize("option", sorted(REFUSED_NMAP_OPTIONS))
def test_nmap_options_vscan_does_not_take_are_refused_with_the_reason(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nargs, reason = REFUSED_NMAP_OPTIONS[option]
    with pytest.raises(SystemExit) as exited:
        main(["scan", "127.0.0.1", option, *(["base"] * nargs)])
    assert exited.value.code == 2
    _, err = capsys.readouterr()
    assert_one_line_error(err, f"{option}: {reason}")


@pytest.mark.parametrize(
    ("given", "template", "expected"),
    [
        ((1000, 0.0), "0", (1, 1 / 300)),
        ((1000, 0.0), "sneaky", (1, 1 / 15)),
        ((1000, 0.0), "2", (1, 2.5)),
        ((1000, 1.0), "2", (1, 1.0)),  # a stricter rate given stays
        ((50, 0.0), "4", (50, 0.0)),
        ((1000, 0.0), "5", (1000, 0.0)),
    ],
)
def test_timing_templates_set_the_documented_limits(
    given: tuple[int, float], template: str, expected: tuple[int, float]
) -> None:
    timing = [f"-T{template}"] if len(template) == 1 else ["-T", template]
    limits = ["--concurrency", str(given[0]), "--connect-rate", str(given[1])]
    args = build_parser().parse_args(["scan", "127.0.0.1", *timing, *limits])
    apply_timing(args)
    assert (args.concurrency, args.connect_rate) == expected


def test_a_person_is_told_why_the_first_run_waits(tmp_path: Path) -> None:
    """On a terminal, building the prefilter (a cold cache: ~20 s with the full probe file)
    says so on stderr; a second run (cached) and a pipe stay quiet."""
    import pty
    import subprocess
    import sys as system

    from vscand.probes import prefilter

    if not prefilter.available():
        pytest.skip("no prefilter library (hyperscan) here")
    probes = tmp_path / "probes"
    probes.write_text(
        "Probe TCP NULL q||\ntotalwaitms 6000\n"
        "match ssh m|^SSH-2\\.0-OpenSSH_(\\S+)\\r\\n| p/OpenSSH/ v/$1/\n"
    )
    response = tmp_path / "r.bin"
    response.write_bytes(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    vscan = str(Path(system.executable).with_name("vscan"))
    command = [vscan, "match", "NULL", str(response), "--probes", str(probes),
               "--cache-dir", str(tmp_path / "cache")]  # fmt: skip

    def on_a_terminal() -> str:
        leader, follower = pty.openpty()
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower) as proc:
            os.close(follower)
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            proc.wait(60)
        os.close(leader)
        return b"".join(chunks).decode()

    first = on_a_terminal()
    assert "vscan: compiling the prefilter of 1 match lines (once; it is kept in" in first
    assert on_a_terminal() == ""  # cached now
    piped = subprocess.run(
        [*command[:-1], str(tmp_path / "other-cache")], capture_output=True, text=True, check=False
    )
    assert piped.stderr == ""
