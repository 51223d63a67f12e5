"""A real Redis Sentinel setup on loopback, for failover tests: one master, one replica
(``--replicaof``), three sentinels (``redis-server <conf> --sentinel``: Debian's
``redis-server`` package has no ``redis-sentinel`` link), all throwaway.

Every process binds 127.0.0.1 on a free port of this worker's slice (``free_port``), keeps
its data, its log and (a sentinel) its generated config file in the test's temporary
directory, and is SIGKILLed at teardown.

No persistence (``--save ""``, ``--appendonly no``), on purpose: after a failover what
counts is what reached the replica before the master died, and a killed master is only
ever restarted as a replica of the new one (``restart_as_replica``), whose full sync
replaces its dataset; so a write is lost exactly when it had not been replicated, and
disk timing does not blur that. (A master restarted empty *as a master* would wipe its
replica: ``restart_as_replica`` never does that.)

``--enable-debug-command yes``: Redis 7 refuses ``DEBUG`` by default, and
``freeze_master`` needs ``DEBUG SLEEP``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import free_port
from tests.redis_server import REDIS_SERVER
from tests.sync_redis import RedisReplyError, SyncRedis

SERVICE = "vscand"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def call(port: int, *args: Any, timeout: float = 5.0) -> Any:
    """One command to ``127.0.0.1:port`` on a connection of its own."""
    conn = SyncRedis(port)
    try:
        conn.sock.settimeout(timeout)
        return conn.call(*args)
    finally:
        conn.close()


def info(port: int, section: str = "replication") -> dict[str, str]:
    text = _text(call(port, "INFO", section))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Process:
    """One ``redis-server`` (a data node or a sentinel) on a fixed loopback port."""

    def __init__(self, name: str, directory: Path, port: int, args: list[str]) -> None:
        self.name = name
        self.directory = directory
        self.port = port
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, *self.args, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.directory),
        )
        self.wait_ready()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                break
            try:
                if call(self.port, "PING", timeout=0.5) == b"PONG":
                    return
            except (OSError, RedisReplyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} on port {self.port} did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "redis.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL and reap: the process vanishes without a goodbye."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)


class SentinelCluster:
    """One master, one replica, three sentinels monitoring them as ``vscand``.

    *down_after_ms*: the sentinels' ``down-after-milliseconds`` (how long the master may
    not answer before it is subjectively down); *failover_timeout_ms*: their
    ``failover-timeout`` (a failover that stalls is retried after twice that).
    """

    def __init__(
        self,
        directory: Path,
        down_after_ms: int = 5000,
        failover_timeout_ms: int = 10000,
        quorum: int = 2,
    ) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = quorum
        self.nodes: list[Process] = []
        self.sentinels: list[Process] = []
        self._stalls: list[threading.Thread] = []
        master_port = free_port()
        self.initial_master = master_port
        try:
            self.nodes.append(self._node("master", master_port))
            self.nodes[0].start()
            self.nodes.append(self._node("replica", free_port()))
            self.nodes[1].start("--replicaof", "127.0.0.1", str(master_port))
            self.wait_replicated(master_port, 1)
            for i in range(3):
                sentinel = self._sentinel(f"sentinel{i + 1}", free_port(), master_port)
                sentinel.start()
                self.sentinels.append(sentinel)
            self.wait_monitoring(replicas=1)
        except BaseException:
            self.stop()
            raise

    # -- processes ---------------------------------------------------------------------------

    def _node(self, name: str, port: int) -> Process:
        directory = self.directory / name
        args = [
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--enable-debug-command", "yes",
            # a (re)started replica syncs at once (the default waits 5 s for more replicas)
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        return Process(name, directory, port, args)

    def _sentinel(self, name: str, port: int, master_port: int) -> Process:
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # the sentinel rewrites it: must be writable
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            f'dir "{directory}"\n'
            f'logfile "{directory / "redis.log"}"\n'
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return Process(name, directory, port, [str(conf), "--sentinel"])

    def node(self, port: int) -> Process:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    # -- what the sentinels say ----------------------------------------------------------------

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self.sentinels]

    def ask(self, sentinel: Process, *args: Any) -> Any:
        return call(sentinel.port, "SENTINEL", *args, timeout=2.0)

    def master_of(self, sentinel: Process) -> tuple[str, int]:
        host, port = self.ask(sentinel, "get-master-addr-by-name", SERVICE)
        return _text(host), int(port)

    def master(self) -> tuple[str, int]:
        """The master's address as the first sentinel that answers reports it."""
        error: Exception | None = None
        for sentinel in self.sentinels:
            try:
                return self.master_of(sentinel)
            except (OSError, RedisReplyError, TypeError, ValueError) as exc:
                error = exc
        raise RuntimeError(f"no sentinel answered: {error}")

    @property
    def port(self) -> int:
        """The current master's port (as a sentinel reports it): lets this stand in for a
        ``RedisServer`` where only ``.port`` is read (``daemon_harness.Redis``)."""
        return self.master()[1]

    def wait_replicated(self, master_port: int, replicas: int, timeout: float = 20.0) -> None:
        """Until *master_port* is a master with *replicas* online replicas."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                last = info(master_port)
                online = sum(
                    1
                    for key, value in last.items()
                    if key.startswith("slave") and key[5:].isdigit() and "state=online" in value
                )
                if last.get("role") == "master" and online >= replicas:
                    return
            except (OSError, RedisReplyError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"port {master_port}: not a master with {replicas} replicas: {last}")

    def wait_monitoring(self, replicas: int, timeout: float = 30.0) -> None:
        """Until every sentinel knows the master, its *replicas* and the two other sentinels
        (a failover needs a known replica and a quorum of sentinels that know each other)."""
        deadline = time.monotonic() + timeout
        state: list[Any] = []
        while time.monotonic() < deadline:
            try:
                state = []
                for sentinel in self.sentinels:
                    known_replicas = [
                        _pairs(r)
                        for r in self.ask(sentinel, "replicas", SERVICE)
                        if "disconnected" not in _pairs(r).get("flags", "")
                        and "s_down" not in _pairs(r).get("flags", "")
                    ]
                    peers = self.ask(sentinel, "sentinels", SERVICE)
                    state.append((sentinel.name, len(known_replicas), len(peers)))
                if all(r >= replicas and p >= len(self.sentinels) - 1 for _, r, p in state):
                    return
            except (OSError, RedisReplyError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"sentinels not ready (name, replicas, peers): {state}")

    # -- breaking the master ---------------------------------------------------------------------

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master()[1]
        self.node(port).kill()
        return port

    def freeze_master(self, seconds: float) -> int:
        """``DEBUG SLEEP seconds`` on the current master, not waiting for the reply (a thread
        reads it and closes the connection); its port. Past ``down_after_ms`` the
        sentinels fail over; when it wakes up it is still a master until they make it a
        replica (some seconds later)."""
        port = self.master()[1]
        sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 30)
        arg = f"{seconds:g}".encode()
        sock.sendall(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$%d\r\n%s\r\n" % (len(arg), arg))

        def wait_reply() -> None:
            with sock, contextlib.suppress(OSError):
                sock.recv(64)

        thread = threading.Thread(target=wait_reply, daemon=True)
        thread.start()
        self._stalls.append(thread)
        return port

    def wait_failover(self, old_port: int, timeout: float = 60.0) -> int:
        """Until a majority of the sentinels report a master other than *old_port* and that
        server says it is a master; its port."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while time.monotonic() < deadline:
            seen = []
            for sentinel in self.sentinels:
                try:
                    seen.append(self.master_of(sentinel)[1])
                except (OSError, RedisReplyError, TypeError, ValueError) as exc:
                    seen.append(repr(exc))
            for port in {p for p in seen if isinstance(p, int) and p != old_port}:
                if seen.count(port) * 2 > len(self.sentinels):
                    try:
                        if info(port).get("role") == "master":
                            return port
                    except (OSError, RedisReplyError):
                        pass
            time.sleep(0.05)
        raise RuntimeError(f"no failover from port {old_port} within {timeout}s: {seen}")

    def restart_as_replica(self, port: int) -> None:
        """Start the (killed) server of *port* again, as a replica of the current master,
        and wait until that master has it online (never as an empty master: its old
        replica would sync the empty dataset)."""
        master_port = self.master()[1]
        assert master_port != port, "the sentinels still name the killed server"
        self.node(port).start("--replicaof", "127.0.0.1", str(master_port))
        self.wait_replicated(master_port, 1)

    # -- teardown ----------------------------------------------------------------------------

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):  # keep killing the others
                process.kill()

    def logs(self, lines: int = 15) -> str:
        return "\n".join(
            f"== {p.name} (port {p.port})\n{p.log_tail(lines)}"
            for p in [*self.nodes, *self.sentinels]
        )


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    if not os.path.exists(REDIS_SERVER):
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (the Makefile installs it)")
        pytest.skip("redis-server is not installed")
    cluster = SentinelCluster(tmp_path / "sentinel")
    try:
        yield cluster
    finally:
        cluster.stop()
