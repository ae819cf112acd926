"""The fixture users get from our pytest plugin."""

import pytest

from bacalhau import Deal, JobSpec, Network

pytestmark = pytest.mark.anyio


async def test_default_network(bacalhau_network: Network) -> None:
    assert len(bacalhau_network.nodes) == 3
    result = await bacalhau_network.nodes[2].run_job(JobSpec.noop(stdout="fixture"), timeout=10)
    assert result.ok and result.executions[0].stdout == "fixture"


@pytest.mark.bacalhau_network(n=5, seed=2)
async def test_configured_network(bacalhau_network: Network) -> None:
    assert len(bacalhau_network.nodes) == 5
    result = await bacalhau_network.nodes[0].run_job(
        JobSpec.noop(deal=Deal(concurrency=5, min_bids=5)), timeout=10
    )
    assert len(result.accepted) == 5
