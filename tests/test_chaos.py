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
