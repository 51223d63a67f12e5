"""The Sentinel fixture itself (``tests/sentinel_cluster.py``): a real master, replica and
three sentinels on loopback fail over when the master is killed or stalls.

The bounds are the sentinels' own periods (``down-after-milliseconds``) plus a generous
allowance for the vote and the promotion; the measured time is printed.
"""

from __future__ import annotations

import time

from tests.sentinel_cluster import SentinelCluster, call, info

#: what a failover may take beyond down-after: the objective-down vote, the leader
#: election (a failed election is retried after a random delay of up to a second or
#: so), the promotion and the sentinels' next INFO of it
ALLOWANCE = 15.0


def test_replicates_and_names_the_master(sentinel_cluster: SentinelCluster) -> None:
    cluster = sentinel_cluster
    master = cluster.initial_master
    assert cluster.master() == ("127.0.0.1", master)
    hosts = ",".join(f"127.0.0.1:{p}" for p in cluster.sentinel_ports)
    assert cluster.url == f"redis+sentinel://{hosts}/vscand/0"
    call(master, "SET", "k", "v")
    assert call(master, "WAIT", 1, 5000) == 1
    replica = cluster.nodes[1].port
    assert info(replica)["role"] == "slave"
    assert call(replica, "GET", "k") == b"v"


def test_kill_master_promotes_the_replica(sentinel_cluster: SentinelCluster) -> None:
    cluster = sentinel_cluster
    replica = cluster.nodes[1].port
    call(cluster.initial_master, "SET", "before", "1")
    assert call(cluster.initial_master, "WAIT", 1, 5000) == 1
    killed_at = time.monotonic()
    old = cluster.kill_master()
    assert old == cluster.initial_master
    new = cluster.wait_failover(old, timeout=cluster.down_after_ms / 1000 + ALLOWANCE)
    took = time.monotonic() - killed_at
    print(f"failover after kill -9: {took:.1f}s (down-after {cluster.down_after_ms} ms)")
    assert new == replica
    assert cluster.master() == ("127.0.0.1", replica)
    assert call(new, "GET", "before") == b"1"
    call(new, "SET", "after", "2")  # writable: a master
    # the killed server comes back as a replica of the new master, with its data
    cluster.restart_as_replica(old)
    assert info(old)["role"] == "slave"
    assert call(new, "WAIT", 1, 5000) == 1
    assert call(old, "GET", "after") == b"2"


def test_debug_sleep_past_down_after_fails_over(sentinel_cluster: SentinelCluster) -> None:
    cluster = sentinel_cluster
    replica = cluster.nodes[1].port
    freeze = cluster.down_after_ms / 1000 + 6
    frozen_at = time.monotonic()
    old = cluster.freeze_master(freeze)
    new = cluster.wait_failover(old, timeout=cluster.down_after_ms / 1000 + ALLOWANCE)
    took = time.monotonic() - frozen_at
    print(f"failover after DEBUG SLEEP {freeze:g}: {took:.1f}s")
    assert new == replica
    assert took < freeze, "the master woke up before the sentinels failed over"
    # once awake, the old master is turned into a replica of the new one by the sentinels
    cluster.wait_replicated(new, 1, timeout=freeze + 30)
    assert info(old)["role"] == "slave"
