"""pytest fixtures for testing your code against a bacalhau network.

Installed with the package (entry point ``pytest11``), so in any project::

    import pytest

    @pytest.mark.anyio
    @pytest.mark.bacalhau_network(n=5, seed=1)
    async def test_my_pipeline(bacalhau_network):
        result = await bacalhau_network.nodes[0].run_job(JobSpec.noop(stdout="hi"), timeout=30)
        assert result.ok

The network is in-memory by default; ``transport="nats"`` (with ``nats_urls=[...]``)
runs the same nodes over a NATS server. Async tests need the anyio pytest plugin
(``@pytest.mark.anyio``), which comes with anyio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .testing import open_network

__all__ = ["bacalhau_network"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bacalhau_network(n=3, transport='memory', **node_options): "
        "configure the bacalhau_network fixture",
    )


@pytest.fixture
async def bacalhau_network(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A running network (3 in-memory nodes unless the ``bacalhau_network`` marker says
    otherwise). Closing it checks for leaked executions and broken invariants."""
    marker = request.node.get_closest_marker("bacalhau_network")
    options = dict(marker.kwargs) if marker else {}
    async with open_network(**options) as net:
        yield net
