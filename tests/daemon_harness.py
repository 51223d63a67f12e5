"""Helpers for the daemon reliability tests: real ``twist vscand`` processes, a real
``redis-server`` (the ``redis_server`` fixture), loopback target servers.

Everything here talks to 127.0.0.0/8 only: target servers bind loopback addresses,
Redis is the fixture's loopback ``redis-server``, and every job the tests build names
loopback targets (forbidden-target cases use other loopback addresses denied by the
daemon's ``--deny``), so a wrong daemon still cannot dial anywhere else.

* :class:`Daemons` (fixture ``daemons``) starts daemons as subprocesses with JSON logs
  captured to files and SIGKILLs whatever is still running at teardown;
* :class:`Redis` runs one command per short-lived connection (it survives Redis
  restarts) and reads job hashes, result streams, the dead-letter stream, the PEL;
* :class:`Listener` is a threaded loopback server that counts accepted connections;
  the behaviours (``banner``, ``delayed_banner``, ``gated_banner``, ``silent``) are
  the target services;
* :func:`vscan` runs the CLI; :func:`wait_for` polls a condition.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.e2e.servers import Handler, ThreadedServer, _drain
from tests.redis_server import RedisServer
from tests.sync_redis import SyncRedis
from vscand.cachedir import user_cache_dir
from vscand.daemon.duties import SCHEDULE_TICK
from vscand.queue.keys import Keys

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWIST = str(BIN / "twist")
VSCAN = str(BIN / "vscan")
CACHE_DIR = str(user_cache_dir())  # the user's, as `make` and `vscan` use

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
FTP_BANNER = b"220 (vsFTPd 3.0.3)\r\n"
SMTP_BANNER = b"220 mail.example.com ESMTP Postfix (Debian/GNU)\r\n"

LOOPBACK_NETS = ("127.", "::1", "[::1]", "::ffff:127.", "[::ffff:127.")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll *condition* until it returns something truthy; that value. Fails the test
    with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def assert_schedule_window(
    run_ticks: list[int],
    state: Mapping[str, str],
    *,
    before_add: float,
    after_add: float,
    after_sleep: float,
    stopped: float,
    every: int,
    scan_bound: float,
) -> None:
    """The ticks an ``--every`` schedule claimed between its ``add`` and its pause (or the
    daemons' stop), held to bounds from the product's own periods, not this machine's speed.
    *run_ticks*: the ticks that were run (sorted); *state*: the schedule's hash.

    * every tick from the first to the last claimed one (run, or the last skipped) was claimed
      exactly once, run or skipped while the previous run was still queued or running: none
      lost, none twice: ``runs + skipped == (last - first) // every + 1``;

    Ticks are named after grid times (multiples of *every*); a late tick still claims the
    oldest due grid time; daemons look every ``SCHEDULE_TICK`` (1 s).

    * none before the add nor after the stop: ``before_add < first``, ``last <= stopped``;
    * the first grid time after the add is claimed, and run (no run precedes it):
      ``first <= after_add + every``;
    * claims go on: the grid time due one ``SCHEDULE_TICK`` before the sleep ended is
      claimed before the pause is even sent; one more interval is the reactors' allowance:
      ``last >= after_sleep - SCHEDULE_TICK - 2 * every``;
    * runs go on: a tick is skipped only while the previous run is in progress, which lasts
      at most its claim's tick plus *scan_bound* (the NULL probe's wait for a banner peer,
      seconds above a scan of milliseconds): the gap from a run to the next run (or to the
      last claimed tick) is at most ``SCHEDULE_TICK + scan_bound + every``.
    """
    assert run_ticks, (run_ticks, state)
    last_claimed = max(run_ticks[-1], int(state.get("last_skipped_tick", 0)))
    runs, skipped = int(state.get("runs", 0)), int(state.get("skipped", 0))
    assert runs + skipped == (last_claimed - run_ticks[0]) // every + 1, (run_ticks, state)
    context = (run_ticks, last_claimed, before_add, after_add, after_sleep, stopped)
    first, last = run_ticks[0], max(run_ticks[-1], last_claimed)
    assert before_add < first <= after_add + every, context
    assert last <= stopped, context
    assert last >= after_sleep - SCHEDULE_TICK - 2 * every, context
    gaps = [b - a for a, b in zip(run_ticks, [*run_ticks[1:], last], strict=True)]
    assert max(gaps) <= SCHEDULE_TICK + scan_bound + every, (gaps, context)


# --------------------------------------------------------------------------- Redis


class Redis:
    """Synchronous access to the fixture's Redis, one connection per command."""

    def __init__(self, server: RedisServer, prefix: str = "vscand:") -> None:
        self.server = server
        self.prefix = prefix

    def __call__(self, *args: Any) -> Any:
        conn = SyncRedis(self.server.port)
        try:
            return conn.call(*args)
        finally:
            conn.close()

    def try_call(self, *args: Any) -> Any:
        """Like calling, but ``None`` when Redis is unreachable."""
        try:
            return self(*args)
        except OSError:
            return None

    # keys
    def stream(self, queue: str | None = None) -> str:
        return f"{self.prefix}jobs" if not queue else f"{self.prefix}jobs:{queue}"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}dead"

    # reads
    def job(self, job_id: str) -> dict[str, str]:
        reply = self("HGETALL", Keys(self.prefix).job(job_id)) or []
        return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}

    def status(self, job_id: str) -> str | None:
        reply = self("HGET", Keys(self.prefix).job(job_id), "status")
        return None if reply is None else _text(reply)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        entries = self("XRANGE", Keys(self.prefix).job_results(job_id), "-", "+") or []
        out = []
        for _entry_id, fields in entries:
            values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            out.append(json.loads(values["result"]))
        return out

    def refused(self, entry_id: str) -> dict[str, str]:
        """The refusal record of a stream entry (``Keys.refused``)."""
        reply = self("HGETALL", f"{self.prefix}refused:{{{entry_id}}}") or []
        return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}

    def dead(self) -> list[dict[str, str]]:
        entries = self("XRANGE", self.dead_key, "-", "+") or []
        out = []
        for entry_id, fields in entries:
            values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields), 2)}
            values["_id"] = _text(entry_id)
            out.append(values)
        return out

    def pending_count(self, queue: str | None = None) -> int:
        reply = self("XPENDING", self.stream(queue), "vscand")
        return int(reply[0]) if reply else 0

    def pending(self, queue: str | None = None) -> list[tuple[str, str, int, int]]:
        """(entry, consumer, idle ms, deliveries) of every pending entry."""
        reply = self("XPENDING", self.stream(queue), "vscand", "-", "+", 10000) or []
        return [(_text(e), _text(c), int(idle), int(n)) for e, c, idle, n in reply]

    def group_exists(self, queue: str | None = None) -> bool:
        try:
            groups = self("XINFO", "GROUPS", self.stream(queue))
        except Exception:
            return False
        for raw in groups or []:
            info = {_text(raw[i]): raw[i + 1] for i in range(0, len(raw) - 1, 2)}
            if _text(info.get("name")) == "vscand":
                return True
        return False

    # writes
    def xadd_job(self, job: dict[str, Any] | bytes, queue: str | None = None) -> str:
        """XADD a job document directly (no checks), as any producer may; its entry id."""
        raw = job if isinstance(job, bytes) else json.dumps(job).encode()
        return _text(self("XADD", self.stream(queue), "*", "job", raw))

    def xadd_fields(self, *fields: Any, queue: str | None = None) -> str:
        return _text(self("XADD", self.stream(queue), "*", *fields))


# --------------------------------------------------------------------------- daemons


class Daemon:
    """One ``twist vscand`` subprocess; its JSON log lines go to ``log_path``."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        env: dict[str, str],
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log events so far (non-JSON lines kept as ``{"raw": line}``)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def messages(self) -> list[str]:
        """Log events formatted as text (roughly; enough to search)."""
        out = []
        for event in self.events():
            if "raw" in event:
                out.append(event["raw"])
                continue
            fmt = event.get("log_format") or ""
            try:
                out.append(
                    fmt.format(**{k: v for k, v in event.items() if not k.startswith("log_")})
                )
            except (KeyError, IndexError, ValueError):
                out.append(fmt)
            failure = event.get("log_failure")
            if failure:
                out.append(str(failure))
        return out

    def logged(self, text: str) -> bool:
        return any(text in m for m in self.messages())

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not self.alive():
                pytest.fail(
                    f"daemon {self.name} exited early ({self.proc.returncode}):\n{self.tail()}"
                )
            return self.logged("vscand ready")

        wait_for(ready, timeout, 0.05, f"daemon {self.name} to be ready")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.messages()[-lines:])


class RedisEndpoint(Protocol):
    """What the daemons are pointed at: a ``RedisServer``, or a ``SentinelCluster``
    (``tests/sentinel_cluster.py``), whose ``url`` is ``redis+sentinel://...``."""

    @property
    def url(self) -> str: ...


class Daemons:
    """Starts daemons against one Redis; kills every one still running at teardown."""

    def __init__(self, redis: RedisEndpoint, directory: Path) -> None:
        self.redis = redis
        self.directory = directory
        self.started: list[Daemon] = []
        self._count = 0

    def start(
        self,
        consumer: str,
        *options: str,
        job_idle_ms: int = 3000,
        drain_timeout: float = 10.0,
        block_ms: int = 500,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Daemon:
        self._count += 1
        log_path = self.directory / f"vscand-{self._count}-{consumer.replace(':', '_')}.log"
        config = self.directory / "empty-vscand.conf"  # never /etc/vscand/vscand.conf
        if not config.exists():
            config.write_text("[vscand]\n")
        args = [
            TWIST,
            "vscand",
            "--log-format",
            "json",  # JSON lines, no RFC 7464 separator
            "--config",
            str(config),
            "--redis-url",
            self.redis.url,
            "--consumer",
            consumer,
            "--job-idle-ms",
            str(job_idle_ms),
            "--block-ms",
            str(block_ms),
            "--drain-timeout",
            str(drain_timeout),
            "--command-timeout",
            "2",
            *options,
        ]
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "VSCAND_REDIS_URL")
        }
        full_env["VSCAND_CACHE_DIR"] = CACHE_DIR
        full_env.update(env or {})
        daemon = Daemon(consumer, args, log_path, full_env)
        self.started.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.kill()

    def logs(self) -> str:
        return "\n\n".join(f"== {d.name} (pid {d.pid})\n{d.tail(60)}" for d in self.started)


_cache_warm = False


def warm_prefilter_cache() -> None:
    """Build the prefilter cache in the test process once, before any daemon starts: a cold
    build takes ~25 s (more on a loaded machine), which every daemon would otherwise spend
    before READY, racing the harness's ready timeout."""
    global _cache_warm
    if not _cache_warm:
        from vscand.probes.matcher import load_matcher
        from vscand.probes.parser import find_probe_file

        load_matcher(find_probe_file(None), cache_dir=Path(CACHE_DIR))
        _cache_warm = True


def daemons_fixture(redis_server: RedisEndpoint, tmp_path: Path) -> Iterator[Daemons]:
    warm_prefilter_cache()
    pool = Daemons(redis_server, tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()


# --------------------------------------------------------------------------- CLI


def vscan(
    redis: RedisServer | None, *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``vscan ARGS`` (fleet commands get ``--redis-url`` of *redis*)."""
    extra = ["--redis-url", redis.url] if redis is not None else []
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_REDIS_URL"}
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    proc = subprocess.run(
        [VSCAN, *args, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"vscan {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


# --------------------------------------------------------------------------- targets


def banner(data: bytes) -> Handler:
    """Greets at once, then ignores input until the peer closes."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(data)
        _drain(conn)

    return handle


def delayed_banner(data: bytes, seconds: float) -> Handler:
    """Silent for *seconds* (whatever the client sends), then greets: a port whose
    scan takes that long."""

    def handle(conn: socket.socket) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            try:
                if not conn.recv(65536):
                    return  # the scanner went away
            except TimeoutError:
                break
        conn.sendall(data)
        _drain(conn)

    return handle


def gated_banner(data: bytes, gate: threading.Event) -> Handler:
    """Silent until *gate* is set, then greets: a scan that lasts until the test says."""

    def handle(conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not gate.is_set():
            try:
                if not conn.recv(65536):
                    return  # the scanner went away
            except TimeoutError:
                continue
        conn.sendall(data)
        _drain(conn)

    return handle


def silent(conn: socket.socket) -> None:
    """Accepts and never speaks (a scan of it takes minutes: the "long" job)."""
    _drain(conn)


class Listener(ThreadedServer):
    """A threaded TCP server on a loopback address that records accepted connections."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(handler, host=host, port=port, backlog=256)


class Listeners:
    """Fixture helper: listeners closed at teardown."""

    def __init__(self) -> None:
        self.all: list[Listener] = []

    def __call__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> Listener:
        listener = Listener(handler, host, port)
        self.all.append(listener)
        return listener

    def close(self) -> None:
        for listener in self.all:
            listener.close()


def assert_loopback_job(job: dict[str, Any]) -> None:
    """Guard: a job a test submits names loopback targets only."""
    for item in [*job.get("targets", []), *job.get("endpoints", [])]:
        assert (
            any(str(item).startswith(p) for p in LOOPBACK_NETS)
            or str(item).isdigit()
            or str(item).startswith("0x7f")
        ), f"non-loopback target {item!r} in a test job"
