"""What peers send holds bounded memory: heard jobs, bids, presence."""

from __future__ import annotations

import pytest

from bacalhau import Deal, JobSpec, StorageSpec
from bacalhau.identity import Identity
from bacalhau.models import InputSpec
from bacalhau.protocol.commands import EvaluateBid, SetTimer
from bacalhau.protocol.compute import ComputeJobState, ComputeState, spec_weight
from bacalhau.protocol.events import BidDecided, MessageReceived, SubmitJob, TimerFired
from bacalhau.protocol.messages import BidPlaced, JobCreated
from bacalhau.protocol.requester import RequesterState
from bacalhau.protocol.requester_jobs import MAX_BIDS
from bacalhau.protocol.timers import ComputeTimer, TimerKey

ME = Identity.from_seed(b"\x01" * 32).node_id
PEERS = [Identity.from_seed(i.to_bytes(32, "big")).node_id for i in range(2, 40)]


def big_spec(kib: int) -> JobSpec:
    data = b"x" * (kib * 1024)
    return JobSpec.noop(inputs=[InputSpec(StorageSpec.inline(data), "/in")])


def test_jobs_merely_heard_are_bounded_in_count_and_bytes_and_expire() -> None:
    state = ComputeState(ME, max_heard=10, max_heard_bytes=300 * 1024, heard_ttl=60.0)
    spec = big_spec(50)
    for i in range(30):
        created = JobCreated(job_id=f"j-{i}", spec=spec, seal_key=bytes(32), created_at=0.0)
        out = state.handle(MessageReceived(PEERS[i % len(PEERS)], created), float(i))
        assert any(isinstance(c, EvaluateBid) for c in out)
        assert any(
            isinstance(c, SetTimer) and c.key == TimerKey(f"j-{i}", ComputeTimer.FORGET)
            for c in out
        )
        assert len(state.heard) <= 10
        assert state.heard_bytes <= 300 * 1024
    assert len(state.jobs) == len(state.heard) <= 300 * 1024 // spec_weight(spec)
    assert state.evicted == 30 - len(state.heard)
    # a heard job is not stored across restarts, and expires
    last = "j-29"
    assert not state.keeps(state.jobs[last])
    state.handle(BidDecided(job_id=last, bid=False, reason="no"), 30.0)
    assert state.jobs[last].state is ComputeJobState.DECLINED
    state.handle(TimerFired(TimerKey(last, ComputeTimer.FORGET)), 90.0)
    assert last not in state.jobs and last not in state.heard


def test_a_job_bid_on_keeps_full_state() -> None:
    state = ComputeState(ME, max_heard=2)
    state.handle(
        MessageReceived(
            PEERS[0],
            JobCreated(job_id="j-keep", spec=JobSpec.noop(), seal_key=bytes(32), created_at=0),
        ),
        0,
    )
    state.handle(BidDecided(job_id="j-keep", bid=True), 0.1)
    for i in range(10):
        created = JobCreated(
            job_id=f"j-{i}", spec=JobSpec.noop(), seal_key=bytes(32), created_at=0.0
        )
        state.handle(MessageReceived(PEERS[1], created), 1.0 + i)
    assert state.jobs["j-keep"].state is ComputeJobState.BID
    assert state.keeps(state.jobs["j-keep"])
    state.handle(TimerFired(TimerKey("j-keep", ComputeTimer.FORGET)), 1000.0)  # the heard-job timer
    assert "j-keep" in state.jobs


def test_bids_on_one_job_are_bounded() -> None:
    spec = JobSpec.noop(deal=Deal(concurrency=1, min_bids=2))
    state = RequesterState(ME, bytes(32))
    state.handle(SubmitJob(job_id="j-1", spec=spec, peers=5), 0.0)
    limit = MAX_BIDS + 2 * (2 + 1 + spec.retries)
    for i in range(limit + 50):
        sender = Identity.from_seed((1000 + i).to_bytes(32, "big")).node_id
        state.handle(MessageReceived(sender, BidPlaced("j-1")), 0.01)
    assert len(state.jobs["j-1"].executions) <= limit


@pytest.mark.anyio
async def test_outboxes_to_many_peers_are_retired_once_drained() -> None:
    import anyio
    from fakes import Recorder, outbox_on

    from bacalhau.protocol.messages import BidDeclined

    me = Identity.from_seed(b"\x01" * 32)
    sink = Recorder(me.node_id)
    outbox = outbox_on(sink, me)
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        for peer in PEERS:
            outbox.post(peer, BidDeclined(job_id="j-1", reason="no"))
        with anyio.fail_after(10):
            while len(sink.frames) < len(PEERS) or outbox._boxes:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert sorted(dest for dest, _ in sink.frames) == sorted(PEERS)
