"""The cost of ``replica_confirm``: one ``WAIT 1`` per job, measured on loopback.

A real master and replica (``redis-server``, no persistence, free loopback ports); one
connection writes a job's final status (``HSET``) 2,000 times, alone and followed by
``WAIT 1 1000``, alternately twice. Prints the median and p99 per job. The replica is on
the same machine: across a network each WAIT adds about one round trip to the replica.

    .venv/bin/python benchmarks/wait_cost.py
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.loopback import free_port

JOBS = 2000


def main() -> None:
    directory = tempfile.mkdtemp(prefix="vscand-wait-")
    master, replica = free_port(), free_port()
    servers = []
    for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", directory, "--logfile", f"{directory}/{port}.log", *extra]
        servers.append(subprocess.Popen(args))
    try:
        time.sleep(0.5)
        conn = socket.create_connection(("127.0.0.1", master))

        def command(*args: object) -> bytes:
            parts = [str(a).encode() for a in args]
            conn.sendall(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            )
            return conn.recv(65536)

        deadline = time.monotonic() + 30
        while b"state=online" not in command("INFO", "replication"):
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not come online")
            time.sleep(0.1)
        for wait in (False, True, False, True):
            times = []
            for i in range(JOBS):
                started = time.perf_counter()
                command("HSET", f"vscand:job:{{bench-{i}}}", "status", "done")
                if wait and not command("WAIT", 1, 1000).startswith(b":1"):
                    raise SystemExit("WAIT did not reach the replica")
                times.append(time.perf_counter() - started)
            times.sort()
            median, p99 = statistics.median(times) * 1e6, times[int(JOBS * 0.99)] * 1e6
            label = "HSET + WAIT 1" if wait else "HSET alone"
            print(f"{label:14} median {median:5.0f} us, p99 {p99:5.0f} us")
    finally:
        for server in servers:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
