"""The node's parts: the driver's routing and fault handling, the gate's replay cache,
compute recovery, and the protocol on virtual time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from bacalhau import JobSpec, JobState, Network, RequesterConfig
from bacalhau.identity import Identity
from bacalhau.network import NetworkInvariantError
from bacalhau.node.clock import VirtualClock
from bacalhau.node.gate import Admitted, InboundGate, Turned
from bacalhau.protocol import commands as c
from bacalhau.protocol import messages as m
from bacalhau.protocol.compute import ComputeJob, ComputeJobState, ComputeState
from bacalhau.protocol.events import Event, MessageReceived
from bacalhau.protocol.requester import RequesterState
from bacalhau.wire import VerifiedCache, encode_envelope

REQ = Identity.generate().node_id
ME = Identity.generate().node_id


def _job(job_id: str, state: ComputeJobState) -> ComputeJob:
    return ComputeJob(
        job_id=job_id, spec=JobSpec.noop(), requester_id=REQ, seal_key=b"k" * 32, state=state
    )


def test_compute_recover_fails_lost_work_through_the_transition_table() -> None:
    state = ComputeState(ME)
    for s in ComputeJobState:
        state.jobs[f"j-{s.value}"] = _job(f"j-{s.value}", s)
    out = state.recover()
    for lost in ("j-running", "j-proposed", "j-publishing"):
        job = state.jobs[lost]
        assert job.state is ComputeJobState.FAILED and job.reason == "node restarted"
        assert c.Send(REQ, m.ExecutionFailed(lost, "node restarted")) in out
        assert c.DiscardResults(lost) in out
    assert (
        c.EvaluateBid(job_id="j-evaluating", spec=state.jobs["j-evaluating"].spec, requester_id=REQ)
        in out
    )
    assert c.Send(REQ, m.BidPlaced("j-bid")) in out
    for kept in ("declined", "rejected", "published", "failed", "ended"):
        assert state.jobs[f"j-{kept}"].state is ComputeJobState(kept)
    assert len(out) == 3 * 2 + 2 + 1  # and the ended job's tombstone timer


def test_gate_keys_replays_by_sender_and_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes whose ids collide (forked processes, say) do not drop each other's messages;
    the same sender's id twice is a replay."""
    import bacalhau.wire as wire

    monkeypatch.setattr(wire._IDS, "next", lambda: b"\x01" * 16)
    a, b = Identity.generate(), Identity.generate()
    gate = InboundGate(
        node_id=ME, clock=lambda: 100.0, verify_cache=VerifiedCache(), stats=Counter()
    )
    frame_a, id_a = encode_envelope(a, "BidPlaced", {"job_id": "j-1"}, now=100.0)
    frame_b, id_b = encode_envelope(b, "BidPlaced", {"job_id": "j-1"}, now=100.0)
    assert id_a == id_b
    assert gate.admit(frame_a) == [Admitted(a.node_id, m.BidPlaced("j-1"))]
    assert gate.admit(frame_b) == [Admitted(b.node_id, m.BidPlaced("j-1"))]
    assert gate.admit(frame_a) is Turned.DUPLICATE
    assert gate.admit(b"not a frame") is Turned.REFUSED
    assert gate.stats["dropped_replayed"] == 1 and gate.stats["dropped_invalid"] == 1


FORK_IDS = """
import os
from bacalhau import wire
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, wire._IDS.next())
    os._exit(0)
os.close(write)
child = os.read(read, 16)
os.waitpid(pid, 0)
print(child.hex(), wire._IDS.next().hex())
"""


def test_message_ids_differ_in_a_forked_child() -> None:
    """Run in a fresh single-threaded interpreter (forking a threaded one is unsafe)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", FORK_IDS], capture_output=True, text=True, check=True, timeout=60
    )
    child, parent = out.stdout.split()
    assert len(child) == 32 and child != parent


@pytest.mark.anyio
async def test_a_state_machine_bug_fails_the_job_and_the_network_teardown() -> None:
    with pytest.raises(NetworkInvariantError, match=r"internal error on job .*RuntimeError: bug"):
        async with Network.in_memory(2, seed=5) as net:
            requester = net.nodes[0]
            real = requester.requester.handle

            def buggy(event: Event, now: float) -> list[c.Command]:
                if isinstance(event, MessageReceived) and isinstance(event.message, m.BidPlaced):
                    raise RuntimeError("bug")
                return real(event, now)

            requester.requester.handle = buggy  # type: ignore[method-assign]
            result = await requester.run_job(JobSpec.noop(), timeout=10)
            assert result.state is JobState.FAILED
            assert result.reason == "internal error: RuntimeError: bug"
            assert [f.side for f in requester.faults][:1] == ["requester"]
            await net.wait_idle()


@pytest.mark.anyio
async def test_protocol_deadlines_run_on_virtual_time() -> None:
    """A 600-second bid timeout passes at once when the clock is told so."""
    clock = VirtualClock()
    config = RequesterConfig(bid_timeout=600)
    async with Network.in_memory(1, clock=clock, requester=config, compute=None) as net:
        node = net.nodes[0]
        handle = await node.submit(JobSpec.noop())
        with anyio.fail_after(10):
            while not node.driver.timers:
                await anyio.lowlevel.checkpoint()
        assert not handle.result().state.terminal
        clock.advance(601)
        result = await handle.wait(10)
    assert result.state is JobState.FAILED
    assert "600s" in result.reason, result.reason


def test_requester_internal_error_on_an_unknown_or_ended_job_does_nothing() -> None:
    state = RequesterState(REQ, b"k" * 32)
    assert state.internal_error("j-none", "x", 0.0) == []


def test_cancelled_timers_do_not_pile_up_in_the_timer_heap() -> None:
    """A job's deadlines are cancelled when it ends, often many minutes before they are
    due; the heap drops them once they outnumber the live timers (memory stays bounded
    by live jobs, not by the jobs of the last hour)."""
    from bacalhau.node.timers import TimerQueue
    from bacalhau.protocol.timers import RequesterTimer, TimerKey

    fired: list[TimerKey] = []
    queue = TimerQueue(fire=fired.append, clock=VirtualClock())
    keep = TimerKey("j-live", RequesterTimer.JOB)
    queue.set(keep, 1e9)
    for i in range(5000):
        queue.set(TimerKey(f"j-{i}", RequesterTimer.JOB), 1e9)
        queue.set(TimerKey(f"j-{i}", RequesterTimer.QUEUE), 1e9)
        queue.cancel(f"j-{i}")
    assert len(queue) == 1
    assert len(queue._heap) <= 2 * len(queue) + 1024 + 2
    assert [key for _, _, key in queue._heap if key == keep] == [keep], "live timers stay"


@pytest.mark.anyio
async def test_the_end_event_is_set_once_when_the_job_ends_not_at_each_step() -> None:
    async with Network.in_memory(2, seed=4) as net:
        node = net.nodes[0]
        handle = await node.submit(JobSpec.noop(delay=0.2))
        ended = node.driver.ended(handle.job_id)
        steps = 0
        with anyio.fail_after(30):
            while node.requester.jobs[handle.job_id].state is not JobState.COMPLETED:
                assert not ended.is_set()  # steps on the way leave it unset
                await node.changed(handle.job_id).wait()
                steps += 1
        assert ended.is_set()
        assert steps > 1
        assert (await handle.wait(30)).ok
        assert node.driver.ended(handle.job_id) is not ended  # replaced for a later end


def test_each_side_cancels_only_its_own_timers_of_a_job() -> None:
    from bacalhau.node.timers import TimerQueue
    from bacalhau.protocol.timers import ComputeTimer, RequesterTimer, TimerKey

    queue = TimerQueue(fire=lambda key: None, clock=VirtualClock())
    bids, forget = TimerKey("j-1", RequesterTimer.BIDS), TimerKey("j-1", ComputeTimer.FORGET)
    queue.set(bids, 10)
    queue.set(forget, 10)
    queue.cancel("j-1", side="compute")
    assert queue.pending() == [bids]
    queue.set(forget, 10)
    queue.cancel("j-1", side="requester")
    assert queue.pending() == [forget]
    queue.set(bids, 10)
    queue.cancel("j-1")
    assert queue.pending() == []


def test_a_heard_job_forgotten_by_the_compute_side_keeps_its_requester_timers() -> None:
    # a node that is also the job's requester must not lose its bid or queue timers when
    # its compute side forgets a job it only heard of (too many heard jobs)
    state = ComputeState(ME, max_heard=1)
    spec = JobSpec.noop()

    def created(job_id: str) -> MessageReceived:
        offer = m.JobCreated(job_id=job_id, spec=spec, seal_key=b"k" * 32, created_at=0.0)
        return MessageReceived(ME, offer)

    state.handle(created("j-1"), 0.0)
    out = state.handle(created("j-2"), 1.0)
    cancels = [cmd for cmd in out if isinstance(cmd, c.CancelTimers)]
    assert cancels == [c.CancelTimers(job_id="j-1", side="compute")]


@pytest.mark.anyio
async def test_a_compute_event_wakes_the_announcer_only_when_the_room_flips() -> None:
    """What a requester's table keeps between announcements is whether a node has room:
    jobs coming and going on a roomy node do not wake its announcer each time (on a
    thousand nodes, that woke a node per job), while filling up and freeing up do."""
    from bacalhau import ComputeConfig

    roomy = ComputeConfig(max_executions=4, queue_size=4)
    tight = ComputeConfig(max_executions=1, queue_size=0)
    options: list[dict[str, Any]] = [{"compute": None}, {"requester": None, "compute": roomy}]
    for config, flips in ((roomy, False), (tight, True)):
        options[1] = {"requester": None, "compute": config}
        async with Network.in_memory(2, seed=5, per_node_options=options) as net:
            worker = net.nodes[1]
            marked = worker.driver.on_compute
            assert marked is not None
            calls: Counter[str] = Counter()

            def count(mark: Callable[[], None] = marked, calls: Counter[str] = calls) -> None:
                calls["woken"] += 1
                mark()

            worker.driver.on_compute = count
            for _ in range(3):
                result = await net.nodes[0].run_job(JobSpec.noop(publisher="noop"), timeout=30)
                assert result.ok and result.executions[0].node_id == worker.node_id
            if flips:  # full at each bid, free again at each end: six flips
                assert calls["woken"] >= 6
            else:  # never: the room it had at start (and announced) was never taken whole
                assert calls["woken"] == 0
