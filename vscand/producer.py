"""A small synchronous client for services that produce scan jobs (no Twisted).

::

    from vscand.producer import Client

    with Client("redis://127.0.0.1:6379/0") as client:
        job_id = client.submit({"endpoints": ["127.0.0.1:22"]})
        status = client.wait(job_id, timeout=60)
        results = client.results(job_id)

Built on redis-py (the optional extra ``producer``: ``pip install 'vscand[producer]'``).
It runs what ``vscan submit``/``status``/``wait``/``results``/``cancel`` run: the same
Lua scripts (:mod:`vscand.queue.lua`) and key names (:class:`vscand.queue.keys.Keys`), so
a submission is atomic (the stream entry and the job's ``queued`` hash in one step, or
nothing when the id is taken). The daemon validates the job (``jobs/parse.py``;
``schemas/job.schema.json`` describes it): an invalid job ends ``failed`` with the reason
in ``error``. Nothing here imports Twisted.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast

import redis
from redis.sentinel import Sentinel

from vscand.jobs.ids import JOB_ID_PATTERN, task_id
from vscand.queue.keys import Keys
from vscand.queue.lua import CANCEL, SUBMIT
from vscand.queue.redis_url import RedisURL, parse_redis_url

FINAL = ("done", "failed", "cancelled")
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_JOB_ID = re.compile(JOB_ID_PATTERN)
_QUEUE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ProducerError(Exception):
    """A submission or a read that cannot be done; ``str()`` says why."""


class JobIdTaken(ProducerError):
    """A job with this id exists already (nothing was queued)."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job id {job_id!r} is taken (a job with it exists, status {status or '?'}); "
            "submit under another id"
        )
        self.job_id = job_id
        self.status = status


class NoSuchJob(ProducerError, KeyError):
    """No job hash under this id (never submitted, or expired after ``job_retention``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such job"


class ReplicaConfirmError(ProducerError):
    """The job was queued, but fewer replicas than asked confirmed it in time."""


class WaitTimeout(ProducerError, TimeoutError):
    """:meth:`Client.wait` gave up; the job goes on."""


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _connect(url: RedisURL, socket_timeout: float) -> redis.Redis:
    common: dict[str, Any] = {
        "db": url.db,
        "password": url.password,
        "username": url.username,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "decode_responses": True,
    }
    if url.sentinel:
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": socket_timeout}
        if url.sentinel_password is not None:
            sentinel_kwargs["password"] = url.sentinel_password
        if url.ssl:
            common["ssl"] = True
        sentinel = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_kwargs, **common)
        return cast(redis.Redis, sentinel.master_for(str(url.service)))
    if url.unix_path is not None:
        return redis.Redis(unix_socket_path=url.unix_path, **common)
    return redis.Redis(host=url.host or "127.0.0.1", port=url.port, ssl=url.ssl, **common)


class Client:
    """Submit jobs to vscand and read what the daemons wrote.

    *url*: ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` (the forms
    the daemon takes, ``vscand/queue/redis_url.py``); *prefix*: the key prefix of the
    daemons (``vscand:``).
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, prefix: str = "vscand:", socket_timeout: float = 5.0
    ) -> None:
        self.url = parse_redis_url(url)
        self.keys = Keys(prefix)
        # Any: redis-py's annotations do not follow decode_responses (replies are str here)
        self.redis: Any = _connect(self.url, socket_timeout)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        job: Mapping[str, Any],
        *,
        id: str | None = None,
        queue: str | None = None,
        replica_confirm: int = 0,
        replica_timeout_ms: int = 5000,
    ) -> str:
        """Queue *job* (a dict in the job format) and return its id.

        *id* (or the job's own ``id``) names the job; without one a uuid4 is made and
        returned. *queue* selects a vantage point's stream (job field ``queue``). A taken
        id raises :class:`JobIdTaken` and queues nothing. *replica_confirm* > 0 waits
        (``WAIT``) until that many replicas hold the submission, else
        :class:`ReplicaConfirmError` (the job is queued all the same).
        """
        body = dict(job)
        for name, value in (("id", id), ("queue", queue)):
            if value is None:
                continue
            if body.get(name) not in (None, value):
                raise ValueError(f"{name}={value!r} but the job says {name} {body[name]!r}")
            body[name] = value
        body.setdefault("id", str(uuid.uuid4()))
        job_id = body["id"]
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"id {job_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        job_queue = body.get("queue")
        if job_queue is not None and (
            not isinstance(job_queue, str) or not _QUEUE.fullmatch(job_queue)
        ):
            raise ValueError(f"queue {job_queue!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
        stream = self.keys.jobs_for(job_queue)
        raw = json.dumps(body, separators=(",", ":"))
        keys = [self.keys.job(job_id), stream]
        args = [raw, iso_now(), job_id, job_queue or ""]
        if replica_confirm <= 0:
            outcome, value = self.redis.eval(SUBMIT, len(keys), *keys, *args)
            if outcome != "queued":
                raise JobIdTaken(job_id, value)
            return job_id
        # one connection: WAIT counts the writes of the connection it is sent on, and the
        # owner read tells that the submission is on the server WAIT answered for
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.eval(SUBMIT, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replica_confirm, replica_timeout_ms)
            pipe.hget(self.keys.job(job_id), "entry")
            (outcome, value), reached, owner = pipe.execute()
        if outcome != "queued":
            raise JobIdTaken(job_id, value)
        if owner != value or int(reached) < replica_confirm:
            raise ReplicaConfirmError(
                f"job {job_id} was queued (entry {value}) but only "
                f"{int(reached) if owner == value else 0} of {replica_confirm} replicas "
                f"confirmed it within {replica_timeout_ms} ms: a failover now could lose it"
            )
        return job_id

    # ------------------------------------------------------------------ read

    def status(self, job_id: str) -> dict[str, str]:
        """The job's status hash (``status``, ``ports_done``, ``error``...). A queued job
        whose stream entry a daemon refused also has ``refused`` (the reason) and
        ``refused_at``. :class:`NoSuchJob` when there is no hash."""
        status: dict[str, str] = self.redis.hgetall(self.keys.job(job_id))
        if not status:
            raise NoSuchJob(f"no job {job_id!r} (no {self.keys.job(job_id)} hash)")
        entry = status.get("entry")
        if status.get("status") == "queued" and entry:
            refusal: dict[str, str] = self.redis.hgetall(self.keys.refused(entry))
            if "reason" in refusal:
                status["refused"] = refusal["reason"]
                status["refused_at"] = refusal.get("at", "")
        return status

    def wait(
        self, job_id: str, timeout: float | None = None, *, poll: float = 0.3
    ) -> dict[str, str]:
        """Poll until the job ends (``status`` done, failed or cancelled) or its entry
        was refused (``refused`` in the answer); that status. :class:`WaitTimeout` after
        *timeout* seconds (``None``: no limit)."""
        started = time.monotonic()
        while True:
            status = self.status(job_id)
            if status.get("status") in FINAL or "refused" in status:
                return status
            if timeout is not None and time.monotonic() - started > timeout:
                raise WaitTimeout(
                    f"job {job_id} still {status.get('status', '?')} after {timeout:g}s"
                )
            time.sleep(poll)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """The job's results, in the order they were written (a sharded job's: its
        tasks' results, task by task), as ``vscan results --json`` prints them."""
        status = self.status(job_id)
        if status.get("sharded") == "1":
            results: list[dict[str, Any]] = []
            for index in range(int(status.get("tasks_total") or 0)):
                results.extend(self._stream(self.keys.job_results(task_id(job_id, index))))
            return results
        return self._stream(self.keys.job_results(job_id))

    def _stream(self, stream: str, batch: int = 1000) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        start = "-"
        while True:
            entries = self.redis.xrange(stream, start, "+", count=batch)
            for entry_id, fields in entries:
                if "result" in fields:
                    results.append(json.loads(fields["result"]))
                start = "(" + entry_id
            if len(entries) < batch:
                return results

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: str) -> bool:
        """Ask the daemons to stop the job (every task of a sharded one); it ends
        ``cancelled`` once they have. False when it had ended already."""
        if self.status(job_id).get("status") in FINAL:
            return False
        self.redis.eval(CANCEL, 1, self.keys.job(job_id), iso_now())
        return True
