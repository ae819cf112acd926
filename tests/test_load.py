"""Load: 2,000 jobs queued at once against a 5-node durable network all finish."""

import pytest

from bacalhau import JobSpec, Network

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_two_thousand_queued_jobs_all_finish() -> None:
    spec = JobSpec.noop(stdout="x", publisher="noop")
    async with Network.in_memory(5, seed=5, durable=True) as net:
        handles = [await net.nodes[i % 5].submit(spec) for i in range(2000)]
        results = [await h.wait(600) for h in handles]
        busiest = max(n.capacity.peak_running for n in net.nodes)
    assert sum(r.ok for r in results) == 2000
    config = net.nodes[0].compute_config
    assert config is not None
    assert busiest <= config.max_executions  # never oversubscribed
