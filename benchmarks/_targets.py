"""Loopback target services for ``benchmarks/scan_vs_nmap.py`` (not part of the package).

Run as a subprocess::

    python benchmarks/_targets.py SPEC.json MAX_SECONDS

SPEC is a JSON list of ``{"port": P, "kind": K, ...}``; every service listens on
127.0.0.1 only. The script prints ``READY`` on stdout once every socket listens,
then serves until its standard input closes or MAX_SECONDS pass (it always
stops by itself).

Kinds (one asyncio protocol each):

* ``banner``: sends ``banner`` on connect, ignores what it reads, closes when the
  client does (an SSH/FTP/SMTP/POP3/IMAP/MySQL-like greeting).
* ``softbanner``: sends ``banner`` on connect; on the first data it answers
  ``reply`` and closes (a mail/news-like service nobody knows by name).
* ``http``: silent on connect; once a request's header block has arrived it
  answers ``response`` if the request line starts with ``GET ``/``OPTIONS `` /
  ``HEAD ``, otherwise ``bad`` (a 400 with the same Server header), and closes.
* ``probeonly``: silent on connect; answers ``reply`` and closes when the data
  starts with ``trigger``; closes without a word on anything else.
* ``unknown``: silent on connect; answers ``reply`` to any data, then closes.
* ``unknownbanner``: sends ``banner`` on connect and closes at once.
* ``tcpwrapped``: accepts and closes at once.
* ``silent``: accepts and never says anything (closes when the client does).
* ``slowbanner``: a slow greeter: sends ``banner`` ``delay`` seconds after the
  connection opens (unless the client has gone), ignores what it reads, closes
  when the client does (a greet-pause SMTP, a daemon doing a slow reverse-DNS or
  ident lookup before greeting).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def _bytes(spec: dict[str, Any], key: str) -> bytes:
    value = spec.get(key)
    if value is None:
        return b""
    return base64.b64decode(value)


class Service(asyncio.Protocol):
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.kind = spec["kind"]
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.answered = False
        self.greeting: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        kind = self.kind
        if kind in ("banner", "softbanner", "unknownbanner"):
            transport.write(_bytes(self.spec, "banner"))
        if kind in ("unknownbanner", "tcpwrapped"):
            transport.close()
        if kind == "slowbanner":
            loop = asyncio.get_running_loop()
            self.greeting = loop.call_later(float(self.spec["delay"]), self._greet)

    def _greet(self) -> None:
        self.greeting = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_bytes(self.spec, "banner"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.greeting is not None:
            self.greeting.cancel()
            self.greeting = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.answered:
            return
        kind = self.kind
        self.buffer += data
        if kind in {"softbanner", "unknown"}:
            self.answered = True
            transport.write(_bytes(self.spec, "reply"))
            transport.close()
        elif kind == "http":
            complete = b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer
            if not complete and len(self.buffer) < 8192:
                return
            self.answered = True
            if self.buffer.startswith((b"GET ", b"OPTIONS ", b"HEAD ")):
                transport.write(_bytes(self.spec, "response"))
            else:
                transport.write(_bytes(self.spec, "bad"))
            transport.close()
        elif kind == "probeonly":
            trigger = _bytes(self.spec, "trigger")
            if len(self.buffer) < len(trigger) and trigger.startswith(self.buffer):
                return
            self.answered = True
            if self.buffer.startswith(trigger):
                transport.write(_bytes(self.spec, "reply"))
            transport.close()


async def serve(specs: list[dict[str, Any]], max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for spec in specs:
        server = await loop.create_server(
            functools.partial(Service, spec), LOOPBACK, int(spec["port"]), reuse_address=True
        )
        servers.append(server)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    stdin_closed = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed, timeout=max_seconds)
    for server in servers:
        server.close()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        specs = json.load(handle)
    max_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 900.0
    asyncio.run(serve(specs, max_seconds))


if __name__ == "__main__":
    main()
