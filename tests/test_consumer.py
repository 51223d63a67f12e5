"""JobConsumer against a real redis-server: no job is lost to a crash, a dead consumer, a
cancelled read, a deleted group or trimming; poison jobs end in the dead-letter stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, gatherResults

from tests.reactor_thread import ReactorThread
from tests.redis_server import RedisServer
from vscand.queue.client import RedisClient
from vscand.queue.consumer import DELETED_REASON, Delivery, JobConsumer
from vscand.queue.keys import Keys
from vscand.queue.link import retry_policy

KEYS = Keys()
STREAM = KEYS.jobs


@pytest.fixture
def client(reactor_thread: ReactorThread, redis_server: RedisServer) -> Iterator[RedisClient]:
    rt = reactor_thread
    c: RedisClient = rt.call(
        lambda: RedisClient(
            rt.reactor,
            redis_server.url,
            command_timeout=2.0,
            retry=retry_policy(initial=0.1, cap=1.0, jitter=0.0),
        )
    )
    rt.call(c.connect)
    try:
        yield c
    finally:
        rt.call(c.disconnect)


def consumer(rt: ReactorThread, client: RedisClient, name: str, **kwargs: Any) -> JobConsumer:
    kwargs.setdefault("block_ms", 200)
    return JobConsumer(
        client, stream=STREAM, consumer=name, clock=rt.reactor, dead_stream=KEYS.dead, **kwargs
    )


def submit(rt: ReactorThread, client: RedisClient, job: bytes) -> str:
    entry_id: bytes = rt.call(lambda: client.execute("XADD", STREAM, "*", "job", job))
    return entry_id.decode()


def pending(rt: ReactorThread, client: RedisClient) -> dict[str, tuple[str, int]]:
    """entry id → (owner, delivery count)."""
    rows = rt.call(lambda: client.execute("XPENDING", STREAM, "vscand", "-", "+", 100))
    return {r[0].decode(): (r[1].decode(), int(r[3])) for r in rows}


def read(rt: ReactorThread, c: JobConsumer, count: int = 10) -> list[Delivery]:
    deliveries: list[Delivery] = rt.run(lambda: c.read(count))
    return deliveries


def test_own_pending_entries_come_first_after_a_crash(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    first = consumer(rt, client, "host-a:1")
    rt.run(first.ensure_group)
    job1 = submit(rt, client, b'{"id": "j1"}')
    [d] = read(rt, first)
    assert (d.entry_id, d.fields[b"job"], d.deliveries) == (job1, b'{"id": "j1"}', 1)
    # the daemon dies here, without acking; it restarts under the same consumer name
    job2 = submit(rt, client, b'{"id": "j2"}')
    restarted = consumer(rt, client, "host-a:1")
    rt.run(restarted.ensure_group)  # BUSYGROUP is fine
    [again] = read(rt, restarted)
    assert (again.entry_id, again.deliveries) == (job1, 2)
    [new] = read(rt, restarted)
    assert (new.entry_id, new.deliveries) == (job2, 1)
    assert read(rt, restarted) == []
    assert restarted.in_hand == {job1, job2}
    rt.run(lambda: restarted.ack(job1))
    assert set(pending(rt, client)) == {job2}


def test_jobs_submitted_before_the_group_exists_are_not_skipped(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    early = submit(rt, client, b"{}")
    c = consumer(rt, client, "a")
    rt.run(c.ensure_group)
    assert [d.entry_id for d in read(rt, c)] == [early]


def test_an_idle_entry_is_claimed_after_the_lease(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    a = consumer(rt, client, "a", lease_ms=200)
    b = consumer(rt, client, "b", lease_ms=200)
    rt.run(a.ensure_group)
    job = submit(rt, client, b"{}")
    [d] = read(rt, a)
    assert rt.run(lambda: b.claim_idle(10)) == []  # still within the lease
    time.sleep(0.3)  # "a" died
    before = b.last_progress
    [claimed] = rt.run(lambda: b.claim_idle(10))
    assert (claimed.entry_id, claimed.deliveries, claimed.fields) == (job, 2, d.fields)
    assert pending(rt, client) == {job: ("b", 2)}
    assert b.last_progress > before


def test_renewal_keeps_the_lease_and_reports_a_takeover(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    a = consumer(rt, client, "a", lease_ms=200)
    b = consumer(rt, client, "b", lease_ms=200)
    rt.run(a.ensure_group)
    job = submit(rt, client, b"{}")
    read(rt, a)
    for _ in range(6):  # 0.6 s: three leases long
        time.sleep(0.1)
        assert rt.run(lambda: a.renew(job)) is True
        assert rt.run(lambda: b.claim_idle(10)) == []
    assert pending(rt, client) == {job: ("a", 1)}  # renewing does not count deliveries
    time.sleep(0.3)  # "a" stalls (a blocked reactor cannot renew)
    [claimed] = rt.run(lambda: b.claim_idle(10))
    assert claimed.deliveries == 2
    assert rt.run(lambda: a.renew(job)) is False
    assert job not in a.in_hand
    assert pending(rt, client) == {job: ("b", 2)}  # not taken back


def test_dead_letter_records_the_reason_and_acks(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    c = consumer(rt, client, "a", max_deliveries=3)
    rt.run(c.ensure_group)
    raw = b'{"id": "poison", "targets": ["127.0.0.1"]}'
    entry = rt.call(lambda: client.execute("XADD", STREAM, "*", "job", raw, "sig", "abc"))
    [d] = read(rt, c)
    assert not c.over_cap(d)
    assert c.over_cap(Delivery(d.stream, d.entry_id, d.fields, 4))
    rt.run(lambda: c.dead_letter(d, "delivered 4 times: crashed its worker each time"))
    [[_dead_id, fields]] = rt.call(lambda: client.execute("XRANGE", KEYS.dead, "-", "+"))
    record = dict(zip(fields[::2], fields[1::2], strict=True))
    assert record[b"job"] == raw
    assert record[b"reason"] == b"delivered 4 times: crashed its worker each time"
    assert record[b"entry"] == entry
    assert record[b"deliveries"] == b"1"
    assert record[b"stream"] == STREAM.encode()
    assert record[b"field:sig"] == b"abc"
    assert record[b"at"].endswith(b"Z")
    assert pending(rt, client) == {}
    assert c.in_hand == frozenset()
    # retried after an ambiguous failure (the first try was applied): no second dead letter
    rt.run(lambda: c.dead_letter(d, "delivered 4 times: crashed its worker each time"))
    assert rt.call(lambda: client.execute("XLEN", KEYS.dead)) == 1


def test_trim_never_drops_pending_or_undelivered_entries(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    c = consumer(rt, client, "a")
    rt.run(c.ensure_group)
    ids = [submit(rt, client, b"%d" % i) for i in range(5)]
    read(rt, c)
    for i in (0, 1, 3):
        rt.run(lambda i=i: c.ack(ids[i]))
    undelivered = submit(rt, client, b"later")
    assert rt.run(c.trim) == 2
    left = [e[0].decode() for e in rt.call(lambda: client.execute("XRANGE", STREAM, "-", "+"))]
    assert left == [ids[2], ids[3], ids[4], undelivered]
    for i in (2, 4):
        rt.run(lambda i=i: c.ack(ids[i]))
    assert rt.run(c.trim) == 3
    left = [e[0].decode() for e in rt.call(lambda: client.execute("XRANGE", STREAM, "-", "+"))]
    assert left == [undelivered]
    [d] = read(rt, c)
    assert d.entry_id == undelivered


def test_the_group_is_recreated_after_the_stream_is_deleted(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    c = consumer(rt, client, "a")
    rt.run(c.ensure_group)
    assert read(rt, c) == []
    rt.call(lambda: client.execute("DEL", STREAM))
    job = submit(rt, client, b"{}")  # a producer recreates the stream, without the group
    assert read(rt, c) == []  # NOGROUP: the group is created again
    assert [d.entry_id for d in read(rt, c)] == [job]
    rt.call(lambda: client.execute("DEL", STREAM))
    assert rt.run(lambda: c.claim_idle(10)) == []
    assert rt.call(lambda: client.execute("EXISTS", STREAM)) == 1


def test_a_cancelled_read_loses_nothing(reactor_thread: ReactorThread, client: RedisClient) -> None:
    rt = reactor_thread
    c = consumer(rt, client, "a", block_ms=5000)
    rt.run(c.ensure_group)
    assert read(rt, c) == []  # own PEL drained; the next read blocks on '>'
    blocked = rt.start(lambda: Deferred.fromCoroutine(c.read(10)))
    time.sleep(0.2)
    rt.call(blocked.cancel)
    job = submit(rt, client, b"{}")
    with pytest.raises(CancelledError):
        rt.call(lambda: blocked)
    time.sleep(0.2)
    # whether the server handed the entry to the dropped read (then it is in our PEL) or
    # not, the next read delivers it, once
    [d] = read(rt, c)
    assert d.entry_id == job
    assert pending(rt, client)[job][0] == "a"
    c.block_ms = 100
    assert read(rt, c) == []


def test_entries_deleted_while_pending_go_to_the_dead_letter_stream(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    a = consumer(rt, client, "a", lease_ms=100)
    b = consumer(rt, client, "b", lease_ms=100)
    rt.run(a.ensure_group)
    gone = submit(rt, client, b"{}")
    also_gone = submit(rt, client, b"{}")
    read(rt, a)
    rt.call(lambda: client.execute("XDEL", STREAM, gone, also_gone))
    # "a" restarts: its own PEL read finds the entries gone
    restarted = consumer(rt, client, "a")
    assert read(rt, restarted) == []
    # "b"'s janitor would find them too; here only what is left to find
    time.sleep(0.15)
    assert rt.run(lambda: b.claim_idle(10)) == []
    dead = rt.call(lambda: client.execute("XRANGE", KEYS.dead, "-", "+"))
    reasons = {dict(zip(f[::2], f[1::2], strict=True))[b"entry"]: f for _, f in dead}
    assert set(reasons) == {gone.encode(), also_gone.encode()}
    for fields in reasons.values():
        assert DELETED_REASON.encode() in fields
    assert pending(rt, client) == {}


def test_the_janitor_dead_letters_entries_deleted_while_pending(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    a = consumer(rt, client, "a", lease_ms=100)
    b = consumer(rt, client, "b", lease_ms=100)
    rt.run(a.ensure_group)
    gone = submit(rt, client, b"{}")
    kept = submit(rt, client, b"{}")
    read(rt, a)
    rt.call(lambda: client.execute("XDEL", STREAM, gone))
    time.sleep(0.15)
    [claimed] = rt.run(lambda: b.claim_idle(10))
    assert claimed.entry_id == kept
    [[_id, fields]] = rt.call(lambda: client.execute("XRANGE", KEYS.dead, "-", "+"))
    record = dict(zip(fields[::2], fields[1::2], strict=True))
    assert (record[b"entry"], record[b"reason"]) == (gone.encode(), DELETED_REASON.encode())
    assert pending(rt, client) == {kept: ("b", 2)}


def test_a_restart_counts_one_delivery_when_pel_read_and_janitor_race(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    """A restarted daemon reads its own PEL and runs its janitor at once. Both find the
    entry the dead process held (idle past the lease): it is delivered once and counted
    once, or a poison job would be dead-lettered one delivery early (seen in CI)."""
    rt = reactor_thread
    first = consumer(rt, client, "a", lease_ms=100)
    rt.run(first.ensure_group)
    job = submit(rt, client, b"{}")
    read(rt, first)  # delivery 1; the process dies holding it
    time.sleep(0.15)
    restarted = consumer(rt, client, "a", lease_ms=100)

    def both() -> Deferred[list[list[Delivery]]]:
        return gatherResults(
            [
                Deferred.fromCoroutine(restarted.claim_idle(10)),
                Deferred.fromCoroutine(restarted.read(10)),
            ]
        )

    claimed, own = rt.call(both)
    got = [d for ds in (claimed, own) for d in ds]
    assert [(d.entry_id, d.deliveries) for d in got] == [(job, 2)], got
    assert pending(rt, client) == {job: ("a", 2)}


def test_a_pel_read_after_a_failed_read_counts_nothing_for_entries_in_hand(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    a = consumer(rt, client, "a", lease_ms=100, block_ms=5000)
    b = consumer(rt, client, "b", lease_ms=100)
    rt.run(a.ensure_group)
    job = submit(rt, client, b"{}")
    read(rt, b)  # b dies holding it
    time.sleep(0.15)
    [claimed] = rt.run(lambda: a.claim_idle(10))
    assert (claimed.entry_id, claimed.deliveries) == (job, 2)
    blocked = rt.start(lambda: Deferred.fromCoroutine(a.read(10)))
    time.sleep(0.2)
    rt.call(blocked.cancel)  # a failed read: the next one reads the own PEL again
    with pytest.raises(CancelledError):
        rt.call(lambda: blocked)
    later = submit(rt, client, b"{}")
    a.block_ms = 200
    assert [d.entry_id for d in read(rt, a)] == [later]
    assert pending(rt, client) == {job: ("a", 2), later: ("a", 1)}


def test_an_entry_is_acknowledged_only_once_its_job_end_is_on_the_server(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    """After a failover the new master may lack the end a worker wrote on the old one:
    acknowledging there would lose the job (``ack_ended``)."""
    rt = reactor_thread
    c = consumer(rt, client, "a")
    rt.run(c.ensure_group)
    entry = submit(rt, client, b'{"id": "f1"}')
    [d] = read(rt, c)
    job = KEYS.job("f1")
    # the hash as a failover may leave it: no end, or another attempt's
    assert rt.run(lambda: c.ack_ended(entry, job, "att-1")) is False
    rt.call(lambda: client.execute("HSET", job, "attempt", "att-1", "status", "running"))
    assert rt.run(lambda: c.ack_ended(entry, job, "att-1")) is False
    rt.call(lambda: client.execute("HSET", job, "status", "done"))
    assert rt.run(lambda: c.ack_ended(entry, job, "att-0")) is False
    assert pending(rt, client) == {entry: ("a", 1)}
    assert d.entry_id in c.in_hand
    # the end is there: acknowledged, and again harmlessly on a retry
    assert rt.run(lambda: c.ack_ended(entry, job, "att-1")) is True
    assert rt.run(lambda: c.ack_ended(entry, job, "att-1")) is True
    assert pending(rt, client) == {}
    assert c.in_hand == frozenset()
