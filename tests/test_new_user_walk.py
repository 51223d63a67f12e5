"""A scripted new-user walk: what README.md tells a new user to do, done from a fresh clone.

1. ``git clone`` of this repository's HEAD; every repository path README.md names in
   backticks (inline or in a code block) exists in the clone: a document, unit, schema or
   tool the README points at was committed, not only present in the developer's checkout.
2. ``make install DESTDIR=ROOT`` in the clone, offline (a wheelhouse repacked from this
   venv, as tests/test_install.py does): exit 0, no ``systemctl`` called.
3. ``systemd-analyze verify`` of the installed units (skipped without systemd-analyze).
4. The installed daemon (``ROOT/opt/vscand/bin/twist vscand``, the installed
   ``ROOT/etc/vscand/vscand.conf`` plus ``--redis-url`` and a loopback ``--allow``) against a
   redis-server of this test's own, scanning an SSH banner listener of this test's own.
5. README's Python producer example, extracted as written, run by the installed venv's
   python (so the install must carry redis-py), then its ``redis-cli`` example under
   ``sh -c``, then the Install section's ``/opt/vscand/bin/vscan submit ... --wait``: each
   ends ``done`` and names the service ``ssh``.
6. SIGTERM stops the installed daemon cleanly.

Nothing imports the checkout: the installed programs run with no PYTHONPATH nor
VIRTUAL_ENV, from a scratch directory. All traffic is to 127.0.0.1 ports this test opened
(its redis-server, its banner listener); the machine's own Redis is never named."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.daemon_harness import (
    CACHE_DIR,
    SSH_BANNER,
    Listener,
    banner,
    wait_for,
    warm_prefilter_cache,
)
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.test_install import (
    build_wheelhouse,
    make_env,
    run,
    systemctl_called,
    verify_installed_units,
)
from tests.test_producer import readme_example
from tests.test_systemd_units import needs_systemd_analyze

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parent.parent
SYSTEM_REDIS_PORT = 6379  # the machine's own Redis: never used here
#: variables that would make an installed program import the checkout, or talk to systemd
NOT_PASSED = ("PYTHONPATH", "VIRTUAL_ENV", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _git(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *(str(a) for a in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of this repository's HEAD."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    top = _git("rev-parse", "--show-toplevel", cwd=REPO)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO:
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    target = tmp_path_factory.mktemp("walk") / "clone"
    cloned = _git("clone", "--quiet", REPO, target, cwd=REPO)
    assert cloned.returncode == 0, cloned.stderr
    head = _git("rev-parse", "HEAD", cwd=REPO).stdout.strip()
    assert _git("rev-parse", "HEAD", cwd=target).stdout.strip() == head
    return target


# --------------------------------------------------------------------------- 1. README paths


def top_level_entries() -> tuple[set[str], set[str]]:
    """The repository's top-level names (committed, or in the checkout and not ignored: a
    file left out of a commit is still recognised as a repository path) and which of them
    are files."""
    committed = _git("ls-tree", "HEAD", cwd=REPO).stdout.splitlines()
    names = {line.split("\t", 1)[1] for line in committed}
    files = {line.split("\t", 1)[1] for line in committed if line.split()[1] == "blob"}
    untracked = _git("ls-files", "--others", "--exclude-standard", cwd=REPO).stdout.split("\n")
    for path in filter(None, untracked):
        first, slash, _ = path.partition("/")
        names.add(first)
        if not slash:
            files.add(first)
    return names, files


def readme_paths(readme: str, names: set[str], files: set[str]) -> set[str]:
    """Repository paths README text names in backticks: words of inline spans and of code
    blocks that start with a top-level directory and a slash (``etc/vscand.conf``,
    ``tests/hostile/``, ``schemas/*.schema.json``), or are a top-level file (``DESIGN.md``).
    Absolute paths (the install's targets) and ``../`` paths are outside the repository."""
    fence = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
    blocks = fence.findall(readme)
    spans = re.findall(r"`([^`]+)`", fence.sub("", readme))
    found = set()
    for raw in " ".join([*blocks, *spans]).split():
        word = raw.strip("()[]{},;:'\"|&<>")
        first, slash, _ = word.partition("/")
        if (slash and first in names - files) or word in files:
            found.add(word)
    return found


def test_readme_paths_exist_in_the_clone(clone: Path) -> None:
    names, files = top_level_entries()
    readme = (clone / "README.md").read_text()
    paths = readme_paths(readme, names, files)
    # the extractor sees what it must (a test that finds no path would pass on anything)
    assert {
        "etc/vscand.conf",
        "systemd/vscand.service",
        "schemas/job.schema.json",
        "tools/install",
        "DESIGN.md",
        "vscand/producer.py",
        "tests/test_chaos.py",
    } <= paths, sorted(paths)
    missing = sorted(p for p in paths if not any(clone.glob(p.rstrip("/"))))
    assert missing == [], f"README.md names paths a fresh clone does not have: {missing}"


def test_readme_path_extractor_catches_a_missing_file(clone: Path) -> None:
    """The check above fails for a file README names that the clone lacks."""
    names, files = top_level_entries()
    text = "see `tools/no-such-tool --flag` and\n```\nmake x  # tests/nowhere.py\n```\n"
    paths = readme_paths(text + "`/etc/vscand/x.conf` `../shared/DESIGN.md`", names, files)
    assert paths == {"tools/no-such-tool", "tests/nowhere.py"}
    assert not any(clone.glob("tools/no-such-tool"))


# --------------------------------------------------------------------------- 2. make install


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="module")
def installed(clone: Path, wheelhouse: Path) -> Path:
    """``make install DESTDIR=ROOT`` run in the clone: ROOT."""
    root = clone.parent / "root"
    started = time.monotonic()
    done = run(
        "make",
        "--no-print-directory",
        "install",
        f"DESTDIR={root}",
        env=make_env(root, wheelhouse),
        cwd=clone,
    )
    print(f"make install in the clone: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not systemctl_called(root)
    assert "systemctl" not in done.stdout + done.stderr
    return root


def scratch_env() -> dict[str, str]:
    """This process's environment without what would point an installed program at the
    checkout or its venv, or at a Redis (VSCAND_REDIS_URL is set by the caller)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED}
    env.pop("VSCAND_REDIS_URL", None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    return env


def test_make_install_in_the_clone(installed: Path, clone: Path) -> None:
    venv = installed / "opt/vscand"
    assert (installed / "etc/vscand/vscand.conf").read_text() == (
        clone / "etc/vscand.conf"
    ).read_text()
    for unit in ("vscand.service", "vscand@.service"):
        assert (installed / "etc/systemd/system" / unit).is_file(), unit
    # the installed python imports vscand and redis-py (the producer client's) from its own
    # site-packages, run from a directory that is no checkout
    code = "import redis, vscand.producer; print(vscand.producer.__file__)"
    imported = run(venv / "bin/python", "-c", code, env=scratch_env(), cwd=installed)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(venv / "lib")), imported.stdout


# --------------------------------------------------------------------------- 3. units


@needs_systemd_analyze
def test_installed_units_verify(installed: Path, tmp_path: Path) -> None:
    verify_installed_units(installed, tmp_path)


# --------------------------------------------------------------------------- 4. the daemon


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server on a free loopback port (never the machine's)."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    assert server.port != SYSTEM_REDIS_PORT
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ssh_target() -> Iterator[Listener]:
    """An SSH banner on a loopback port of this test's own."""
    listener = Listener(banner(SSH_BANNER))
    try:
        yield listener
    finally:
        listener.close()


@dataclass
class InstalledDaemon:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def messages(self) -> list[str]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                out.append(line)
                continue
            out.append(f"{event.get('level')}: {event.get('message')}")
        return out

    def logged(self, text: str) -> bool:
        return any(text in message for message in self.messages())

    def tail(self) -> str:
        return "\n".join(self.messages()[-40:])


@pytest.fixture(scope="module")
def daemon(installed: Path, redis_server: RedisServer) -> Iterator[InstalledDaemon]:
    """``ROOT/opt/vscand/bin/twist vscand`` with the installed config, ready."""
    warm_prefilter_cache()
    env = scratch_env()
    env["VSCAND_REDIS_URL"] = redis_server.url  # were the option lost, still not 6379
    log_path = installed.parent / "vscand.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(installed / "opt/vscand/bin/twist"),
                "vscand",
                "--config",
                str(installed / "etc/vscand/vscand.conf"),
                "--redis-url",
                redis_server.url,
                "--allow",
                "127.0.0.1/32",
                "--consumer",
                "walk:1",
                "--log-format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=installed,
        )
    running = InstalledDaemon(proc, log_path)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the installed daemon exited ({proc.returncode}):\n{running.tail()}")
            return running.logged("vscand ready")

        wait_for(ready, 90, 0.1, "the installed daemon to be ready")
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(running.tail())  # shown when a test failed


def example_env(redis_server: RedisServer, target: Listener) -> dict[str, str]:
    env = scratch_env()
    env.update(VSCAND_REDIS_URL=redis_server.url, TARGET=target.endpoint)
    assert f":{SYSTEM_REDIS_PORT}/" not in env["VSCAND_REDIS_URL"]
    return env


# --------------------------------------------------------------------------- 5. the examples


def test_readme_python_example_with_the_installed_python(
    installed: Path,
    clone: Path,
    redis_server: RedisServer,
    daemon: InstalledDaemon,
    ssh_target: Listener,
    tmp_path: Path,
) -> None:
    ran = run(
        installed / "opt/vscand/bin/python",
        "-c",
        readme_example("python", clone / "README.md"),
        env=example_env(redis_server, ssh_target),
        cwd=tmp_path,  # no checkout: the installed vscand.producer is the one imported
        timeout=90,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    first, second = ran.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f-]{36} done ", first), ran.stdout
    assert second == f"127.0.0.1 {ssh_target.port} open ssh"


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_readme_redis_cli_example(
    clone: Path,
    redis_server: RedisServer,
    daemon: InstalledDaemon,
    ssh_target: Listener,
    tmp_path: Path,
) -> None:
    ran = run(
        "sh",
        "-c",
        readme_example("sh", clone / "README.md"),
        env=example_env(redis_server, ssh_target),
        cwd=tmp_path,
        timeout=90,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    status, line = ran.stdout.splitlines()
    assert re.fullmatch(r"job-\d+-\d+ done ", status), ran.stdout
    result: dict[str, Any] = json.loads(line)
    schema = json.loads((clone / "schemas/result.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(result)
    assert (result["host"], result["port"], result["state"]) == (
        "127.0.0.1",
        ssh_target.port,
        "open",
    )
    assert result["service"]["name"] == "ssh"


def test_readme_install_submit_with_the_installed_vscan(
    installed: Path,
    clone: Path,
    redis_server: RedisServer,
    daemon: InstalledDaemon,
    ssh_target: Listener,
    tmp_path: Path,
) -> None:
    """The Install section's last step, ``/opt/vscand/bin/vscan submit 127.0.0.1 -p 22
    --wait``, by the installed vscan (the port of this test's listener instead of 22); then
    ``vscan results JOB`` shows the port."""
    readme = (clone / "README.md").read_text()
    step = "/opt/vscand/bin/vscan submit 127.0.0.1 -p 22 --wait"
    assert f"\n{step}\n" in readme
    program, *args = step.split()
    vscan = installed / program.lstrip("/")
    args[args.index("22")] = str(ssh_target.port)
    env = example_env(redis_server, ssh_target)
    submitted = run(vscan, *args, env=env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    results = run(vscan, "results", job_id, env=env, cwd=tmp_path)
    assert results.returncode == 0, results.stdout + results.stderr
    assert re.search(rf"^{ssh_target.port}/tcp +open +ssh +OpenSSH 9\.2p1", results.stdout, re.M), (
        results.stdout
    )


# --------------------------------------------------------------------------- 6. the stop


def test_the_installed_daemon_stops_on_sigterm(daemon: InstalledDaemon) -> None:
    assert daemon.proc.poll() is None, daemon.tail()
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    code = daemon.proc.wait(20)
    print(f"the installed daemon exited {code} {time.monotonic() - sent:.1f} s after SIGTERM")
    # twist re-raises the signal once the reactor stopped: -SIGTERM is its clean exit
    # (tests/test_daemon_reliability.py), which systemd counts as success
    assert code in (0, -signal.SIGTERM), daemon.tail()
    assert daemon.logged("vscand stopped"), daemon.tail()
    troubles = [m for m in daemon.messages() if m.startswith(("warn", "error", "critical"))]
    assert troubles == [], troubles
