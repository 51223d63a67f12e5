"""Which inventory entries a staleness rescan takes (:func:`vscand.queue.stale.stale_endpoints`),
against a real redis-server: age by Redis's clock, oldest first, the job's limit, narrowing,
the target policy, unreadable entries; and Redis errors come out as themselves."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reactor_thread import ReactorThread
from tests.redis_server import RedisServer
from vscand.queue.client import RedisClient
from vscand.queue.errors import RedisReplyError
from vscand.queue.keys import Keys
from vscand.queue.link import retry_policy
from vscand.queue.stale import StaleSelection, stale_endpoints
from vscand.targets.policy import TargetPolicy

KEYS = Keys()
POLICY = TargetPolicy(allow=["127.0.0.0/8", "::1/128"], deny=["127.0.0.2/32"])
HOUR = 3600.0


def connect(rt: ReactorThread, url: str) -> RedisClient:
    client: RedisClient = rt.call(
        lambda: RedisClient(rt.reactor, url, command_timeout=2.0, retry=retry_policy(0.1, 1.0, 0.0))
    )
    rt.call(client.connect)
    return client


@pytest.fixture
def client(reactor_thread: ReactorThread, redis_server: RedisServer) -> Iterator[RedisClient]:
    c = connect(reactor_thread, redis_server.url)
    try:
        yield c
    finally:
        reactor_thread.call(c.disconnect)


def put(rt: ReactorThread, client: RedisClient, host: str, key: str, value: Any) -> None:
    raw = value if isinstance(value, str) else json.dumps(value)
    rt.call(lambda: client.execute("HSET", KEYS.inventory(host), key, raw))
    rt.call(lambda: client.execute("SADD", KEYS.inventory_hosts, host))


def aged(hours: float) -> dict[str, str]:
    when = time.gmtime(time.time() - hours * HOUR)
    return {"scanned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", when)}


def select(
    rt: ReactorThread, client: RedisClient, *, targets: tuple[str, ...] = (), limit: int = 100
) -> StaleSelection:
    selection: StaleSelection = rt.run(
        lambda: stale_endpoints(
            client, KEYS, stale_after=HOUR, targets=targets, policy=POLICY, limit=limit
        )
    )
    return selection


def test_old_entries_oldest_first_within_the_limit_policy_and_narrowing(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    put(rt, client, "127.0.0.1", "22/tcp", aged(5))
    put(rt, client, "127.0.0.1", "80/tcp", aged(0.1))  # fresh
    put(rt, client, "127.0.0.1", "53/udp", aged(3))
    put(rt, client, "127.0.0.3", "25/tcp", {"state": "open"})  # no time: the oldest
    put(rt, client, "127.0.0.4", "443/tcp", "not json")  # unreadable: rescanned too
    put(rt, client, "::1", "8080/tcp", aged(2))
    put(rt, client, "127.0.0.2", "21/tcp", aged(9))  # refused by the policy
    put(rt, client, "127.0.0.1", "bogus", aged(9))  # not a port key: ignored
    rt.call(lambda: client.execute("SADD", KEYS.inventory_hosts, "db.internal"))

    every = select(rt, client)
    texts = [t.text for t in every.endpoints]
    assert sorted(texts[:2]) == ["127.0.0.3:25", "127.0.0.4:443"]
    assert texts[2:] == ["127.0.0.1:22", "127.0.0.1:53/udp", "[::1]:8080"]
    assert [t.protocol for t in every.endpoints][2:] == ["tcp", "udp", "tcp"]
    assert (every.examined, every.denied, every.deferred, every.unreadable_hosts) == (7, 1, 0, 1)

    capped = select(rt, client, limit=2)
    assert len(capped.endpoints) == 2 and capped.deferred == 3

    narrowed = select(rt, client, targets=("127.0.0.0/30", "::1"))
    assert [t.text for t in narrowed.endpoints] == [
        "127.0.0.3:25", "127.0.0.1:22", "127.0.0.1:53/udp", "[::1]:8080",
    ]  # fmt: skip
    assert narrowed.denied == 1


def test_a_redis_error_while_reading_host_hashes_is_raised_as_itself(
    reactor_thread: ReactorThread, client: RedisClient, redis_server: RedisServer
) -> None:
    """The worker retries RedisUnavailable around this read: an error from the pipelined
    HGETALLs must reach it unwrapped (not as gatherResults' FirstError)."""
    rt = reactor_thread
    put(rt, client, "127.0.0.1", "22/tcp", aged(5))
    # a user that may read the clock and the hosts set, not the hosts' hashes
    acl = ["on", ">pw", "~*", "+@connection", "+time", "+smembers"]
    rt.call(lambda: client.execute("ACL", "SETUSER", "stale", *acl))
    limited = connect(rt, redis_server.url.replace("redis://", "redis://stale:pw@"))
    try:
        with pytest.raises(RedisReplyError) as caught:
            select(rt, limited)
        assert caught.value.code == "NOPERM"
    finally:
        rt.call(limited.disconnect)
