"""Run ``nmap -sV`` (NSE off) and ``vscan scan`` side by side on the same loopback ports.

The oracle: the installed nmap (``make test``), or, opted in with ``VSCAND_ORACLE=debian13``
(or ``debian12``; ``make test-oracle-other``; read by ``tests/releases.py``), the Nmap of
that Debian release's root (``oracle_nmap``), with vscan loading that root's probe file
(``vscan_command``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import releases
from tests.e2e.compare import parse_jsonl, parse_xml
from tests.e2e.daemons import DaemonFailed, Unavailable
from tests.loopback import nmap_or_skip
from vscand.cachedir import user_cache_dir

REPO = Path(__file__).resolve().parent.parent.parent


def oracle_nmap() -> str:
    """The nmap the differential suites run: the installed one by default; with
    ``VSCAND_ORACLE=debianN`` (another release than this machine's), a wrapper that runs the
    Debian N root's nmap through ``tools/debian-root N run``, the host's temp directory
    bind-mounted at the same path inside the root, so the work directory's paths (``-oX``,
    ``--datadir`` and its empty ``scripts/script.db``) are the same for both scanners. The
    opted-in oracle missing is a failure, not a skip. One executable path: the suites put it
    in their commands as is (also after ``ip netns exec``)."""
    if releases.oracle_is_installed():
        return nmap_or_skip()
    release = releases.oracle()
    if isinstance(release, releases.Unavailable):
        pytest.fail(f"{releases.ORACLE_ENV}={releases.oracle_name()}: {release.reason}")
    command = list(release.command)
    run = command.index("run") + 1
    tmp = str(Path(tempfile.gettempdir()).resolve())
    command[run:run] = ["--bind", tmp]
    wrapper = REPO / ".cache" / "oracle" / f"nmap-{release.name}"
    text = (
        "#!/bin/sh\n# written by tests/e2e/oracle_run.py: Nmap "
        f"{release.version} of the {release.name} root, {tmp} shared\n"
        f'exec {shlex.join(command)} "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        fresh = wrapper.with_name(f"{wrapper.name}.{os.getpid()}")
        fresh.write_text(text)
        fresh.chmod(0o755)
        fresh.replace(wrapper)
    return str(wrapper)


def vscan_oracle_args() -> list[str]:
    """vscan's options for the oracle: none for the installed nmap (vscan's defaults are its
    files); ``--probes`` of the root's probe file when opted in (the grammar and regex engine
    follow the file's release by themselves)."""
    if releases.oracle_is_installed():
        return []
    release = releases.oracle()
    if isinstance(release, releases.Unavailable):
        pytest.fail(f"{releases.ORACLE_ENV}={releases.oracle_name()}: {release.reason}")
    return ["--probes", str(release.probes_file)]


def vscan_command() -> list[str]:
    """``vscan`` of this checkout (not the venv's console script, which runs the checkout
    the venv was installed from: another worktree's code); the oracle's options
    (``vscan_oracle_args``) go after the caller's arguments (those of the subcommand)."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from vscand.cli import main; "
        f"sys.exit(main(sys.argv[1:] + {vscan_oracle_args()!r}))"
    )
    return [sys.executable, "-c", code]


def scan_env() -> dict[str, str]:
    """The environment of both scanners (vscan's prefilter cache in the checkout)."""
    env = dict(os.environ)
    env.setdefault("VSCAND_CACHE_DIR", str(user_cache_dir()))
    return env


def nse_off_datadir(workdir: Path) -> Path:
    """A ``--datadir`` whose empty ``scripts/script.db`` keeps nmap's NSE off ("Loaded 0
    scripts"); nmap finds its other data files in their usual place."""
    datadir = workdir / "datadir"
    (datadir / "scripts").mkdir(parents=True, exist_ok=True)
    (datadir / "scripts" / "script.db").write_text("")
    return datadir


#: one target of a side-by-side run: (case id, a server factory (``.port``, ``.close()``) or
#: None, a daemon starter taking the work directory (``.port``, ``.stop()``) or None)
Target = tuple[str, Callable[[], Any] | None, Callable[[Path], Any] | None]


def start_targets(
    stack: contextlib.ExitStack[Any], workdir: Path, targets: Sequence[Target]
) -> tuple[dict[str, int], dict[str, str]]:
    """Start every target (stopped by *stack*): ``(ports, unavailable)`` by case id. A daemon
    that is not installed is ``unavailable``; one that failed to start says ``FAILED: …``."""
    ports: dict[str, int] = {}
    unavailable: dict[str, str] = {}
    for case_id, make, start in targets:
        if make is not None:
            server = make()
            stack.callback(server.close)
            ports[case_id] = server.port
            continue
        assert start is not None, case_id
        try:
            daemon = start(workdir)
        except Unavailable as exc:
            unavailable[case_id] = str(exc)
            continue
        except DaemonFailed as exc:
            unavailable[case_id] = f"FAILED: {exc}"
            continue
        stack.callback(daemon.stop)
        ports[case_id] = daemon.port
    return ports, unavailable


def run_side_by_side(
    commands: Mapping[str, list[str]], workdir: Path, timeout: float
) -> tuple[dict[str, float], dict[str, str]]:
    """Start every command at once (output to ``workdir/<name>.log``), wait for all within
    *timeout* (else kill them and fail), fail unless each exited 0. ``(seconds, logs)``:
    each command's wall time from the common start, and its output."""
    env = scan_env()
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        procs = {}
        started = time.monotonic()
        for name, cmd in commands.items():
            out = stack.enter_context(open(workdir / f"{name}.log", "wb"))
            procs[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = started + timeout
        while len(seconds) < len(procs):
            for name, proc in procs.items():
                if name not in seconds and proc.poll() is not None:
                    seconds[name] = round(time.monotonic() - started, 1)
            if time.monotonic() > deadline:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                raise AssertionError(f"scans did not finish within {timeout} s (done: {seconds})")
            time.sleep(0.1)
    logs = {name: (workdir / f"{name}.log").read_text(errors="replace") for name in commands}
    for name, proc in procs.items():
        if proc.returncode != 0:
            raise AssertionError(f"{name} failed (exit {proc.returncode}):\n{logs[name]}")
    return seconds, logs


def keep_outputs(workdir: Path, prefix: str = "", names: Sequence[str] | None = None) -> None:
    """With ``VSCAND_E2E_KEEP=DIR``, copy the run's files (or *names*) there for a look."""
    keep = os.environ.get("VSCAND_E2E_KEEP")
    if not keep:
        return
    dest = Path(keep)
    dest.mkdir(parents=True, exist_ok=True)
    paths = [workdir / n for n in names] if names is not None else sorted(workdir.iterdir())
    for path in paths:
        if path.is_file():
            shutil.copy(path, dest / f"{prefix}{path.name}")


def _renumbered(record: dict[str, Any], old: int, new: int) -> dict[str, Any]:
    """A twin's record as if it were the original's: the twins differ only by port number,
    which the fingerprint (``SF-Port…``) and some servers' own words (``openssl s_server
    -www`` shows its command line) mention."""
    number = re.compile(rf"(?<![0-9]){old}(?![0-9])")

    def text(value: Any) -> Any:
        return number.sub(str(new), value) if isinstance(value, str) else value

    return {
        key: [text(v) for v in value] if isinstance(value, list) else text(value)
        for key, value in record.items()
    }


@dataclass
class BothScans:
    nmap: dict[int, dict[str, Any]]
    vscan: dict[int, dict[str, Any]]
    vscan_json: dict[int, dict[str, Any]]
    nmap_xml: Path
    vscan_xml: Path
    seconds: dict[str, float]
    logs: dict[str, str]


def scan_both(
    nmap: str,
    ports: list[int],
    workdir: Path,
    timeout: float,
    twins: Mapping[int, int] | None = None,
) -> BothScans:
    """Both scanners at once on 127.0.0.1 ``ports``; NSE off (an empty ``script.db``).

    ``twins`` maps a port of ``ports`` to a second instance of the same target: nmap scans
    the first, vscan the second. A server that serves one connection at a time (``openssl
    s_server``) is thereby met by one scanner at a time, as in the field, instead of making
    one scanner wait in its accept queue for as long as the other holds it. vscan's record
    of a twin is reported under nmap's port (its fingerprint's ``SF-Port`` too)."""
    twins = dict(twins or {})
    datadir = nse_off_datadir(workdir)
    portlist = ",".join(str(p) for p in sorted(ports))
    vscan_portlist = ",".join(str(p) for p in sorted(twins.get(p, p) for p in ports))
    nmap_xml, vscan_xml, vscan_json = (
        workdir / "nmap.xml",
        workdir / "vscan.xml",
        workdir / "vscan.jsonl",
    )
    nmap_cmd = [nmap, "-sV", "-Pn", "-n", "-p", portlist, "127.0.0.1", "-oX", str(nmap_xml)]
    vscan_cmd = [
        *vscan_command(),
        "scan",
        "127.0.0.1",
        "-p",
        vscan_portlist,
        "-oX",
        str(vscan_xml),
    ]
    # VSCAND_E2E_NMAP_ARGS: more nmap options for a look at a disagreement (e.g.
    # "--version-trace": nsock's events; the log is kept with VSCAND_E2E_KEEP). Debugging
    # options change nmap's answer: -d lifts its fingerprint size cap
    nmap_cmd += os.environ.get("VSCAND_E2E_NMAP_ARGS", "").split()
    commands = {
        "nmap": [*nmap_cmd, "--datadir", str(datadir)],
        # both without version scripts: nmap's script.db is empty
        "vscan": [*vscan_cmd, "-oJ", str(vscan_json), "--no-progress", "--no-scripts"],
    }
    seconds, logs = run_side_by_side(commands, workdir, timeout)
    if "<script " in nmap_xml.read_text():
        raise AssertionError("NSE ran: the empty script.db was ignored")
    # one copy per run
    keep_outputs(
        workdir,
        f"both-{workdir.parent.name}-{workdir.name}-",
        ("nmap.xml", "vscan.xml", "vscan.jsonl", "nmap.log", "vscan.log"),
    )
    vscan, vscan_records = parse_xml(vscan_xml), parse_jsonl(vscan_json)
    for nmap_port, vscan_port in twins.items():
        for records in (vscan, vscan_records):
            if vscan_port in records:
                records[nmap_port] = records.pop(vscan_port)
        if nmap_port in vscan:
            vscan[nmap_port] = _renumbered(vscan[nmap_port], vscan_port, nmap_port)
    return BothScans(
        nmap=parse_xml(nmap_xml),
        vscan=vscan,
        vscan_json=vscan_records,
        nmap_xml=nmap_xml,
        vscan_xml=vscan_xml,
        seconds=seconds,
        logs=logs,
    )
