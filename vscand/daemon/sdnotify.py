"""systemd's notify protocol (``sd_notify(3)``), which Twisted does not speak.

One datagram per call to ``$NOTIFY_SOCKET``: ``READY=1`` once Redis is reachable and the
consumer group exists, ``WATCHDOG=1`` while the consumer makes progress, ``STOPPING=1``
when draining starts. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

Pure code: nothing here imports Twisted. Sending is a non-blocking ``sendto`` on a fresh
socket; it never waits on systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # vsock:… and anything else: not supported here


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send *state* (``"READY=1"``, ``"WATCHDOG=1\\nSTATUS=…"``) to systemd.

    Returns ``True`` when the datagram was sent, ``False`` when there is no notify socket
    (not under systemd, or ``Type=`` is not ``notify``) or sending failed.
    """
    env = os.environ if environ is None else environ
    raw = env.get(NOTIFY_SOCKET, "")
    address = _address(raw) if raw else None
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), address)
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as
    ``sd_watchdog_enabled(3)`` advises; ``None`` when systemd expects none (unset, invalid,
    or ``$WATCHDOG_PID`` names another process)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
