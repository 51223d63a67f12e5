"""What the fleet holds, beside jobs: ``vscan workers`` (the daemons' heartbeats), ``vscan
inventory`` (the current picture of the hosts) and its ``export --inventory``, and ``vscan
migrate`` (the key layout)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from twisted.internet import task

from vscand.cli.fleet import FleetError, Handler, keys_for
from vscand.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_redis_options,
    add_script_output_option,
    write_output,
)
from vscand.cli.replies import print_table, text
from vscand.output.hosts import ScanMeta, parse_time
from vscand.output.jsonl import dumps
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts
from vscand.queue import fleet_reads
from vscand.queue.client import RedisClient
from vscand.queue.heartbeat import read_heartbeats
from vscand.queue.keys import Keys
from vscand.queue.migrate import migrate


def add_fleet_view_commands(sub: Any) -> None:
    """``workers``, ``inventory`` and ``migrate``."""
    workers = sub.add_parser("workers", help="the fleet: every daemon's heartbeat")
    workers.add_argument("--json", action="store_true")
    add_redis_options(workers)

    inventory = sub.add_parser("inventory", help="the current picture of a host (or all hosts)")
    inventory.add_argument("host", metavar="HOST", nargs="?")
    inventory.add_argument("--json", action="store_true")
    add_script_output_option(inventory)
    add_redis_options(inventory)

    migrate_cmd = sub.add_parser(
        "migrate",
        help="move job keys to the current key layout now (every daemon does it at start)",
    )
    add_redis_options(migrate_cmd)


async def cmd_migrate(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    report = await migrate(
        client, keys_for(args), lambda seconds: task.deferLater(reactor, seconds)
    )
    if report.outcome == "migrated":
        print(f"{report.moved} keys moved, {len(report.conflicts)} left in place")
        for key in report.conflicts:
            print(f"left in place (its new name exists): {key}")
    else:
        print("the keys are in the current layout already")
    return EXIT_OK


async def cmd_workers(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = keys_for(args)
    beats = await read_heartbeats(client, keys)
    if args.json:
        for beat in beats:
            print(json.dumps(beat, sort_keys=True))
        return EXIT_OK
    now = time.time()
    header = ("CONSUMER", "HOST", "PID", "QUEUE", "SEEN", "JOBS", "PORTS", "DONE", "RESULTS")
    rows: list[tuple[str, ...]] = []
    for beat in beats:
        seen = parse_time(beat.get("last_seen"))
        age = f"{now - seen:.0f}s ago" if seen else "?"
        rows.append(
            (
                str(beat.get("consumer")),
                str(beat.get("host")),
                str(beat.get("pid")),
                str(beat.get("queue")),
                age,
                ",".join(beat.get("jobs") or []) or "-",
                str(beat.get("ports_in_flight", 0)),
                str(beat.get("jobs_done", 0)),
                str(beat.get("results_written", 0)),
            )
        )
    print_table(header, rows)
    return EXIT_OK


async def cmd_inventory(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = keys_for(args)
    if not args.host:
        hosts = sorted(text(h) for h in await fleet_reads.inventory_hosts(client, keys))
        for host in hosts:
            count = await fleet_reads.inventory_size(client, keys, host)
            if args.json:
                print(json.dumps({"host": host, "ports": int(count)}))
            else:
                print(f"{host}\t{count} ports")
        return EXIT_OK
    results = await _inventory_results(client, keys, args.host)
    if not results:
        raise FleetError(f"no inventory for {args.host}", EXIT_FAILED)
    if args.json:
        for result in results:
            print(dumps(result))
    else:
        sys.stdout.write(format_hosts(results, script_output=args.script_output))
    return EXIT_OK


async def _inventory_results(client: RedisClient, keys: Keys, host: str) -> list[dict[str, Any]]:
    reply = await fleet_reads.inventory(client, keys, host)
    return [json.loads(reply[i + 1]) for i in range(0, len(reply), 2)]


async def cmd_export_inventory(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    """``vscan export --inventory -oX FILE``: every host's current picture as Nmap XML."""
    if args.job:
        raise FleetError("export: give a JOB or --inventory, not both")
    keys = keys_for(args)
    hosts = sorted(text(h) for h in await fleet_reads.inventory_hosts(client, keys))
    results: list[dict[str, Any]] = []
    for host in hosts:
        results.extend(await _inventory_results(client, keys, host))
    ends = {id(r): parse_time(r.get("scanned_at")) for r in results}  # when each port ended
    starts = [
        end - (r.get("duration_ms") or 0) / 1000.0
        for r in results
        if (end := ends[id(r)]) is not None
    ]
    now = time.time()
    meta = ScanMeta(
        args="vscan export --inventory",
        start=min(starts, default=now),
        end=max((t for t in ends.values() if t is not None), default=now),
        script_output=args.script_output,
    )
    write_output(args.xml_out, format_xml(results, meta))
    return EXIT_OK


HANDLERS: dict[str, Handler] = {
    "workers": cmd_workers,
    "inventory": cmd_inventory,
    "migrate": cmd_migrate,
}
