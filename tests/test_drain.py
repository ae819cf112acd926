"""The requester's queue drain: once no node has room, it stops looking.

Each finished execution frees a slot and drains the queue. Offering the first queued job
takes that slot; the jobs behind it could only be put back, so the drain stops there
instead of ranking the network for each of them (the periodic retry still looks at
several)."""

from __future__ import annotations

from typing import Any

import pytest

from bacalhau import JobSpec, RequesterConfig
from bacalhau.identity import Identity
from bacalhau.models import JobState, NodeInfo, Resources
from bacalhau.protocol import commands as c
from bacalhau.protocol import nodes
from bacalhau.protocol.events import SubmitJob
from bacalhau.protocol.messages import JobCreated
from bacalhau.protocol.requester import RequesterState
from bacalhau.protocol.scheduling import DRAIN_MISSES

A, B = Identity.generate().node_id, Identity.generate().node_id


def info(node_id: str, free_slots: int, seq: int) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        executors=("noop",),
        verifiers=("noop",),
        publishers=("noop",),
        storage=("inline",),
        capacity=Resources(cpu=4, memory=2**32),
        free_slots=free_slots,
        max_executions=4,
        seq=seq,
    )


def offers(out: list[c.Command]) -> list[str]:
    return [
        cmd.message.job_id
        for cmd in out
        if isinstance(cmd, c.Send) and isinstance(cmd.message, JobCreated)
    ]


def test_a_drain_offers_what_room_allows_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    state = RequesterState(Identity.generate().node_id, b"k" * 32, config=RequesterConfig())
    state.nodes.update(info(A, 1, 1), 0.0)
    state.nodes.update(info(B, 1, 1), 0.0)
    jobs = [f"j-{i}" for i in range(30)]
    for job_id in jobs:
        state.handle(SubmitJob(job_id=job_id, spec=JobSpec.noop(), peers=2), 0.0)
    assert [j for j in jobs if state.jobs[j].state is JobState.QUEUED] == jobs[1:]
    looks: list[int] = []
    real_rank = nodes.NodeTable.rank

    def counting(self: nodes.NodeTable, *args: Any, **kwargs: Any) -> Any:
        looks.append(1)
        return real_rank(self, *args, **kwargs)

    monkeypatch.setattr(nodes.NodeTable, "rank", counting)
    state.nodes.update(info(A, 2, 2), 1.0)  # room for one more on A
    out: list[c.Command] = []
    state._drain(1.0, out)
    assert offers(out) == ["j-1"]
    assert len(looks) == 1  # not once more for each of the 28 jobs behind it
    assert [j for j in jobs if state.jobs[j].state is JobState.QUEUED] == jobs[2:]

    looks.clear()
    out = []
    state._drain(1.5, out, full=True)  # the periodic retry looks further, within bounds
    assert offers(out) == []
    assert len(looks) == DRAIN_MISSES
