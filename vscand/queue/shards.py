"""Sharding: one big job becomes tasks that every worker of its queue can take.

A worker that takes a job of more (address, port) tasks than its ``task_ports`` does
not scan it: it resolves and checks the targets (as for any job), cuts the ordered
port list into runs of at most ``task_ports`` ports and queues each run as an ordinary
job of ``endpoints`` on the same stream, with ``parent`` set to the big job's id and the
id ``<parent>/t<N>`` (:meth:`vscand.queue.results.ResultWriter.split`, one atomic script). Tasks are
claimed, leased, retried, dead-lettered and fenced exactly like jobs; their results
carry the parent's id; the parent's hash aggregates their counts and gets its final
status when the last task ends. Cancelling the parent reaches every task.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from vscand.jobs.ids import task_id
from vscand.scan.model import PortTask, endpoint_text

#: job fields a task copies from its parent; the rest (targets, endpoints, signature,
#: shard size) are the parent's own. ``ports`` selects nothing for a task (endpoints skip
#: port selection) but keeps the protocols the scan covers, which Exclude depends on.
INHERITED_FIELDS = (
    "ports",
    "intensity",
    "version_all",
    "timeouts",
    "tags",
    "priority",
    "fast",
    "queue",
    "requester",
)


def endpoint(port_task: PortTask) -> str:
    """``HOST:PORT[/udp]`` for one port: the name the user gave if any (the task's worker
    resolves and checks it again), else the address (IPv6 in brackets)."""
    return endpoint_text(
        port_task.hostname or port_task.address, port_task.port, port_task.protocol
    )


def chunks(tasks: Sequence[PortTask], size: int) -> list[list[PortTask]]:
    """*tasks* in order, cut into runs of at most *size*; consecutive ports of a host stay
    together, so per-host limits keep their meaning inside a task."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def task_documents(
    parent: Mapping[str, Any], parent_id: str, tasks: Sequence[PortTask], size: int
) -> list[dict[str, Any]]:
    """The task jobs of the sharded job *parent* (its decoded JSON), ids ``<parent_id>/t<N>``."""
    inherited = {name: parent[name] for name in INHERITED_FIELDS if name in parent}
    documents = []
    for index, run in enumerate(chunks(tasks, size)):
        document = {
            "id": task_id(parent_id, index),
            "parent": parent_id,
            "endpoints": [endpoint(t) for t in run],
            **inherited,
        }
        documents.append(document)
    return documents


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
