"""Seeded chaos runs: faults, partitions, crashes and restarts; every invariant at the end.

Replay a failing run with ``BACALHAU_CHAOS_SEED=<seed> pytest tests/test_chaos.py``.
"""

from __future__ import annotations

import os

import pytest

from bacalhau.models import JobState
from bacalhau.testing.chaos import chaos_run

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("BACALHAU_CHAOS_SEED", "20261125"))


async def test_small_chaos_run() -> None:
    report = await chaos_run(seed=SEED, nodes=6, jobs=60, duration=3, crashes=2, partitions=1)
    print(f"seed={report.seed} states={report.states} dropped={report.dropped}")
    report.raise_for_problems()
    assert len(report.results) == 60
    assert report.crashes == 2 and report.partitions == 1
    assert report.states.get(JobState.COMPLETED.value, 0) > 0


@pytest.mark.slow
async def test_chaos_500_jobs_20_nodes() -> None:
    report = await chaos_run(seed=SEED + 1, nodes=20, jobs=500, duration=15)
    print(
        f"seed={report.seed} states={report.states} crashes={report.crashes} "
        f"partitions={report.partitions} dropped={report.dropped}"
    )
    report.raise_for_problems()
    assert len(report.results) == 500
    assert all(r.state.terminal for r in report.results)


def test_check_job_counts_only_the_last_round_after_a_publish_retry() -> None:
    """A winner that failed to publish is failed, and the job runs again ("retrying"):
    the new winner does not make two acceptances of a concurrency-1 job."""
    from bacalhau.models import (
        ExecutionResult,
        ExecutionState,
        JobEvent,
        JobResult,
        JobSpec,
        StorageRef,
    )
    from bacalhau.testing.chaos import check_job

    spec = JobSpec.noop(stdout="x")
    a, b = "12D3KooWA", "12D3KooWB"

    def result(*kinds: tuple[str, str | None]) -> JobResult:
        return JobResult(
            job_id="j-1",
            state=JobState.COMPLETED,
            reason="",
            spec=spec,
            requester_id="r",
            executions=(
                ExecutionResult(node_id=a, state=ExecutionState.FAILED),
                ExecutionResult(
                    node_id=b,
                    state=ExecutionState.PUBLISHED,
                    stdout="x",
                    published=StorageRef(type="noop"),
                ),
            ),
            events=tuple(
                JobEvent(time=float(i), kind=k, node_id=n) for i, (k, n) in enumerate(kinds)
            ),
        )

    retried = result(
        ("created", None),
        ("results_accepted", a),
        ("retrying", None),
        ("results_accepted", b),
        ("completed", None),
    )
    assert check_job(retried) == []
    both = result(("created", None), ("results_accepted", a), ("results_accepted", b))
    assert any("2 accepted > concurrency 1" in p for p in check_job(both))
