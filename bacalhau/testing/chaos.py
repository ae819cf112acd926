"""A seeded chaos harness for in-memory networks.

::

    report = await chaos_run(seed=7, nodes=20, jobs=500)
    report.raise_for_problems()      # names the seed, so the run can be replayed

Jobs with mixed deals are submitted from random nodes while the hub drops,
delays, duplicates and reorders frames, the network is split and healed, and
nodes crash and restart (their state is durable, so they recover). At the end
every job must be terminal, no execution beyond ``concurrency`` accepted, and
every accepted result backed by at least ``max(confidence, 1)`` agreeing
proposals.

Randomness comes from one seed; asynchronous scheduling still varies between
runs, so a replay reproduces the same faults and workload, not the same
interleaving to the microsecond.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import attrs

from ..errors import BacalhauError
from ..models import Deal, ExecutionState, JobResult, JobSpec, JobState
from ..network import Network
from ..protocol.requester import RequesterConfig
from ..transport.memory import Faults

__all__ = ["ChaosReport", "chaos_run", "check_job"]

CHAOS_REQUESTER = RequesterConfig(
    bid_timeout=3, bid_window=0.02, execution_grace=3, publish_timeout=5
)


@attrs.define(kw_only=True)
class ChaosReport:
    seed: int
    results: list[JobResult]
    problems: list[str]
    crashes: int = 0
    partitions: int = 0
    dropped: int = 0

    @property
    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        return counts

    def raise_for_problems(self) -> None:
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            raise AssertionError(
                f"chaos run with seed={self.seed} broke invariants "
                f"({len(self.problems)} problems):\n  {shown}"
            )


def check_job(result: JobResult) -> list[str]:
    """The invariants every job must hold once it has ended."""
    problems = []
    deal = result.spec.deal
    if not result.state.terminal:
        problems.append(f"{result.job_id}: not terminal ({result.state.value})")
    # Whose results were accepted, from the history: a node accepted and later unable
    # to publish still counted toward confidence when the requester decided.
    # A failed publish sends the job round again ("retrying"): only the last round's
    # acceptances stand (the earlier winners were failed before it).
    events = list(result.events)
    last_round = max((i for i, e in enumerate(events) if e.kind == "retrying"), default=-1)
    accepted = {e.node_id for e in events[last_round + 1 :] if e.kind == "results_accepted"}
    winners = [
        e
        for e in result.executions
        if e.state in (ExecutionState.RESULTS_ACCEPTED, ExecutionState.PUBLISHED)
    ]
    if not {e.node_id for e in winners} <= accepted:
        problems.append(f"{result.job_id}: results published without being accepted")
    if len(accepted) > deal.concurrency:
        problems.append(
            f"{result.job_id}: {len(accepted)} accepted > concurrency {deal.concurrency}"
        )
    if accepted and len(accepted) < max(deal.confidence, 1):
        problems.append(f"{result.job_id}: {len(accepted)} accepted < confidence {deal.confidence}")
    if result.state is JobState.COMPLETED and not any(
        e.state is ExecutionState.PUBLISHED for e in result.executions
    ):
        problems.append(f"{result.job_id}: completed without a published result")
    if result.state is JobState.COMPLETED:
        expected = result.spec.engine.params.get("stdout")
        for e in winners:
            if e.stdout != expected:
                problems.append(
                    f"{result.job_id}: accepted result {e.stdout!r} is not {expected!r}"
                )
    return problems


def _workload(rng: random.Random, jobs: int, nodes: int) -> list[JobSpec]:
    specs = []
    for i in range(jobs):
        concurrency = rng.randint(1, min(3, nodes))
        specs.append(
            JobSpec.noop(
                stdout=f"result {i}",
                delay=rng.choice([0, 0, 0.05, 0.2]),
                timeout=5,
                retries=2,
                queue_timeout=10,  # a job no node can take (partitioned away) ends, queued
                deal=Deal(
                    concurrency=concurrency,
                    confidence=rng.randint(0, concurrency),
                    min_bids=rng.choice([0, 0, concurrency]),
                ),
            )
        )
    return specs


async def chaos_run(
    *,
    seed: int,
    nodes: int = 20,
    jobs: int = 500,
    drop: float = 0.02,
    duplicate: float = 0.05,
    delay: tuple[float, float] = (0.0, 0.02),
    partitions: int = 2,
    crashes: int = 3,
    duration: float = 10.0,
    wait: float = 180.0,
    requester: RequesterConfig = CHAOS_REQUESTER,
) -> ChaosReport:
    """Run the workload under faults; return what happened (see the module docs)."""
    rng = random.Random(seed)
    specs = _workload(rng, jobs, nodes)
    faults = Faults(drop=drop, duplicate=duplicate, delay=delay)
    report = ChaosReport(seed=seed, results=[], problems=[])
    handles: list[tuple[str, str]] = []  # (requester node id, job id)
    async with Network.in_memory(
        nodes, seed=seed, faults=faults, durable=True, requester=requester, check_on_exit=False
    ) as net:
        by_id = {n.node_id: n for n in net.nodes}
        hub = net.hub
        assert hub is not None

        async def submit_all() -> None:
            gap = duration / max(jobs, 1)
            for spec in specs:
                while True:  # as a client would: a node that crashed under us, try another
                    node = rng.choice(net.nodes)
                    try:
                        handle = await node.submit(spec)
                    except BacalhauError:
                        await anyio.lowlevel.checkpoint()
                        continue
                    break
                handles.append((node.node_id, handle.job_id))
                await anyio.sleep(gap)

        async def misbehave() -> None:
            events = ["partition"] * partitions + ["crash"] * crashes
            rng.shuffle(events)
            for what in events:
                await anyio.sleep(duration / (len(events) + 1))
                if what == "partition":
                    ids = [n.node_id for n in net.nodes]
                    rng.shuffle(ids)
                    hub.partition(ids[: len(ids) // 2])
                    report.partitions += 1
                    await anyio.sleep(min(1.0, duration / 10))
                    hub.heal()
                else:
                    victim = rng.choice(net.nodes)
                    reborn = await net.restart_node(victim)
                    by_id[reborn.node_id] = reborn
                    report.crashes += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit_all)
            tg.start_soon(misbehave)

        hub.faults = Faults()  # let the stragglers finish cleanly
        with anyio.move_on_after(wait):
            for node_id, job_id in handles:
                await by_id[node_id].handle(job_id).wait()
        report.results = [by_id[n].describe(j) for n, j in handles]
        report.dropped = hub.dropped
        for result in report.results:
            report.problems.extend(check_job(result))
        # as a network's exit does before its check: folders of ended executions are
        # removed on worker threads, each node in its own time (a job's end on the
        # requester does not wait for the other nodes' clean-up); a folder still there
        # once no node is removing or stopping anything is a real leftover
        with anyio.move_on_after(60):
            while any(n.runner.stopping or n.runner.removing for n in net.nodes):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        report.problems.extend(net.check_invariants())
    return report


def summarize(reports: Sequence[ChaosReport]) -> str:
    return "; ".join(
        f"seed {r.seed}: {r.states}, {r.crashes} crashes, {r.partitions} "
        f"partitions, {r.dropped} frames dropped"
        for r in reports
    )
