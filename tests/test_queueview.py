"""Queue visibility (issue 13, part 3): ``vscan jobs``, ``vscan queue``, ``vscan dead
list|show|retry|drop``, ``--json`` on every fleet read command and ``submit --wait --show``.

Real redis-server; real daemons where the daemon's own writes matter (consumers, dead letters
it made, a retried job that runs). Hostile contents: a dead letter with a cut job, binary
fields and control characters, job hashes with missing fields or a binary name. Errors are
one line; exit 2 for usage, 1 for "not found" or a refusal.
"""

from __future__ import annotations

import json
from typing import Any

from tests.daemon_harness import SSH_BANNER, Daemons, Listeners, Redis, banner, vscan, wait_for
from tests.redis_server import RedisServer

POLICY = ("--allow", "127.0.0.1/32", "--deny", "127.0.0.2/32")


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(proc: Any, code: int, text: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- vscan jobs


def test_jobs_lists_recent_jobs_and_survives_damaged_hashes(redis_server: RedisServer) -> None:
    redis = Redis(redis_server)
    for job_id in ("j1", "j2", "j3"):
        vscan(redis_server, "submit", "127.0.0.1", "-p", "22", "--id", job_id)
    redis("HSET", "vscand:job:{j2}", "queued_at", "2030-01-01T00:00:00Z")  # the newest
    redis("HSET", "vscand:job:{j3}", "status", "running", "ports_done", "3", "ports_total", "9")
    redis("HSET", "vscand:job:{j3}", "worker", "w\x1b[31m1", "started_at", "2027-01-01T00:00:00Z")
    # hostile: no fields we show, a binary key name, a task, keys that are not job hashes
    redis("HSET", "vscand:job:{bare}", "junk", b"\xff\x00")
    redis("HSET", b"vscand:job:{\xff\x1b[2J}", "status", "queued")
    redis("HSET", "vscand:job:{j1}/t0", "status", "queued", "parent", "j1")
    redis("SET", "vscand:job:{str}", "x")
    redis("XADD", "vscand:job:{j1}:results", "*", "result", "{}")

    rows = lines(vscan(redis_server, "jobs", "--json").stdout)
    ids = [row["id"] for row in rows]
    # newest queued first, hashes without queued_at last; no task, no key of another type;
    # a binary name decoded with backslashreplace (JSON escapes the rest)
    assert ids == ["j2", "j3", "j1", "bare", "\\xff\x1b[2J"], ids
    by_id = {row["id"]: row for row in rows}
    assert by_id["j3"]["ports_done"] == 3 and by_id["j3"]["ports_total"] == 9
    assert by_id["bare"]["status"] is None and by_id["bare"]["queued_at"] is None

    with_tasks = [r["id"] for r in lines(vscan(redis_server, "jobs", "--tasks", "--json").stdout)]
    assert "j1/t0" in with_tasks
    assert [
        r["id"] for r in lines(vscan(redis_server, "jobs", "--limit", "1", "--json").stdout)
    ] == ["j2"]
    running = lines(vscan(redis_server, "jobs", "--status", "running", "--json").stdout)
    assert [r["id"] for r in running] == ["j3"]

    table = vscan(redis_server, "jobs").stdout
    assert "\x1b" not in table, table  # control characters never reach the terminal
    header, *body = table.splitlines()
    assert header.split()[:4] == ["JOB", "STATUS", "QUEUE", "PORTS"]
    j3 = next(line for line in body if line.startswith("j3 "))
    assert "running" in j3 and "3/9" in j3 and "w\\x1b[31m1" in j3
    assert any(line.startswith("bare ") and " ? " in line for line in body), table

    one_line_error(vscan(redis_server, "jobs", "--limit", "0", check=False), 2, "--limit")
    assert vscan(redis_server, "jobs", "--limit", "x", check=False).returncode == 2  # argparse


def test_jobs_on_an_empty_database(redis_server: RedisServer) -> None:
    assert vscan(redis_server, "jobs", "--json").stdout == ""
    assert vscan(redis_server, "jobs").stdout.split() == [
        *("JOB", "STATUS", "QUEUE", "PORTS", "TASKS", "QUEUED", "STARTED", "FINISHED", "WORKER")
    ]


# --------------------------------------------------------------------------- vscan queue


def test_queue_depth_pending_consumers_lag_and_dead(redis_server: RedisServer) -> None:
    redis = Redis(redis_server)
    absent = lines(vscan(redis_server, "queue", "--queue", "none", "--json").stdout)[0]
    assert (
        absent["length"] == 0 and absent["group"] is None and absent["stream"].endswith("jobs:none")
    )
    stream = redis.stream("q2")
    redis("XGROUP", "CREATE", stream, "vscand", "0", "MKSTREAM")
    entries = [redis.xadd_fields("job", f'{{"id": "q{i}"}}', queue="q2") for i in range(4)]
    redis("XREADGROUP", "GROUP", "vscand", "c\x1b1", "COUNT", "1", "STREAMS", stream, ">")
    redis("XADD", "vscand:dead", "*", "job", "{}", "reason", "r")
    report = lines(vscan(redis_server, "queue", "--queue", "q2", "--json").stdout)[0]
    assert report["length"] == 4 and report["group"] == "vscand" and report["pending"] == 1
    assert report["lag"] == 3, report
    assert report["oldest_pending"] == entries[0]
    assert report["oldest_pending_age_seconds"] >= 0
    assert report["consumers"] == [
        {"name": "c\x1b1", "pending": 1, "idle_seconds": report["consumers"][0]["idle_seconds"]}
    ]
    assert report["dead_length"] == 1
    # a deletion past the group: Redis 7 gives no lag then; the count stands in
    redis("XDEL", stream, entries[2])
    report = lines(vscan(redis_server, "queue", "--queue", "q2", "--json").stdout)[0]
    assert report["lag"] == 2 and report["lag_source"] in ("xinfo", "counted"), report
    text = vscan(redis_server, "queue", "--queue", "q2").stdout
    assert "pending: 1" in text and "lag: 2" in text and "dead letters: 1" in text
    assert f"oldest pending: {entries[0]}" in text and "\x1b" not in text and "c\\x1b1" in text


def test_queue_shows_a_running_daemon(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("qv:1", *POLICY)
    vscan(redis_server, "submit", target.endpoint, "--id", "seen", "--wait", "--timeout", "30")
    report = lines(vscan(redis_server, "queue", "--json").stdout)[0]
    assert report["group"] == "vscand" and report["pending"] == 0 and report["lag"] == 0
    assert "qv:1" in [c["name"] for c in report["consumers"]], report
    done = lines(vscan(redis_server, "jobs", "--json").stdout)
    assert [(r["id"], r["status"], r["ports_done"]) for r in done] == [("seen", "done", 1)]
    assert done[0]["worker"] and done[0]["finished_at"]
    # a sharded job: one row, its tasks counted; --tasks lists them too
    other = listen(banner(SSH_BANNER))
    vscan(
        redis_server, "submit", target.endpoint, other.endpoint, "--id", "split",
        "--task-ports", "1", "--wait", "--timeout", "30",
    )  # fmt: skip
    rows = {r["id"]: r for r in lines(vscan(redis_server, "jobs", "--json").stdout)}
    assert set(rows) == {"seen", "split"}
    assert rows["split"]["tasks_total"] == 2 and rows["split"]["tasks_finished"] == 2
    split_line = next(x for x in vscan(redis_server, "jobs").stdout.splitlines() if "split" in x)
    assert " 2/2 " in split_line, split_line
    tasks = {r["id"] for r in lines(vscan(redis_server, "jobs", "--tasks", "--json").stdout)}
    assert tasks == {"seen", "split", "split/t0", "split/t1"}


# --------------------------------------------------------------------------- vscan dead


def test_dead_letters_from_a_daemon_list_show_retry_drop(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    redis = Redis(redis_server)
    target = listen(banner(SSH_BANNER))
    daemons.start("qv:dead", *POLICY)
    big = b'{"id": "big", "targets": ["127.0.0.1"], "x": "' + b"y" * 9000 + b'"}'
    cut = redis.xadd_job(big)
    binary = redis.xadd_fields("job", b"\xff\xfe{}", "extra", b"\x00\x1b[2J\xff")
    denied = redis.xadd_job({"id": "dns", "targets": ["never-resolved.example"]})
    wait_for(lambda: len(redis.dead()) == 3, timeout=30, what="three dead letters")
    by_entry = {letter["entry"]: letter["_id"] for letter in redis.dead()}

    listing = lines(vscan(redis_server, "dead", "list", "--json").stdout)
    # newest dead letter first (the daemon may dead-letter them in any order)
    assert [item["dead_entry"] for item in listing] == sorted(by_entry.values(), reverse=True)
    letters = {item["entry"]: item for item in listing}
    assert letters[cut]["cut"] is True and letters[cut]["job_id"] is None
    assert letters[cut]["job_bytes"] == str(len(big))
    assert letters[denied]["job_id"] == "dns" and letters[denied]["cut"] is False
    assert letters[binary]["job"] == "\\xff\\xfe{}"
    assert len(lines(vscan(redis_server, "dead", "list", "--limit", "1", "--json").stdout)) == 1
    table = vscan(redis_server, "dead", "list").stdout
    assert "\x1b" not in table and "(cut)" in table and "dns" in table

    shown = vscan(redis_server, "dead", "show", by_entry[binary]).stdout
    assert "\x1b" not in shown and "\x00" not in shown
    assert "field:extra: \\x00\\x1b[2J\\xff" in shown, shown
    # JSON escapes control characters itself; bytes that are not UTF-8 read \xNN
    as_json = lines(vscan(redis_server, "dead", "show", by_entry[binary], "--json").stdout)[0]
    assert as_json["field:extra"] == "\x00\x1b[2J\\xff"

    # retry: refused for a cut job and an invalid one; the denied one is re-queued (its id
    # is free: the daemon wrote no hash) and dead-lettered again by the daemon
    refused = vscan(redis_server, "dead", "retry", by_entry[cut], check=False)
    one_line_error(refused, 1, "holds only the first 4096 of")
    one_line_error(
        vscan(redis_server, "dead", "retry", by_entry[binary], check=False), 1, "not valid"
    )
    again = vscan(redis_server, "dead", "retry", by_entry[denied])
    assert again.stdout.startswith("job dns re-submitted from dead letter"), again.stdout
    wait_for(lambda: len(redis.dead()) == 4, timeout=30, what="the retried job's dead letter")
    assert "never-resolved.example" in redis.dead()[-1]["reason"]

    # a good job dead-lettered (here by hand, as an operator or an older daemon would): the
    # retry runs it to the end
    good = json.dumps({"id": "second-chance", "endpoints": [target.endpoint]})
    letter = redis("XADD", "vscand:dead", "*", "job", good, "reason", "r", "stream", "vscand:jobs")
    vscan(redis_server, "dead", "retry", letter.decode())
    vscan(redis_server, "wait", "second-chance", "--timeout", "30")
    taken = vscan(redis_server, "dead", "retry", letter.decode(), check=False)
    one_line_error(taken, 1, "job id 'second-chance' is taken (status done)")

    # drop
    assert vscan(redis_server, "dead", "drop", by_entry[cut]).stdout.endswith("dropped\n")
    one_line_error(
        vscan(redis_server, "dead", "drop", by_entry[cut], check=False), 1, "no dead letter"
    )
    one_line_error(
        vscan(redis_server, "dead", "show", by_entry[cut], check=False), 1, "no dead letter"
    )
    # usage
    one_line_error(vscan(redis_server, "dead", "show", "nope", check=False), 2, "not a stream")
    one_line_error(vscan(redis_server, "dead", "retry", "1-x", check=False), 2, "not a stream")
    assert vscan(redis_server, "dead", check=False).returncode == 2
    assert vscan(redis_server, "dead", "list", "--limit", "0", check=False).returncode == 2


# ------------------------------------------------------- --json everywhere, submit --show


def test_read_commands_speak_json_and_submit_shows_results(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("qv:json", *POLICY)
    shown = vscan(
        redis_server, "submit", target.endpoint, "--id", "shown", "--wait", "--show",
        "--timeout", "30",
    )  # fmt: skip
    first, *rest = shown.stdout.splitlines()
    assert first == "shown"
    assert "ssh" in "\n".join(rest) and "OpenSSH" in "\n".join(rest), shown.stdout
    as_json = vscan(
        redis_server, "submit", target.endpoint, "--id", "shown-json", "--wait", "--show",
        "--json", "--timeout", "30",
    )  # fmt: skip
    first, *rest = as_json.stdout.splitlines()
    assert first == "shown-json"
    [result] = [json.loads(line) for line in rest]
    assert result["port"] == target.port and result["service"]["name"] == "ssh", result
    plain = vscan(
        redis_server, "submit", target.endpoint, "--id", "plain", "--wait", "--no-results"
    )
    assert plain.stdout == "plain\n"  # for scripts: the id only
    table = vscan(redis_server, "submit", target.endpoint, "--id", "table", "--wait")
    first, *rest = table.stdout.splitlines()  # --show is the default with --wait
    assert first == "table"
    assert "ssh" in "\n".join(rest) and "OpenSSH" in "\n".join(rest), table.stdout
    for bad in (["--show"], ["--json"], ["--no-results"], ["--wait", "--json", "--no-results"]):
        one_line_error(
            vscan(redis_server, "submit", target.endpoint, *bad, check=False), 2, "--show"
        )

    for command in (
        ["status", "shown"],
        ["workers"],
        ["results", "shown"],
        ["inventory"],
        ["inventory", "127.0.0.1"],
        ["changes"],
        ["schedule", "list"],
        ["jobs"],
        ["queue"],
        ["dead", "list"],
    ):
        out = vscan(redis_server, *command, "--json").stdout
        assert all(isinstance(row, dict) for row in lines(out)), (command, out)
    hosts = lines(vscan(redis_server, "inventory", "--json").stdout)
    assert hosts == [{"host": "127.0.0.1", "ports": 1}]
