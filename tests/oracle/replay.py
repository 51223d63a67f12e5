"""Loopback replay servers for the Nmap oracle (127.0.0.1 only).

One listening socket per case, all served by one selector thread.  The
behaviour makes Nmap's final answer equal the single-chain answer of
``vscan match PROBE response``:

* NULL-probe case ("banner"): the response is sent as soon as a connection is
  accepted, until one connection has *sent us data* (Nmap writes the next probe
  on the NULL connection when the NULL wait ends, so that connection was the
  version scan's).  A connection that closes without sending anything (e.g. a
  ``-sT`` connect scan when Nmap runs unprivileged) does not count.  Once the
  banner was delivered, every later connection is closed at once: Nmap sees EOF
  without data, so no later probe can match anything and a soft match stays
  the final answer.
* Any other probe P ("reply"): silent on connect.  When the bytes received equal
  P's probe string, the response is sent and the connection closed; while they
  are a proper prefix of it we wait; anything else closes the connection.
  Nmap's NULL probe therefore times out without data, then every probe before P
  gets EOF, and only P sees the response.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


@dataclass
class _Listener:
    sock: socket.socket
    response: bytes
    #: None for the NULL probe (banner mode), else the probe string to answer
    trigger: bytes | None
    delivered: bool = False


@dataclass
class _Conn:
    sock: socket.socket
    listener: _Listener
    buffer: bytearray = field(default_factory=bytearray)
    banner: bool = False


class ReplayServer:
    """Serve every registered case on its own loopback port, in a thread."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._listeners: list[_Listener] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def add(self, response: bytes, trigger: bytes | None) -> int:
        """Listen for one case; ``trigger`` None = NULL probe.  Returns the port."""
        if trigger is not None and not trigger:
            raise ValueError("an empty probe string only makes sense for the NULL probe")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        if 9100 <= port <= 9107:  # excluded from version detection by the shipped file
            sock.close()
            return self.add(response, trigger)
        sock.listen(64)
        sock.setblocking(False)
        listener = _Listener(sock, response, trigger)
        self._listeners.append(listener)
        self._sel.register(sock, selectors.EVENT_READ, listener)
        return port

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oracle-replay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()
        self._wake_w.close()

    def __enter__(self) -> ReplayServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the selector loop -------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(1.0):
                data = key.data
                if data is None:
                    return
                if isinstance(data, _Listener):
                    self._accept(data)
                else:
                    self._readable(data)

    def _accept(self, listener: _Listener) -> None:
        try:
            sock, _ = listener.sock.accept()
        except BlockingIOError:
            return
        if listener.trigger is None and listener.delivered:
            sock.close()
            return
        conn = _Conn(sock, listener)
        if listener.trigger is None:
            conn.banner = True
            self._send(sock, listener.response)
        sock.setblocking(False)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.sendall(data)

    def _drop(self, conn: _Conn) -> None:
        self._sel.unregister(conn.sock)
        conn.sock.close()

    def _readable(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        listener = conn.listener
        if conn.banner:
            # Nmap wrote its next probe on the NULL connection: the banner was seen.
            listener.delivered = True
            self._drop(conn)
            return
        conn.buffer += chunk
        trigger = listener.trigger
        assert trigger is not None
        if bytes(conn.buffer) == trigger:
            self._send(conn.sock, listener.response)
            self._drop(conn)
        elif not trigger.startswith(bytes(conn.buffer)):
            self._drop(conn)
