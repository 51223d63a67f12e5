"""The daemon's JSON logs.

With ``log_format = json`` the daemon logs JSON lines (one event per line, no RFC 7464
record separator) on stdout: the journal under systemd. With twistd that needs
``--nodaemon`` (or ``--logfile=-``); an explicit ``twistd --logger`` still wins. The
observer is selected while the options are parsed, before twistd starts logging, so twistd
never adds its own text observer next to it. ``twist vscand`` already logs JSON whenever
stdout is not a tty (its ``--log-format`` decides): those lines are ours too; under twist a
text observer (a terminal, ``--log-format text``) stays. Each line: ``time`` (ISO 8601 UTC),
``level`` (name), ``message`` (rendered), ``namespace``, then Twisted's fields
(:func:`json_log_line`).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    eventAsJSON,
    formatEvent,
    jsonFileLogObserver,
)
from twisted.python import usage


def json_log_line(event: LogEvent) -> str:
    """One event as a JSON line a log pipeline reads as it is: ``time`` (ISO 8601 UTC),
    ``level`` (its name), ``message`` (rendered), ``namespace``, then Twisted's own fields
    (``log_format`` and the event's values; ``eventAsJSON`` keeps what it can serialise)."""
    when = event.get("log_time")
    level = event.get("log_level")
    readable = {
        "time": (
            datetime.fromtimestamp(when, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
            if isinstance(when, int | float)
            else None
        ),
        "level": getattr(level, "name", None),
        "message": formatEvent(event),
        "namespace": event.get("log_namespace"),
    }
    return eventAsJSON({**readable, **event}) + "\n"


def json_log_observer(log_file: IO[Any] | None = None) -> ILogObserver:
    """JSON lines (:func:`json_log_line`, no RFC 7464 separator) on *log_file*, default
    stdout. Also usable on its own: ``twistd --logger vscand.daemon.logs.json_log_observer vscand``.
    """
    return FileLogObserver(sys.stdout if log_file is None else log_file, json_log_line)


def select_json_logs(parent: usage.Options | None) -> None:
    """Make the runner that parses these options log JSON, unless told otherwise."""
    if parent is None:
        return
    if "logger" in parent and "nodaemon" in parent:  # twistd
        if parent["logger"] is not None:
            return  # --logger wins
        logfile = parent.get("logfile")
        if logfile == "-" or (not logfile and parent["nodaemon"]):
            # a dotted name: twistd's own postOptions, which runs after ours, imports it
            parent["logger"] = f"{__name__}.json_log_observer"
            return
        raise usage.UsageError(
            "log_format = json writes JSON lines to stdout: run twistd with --nodaemon "
            "(as the systemd unit does), or choose an observer with --logger"
        )
    # twist: its text observer stays (a terminal, or --log-format text)
    if "logFile" in parent and parent.get("fileLogObserverFactory") in (None, jsonFileLogObserver):
        parent["fileLogObserverFactory"] = json_log_observer
        parent["logFormat"] = "json"


def twist_chose_json(parent: usage.Options | None) -> bool:
    """``twist`` logs JSON when stdout is not a terminal (or ``--log-format json``): ours then,
    not its raw events with an RFC 7464 separator."""
    return (
        parent is not None
        and "logFile" in parent
        and parent.get("fileLogObserverFactory") is jsonFileLogObserver
    )
