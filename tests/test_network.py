"""Whole networks in one process: the lifecycle end to end, under faults."""

from __future__ import annotations

import random

import anyio
import pytest

import bacalhau
from bacalhau import Deal, ExecutionState, JobSpec, JobState, Network, RequesterConfig
from bacalhau.transport.memory import Faults

pytestmark = pytest.mark.anyio

FAST = RequesterConfig(bid_timeout=4, execution_grace=3, publish_timeout=5)


def mixed_deals(rng: random.Random, n: int, *, timeout: float = 5) -> list[JobSpec]:
    specs = []
    for i in range(n):
        concurrency = rng.randint(1, 3)
        specs.append(
            JobSpec.noop(
                stdout=f"job {i}",
                deal=Deal(
                    concurrency=concurrency,
                    confidence=rng.randint(0, concurrency),
                    min_bids=rng.choice([0, concurrency, 5]),
                ),
                timeout=timeout,
                delay=rng.choice([0, 0, 0.01]),
            )
        )
    return specs


def check_result(result: bacalhau.JobResult) -> None:
    assert result.state.terminal
    deal = result.spec.deal
    published = [e for e in result.executions if e.state is ExecutionState.PUBLISHED]
    assert len(published) <= deal.concurrency
    if result.state is JobState.COMPLETED:
        assert len(published) >= max(deal.confidence, 1)
        assert all(e.stdout == result.spec.engine.params["stdout"] for e in published)
    kinds = [e.kind for e in result.events]
    assert kinds[0] == "created" and kinds[-1] == result.state.value


async def run_all(
    net: Network, specs: list[JobSpec], timeout: float = 60
) -> list[bacalhau.JobResult]:
    handles = [await net.nodes[i % len(net.nodes)].submit(s) for i, s in enumerate(specs)]
    results: dict[int, bacalhau.JobResult] = {}

    async def wait(i: int) -> None:
        results[i] = await handles[i].wait(timeout)

    async with anyio.create_task_group() as tg:
        for i in range(len(handles)):
            tg.start_soon(wait, i)
    return [results[i] for i in range(len(handles))]


async def test_single_job_end_to_end() -> None:
    async with Network.in_memory(3, seed=1) as net:
        result = await net.nodes[0].run_job(JobSpec.noop(stdout="hello\n"), timeout=10)
    assert result.state is JobState.COMPLETED, result.reason
    assert [e.stdout for e in result.executions] == ["hello\n"]
    assert result.executions[0].exit_code == 0
    assert [e.kind for e in result.events][:2] == ["created", "bid"]


async def test_ten_nodes_hundred_mixed_jobs() -> None:
    # A generous job timeout: the test is about agreement, and a loaded machine can stall
    # a one-process network of ten nodes for seconds.
    specs = mixed_deals(random.Random(3), 100, timeout=30)
    async with Network.in_memory(10, seed=3) as net:
        results = await run_all(net, specs)
        await net.wait_idle()
    for r in results:
        check_result(r)
        assert r.state is JobState.COMPLETED, (r.reason, r.events, r.executions)
    concurrency3 = [r for r in results if r.spec.deal.concurrency == 3]
    assert all(len(r.accepted) == 3 for r in concurrency3)


async def test_min_bids_waits_then_chooses_at_random() -> None:
    chosen = set()
    async with Network.in_memory(6, seed=4) as net:
        for _ in range(12):
            r = await net.nodes[0].run_job(
                JobSpec.noop(deal=Deal(concurrency=1, min_bids=6)), timeout=10
            )
            assert r.state is JobState.COMPLETED
            bids = [e for e in r.events if e.kind == "bid"]
            accepted = [e for e in r.events if e.kind == "bid_accepted"]
            assert len(accepted) == 1
            first_accept = r.events.index(accepted[0])
            assert len([e for e in r.events[:first_accept] if e.kind == "bid"]) == 6
            assert len(bids) == 6
            chosen.add(accepted[0].node_id)
    assert len(chosen) > 1, "random choice should not always pick the same node"


async def test_too_few_bids_fails_with_reason() -> None:
    async with Network.in_memory(2, requester=RequesterConfig(bid_timeout=0.5)) as net:
        spec = JobSpec.noop(deal=Deal(min_bids=5), queue_timeout=3.5)  # both bids in by then
        r = await net.nodes[0].run_job(spec, timeout=10)
    assert r.state is JobState.FAILED
    assert "queue timeout (3.5s)" in r.reason and "only 2 bids for min_bids 5" in r.reason
    assert "queued" in {e.kind for e in r.events}


async def test_nobody_can_run_it() -> None:
    """Every node declines for good: the job fails at once (its queue timeout is the
    default 600 s, its bid timeout 30 s), naming why."""
    async with Network.in_memory(2, requester=RequesterConfig(bid_timeout=30)) as net:
        spec = JobSpec(engine=bacalhau.EngineSpec("nosuchengine"), publisher="noop")
        r = await net.nodes[0].run_job(spec, timeout=10)
    assert r.state is JobState.FAILED
    assert r.reason.startswith("no known node can run this nosuchengine job: "), r.reason
    assert "no 'nosuchengine' executor" in r.reason
    assert "queued" not in {e.kind for e in r.events}


async def test_failed_execution_is_replaced_then_fails_with_reason() -> None:
    async with Network.in_memory(3, seed=5, requester=FAST) as net:
        r = await net.nodes[0].run_job(JobSpec.noop(error="disk on fire", retries=1), timeout=20)
    assert r.state is JobState.FAILED
    failed = [e for e in r.executions if e.state is ExecutionState.FAILED]
    assert len(failed) == 2, "one execution plus one retry"
    assert "disk on fire" in r.reason


async def test_silent_node_is_replaced() -> None:
    async with Network.in_memory(
        3, seed=6, requester=RequesterConfig(bid_timeout=1, execution_grace=0.5, publish_timeout=3)
    ) as net:
        spec = JobSpec.noop(stdout="ok", timeout=1)
        # The node that is accepted first stops answering: drop every frame it sends.
        victim: list[str] = []

        def mute(src: str, dst: str, kind: str, frame: bytes) -> bool:
            return src not in victim

        assert net.hub is not None
        net.hub.faults = Faults(filter=mute)
        handle = await net.nodes[0].submit(spec)
        # the requester itself must stay reachable; mute one of the other two
        victim.append(net.nodes[1].node_id)
        r = await handle.wait(20)
    assert r.state is JobState.COMPLETED, r.reason


async def test_cancel() -> None:
    async with Network.in_memory(3, seed=7) as net:
        handle = await net.nodes[0].submit(JobSpec.noop(delay=30, timeout=60))
        while not any(e.kind == "bid_accepted" for e in handle.result().events):
            await anyio.sleep(0.01)
        await handle.cancel("changed my mind")
        r = await handle.wait(30)  # a bound on a hang only: a cancel takes no waiting
        await net.wait_idle()
    assert r.state is JobState.CANCELLED and r.reason == "changed my mind"
    assert all(e.state is ExecutionState.CANCELLED for e in r.executions)


async def test_job_timeout_ends_job() -> None:
    async with Network.in_memory(2, requester=RequesterConfig(job_timeout=1)) as net:
        r = await net.nodes[0].run_job(JobSpec.noop(delay=30, timeout=60), timeout=10)
        await net.wait_idle()
    assert r.state is JobState.FAILED and "did not finish within 1s" in r.reason


@pytest.mark.slow
async def test_hundred_jobs_under_drops_duplicates_and_reordering() -> None:
    specs = mixed_deals(random.Random(8), 100)
    faults = Faults(drop=0.05, duplicate=0.1, delay=(0, 0.02))
    async with Network.in_memory(10, seed=8, faults=faults, requester=FAST) as net:
        results = await run_all(net, specs, timeout=120)
        await net.wait_idle(60)
        assert net.hub is not None and net.hub.dropped > 0
    for r in results:
        check_result(r)
    completed = sum(r.state is JobState.COMPLETED for r in results)
    assert completed > 50, f"only {completed} of 100 completed"


@pytest.mark.slow
async def test_partition_that_heals() -> None:
    specs = mixed_deals(random.Random(9), 40)
    async with Network.in_memory(10, seed=9, requester=FAST) as net:
        ids = [n.node_id for n in net.nodes]
        assert net.hub is not None
        net.hub.partition(ids[:5], ids[5:])
        during = await run_all(net, specs[:20], timeout=120)
        net.hub.heal()
        after = await run_all(net, specs[20:], timeout=120)
        await net.wait_idle(60)
    for r in during + after:
        check_result(r)
    # During the split each side has five nodes: jobs that fit a side still complete.
    for r in during:
        if r.spec.deal.min_bids <= 5:
            assert r.state is JobState.COMPLETED, r.reason
    assert all(r.state is JobState.COMPLETED for r in after)
