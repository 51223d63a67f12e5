"""Reliability of the daemon, end to end: real ``twist vscand`` processes against a real
throwaway ``redis-server``, scanning loopback test servers (reliability.md §5 rows 1-6,
12, 13).

Every target is on 127.0.0.0/8; the forbidden-target cases use loopback addresses the
daemon is told to deny, so even a wrong daemon cannot dial anywhere else.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import signal
import socket
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import (
    FTP_BANNER,
    SMTP_BANNER,
    SSH_BANNER,
    Daemons,
    Listeners,
    Redis,
    assert_loopback_job,
    banner,
    delayed_banner,
    gated_banner,
    silent,
    vscan,
    wait_for,
)
from tests.e2e.servers import ClosedPort, http_silent_until_data, mysql_greeting
from tests.hostile.measure import allowed
from tests.redis_server import RedisServer
from vscand.jobs.signing import JobSigner
from vscand.queue.keys import Keys
from vscand.queue.link import retry_policy
from vscand.queue.retry import RETRY_DELAYS

pytestmark = pytest.mark.daemon


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return Redis(redis_server)


def submit(redis: Redis, job: dict[str, Any], queue: str | None = None) -> str:
    """XADD a (loopback) job as any producer would; its entry id."""
    assert_loopback_job(job)
    return redis.xadd_job(job, queue)


def final(redis: Redis, job_id: str) -> str | None:
    status = redis.status(job_id)
    return status if status in ("done", "failed", "cancelled") else None


SERVICE_FIELDS = (
    "name", "product", "version", "extrainfo", "ostype", "devicetype", "hostname",
    "tunnel", "cpe", "method", "conf",
)  # fmt: skip


def port_view(results: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    view = {}
    for r in results:
        key = (r["host"], int(r["port"]), r["protocol"])
        assert key not in view, f"two results for {key}"
        service = r.get("service") or {}
        view[key] = {
            "state": r["state"],
            "reason": r["reason"],
            **{f: service.get(f) for f in SERVICE_FIELDS},
        }
    return view


def xml_ports(path: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The port/service parts of an Nmap XML file, per (address, protocol, port)."""
    root = ET.parse(path).getroot()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for host in root.iter("host"):
        addr = host.find("address").get("addr")  # type: ignore[union-attr]
        for port in host.iter("port"):
            state = port.find("state")
            service = port.find("service")
            out[(addr, port.get("protocol"), port.get("portid"))] = {
                "port": dict(port.attrib),
                "state": dict(state.attrib) if state is not None else None,
                "service": dict(service.attrib) if service is not None else None,
                "cpe": [c.text for c in port.iter("cpe")],
                "scripts": [ET.tostring(s) for s in port.iter("script")],
            }
    return out


# --------------------------------------------------------------------------- 1. end to end


def test_submitted_job_equals_vscan_scan(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners, tmp_path: Path
) -> None:
    servers = [
        listen(banner(SSH_BANNER)),
        listen(banner(FTP_BANNER)),
        listen(banner(SMTP_BANNER)),
        listen(banner(mysql_greeting())),
        listen(http_silent_until_data),
    ]
    closed = ClosedPort()
    try:
        ports = ",".join(str(p) for p in [*(s.port for s in servers), closed.port])
        daemons.start("e2e:1")
        started = time.monotonic()
        job_id = vscan(redis_server, "submit", "127.0.0.1", "-p", ports).stdout.strip()
        scan_xml = tmp_path / "scan.xml"
        scan_json = tmp_path / "scan.jsonl"
        vscan(None, "scan", "127.0.0.1", "-p", ports, "-oX", str(scan_xml), "-oJ", str(scan_json))
        wait = vscan(redis_server, "wait", job_id, "--timeout", "60", check=False)
        assert wait.returncode == 0, (wait.stdout, wait.stderr, redis.job(job_id))
        print(f"job + scan took {time.monotonic() - started:.1f}s")

        scanned = [json.loads(line) for line in scan_json.read_text().splitlines() if line]
        fleet_out = vscan(redis_server, "results", job_id, "--json").stdout
        fleet = [json.loads(line) for line in fleet_out.splitlines() if line]
        assert len(scanned) == len(servers) + 1
        assert port_view(fleet) == port_view(scanned)
        assert all(r["job"] == job_id and r["worker"] == "e2e:1" for r in fleet)
        assert {r["state"] for r in fleet} == {"open", "closed"}
        assert len(redis.results(job_id)) == len(servers) + 1

        export_xml = tmp_path / "export.xml"
        vscan(redis_server, "export", job_id, "-oX", str(export_xml))
        assert xml_ports(export_xml) == xml_ports(scan_xml)
        assert len(xml_ports(export_xml)) == len(servers) + 1
    finally:
        closed.close()


# --------------------------------------------------------------------------- 2. kill -9


def test_kill9_one_of_two_daemons_loses_no_job(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    fast_ssh = listen(banner(SSH_BANNER))
    fast_ftp = listen(banner(FTP_BANNER))
    slow_ssh = listen(delayed_banner(SSH_BANNER, 3.0))
    slow_smtp = listen(delayed_banner(SMTP_BANNER, 2.0))
    shapes = [
        [fast_ssh],
        [slow_ssh],
        [fast_ftp, slow_smtp],
        [slow_ssh, fast_ssh],
        [slow_smtp],
    ]
    a = daemons.start("kill:a", job_idle_ms=3000)
    b = daemons.start("kill:b", job_idle_ms=3000)
    jobs: dict[str, set[int]] = {}
    started = time.monotonic()
    for i in range(100):
        servers = shapes[i % len(shapes)]
        job_id = f"kill-{i:03d}"
        jobs[job_id] = {s.port for s in servers}
        submit(redis, {"id": job_id, "endpoints": [s.endpoint for s in servers]})

    def running_on_a() -> list[str]:
        return [
            j
            for j in jobs
            if (h := redis.job(j)).get("status") == "running" and h.get("worker") == "kill:a"
        ]

    wait_for(lambda: len(running_on_a()) >= 10, 20, 0.05, "daemon A to run 10 jobs")
    a.kill()
    killed_at = time.monotonic()
    held = running_on_a()  # still running on A when it died (B claims them after the lease)
    assert held
    print(f"killed A with {len(held)} jobs running, {killed_at - started:.1f}s after submitting")

    # B takes A's jobs over after the lease and everything ends done, once
    wait_for(lambda: all(final(redis, j) for j in jobs), 60, 0.2, "all 100 jobs to end")
    all_done = time.monotonic()
    print(f"all 100 done {all_done - killed_at:.1f}s after the kill")
    statuses = {j: redis.status(j) for j in jobs}
    assert statuses == {j: "done" for j in jobs}
    for job_id, ports in jobs.items():
        results = redis.results(job_id)
        assert sorted(int(r["port"]) for r in results) == sorted(ports), (job_id, results)
        assert int(redis.job(job_id)["ports_done"]) == len(ports)
    for job_id in held:
        assert redis.job(job_id)["worker"] == "kill:b", job_id
    assert redis.pending_count() == 0
    assert b.logged("claimed job entry"), "B never claimed A's jobs"
    assert b.alive()

    # A comes back under the same name: its PEL is empty, nothing runs twice
    before = {j: redis("XLEN", Keys().job_results(j)) for j in jobs}
    a2 = daemons.start("kill:a", job_idle_ms=3000)
    time.sleep(3.0)
    after = {j: redis("XLEN", Keys().job_results(j)) for j in jobs}
    assert after == before
    assert not a2.logged("Resuming"), a2.tail()
    assert redis.pending_count() == 0
    assert {j: redis.status(j) for j in jobs} == statuses


def test_restarted_daemon_resumes_its_own_pel_without_double_runs(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """kill -9, then the same consumer comes back before the lease ran out: it resumes
    its own pending jobs, the other daemon does not run them as well."""
    slow = listen(delayed_banner(SSH_BANNER, 3.0))
    fast = listen(banner(FTP_BANNER))
    a = daemons.start("own:a", job_idle_ms=8000)
    jobs = {f"own-{i}": [slow, fast][i % 2] for i in range(10)}
    for job_id, server in jobs.items():
        submit(redis, {"id": job_id, "endpoints": [server.endpoint]})
    wait_for(
        lambda: sum(redis.status(j) == "running" for j, s in jobs.items() if s is slow) == 5,
        15,
        0.05,
        "the slow jobs to run on A",
    )
    a.kill()
    # A comes back first, then B once A holds its entries fresh (resumed, and renewed every
    # third of the lease since): B's janitor claims only entries idle for the whole lease,
    # however long the two startups take on this machine (starting B first raced A's
    # startup against the 8 s lease)
    a2 = daemons.start("own:a", job_idle_ms=8000)

    def held_fresh() -> bool:
        pending = redis.pending()
        return all(c == "own:a" and idle < 8000 / 2 for _e, c, idle, _n in pending)

    wait_for(
        lambda: a2.logged("Resuming") and held_fresh(), 30, 0.05, "A to resume and renew"
    )  # fmt: skip
    b = daemons.start("own:b", job_idle_ms=8000)
    wait_for(lambda: all(final(redis, j) for j in jobs), 30, 0.2, "all jobs to end")
    assert {j: redis.status(j) for j in jobs} == {j: "done" for j in jobs}
    for job_id in jobs:
        assert len(redis.results(job_id)) == 1, job_id
    assert a2.logged("Resuming"), a2.tail()
    assert not b.logged("claimed job entry")
    assert redis.pending_count() == 0


# --------------------------------------------------------------------------- 3. Redis chaos


def _reconnect_worst_s() -> float:
    """The longest the product itself may wait, once Redis is back, before it reads jobs
    again: the link's last reconnect delay (retry_policy's cap, plus its whole jitter),
    then the read loop's longest retry sleep (RETRY_DELAYS) if it had just failed."""
    defaults = inspect.signature(retry_policy).parameters
    cap, jitter = defaults["cap"].default, defaults["jitter"].default
    return cap * (1 + jitter) + max(RETRY_DELAYS)


def _probe_job(redis_server: RedisServer, redis: Redis, endpoint: str, name: str) -> float:
    """Submit a job at once and wait for it; seconds it took."""
    started = time.monotonic()
    job_id = f"probe-{name}"
    wait_for(
        lambda: redis.try_call("PING") is not None, 10, 0.05, "Redis to answer"
    )  # fmt: skip
    submit(redis, {"id": job_id, "endpoints": [endpoint]})
    # a hang guard only: the bound is asserted by the caller
    wait_for(
        lambda: final(redis, job_id),
        allowed(_reconnect_worst_s()) + 10,
        0.05,
        f"job {job_id} to end",
    )
    assert redis.status(job_id) == "done"
    assert len(redis.results(job_id)) == 1
    return time.monotonic() - started


def test_resumes_after_redis_restart_and_client_kill(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemon = daemons.start("chaos:1")
    # the product waits for nothing here (the SSH banner comes at connect, the read wakes
    # on XADD): any delay is this machine's; allowed() is the suite's machine allowance
    assert _probe_job(redis_server, redis, target.endpoint, "baseline") <= allowed(0)

    timings = {}
    # kill -9 and restart at once (no persistence: everything is gone, group included)
    redis_server.restart()
    timings["restart"] = _probe_job(redis_server, redis, target.endpoint, "restart")

    # down for 4 s (the reconnect backoff grows), then back
    redis_server.kill()
    time.sleep(4.0)
    redis_server.start()
    timings["down-4s"] = _probe_job(redis_server, redis, target.endpoint, "down")

    # every client connection killed mid-run
    killed = redis("CLIENT", "KILL", "TYPE", "normal")
    assert int(killed) >= 2  # the daemon's command and reader connections
    timings["client-kill"] = _probe_job(redis_server, redis, target.endpoint, "client-kill")

    print("seconds from Redis back to the probe job done:", timings)
    # the product's own worst wait once Redis is back (_reconnect_worst_s: 6 s + 5 s) with
    # the suite's machine allowance (tests/hostile/measure.py); a reconnect that never
    # happens, or a lost group never created again, still fails
    bound = allowed(_reconnect_worst_s())
    for name, seconds in timings.items():
        assert seconds <= bound, (name, seconds, bound)
    assert daemon.alive()


# --------------------------------------------------------------------------- 4. poison


def test_poison_job_is_dead_lettered_after_max_deliveries(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """A job whose worker dies every time (SIGKILLed by the harness whenever it takes
    it) goes to the dead-letter stream after max_deliveries + 1 deliveries."""
    poison_target = listen(silent)
    fast = listen(banner(SSH_BANNER))
    options = ("--max-deliveries", "2")
    pool = {
        name: daemons.start(name, *options, job_idle_ms=2000) for name in ("poison:1", "poison:2")
    }
    submit(redis, {"id": "poison", "endpoints": [poison_target.endpoint]})
    others: list[str] = []
    kills: list[tuple[str, str]] = []
    seen_attempts: set[str] = set()
    deadline = time.monotonic() + 60
    n = 0
    while redis.status("poison") not in ("failed", "done", "cancelled"):
        assert time.monotonic() < deadline, (kills, redis.job("poison"), redis.pending())
        job = redis.job("poison")
        if job.get("status") == "running" and job.get("attempt") not in seen_attempts:
            seen_attempts.add(job["attempt"])
            worker = job["worker"]
            pool[worker].kill()
            kills.append((worker, job["attempt"]))
            pool[worker] = daemons.start(worker, *options, job_idle_ms=2000, wait=False)
        # other jobs keep flowing meanwhile
        if n % 10 == 0:
            job_id = f"other-{n}"
            submit(redis, {"id": job_id, "endpoints": [fast.endpoint]})
            others.append(job_id)
        n += 1
        time.sleep(0.05)
    dead_at = time.monotonic()
    connections_at_dead = poison_target.connections

    assert len(kills) == 2, kills  # deliveries 1 and 2 were killed, 3 went to dead letter
    job = redis.job("poison")
    assert job["status"] == "failed", job
    assert "delivered 3 times" in job["error"] and "max_deliveries 2" in job["error"], job
    # the job's status is written before its entry is dead-lettered (and acknowledged, in the
    # same script): a worker dying between the two leaves the entry pending, to be rejected
    # again. So the letter may follow the status by a round trip: wait for it, bounded.
    wait_for(lambda: any('"poison"' in d["job"] for d in redis.dead()), 10, 0.05, "the dead letter")
    dead = [d for d in redis.dead() if '"poison"' in d["job"]]
    assert len(dead) == 1, redis.dead()
    assert dead[0]["deliveries"] == "3"
    assert dead[0]["reason"] == job["error"]
    assert dead[0]["entry"] == job["entry"]
    assert all(entry != job["entry"] for entry, *_ in redis.pending())

    # does not circulate: nobody takes it again, even after several leases
    after = [f"after-{i}" for i in range(3)]
    for job_id in after:
        submit(redis, {"id": job_id, "endpoints": [fast.endpoint]})
    time.sleep(5.0)
    assert redis.status("poison") == "failed"
    assert len([d for d in redis.dead() if '"poison"' in d["job"]]) == 1
    assert poison_target.connections == connections_at_dead
    wait_for(lambda: all(final(redis, j) for j in [*others, *after]), 20, 0.1, "other jobs")
    assert {redis.status(j) for j in [*others, *after]} == {"done"}
    assert redis.pending_count() == 0
    print(f"poison dead-lettered after {len(kills)} kills; {len(others)} other jobs done; "
          f"dead {dead_at - deadline + 60:.1f}s after submit")  # fmt: skip


# --------------------------------------------------------------------------- 5. bad jobs

POLICY = ("--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32", "--max-job-port-tasks", "1000")


def _bad_jobs(p: int) -> list[tuple[bytes | list[bytes], str | None, str]]:
    """(raw job or stream fields, id for the status hash or None, expected reason part).

    Forbidden targets are loopback addresses the daemon denies (127.0.0.2 in several
    spellings) or does not allow (::1): nothing outside 127.0.0.0/8 is ever named."""

    def j(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode()

    ok = {"endpoints": [f"127.0.0.1:{p}"]}
    denied = "is denied by deny 127.0.0.2/32"
    spelling = "is not a valid IPv4 address (write four decimal octets"
    return [
        (b"not json at all", None, "bad JSON: Expecting value at line 1 column 1"),
        (b"[1, 2]", None, "a job must be a JSON object, not an array"),
        ([b"payload", b"{}"], None, "the stream entry has no 'job' field (its fields: 'payload')"),
        (b'{"id": "bad-utf8", "targets": ["\xff"]}', None, "job is not UTF-8 (byte 32)"),
        (j({"id": "m-targets-type", "targets": "127.0.0.1"}), "m-targets-type",
         "targets: must be an array of strings, not a string"),
        (j({"id": "m-target-int", "targets": [2130706433]}), "m-target-int",
         "targets[0]: must be a string, not an integer 2130706433"),
        (j({"id": "m-port-range", "targets": ["127.0.0.1"], "ports": "99999"}), "m-port-range",
         "ports: bad port list '99999': port 99999 is out of range (0-65535)"),
        (j({"id": "m-port-junk", "targets": ["127.0.0.1"], "ports": "22,abc"}), "m-port-junk",
         "ports: bad port list '22,abc': no service named 'abc' in nmap-services"),
        (j({"id": "m-intensity", **ok, "intensity": 12}), "m-intensity",
         "intensity: 12 is out of range (0-9)"),
        (j({"id": "m-intensity-type", **ok, "intensity": "7"}), "m-intensity-type",
         "intensity: must be an integer, not a string '7'"),
        (j({"id": "m-denied", "targets": ["127.0.0.2"], "ports": str(p)}), "m-denied",
         f"targets[0]: target '127.0.0.2': 127.0.0.2 {denied}"),
        (j({"id": "m-hex", "targets": ["0x7f.0.0.2"], "ports": str(p)}), "m-hex",
         f"targets[0]: target '0x7f.0.0.2': '0x7f.0.0.2' {spelling}"),
        (j({"id": "m-decimal", "targets": ["2130706434"], "ports": str(p)}), "m-decimal",
         f"targets[0]: target '2130706434': '2130706434' {spelling}"),
        (j({"id": "m-mapped", "targets": ["::ffff:127.0.0.2"], "ports": str(p)}), "m-mapped",
         f"targets[0]: target '::ffff:127.0.0.2': ::ffff:127.0.0.2 (IPv4 127.0.0.2) {denied}"),
        (j({"id": "m-mapped-ep", "endpoints": [f"[::ffff:127.0.0.2]:{p}"]}), "m-mapped-ep",
         f"endpoints[0]: target '[::ffff:127.0.0.2]:{p}': "
         f"::ffff:127.0.0.2 (IPv4 127.0.0.2) {denied}"),
        (j({"id": "m-net", "targets": ["127.0.0.0/30"], "ports": str(p)}), "m-net",
         f"targets[0]: target '127.0.0.0/30': 127.0.0.2 {denied}"),
        (j({"id": "m-v6", "targets": ["::1"], "ports": str(p)}), "m-v6",
         "targets[0]: target '::1': ::1 is outside the allowed networks (127.0.0.0/8)"),
        (j({"id": "m-big", **ok, "requester": "x" * 70000}), "m-big",
         "bytes, more than the limit of 65536"),
        (j({"id": "m-tasks", "targets": ["127.0.0.0/24"], "ports": "1-10"}), "m-tasks",
         "job would scan about 2560 ports (256 addresses x 10 ports), more than the limit of 1000"),
        (j({"id": "m-unknown", **ok, "bogus": 1}), "m-unknown", "unknown field 'bogus'; allowed:"),
        (b'{"id": "m-dup", "targets": ["127.0.0.1"], "targets": ["127.0.0.2"]}', "m-dup",
         "duplicate field 'targets' in a JSON object"),
        (b'{"id": "m-nan", "endpoints": ["127.0.0.1:1"], "priority": NaN}', "m-nan",
         "NaN is not valid JSON"),
        (j({"id": "m-none"}), "m-none", "targets: a job needs at least one target or endpoint"),
        (j({"id": "m-timeout", **ok, "timeouts": {"connect_ms": 5}}), "m-timeout",
         "timeouts.connect_ms: 5 is out of range (100-60000)"),
        (j({"id": "m-sig", **ok, "sig": "xyz"}), "m-sig", "sig: must be 64 hex digits"),
        (j({"id": "bad id!", **ok}), None, "id: 'bad id!' must be 1-128 characters"),
        (j({"id": "m-expired", **ok, "not_after": 1000}), "m-expired",
         "not_after: job expired at 1970-01-01T00:16:40Z"),
    ]  # fmt: skip


def test_malformed_jobs_are_rejected_precisely(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    denied = listen(banner(SSH_BANNER), host="127.0.0.2")
    allowed = listen(banner(SSH_BANNER))
    daemons.start("bad:1", *POLICY)
    cases = _bad_jobs(denied.port)
    assert len(cases) >= 20
    entries = []
    for raw, _job_id, _reason in cases:
        if isinstance(raw, list):
            entries.append(redis.xadd_fields(*raw))
        else:
            entries.append(redis.xadd_job(raw))
    wait_for(lambda: len(redis.dead()) >= len(cases), 20, 0.1, "every bad job dead-lettered")
    dead = {d["entry"]: d for d in redis.dead()}
    problems = []
    for (raw, job_id, reason), entry in zip(cases, entries, strict=True):
        letter = dead.get(entry)
        if letter is None:
            problems.append(f"{raw[:60]!r}: not dead-lettered")
            continue
        if reason not in letter["reason"] or not letter["reason"].startswith("invalid job: "):
            problems.append(f"{raw[:60]!r}: reason {letter['reason']!r}, expected {reason!r}")
        # recorded by stream entry; a bare XADD's refusal never creates a hash under the id
        # it claims (that would shadow the real job of that id submitted later)
        if redis.refused(entry).get("reason") != letter["reason"]:
            problems.append(f"{entry}: refusal record {redis.refused(entry)}")
        if job_id is not None and redis.job(job_id):
            problems.append(f"{job_id}: a status hash was written: {redis.job(job_id)}")
    assert not problems, "\n".join(problems)
    for entry, letter in dead.items():
        print(f"{entry}: {letter['reason']}")
    assert len(dead) == len(cases)
    assert redis.pending_count() == 0
    assert denied.connections == 0  # nothing was dialled for the forbidden targets

    # the daemon keeps serving good jobs
    for i in range(3):
        submit(redis, {"id": f"good-{i}", "endpoints": [allowed.endpoint]})
    wait_for(lambda: all(final(redis, f"good-{i}") for i in range(3)), 15, 0.1, "good jobs")
    assert {redis.status(f"good-{i}") for i in range(3)} == {"done"}
    assert denied.connections == 0
    assert len(redis.dead()) == len(cases)


def test_signed_jobs_only_run_when_valid(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners, tmp_path: Path
) -> None:
    key = tmp_path / "job.key"
    key.write_bytes(os.urandom(32).hex().encode() + b"\n")
    key.chmod(0o600)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(os.urandom(32).hex().encode())
    other_key.chmod(0o600)
    signer = JobSigner(key.read_bytes().rstrip(b"\n"))
    target = listen(banner(SSH_BANNER))
    daemons.start("signed:1", *POLICY, "--job-key-file", str(key))

    def base(job_id: str) -> dict[str, Any]:
        return {"id": job_id, "endpoints": [target.endpoint]}

    tampered = signer.sign(base("s-tampered"), 600)
    tampered["endpoints"] = [target.endpoint, f"127.0.0.1:{target.port}"]
    expired = signer.sign(base("s-expired"), 60, now=time.time() - 3600)
    wrong = JobSigner(other_key.read_bytes()).sign(base("s-wrong-key"), 600)
    stripped = signer.sign(base("s-stripped"), 600)
    del stripped["not_after"]
    cases = {
        "s-unsigned": (base("s-unsigned"), "invalid job: sig: unsigned job"),
        "s-tampered": (tampered, "invalid job: sig: bad signature"),
        "s-expired": (expired, "invalid job: not_after: job expired"),
        "s-wrong-key": (wrong, "invalid job: sig: bad signature"),
        "s-stripped": (stripped, "invalid job: sig: bad signature"),
    }
    unsigned = vscan(redis_server, "submit", target.endpoint, "--id", "s-cli-unsigned")
    assert unsigned.stdout.strip() == "s-cli-unsigned"
    entries = {job_id: submit(redis, job) for job_id, (job, _) in cases.items()}
    cases["s-cli-unsigned"] = ({}, "invalid job: sig: unsigned job")
    entries["s-cli-unsigned"] = redis.job("s-cli-unsigned")["entry"]
    wait_for(
        lambda: all(redis.refused(e) for e in entries.values()), 15, 0.1, "the bad signed jobs"
    )
    for job_id, (_, reason) in cases.items():
        # refused by stream entry; nothing written under an unverified id: no hash for the
        # bare XADDs, the CLI's own "queued" hash untouched (vscan status shows the refusal)
        assert redis.refused(entries[job_id])["reason"].startswith(reason), job_id
        status = redis.job(job_id)
        if job_id == "s-cli-unsigned":
            assert status["status"] == "queued", status
        else:
            assert status == {}, status
    shown = vscan(redis_server, "status", "s-cli-unsigned", check=False)
    assert "refused: invalid job: sig: unsigned job" in shown.stdout, shown.stdout
    assert target.connections == 0, "a socket was opened for a rejected job"

    # a correctly signed job runs
    done = vscan(
        redis_server, "submit", target.endpoint, "--id", "s-good", "--sign-key", str(key),
        "--wait", "--no-results", "--timeout", "20",
    )  # fmt: skip
    assert done.stdout.strip() == "s-good"
    assert redis.status("s-good") == "done"
    assert len(redis.results("s-good")) == 1
    connections = target.connections
    assert connections >= 1

    # replayed: the very same signed document in a new stream entry
    entry = redis.job("s-good")["entry"]
    raw = dict(zip(*[iter(redis("XRANGE", redis.stream(), entry, entry)[0][1])] * 2, strict=True))[
        b"job"
    ]
    replay_entry = redis.xadd_job(raw)
    wait_for(lambda: any(d["entry"] == replay_entry for d in redis.dead()), 10, 0.1, "the replay")
    letter = next(d for d in redis.dead() if d["entry"] == replay_entry)
    assert letter["reason"].startswith("replayed job"), letter
    assert redis.status("s-good") == "done"  # the real job's hash is untouched
    assert len(redis.results("s-good")) == 1
    assert target.connections == connections
    assert redis.pending_count() == 0


# --------------------------------------------------------------------------- 6. SIGTERM


def test_sigterm_finishes_short_and_releases_long_job(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    short = listen(delayed_banner(SSH_BANNER, 2.0))
    gate = threading.Event()
    long = listen(gated_banner(SSH_BANNER, gate))
    drain = 8.0
    idle_ms = 30000
    daemon = daemons.start("term:1", job_idle_ms=idle_ms, drain_timeout=drain)
    submit(redis, {"id": "long", "endpoints": [long.endpoint]})
    submit(redis, {"id": "short", "endpoints": [short.endpoint]})
    wait_for(
        lambda: redis.status("long") == "running" and redis.status("short") == "running",
        10,
        0.05,
        "both jobs running",
    )
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait_exit(drain + 5)
    took = time.monotonic() - sent
    print(f"exited {code} {took:.2f}s after SIGTERM (drain deadline {drain}s)")
    # the product's promise on its own clock: from "vscand stopping" to "vscand stopped"
    # (the drain ends 3 s before drain_timeout, the long job is released in that reserve)
    # within drain_timeout; the signal's delivery and the interpreter's exit are this
    # machine's speed, so not counted (wait_exit(drain + 5) above fails a drain that hangs)
    stop_times = {
        e["log_format"].split(":")[0]: e["log_time"]
        for e in daemon.events()
        if e.get("log_format", "").startswith("vscand stop")
    }
    assert stop_times["vscand stopped"] - stop_times["vscand stopping"] < drain, stop_times
    # a clean stop: twist re-raises the signal after the reactor stopped (so the exit status
    # says SIGTERM, which systemd counts as success)
    assert code in (0, -signal.SIGTERM), code
    assert daemon.logged("vscand stopped")

    assert redis.status("short") == "done"
    assert len(redis.results("short")) == 1
    long_job = redis.job("long")
    assert long_job["status"] == "queued", long_job
    assert long_job["released_by"] == "term:1"
    assert redis.results("long") == []  # nothing acked without its results
    pending = redis.pending()
    assert [(e, c) for e, c, _, _ in pending] == [(long_job["entry"], "term:1")]
    assert pending[0][2] >= idle_ms  # idle past the lease: claimable right away
    assert daemon.logged("released for another worker")

    gate.set()
    daemons.start("term:2", job_idle_ms=idle_ms, drain_timeout=drain)
    started = time.monotonic()
    # claimable at once (its janitor's first look, at start): not after the 30 s lease, nor
    # after half of it, the soonest a lease-bound claim could come
    wait_for(
        lambda: final(redis, "long"), idle_ms / 1000 / 2, 0.05, "the released job to run"
    )  # fmt: skip
    print(f"released job done {time.monotonic() - started:.2f}s after the second daemon was ready")
    assert redis.status("long") == "done"
    assert redis.job("long")["worker"] == "term:2"
    assert len(redis.results("long")) == 1
    assert redis.pending_count() == 0


def test_draining_daemon_keeps_its_leases(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """A drain longer than job_idle_ms: the job being finished is not claimed (and run a
    second time) by another worker meanwhile."""
    gate = threading.Event()
    target = listen(gated_banner(SSH_BANNER, gate))
    first = daemons.start("drain:1", job_idle_ms=2000, drain_timeout=12)
    submit(redis, {"id": "draining", "endpoints": [target.endpoint]})
    wait_for(lambda: redis.status("draining") == "running", 10, 0.05, "the job to run")
    other = daemons.start("drain:2", job_idle_ms=2000, drain_timeout=12)
    first.signal(signal.SIGTERM)
    time.sleep(5.0)  # 2.5 leases
    gate.set()
    first.wait_exit(15)
    wait_for(lambda: final(redis, "draining"), 10, 0.1, "the job to end")
    job = redis.job("draining")
    assert (job["status"], job["worker"]) == ("done", "drain:1"), job
    assert len(redis.results("draining")) == 1
    assert not other.logged("claimed job entry"), other.tail()
    assert target.connections == 1  # scanned once, by the draining daemon
    assert redis.pending_count() == 0


# --------------------------------------------------------------------------- 7. sd_notify


def test_systemd_notify_ready_watchdog_stopping(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    messages: list[tuple[float, str]] = []
    watchdog_usec = "2000000"

    def receive(until: float) -> None:
        while time.monotonic() < until:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            messages.append((time.monotonic(), data.decode()))

    try:
        redis_server.kill()  # READY must wait for Redis and the group
        daemon = daemons.start(
            "notify:1",
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": watchdog_usec},
            wait=False,
        )
        receive(time.monotonic() + 3.0)
        assert daemon.alive()
        assert not [m for _, m in messages if "READY=1" in m], messages
        redis_server.start()
        back = time.monotonic()
        deadline = back + 15
        while not any("READY=1" in m for _, m in messages) and time.monotonic() < deadline:
            receive(time.monotonic() + 0.05)
        ready = [t for t, m in messages if "READY=1" in m]
        assert ready, messages
        assert redis.group_exists(), "READY=1 before the consumer group exists"
        receive(time.monotonic() + 3.5)
        daemon.signal(signal.SIGTERM)
        receive(time.monotonic() + 2.0)
        daemon.wait_exit(10)
    finally:
        sock.close()
    print(f"READY {ready[0] - back:.2f}s after Redis came back; messages: {messages}")
    watchdog = [t for t, m in messages if "WATCHDOG=1" in m and t > ready[0]]
    assert len(watchdog) >= 3, messages  # every second (half of WATCHDOG_USEC)
    gaps = [b - a for a, b in itertools.pairwise(watchdog)]
    # systemd's own limit: a gap of WATCHDOG_USEC kills the unit (one missed ping = 2 s);
    # the pings come every half of it, so the other half is the reactor's allowance
    assert max(gaps) < int(watchdog_usec) / 1e6, gaps
    stopping = [t for t, m in messages if "STOPPING=1" in m]
    assert len(stopping) == 1 and stopping[0] > watchdog[-1] - 1.5, messages
    assert [m for _, m in messages].count("READY=1") == 1


# --------------------------------------------------------------------------- 8. cancel


def test_cancel_keeps_partial_results(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    fast = listen(banner(SSH_BANNER))
    gate = threading.Event()
    long = listen(gated_banner(SSH_BANNER, gate))
    daemons.start("cancel:1")
    job_id = vscan(
        redis_server, "submit", fast.endpoint, long.endpoint, "--id", "to-cancel"
    ).stdout.strip()
    wait_for(
        lambda: redis.job(job_id).get("ports_done") == "1" and redis.status(job_id) == "running",
        10,
        0.05,
        "the fast port's result",
    )
    time.sleep(1.0)
    assert redis.status(job_id) == "running"
    started = time.monotonic()
    out = vscan(redis_server, "cancel", job_id).stdout
    assert "cancel requested" in out
    wait_for(lambda: final(redis, job_id), 5, 0.05, "the cancel")
    took = time.monotonic() - started
    print(f"cancelled {took:.2f}s after vscan cancel")
    status = redis.job(job_id)
    assert status["status"] == "cancelled", status
    results = redis.results(job_id)
    fast_results = [r for r in results if r["port"] == fast.port]
    assert len(fast_results) == 1 and fast_results[0]["service"]["name"] == "ssh"
    assert len(results) <= 2
    assert redis.pending_count() == 0
    gate.set()


def test_a_clean_stop_logs_no_warning(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """SIGTERM of an idle daemon after a job: no warning or error in its log (closing the
    blocking reader used to log "reading jobs: Redis unavailable")."""
    server = listen(banner(SSH_BANNER))
    daemon = daemons.start("clean:1")
    submit(redis, {"id": "before-stop", "endpoints": [server.endpoint]})
    wait_for(lambda: final(redis, "before-stop"), 15, 0.1, "the job")
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit(30)
    assert daemon.logged("vscand stopped"), daemon.tail()
    levels = [
        (e["log_level"].get("name"), e.get("log_format"))
        for e in daemon.events()
        if isinstance(e.get("log_level"), dict)
    ]
    assert [entry for entry in levels if entry[0] in ("warn", "error", "critical")] == []
