"""How a fleet command runs: one short ``task.react`` over our Redis client (the daemon's
own, so the job format, key names and status rules live in one place), and how it fails:
a :class:`FleetError` is one line on stderr and its exit code."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer, task

from vscand.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vscand.queue.client import RedisClient
from vscand.queue.errors import RedisUnavailable
from vscand.queue.keys import Keys
from vscand.targets.policy import TargetPolicy

#: a submitter checks syntax only; the daemon applies its own allow/deny policy
ANY_ADDRESS = TargetPolicy(allow=["0.0.0.0/0", "::/0"], max_cidr_addresses=2**24)

#: a fleet command: (reactor, connected client, arguments) → exit code
Handler = Callable[[Any, RedisClient, argparse.Namespace], Coroutine[Any, Any, int]]


class FleetError(Exception):
    """A user-facing failure: one line on stderr, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def keys_for(args: argparse.Namespace) -> Keys:
    """The key names under ``--key-prefix``."""
    return Keys(args.key_prefix or "vscand:")


def _redis_url(args: argparse.Namespace) -> str:
    from vscand.config import redis_url_for_cli  # noqa: PLC0415

    try:
        return str(redis_url_for_cli(args.redis_url, args.config))
    except Exception as exc:
        raise FleetError(str(exc)) from None


def run_fleet_command(args: argparse.Namespace, handler: Handler) -> int:
    """Connect to Redis, run *handler*, disconnect; the exit code."""
    outcome: dict[str, int] = {}

    async def main(reactor: Any) -> None:
        client = RedisClient(reactor, _redis_url(args), command_timeout=5.0)
        try:
            await client.connect()
        except RedisUnavailable as exc:
            raise FleetError(f"cannot reach Redis: {exc}", EXIT_FAILED) from None
        try:
            outcome["code"] = await handler(reactor, client, args)
        finally:
            await client.disconnect()

    def start(reactor: Any) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(main(reactor))

        def report(failure: Any) -> None:
            if failure.check(FleetError):
                print(f"vscan: error: {failure.value}", file=sys.stderr)
                outcome["code"] = failure.value.code
                return None
            if failure.check(RedisUnavailable):
                print(f"vscan: error: Redis unavailable: {failure.value}", file=sys.stderr)
                outcome["code"] = EXIT_FAILED
                return None
            if failure.check(BrokenPipeError):
                # the reader went away (`vscan results JOB | head`): as for the local
                # commands, not an error; stdout is redirected so the exit flush stays quiet
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                outcome["code"] = EXIT_OK
                return None
            failure.raiseException()
            return None

        d.addErrback(report)
        return d

    with contextlib.suppress(SystemExit):  # react() always exits; the code is in outcome
        task.react(start)
    return outcome.get("code", EXIT_FAILED)
