"""Inventory change detection (issue 6) against a real throwaway redis-server.

A rescan of an unchanged service raises no event, whatever its timestamps,
duration, worker or fingerprint say; a stopped service is ``closed``, a new
banner version ``version_changed``, a new service ``opened``. The events are
written by the same fenced script as the result, and ``vscan changes``,
``vscan inventory HOST`` and ``vscan export --inventory -oX`` read them back.
No target is dialled: results are made up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.sync_redis import SyncRedis, run
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import Job
from vscand.queue.changes import normalised_service, since_entry_id, tracks_inventory
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter, result_json
from vscand.targets.policy import TargetPolicy

KEYS = Keys("t:")
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOST = "127.0.0.1"
CERT_A = "ab" * 32
CERT_B = "cd" * 32
SF = "SF-Port9999-TCP:V=7.93%I=7"


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[SyncRedis]:
    client = SyncRedis(redis_server.port)
    yield client
    client.close()


@pytest.fixture
def writer(redis: SyncRedis) -> ResultWriter:
    return ResultWriter(redis, KEYS, worker="host-a", results_maxlen=1000, clock=lambda: NOW)


def service(name: str, product: str | None = None, version: str | None = None, **extra: Any) -> Any:
    return {
        "name": name,
        "product": product,
        "version": version,
        "extrainfo": None,
        "hostname": None,
        "ostype": None,
        "devicetype": None,
        "tunnel": None,
        "method": "probed",
        "conf": 10,
        "cpe": [],
        "fingerprint": None,
        "rpc": None,
        "tls": None,
        "scripts": {},
        **extra,
    }


SSH = service(
    "ssh",
    "OpenSSH",
    "9.2p1 Debian 2+deb12u3",
    extrainfo="protocol 2.0",
    ostype="Linux",
    cpe=["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"],
)
HTTP = service("http", "nginx", "1.24.0", cpe=["cpe:/a:igor_sysoev:nginx:1.24.0"])
HTTP_NEW = service("http", "nginx", "1.25.3", cpe=["cpe:/a:igor_sysoev:nginx:1.25.3"])
SMTP = service("smtp", "Postfix smtpd", hostname="mail.example.test")
REDIS = service("redis", "Redis key-value store", "7.0.15")


def result(
    port: int,
    state: str = "open",
    svc: Any = None,
    *,
    job: str = "j1",
    protocol: str = "tcp",
    scanned_at: str = "2027-01-15T08:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "job": job,
        "host": HOST,
        "hostname": None,
        "port": port,
        "protocol": protocol,
        "state": state,
        "reason": "syn-ack" if state == "open" else "conn-refused",
        "service": svc if svc is not None else service("unknown", method="table", conf=3),
        "tags": {},
        "worker": "host-a",
        "scanned_at": scanned_at,
        "duration_ms": 5,
        **extra,
    }


def make_job(job_id: str) -> Job:
    raw = json.dumps({"id": job_id, "targets": [HOST], "ports": "1-1000"})
    return parse_job(raw.encode(), policy=TargetPolicy(), now=NOW)


def scan(writer: ResultWriter, job_id: str, results: list[dict[str, Any]]) -> None:
    """One job: begin, write every result (tagged with the job), finish."""
    job = make_job(job_id)
    assert run(writer.begin(job, f"{job_id}-entry", f"{job_id}-a")) == "run"
    for item in results:
        assert run(writer.write(job_id, f"{job_id}-a", {**item, "job": job_id})) is True
    assert run(writer.finish(job_id, f"{job_id}-a", "done")) is True


def events(redis: SyncRedis) -> list[dict[str, str]]:
    out = []
    for _entry_id, fields in redis.call("XRANGE", KEYS.changes, "-", "+"):
        out.append({k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2], strict=True)})
    return out


def kinds(redis: SyncRedis) -> list[tuple[str, str]]:
    return [(f"{e['port']}/{e['protocol']}", e["kind"]) for e in events(redis)]


BASELINE = [result(22, svc=SSH), result(80, svc=HTTP), result(25, svc=SMTP), result(6379, "closed")]


# --------------------------------------------------------------------------- normalisation


def test_the_normalised_form_ignores_times_fingerprints_and_bookkeeping() -> None:
    first = result(22, svc=SSH)
    again = result(
        22,
        svc={**SSH, "method": "probed", "conf": 8, "scripts": {"x": "y"}},
        job="j9",
        scanned_at="2027-02-01T00:00:00Z",
        duration_ms=9999,
        worker="host-b",
        tags={"site": "dc2"},
        final_state="MATCHED",
        matches=[{"probe": "NULL", "matched_probe": "NULL", "line": 1, "soft": False}],
    )
    assert normalised_service(first) == normalised_service(again)
    # an unmatched service's fingerprint embeds the scan time (%Time=...): never compared
    fp1 = result(9999, svc=service("unknown", fingerprint=f"{SF}%D=1/15%Time=6790A1B2%P=x"))
    fp2 = result(9999, svc=service("unknown", fingerprint=f"{SF}%D=2/1%Time=6790FFFF%P=x"))
    assert normalised_service(fp1) == normalised_service(fp2)
    # whitespace, null vs empty, CPE order
    messy = {**SSH, "product": "  OpenSSH ", "devicetype": "", "cpe": list(reversed(SSH["cpe"]))}
    assert normalised_service(result(22, svc=messy)) == normalised_service(first)
    assert json.loads(normalised_service(first)) == {
        "state": "open",
        "name": "ssh",
        "product": "OpenSSH",
        "version": "9.2p1 Debian 2+deb12u3",
        "extrainfo": "protocol 2.0",
        "ostype": "Linux",
        "cpe": ["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"],
    }
    # a closed port's service is only the port table's guess
    assert normalised_service(result(22, "closed", svc=SSH)) == '{"state":"closed"}'


def test_the_tls_certificate_digest_is_part_of_the_normalised_form() -> None:
    a = result(443, svc=service("http", "nginx", tunnel="ssl", tls={"sha256": CERT_A.upper()}))
    nested = {"certificate": {"sha256": ":".join(CERT_A[i : i + 2] for i in range(0, 64, 2))}}
    b = result(443, svc=service("http", "nginx", tunnel="ssl", tls=nested))
    assert json.loads(normalised_service(a))["tls"] == CERT_A
    assert normalised_service(a) == normalised_service(b)


def test_interrupted_and_error_results_do_not_track() -> None:
    assert tracks_inventory(result(22, svc=SSH))
    assert tracks_inventory(result(22, "closed"))
    assert not tracks_inventory(result(22, svc=SSH, interrupted=True))
    assert not tracks_inventory(result(22, "unknown", error="connect failed: boom"))


def test_since_accepts_iso_times_entry_ids_and_durations() -> None:
    assert since_entry_id("2027-01-15T08:00:00Z", NOW) == "1800000000000"
    assert since_entry_id("2027-01-15T08:00:00", NOW) == "1800000000000"  # UTC by default
    assert since_entry_id("2027-01-15T09:00:00+01:00", NOW) == "1800000000000"
    assert since_entry_id("2027-01-15", NOW) == str(1800000000000 - 8 * 3600 * 1000)
    assert since_entry_id("1h", NOW) == str(int((NOW - 3600) * 1000))
    assert since_entry_id("90s", NOW) == str(int((NOW - 90) * 1000))
    assert since_entry_id("7d", NOW) == str(int((NOW - 7 * 86400) * 1000))
    assert since_entry_id("1800000000000-3", NOW) == "1800000000000-3"
    with pytest.raises(ValueError, match="duration"):
        since_entry_id("yesterday", NOW)


# --------------------------------------------------------------------------- the write script


def test_first_sightings_of_open_ports_are_opened_and_closed_ports_are_not_events(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    scan(writer, "j1", BASELINE)
    assert kinds(redis) == [("22/tcp", "opened"), ("80/tcp", "opened"), ("25/tcp", "opened")]
    first = events(redis)[0]
    assert first == {
        "host": HOST,
        "port": "22",
        "protocol": "tcp",
        "kind": "opened",
        "before": "",
        "after": normalised_service(result(22, svc=SSH)),
        "job": "j1",
        "at": "2027-01-15T08:00:00Z",
    }
    stored = redis.call("HGET", KEYS.inventory_normalised(HOST), "6379/tcp")
    assert stored == b'{"state":"closed"}'


def test_unchanged_rescans_raise_no_events(redis: SyncRedis, writer: ResultWriter) -> None:
    scan(writer, "j1", BASELINE)
    before = len(events(redis))
    for n in range(2, 6):
        rescan = [
            {
                **item,
                "scanned_at": f"2027-01-{15 + n}T08:00:00Z",
                "duration_ms": 100 * n,
                "worker": f"host-{n}",
                "service": {**item["service"], "conf": 10 - n % 2, "scripts": {"n": str(n)}},
            }
            for item in BASELINE
        ]
        scan(writer, f"j{n}", rescan)
    assert len(events(redis)) == before
    # the inventory itself has the latest result
    latest = json.loads(redis.call("HGET", KEYS.inventory(HOST), "22/tcp"))
    assert (latest["job"], latest["scanned_at"]) == ("j5", "2027-01-20T08:00:00Z")


def test_the_issue_scenario_stop_one_change_a_version_start_a_new_one(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    scan(writer, "j1", BASELINE)
    redis.call("DEL", KEYS.changes)
    scan(
        writer,
        "j2",
        [
            result(22, "closed", scanned_at="2027-01-16T08:00:00Z"),  # sshd stopped
            result(80, svc=HTTP_NEW, scanned_at="2027-01-16T08:00:01Z"),  # nginx upgraded
            result(25, svc=SMTP, scanned_at="2027-01-16T08:00:02Z"),  # unchanged
            result(6379, svc=REDIS, scanned_at="2027-01-16T08:00:03Z"),  # redis started
        ],
    )
    got = events(redis)
    assert [(e["port"], e["kind"]) for e in got] == [
        ("22", "closed"),
        ("80", "version_changed"),
        ("6379", "opened"),
    ]
    closed, changed, opened = got
    assert json.loads(closed["before"])["product"] == "OpenSSH"
    assert closed["after"] == '{"state":"closed"}'
    assert (json.loads(changed["before"])["version"], json.loads(changed["after"])["version"]) == (
        "1.24.0",
        "1.25.3",
    )
    assert opened["before"] == '{"state":"closed"}'
    assert json.loads(opened["after"])["name"] == "redis"
    assert {e["job"] for e in got} == {"j2"}
    assert opened["at"] == "2027-01-16T08:00:03Z"


def test_service_and_tls_changes_and_state_transitions(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    tls_a = service("http", "nginx", "1.24.0", tunnel="ssl", tls={"sha256": CERT_A})
    tls_b = {**tls_a, "tls": {"sha256": CERT_B}}
    scan(writer, "j1", [result(443, svc=tls_a), result(8080, svc=HTTP), result(53, "closed")])
    redis.call("DEL", KEYS.changes)
    scan(
        writer,
        "j2",
        [
            result(443, svc=tls_b),  # new certificate
            result(8080, svc=service("http-proxy", "Squid http proxy", "5.7")),
            result(53, "filtered"),  # closed -> filtered: nothing to report
        ],
    )
    assert kinds(redis) == [("443/tcp", "tls_changed"), ("8080/tcp", "service_changed")]
    redis.call("DEL", KEYS.changes)
    scan(writer, "j3", [result(443, "filtered"), result(53, svc=service("domain"))])
    assert kinds(redis) == [("443/tcp", "closed"), ("53/tcp", "opened")]
    redis.call("DEL", KEYS.changes)
    scan(writer, "j4", [result(443, svc=tls_b)])  # back again
    assert kinds(redis) == [("443/tcp", "opened")]


def test_udp_ports_are_keyed_by_protocol(redis: SyncRedis, writer: ResultWriter) -> None:
    scan(writer, "j1", [result(53, svc=service("domain")), result(53, "closed", protocol="udp")])
    dns = service("domain")
    scan(writer, "j2", [result(53, svc=dns), result(53, svc=dns, protocol="udp")])
    assert kinds(redis) == [("53/tcp", "opened"), ("53/udp", "opened")]


def test_interrupted_and_error_results_leave_the_inventory_alone(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    scan(writer, "j1", [result(22, svc=SSH)])
    redis.call("DEL", KEYS.changes)
    inventory_before = redis.call("HGET", KEYS.inventory(HOST), "22/tcp")
    partial = result(22, svc=service("tcpwrapped", method="probed"), interrupted=True)
    failed = result(22, "unknown", svc=None, error="connect failed: no buffer space")
    failed["service"] = None
    scan(writer, "j2", [partial])
    scan(writer, "j3", [failed, result(2222, "unknown", error="boom")])
    assert events(redis) == []
    assert redis.call("HGET", KEYS.inventory(HOST), "22/tcp") == inventory_before
    assert redis.call("HKEYS", KEYS.inventory(HOST)) == [b"22/tcp"]
    # they are still the jobs' results
    assert redis.call("XLEN", KEYS.job_results("j2")) == 1
    assert redis.call("XLEN", KEYS.job_results("j3")) == 2
    # and an error-only host never enters the inventory
    scan(writer, "j4", [{**result(22, "unknown", error="boom"), "host": "127.0.0.2"}])
    assert redis.call("SMEMBERS", KEYS.inventory_hosts) == [HOST.encode()]


def test_retries_and_redeliveries_raise_an_event_once(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    job = make_job("j1")
    assert run(writer.begin(job, "1-0", "a1")) == "run"
    for _ in range(3):  # a write retried after an ambiguous failure
        assert run(writer.write("j1", "a1", result(22, svc=SSH))) is True
    # the worker dies; the entry is redelivered and the port written again
    assert run(writer.begin(job, "1-0", "a2")) == "run"
    assert run(writer.write("j1", "a2", result(22, svc=SSH))) is True
    assert kinds(redis) == [("22/tcp", "opened")]


def test_an_inventory_from_before_change_tracking_is_compared_on_state(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    """Entries written before the normalised hash existed: a rescan of an open port
    is a baseline (no event), but opening and closing are still reported."""
    inventory = KEYS.inventory(HOST)
    redis.call("HSET", inventory, "22/tcp", result_json(result(22, svc=SSH)))
    redis.call("HSET", inventory, "80/tcp", result_json(result(80, svc=HTTP)))
    redis.call("HSET", inventory, "443/tcp", result_json(result(443, "closed")))
    scan(writer, "j1", [result(22, svc=SSH), result(80, "closed"), result(443, svc=HTTP)])
    assert kinds(redis) == [("80/tcp", "closed"), ("443/tcp", "opened")]
    scan(writer, "j2", [result(22, svc={**SSH, "version": "9.6p1"})])
    assert kinds(redis)[-1] == ("22/tcp", "version_changed")
    # a damaged normalised entry is a first sighting, never a failed write
    redis.call("HSET", KEYS.inventory_normalised(HOST), "22/tcp", "{not json")
    scan(writer, "j3", [result(22, svc=SSH)])
    assert kinds(redis)[-1] == ("22/tcp", "opened")
    assert redis.call("XLEN", KEYS.job_results("j3")) == 1


def test_the_changes_stream_is_trimmed_like_the_results_stream(redis: SyncRedis) -> None:
    writer = ResultWriter(redis, KEYS, worker="w", results_maxlen=100, clock=lambda: NOW)
    scan(writer, "j1", [result(port, svc=SSH) for port in range(1, 1001)])
    assert 100 <= redis.call("XLEN", KEYS.changes) < 300


# --------------------------------------------------------------------------- the CLI


def vscan(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VSCAND_REDIS_URL=server.url)
    return subprocess.run(
        [sys.executable, "-b", "-m", "vscand.cli", *args, "--key-prefix", KEYS.prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def scenario(redis: SyncRedis, writer: ResultWriter) -> SyncRedis:
    scan(writer, "j1", BASELINE)
    scan(
        writer,
        "j2",
        [
            result(22, "closed", scanned_at="2027-01-16T08:00:00Z"),
            result(80, svc=HTTP_NEW, scanned_at="2027-01-16T08:00:01Z"),
            result(25, svc=SMTP, scanned_at="2027-01-16T08:00:02Z"),
            result(6379, svc=REDIS, scanned_at="2027-01-16T08:00:03Z"),
        ],
    )
    other = {**result(443, svc=HTTP), "host": "127.0.0.2"}
    scan(writer, "j3", [other])
    return redis


def test_vscan_changes_lists_filters_and_prints_json(
    redis_server: RedisServer, scenario: SyncRedis
) -> None:
    done = vscan(redis_server, "changes", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["host"], e["port"], e["kind"]) for e in lines] == [
        (HOST, 22, "opened"),
        (HOST, 80, "opened"),
        (HOST, 25, "opened"),
        (HOST, 22, "closed"),
        (HOST, 80, "version_changed"),
        (HOST, 6379, "opened"),
        ("127.0.0.2", 443, "opened"),
    ]
    assert lines[4]["before"]["version"] == "1.24.0"
    assert lines[4]["after"]["version"] == "1.25.3"
    assert lines[0]["before"] is None

    # --since an entry id: only what came after it; --host: only that host
    fourth = lines[3]["id"]
    done = vscan(redis_server, "changes", "--since", fourth, "--host", HOST, "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["kind"] for line in done.stdout.splitlines()] == [
        "closed",
        "version_changed",
        "opened",
    ]
    # a duration: everything was written just now
    done = vscan(redis_server, "changes", "--since", "1h", "--host", "127.0.0.2")
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert table[0].split() == ["AT", "HOST", "PORT", "CHANGE", "BEFORE", "AFTER"]
    assert len(table) == 2 and "443/tcp" in table[1] and "opened" in table[1]
    assert "open http nginx 1.24.0" in table[1]
    # an ISO time in the future: nothing
    done = vscan(redis_server, "changes", "--since", "2999-01-01T00:00:00Z", "--json")
    assert (done.returncode, done.stdout) == (0, "")
    done = vscan(redis_server, "changes", "--since", "last tuesday")
    assert done.returncode == 2
    assert "--since" in done.stderr and "Traceback" not in done.stderr


def test_vscan_changes_table(redis_server: RedisServer, scenario: SyncRedis) -> None:
    done = vscan(redis_server, "changes", "--host", HOST)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[1:]
    assert len(rows) == 6
    assert "version_changed" in rows[4]
    assert "open http nginx 1.24.0" in rows[4] and "open http nginx 1.25.3" in rows[4]
    assert "closed" in rows[3] and "ssh OpenSSH" in rows[3]


def test_vscan_inventory_shows_the_current_picture(
    redis_server: RedisServer, scenario: SyncRedis
) -> None:
    done = vscan(redis_server, "inventory", HOST, "--json")
    assert done.returncode == 0, done.stderr
    current = {(r["port"], r["state"]) for r in map(json.loads, done.stdout.splitlines())}
    assert current == {(22, "closed"), (80, "open"), (25, "open"), (6379, "open")}
    done = vscan(redis_server, "inventory", HOST)
    assert done.returncode == 0, done.stderr
    assert "nginx 1.25.3" in done.stdout and "1.24.0" not in done.stdout


def port_state(port: ET.Element) -> str | None:
    state = port.find("state")
    assert state is not None
    return state.get("state")


def port_service(port: ET.Element) -> ET.Element:
    found = port.find("service")
    return found if found is not None else ET.Element("service")


def test_vscan_export_inventory_writes_nmap_xml(
    redis_server: RedisServer, scenario: SyncRedis, tmp_path: Path
) -> None:
    out = tmp_path / "inventory.xml"
    done = vscan(redis_server, "export", "--inventory", "-oX", str(out))
    assert done.returncode == 0, done.stderr
    root = ET.fromstring(out.read_text(encoding="utf-8").split("\n", 2)[2])
    assert root.tag == "nmaprun"
    hosts = {}
    for host in root.iter("host"):
        address = host.find("address")
        assert address is not None
        hosts[address.get("addr")] = {
            (int(p.get("portid", "0")), port_state(p), port_service(p).get("version"))
            for p in host.iter("port")
        }
    assert set(hosts) == {HOST, "127.0.0.2"}
    assert (80, "open", "1.25.3") in hosts[HOST]
    assert (443, "open", "1.24.0") in hosts["127.0.0.2"]

    done = vscan(redis_server, "export", "--inventory", "-oX", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout == out.read_text(encoding="utf-8")
    done = vscan(redis_server, "export", "-oX", "-")
    assert done.returncode == 2 and "--inventory" in done.stderr
    done = vscan(redis_server, "export", "j1", "--inventory", "-oX", "-")
    assert done.returncode == 2


def test_vscan_export_of_a_job_still_works(redis_server: RedisServer, scenario: SyncRedis) -> None:
    done = vscan(redis_server, "export", "j2", "-oX", "-")
    assert done.returncode == 0, done.stderr
    assert 'portid="6379"' in done.stdout


# ---------------------------------------------------------------- version scripts' output


def scripted(output: str, elements: list[dict[str, Any]] | None) -> Any:
    item = {"id": "http-server-header", "output": output, "elements": elements}
    return {**HTTP, "scripts": {"http-server-header": output}, "script_results": [item]}


def test_script_output_is_stored_and_shown_but_is_no_change(
    redis_server: RedisServer, redis: SyncRedis, writer: ResultWriter
) -> None:
    """Script output (often time- or peer-dependent: rfc868-time, a server's uptime...) does
    not take part in change detection; the inventory keeps the latest, and the fleet's
    reports print it with --script-output as ``vscan scan`` does."""
    first = result(80, svc=scripted("\n  A\n  B", [{"key": None, "value": "A"}]))
    later = result(80, svc=scripted("\n  <empty>\n  C\x01", [{"key": None, "value": ""}]))
    assert normalised_service(first) == normalised_service(later)
    scan(writer, "j1", [first])
    scan(writer, "j2", [later])
    assert kinds(redis) == [("80/tcp", "opened")]
    stored = json.loads(redis.call("HGET", KEYS.inventory(HOST), "80/tcp"))
    assert stored["service"]["script_results"] == later["service"]["script_results"]

    rows = ["| http-server-header: ", "|   <empty>", "|_  C\\x01"]
    shown = vscan(redis_server, "inventory", HOST, "--script-output")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[4].split() == ["80/tcp", "open", "http", "nginx", "1.24.0"]
    assert shown.stdout.splitlines()[5:8] == rows
    plain = vscan(redis_server, "inventory", HOST)
    assert "http-server-header" not in plain.stdout
    results = vscan(redis_server, "results", "j1", "--script-output")
    assert results.returncode == 0, results.stderr
    assert results.stdout.splitlines()[5:8] == ["| http-server-header: ", "|   A", "|_  B"]
    for args in (["export", "j2"], ["export", "--inventory"]):
        exported = vscan(redis_server, *args, "-oX", "-", "--script-output")
        assert exported.returncode == 0, exported.stderr
        script = ET.fromstring(exported.stdout).find(".//port/script")
        assert script is not None, exported.stdout
        assert script.get("output") == "\n  <empty>\n  C\\x01"
        assert [(e.tag, e.get("key"), e.text) for e in script] == [("elem", None, None)]
        bare = vscan(redis_server, *args, "-oX", "-")
        assert "<script" not in bare.stdout
