"""``vscan changes``: the inventory's change events (ports opened or closed, service,
version or TLS changed), oldest first."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from vscand.cli.fleet import FleetError, Handler, keys_for
from vscand.cli.options import EXIT_OK, add_redis_options
from vscand.cli.replies import print_table, text
from vscand.queue import fleet_reads
from vscand.queue.changes import describe, since_entry_id
from vscand.queue.client import RedisClient


def add_change_commands(sub: Any) -> None:
    """``vscan changes``: the inventory's change events."""
    changes = sub.add_parser(
        "changes", help="inventory changes: ports opened/closed, service, version or TLS changed"
    )
    changes.add_argument(
        "--since",
        metavar="WHEN",
        help="ISO time (2027-01-15T08:00:00Z), stream entry id, or duration (30m, 1h, 7d)",
    )
    changes.add_argument("--host", metavar="HOST", help="only this host's changes")
    changes.add_argument("--json", action="store_true", help="JSON lines")
    add_redis_options(changes)


def _change_event(entry_id: Any, fields: list[Any]) -> dict[str, Any]:
    values = {text(fields[i]): text(fields[i + 1]) for i in range(0, len(fields), 2)}
    port = values.get("port", "")
    return {
        "id": text(entry_id),
        "at": values.get("at"),
        "host": values.get("host"),
        "port": int(port) if port.isdigit() else port,
        "protocol": values.get("protocol"),
        "kind": values.get("kind"),
        "before": json.loads(values["before"]) if values.get("before") else None,
        "after": json.loads(values["after"]) if values.get("after") else None,
        "job": values.get("job"),
    }


async def cmd_changes(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    """``vscan changes [--since WHEN] [--host HOST] [--json]``, oldest first."""
    keys = keys_for(args)
    start = "-"
    if args.since:
        try:
            start = since_entry_id(args.since, time.time())
        except ValueError as exc:
            raise FleetError(str(exc)) from None
    events: list[dict[str, Any]] = []
    async for batch in fleet_reads.stream_pages(client, keys.changes, start):
        for entry_id, fields in batch:
            event = _change_event(entry_id, fields)
            if not args.host or event["host"] == args.host:
                events.append(event)
    if args.json:
        for event in events:
            print(json.dumps(event, sort_keys=False))
        return EXIT_OK
    header = ("AT", "HOST", "PORT", "CHANGE", "BEFORE", "AFTER")
    rows: list[tuple[str, ...]] = []
    for event in events:
        rows.append(
            (
                str(event["at"] or "?"),
                str(event["host"]),
                f"{event['port']}/{event['protocol']}",
                str(event["kind"]),
                describe(event["before"]),
                describe(event["after"]),
            )
        )
    print_table(header, rows)
    return EXIT_OK


HANDLERS: dict[str, Handler] = {"changes": cmd_changes}
