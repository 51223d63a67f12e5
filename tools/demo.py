"""``make demo``: the daemon end to end on this machine's loopback, then a clean stop.

1. Redis: ``$VSCAND_REDIS_URL`` if set, else a private ``redis-server`` on a free
   port (no persistence, data in a temporary directory).
2. A few local services this script starts itself on 127.0.0.1: an SSH-style
   banner, an FTP server greeting, an HTTP server, a MySQL-style handshake — plus
   the private Redis itself.
3. The daemon: ``twist vscand`` as a subprocess.
4. ``vscan submit 127.0.0.1 -p <those ports>``, ``vscan wait JOB``, then ``vscan results``
   (``vscan submit --wait`` does the three in one).
5. Everything it started is stopped, whatever happens.

Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vscand.cachedir import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A tiny loopback service: ``respond(data_so_far)`` returns what to send, or None."""

    def __init__(self, name: str, greeting: bytes, reply: Callable[[bytes], bytes | None]) -> None:
        self.name = name
        self.greeting = greeting
        self.reply = reply
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(15)
            try:
                if self.greeting:
                    conn.sendall(self.greeting)
                data = b""
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                    answer = self.reply(data)
                    if answer is not None:
                        conn.sendall(answer)
                        return
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def http_reply(data: bytes) -> bytes | None:
    if b"\r\n\r\n" not in data:
        return None
    body = b"<html><body>vscand demo</body></html>"
    return (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


def mysql_greeting() -> bytes:
    payload = (
        b"\x0a"  # protocol 10
        + b"8.0.36\x00"
        + struct.pack("<I", 42)
        + b"abcdefgh\x00"
        + struct.pack("<H", 0xFFF7)
        + b"\x21"
        + struct.pack("<H", 2)
        + struct.pack("<H", 0xDFFF)
        + b"\x15"
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"caching_sha2_password\x00"
    )
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    configured = os.environ.get("VSCAND_REDIS_URL")
    if configured:
        say(f"using the configured Redis ({configured.split('@')[-1]})")
        yield configured
        return
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed (make demo installs it)")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="vscand-demo-redis-")
    say(f"starting a private redis-server on 127.0.0.1:{port}")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            "--logfile",
            str(Path(directory) / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)
        say("private redis-server stopped")


@contextlib.contextmanager
def daemon(redis_url: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    # the user's cache directory, the one `vscan` uses (the daemon alone would prefer
    # /var/cache/vscand where that is writable)
    env.setdefault("VSCAND_CACHE_DIR", str(user_cache_dir()))
    args = [
        str(BIN / "twist"),
        "vscand",
        "--redis-url",
        redis_url,
        "--consumer",
        f"{socket.gethostname()}:demo",
        "--block-ms",
        "500",
        "--drain-timeout",
        "10",
    ]
    say("starting the daemon: " + " ".join(args[:2]) + " ... (log: " + str(log_path) + ")")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120  # a first start compiles the prefilter (~25 s)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited early ({proc.returncode}); see {log_path}")
            if b"vscand ready" in log_path.read_bytes():
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"the daemon did not become ready; see {log_path}")
        say("daemon ready")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        say(f"daemon stopped (exit {proc.returncode})")


def vscan(*args: str, redis_url: str, capture: bool = False) -> str:
    env = dict(os.environ, VSCAND_REDIS_URL=redis_url)
    proc = subprocess.run(
        [str(BIN / "vscan"), *args],
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return proc.stdout or ""


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="vscand-demo-"))
    services = [
        Service("ssh", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", lambda _: None),
        Service(
            "ftp", b"220 (vsFTPd 3.0.3)\r\n", lambda _: b"530 Please login with USER and PASS.\r\n"
        ),
        Service("http", b"", http_reply),
        Service("mysql", mysql_greeting(), lambda _: None),
    ]
    try:
        for service in services:
            say(f"local {service.name} service on 127.0.0.1:{service.port}")
        with private_redis() as redis_url, daemon(redis_url, workdir / "vscand.log"):
            ports = [s.port for s in services]
            redis_port = redis_url.rsplit(":", 1)[-1].split("/")[0]
            if redis_url.startswith("redis://127.0.0.1:") and redis_port.isdigit():
                ports.append(int(redis_port))
            port_list = ",".join(str(p) for p in sorted(ports))
            say(f"vscan submit 127.0.0.1 -p {port_list}")
            job = vscan(
                "submit", "127.0.0.1", "-p", port_list, redis_url=redis_url, capture=True
            ).split()[0]
            say(f"vscan wait {job} --timeout 120")
            vscan("wait", job, "--timeout", "120", redis_url=redis_url)
            say(f"vscan results {job}")
            print(vscan("results", job, redis_url=redis_url, capture=True), end="")
            vscan("workers", redis_url=redis_url)
        return 0
    finally:
        for service in services:
            service.close()
        shutil.rmtree(workdir, ignore_errors=True)
        say("local services stopped; demo done")


if __name__ == "__main__":
    sys.exit(main())
