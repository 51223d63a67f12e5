"""``vscan dead list|show|retry|drop``: the dead-letter stream.

Read-only except ``retry`` (a new stream entry through the submit script, never under a
taken id) and ``drop`` (``XDEL`` on the dead-letter stream). What a dead letter holds is
untrusted: it is shown through ``replies.shown``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from vscand.cli.fleet import ANY_ADDRESS, FleetError, Handler, keys_for
from vscand.cli.options import EXIT_FAILED, EXIT_OK, add_commands_on, add_redis_options
from vscand.cli.replies import pairs, print_table, shown, untrusted_text
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import JobError, JobLimits
from vscand.queue import fleet_reads
from vscand.queue.client import RedisClient
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter

_ENTRY_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")


def add_dead_letter_commands(sub: Any) -> None:
    """``dead list|show|retry|drop``."""
    dead = sub.add_parser("dead", help="the dead-letter stream: list, show, retry, drop")
    actions = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="newest dead letters first")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="at most N [20]")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    add_redis_options(listing)

    def options_of(action: str, parser: argparse.ArgumentParser) -> None:
        if action == "show":
            parser.add_argument("--json", action="store_true")

    add_commands_on(
        actions,
        (
            ("show", "every field of one dead letter"),
            ("retry", "re-submit its job (whole, valid, under a free id) as a new stream entry"),
            ("drop", "delete one dead letter (XDEL)"),
        ),
        "entry",
        "ENTRY",
        arg_help="the dead letter's stream entry id",
        extra=options_of,
    )


def _letter(entry_id: Any, fields: Any) -> dict[str, Any]:
    values = {name: untrusted_text(value) for name, value in pairs(fields).items()}
    letter: dict[str, Any] = {"dead_entry": untrusted_text(entry_id), **values}
    job_id: str | None = None
    try:
        doc = json.loads(values.get("job", ""))
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            job_id = doc["id"]
    except ValueError:
        pass
    letter["job_id"] = job_id
    letter["cut"] = "job_bytes" in values
    return letter


def _entry_arg(entry: str) -> str:
    if not _ENTRY_ID.match(entry):
        raise FleetError(f"{entry!r} is not a stream entry id (write 1700000000000-0)")
    return entry


async def _dead_letter(client: RedisClient, keys: Keys, entry: str) -> tuple[dict[str, Any], bytes]:
    """The dead letter *entry*, and its job's stored bytes as they are."""
    reply = await fleet_reads.dead_letter(client, keys, _entry_arg(entry))
    if not reply:
        raise FleetError(f"no dead letter {entry} in {keys.dead}", EXIT_FAILED)
    entry_id, fields = reply[0]
    raw = pairs(fields).get("job")
    return _letter(entry_id, fields), raw if isinstance(raw, bytes) else untrusted_text(
        raw
    ).encode()


async def cmd_dead(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = keys_for(args)
    action = args.dead_command
    if action == "list":
        if args.limit < 1:
            raise FleetError("--limit: give a number of dead letters, 1 or more")
        reply = await fleet_reads.dead_letters(client, keys, args.limit)
        letters = [_letter(e, f) for e, f in reply]
        if args.json:
            for letter in letters:
                print(json.dumps(letter, sort_keys=True))
            return EXIT_OK
        print_table(
            ("ENTRY", "AT", "STREAM", "JOB", "DELIVERIES", "REASON"),
            [
                (
                    letter["dead_entry"],
                    shown(letter.get("at") or "-", 32),
                    shown(letter.get("stream") or "-", 40),
                    shown(letter["job_id"] or "-", 40) + (" (cut)" if letter["cut"] else ""),
                    shown(letter.get("deliveries") or "-", 8),
                    shown(letter.get("reason") or "-", 100),
                )
                for letter in letters
            ],
        )
        return EXIT_OK
    letter, raw = await _dead_letter(client, keys, args.entry)
    if action == "show":
        if args.json:
            print(json.dumps(letter, sort_keys=True))
        else:
            for name, value in letter.items():
                print(f"{name}: {shown(value)}")
        return EXIT_OK
    if action == "drop":
        if not await fleet_reads.drop_dead_letter(client, keys, letter["dead_entry"]):
            raise FleetError(f"no dead letter {args.entry} in {keys.dead}", EXIT_FAILED)
        print(f"dead letter {letter['dead_entry']} dropped")
        return EXIT_OK
    return await _retry(client, keys, letter, raw)


async def _retry(client: RedisClient, keys: Keys, letter: dict[str, Any], raw: bytes) -> int:
    entry = letter["dead_entry"]
    if letter["cut"]:
        raise FleetError(
            f"dead letter {entry} holds only the first {len(letter.get('job', ''))} of "
            f"{shown(letter['job_bytes'])} bytes of its job: not re-submitted",
            EXIT_FAILED,
        )
    try:
        job = parse_job(raw, limits=JobLimits(), policy=ANY_ADDRESS, now=time.time())
    except JobError as exc:
        raise FleetError(
            f"dead letter {entry}: its job is not valid ({shown(exc, 200)}): not re-submitted",
            EXIT_FAILED,
        ) from None
    recorded = letter.get("stream") or ""
    stream = keys.jobs_for(job.queue)
    if recorded == keys.jobs or recorded.startswith(keys.jobs + ":"):
        stream = recorded
    queued, value = await ResultWriter(client, keys, worker="vscan-dead-retry").submit(job, stream)
    if not queued:
        raise FleetError(
            f"dead letter {entry}: job id {job.id!r} is taken (status {value or '?'}): "
            "not re-submitted",
            EXIT_FAILED,
        )
    print(f"job {job.id} re-submitted from dead letter {entry} (entry {value} on {stream})")
    return EXIT_OK


HANDLERS: dict[str, Handler] = {"dead": cmd_dead}
