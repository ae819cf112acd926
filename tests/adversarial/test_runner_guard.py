"""The runner's one guard: whatever a job's step raises, the job fails and the node serves.

Plugins are code the operator chose, yet they handle a stranger's job: a storage
provider that recurses without end or raises something no one expected must fail that
job only. Job ids never become paths outside the executions folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bacalhau.compute.capacity import ComputeConfig
from bacalhau.errors import ValidationError
from bacalhau.limits import JobLimits
from bacalhau.models import InputSpec, JobSpec, JobState, StorageSpec
from bacalhau.network import Network
from bacalhau.node.plugins import Plugins, default_plugins
from bacalhau.protocol.requester import RequesterConfig
from bacalhau.storage.base import StorageProvider

from .conftest import assert_refused, why

pytestmark = pytest.mark.anyio

HELLO = '(module (memory (export "memory") 1) (func (export "_start")))'


class Recursing(StorageProvider):
    """Prepares by recursing until Python gives up."""

    type = "recursing"

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        def down(n: int) -> int:
            return down(n + 1) + 1

        down(0)
        return dest


class Surprising(StorageProvider):
    """Raises an exception type nobody catches on purpose."""

    type = "surprising"

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        raise LookupError("x" * 10_000)  # and a reason too long for any message


def plugins(services: Any) -> Plugins:
    found = default_plugins(services, entry_points_too=False)
    found.add(Recursing())
    found.add(Surprising())
    return found


@pytest.fixture
async def network() -> AsyncIterator[Network]:
    async with Network.in_memory(
        1,
        plugins=plugins,
        compute=ComputeConfig(limits=JobLimits()),
        requester=RequesterConfig(),
    ) as net:
        yield net


@pytest.mark.parametrize(
    ("kind", "said"), [("recursing", "RecursionError"), ("surprising", "LookupError")]
)
async def test_a_plugin_that_blows_up_fails_the_job_only(
    network: Network, kind: str, said: str
) -> None:
    node = network.nodes[0]
    spec = JobSpec.wasm(
        HELLO, inputs=[InputSpec(StorageSpec(type=kind), "/in")], timeout=30, retries=0
    )
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, "internal error", said)
    assert len(result.reason) < 2000
    honest = await node.run_job(JobSpec.wasm(HELLO), timeout=60)
    assert honest.state is JobState.COMPLETED, why(honest)


async def test_job_ids_never_become_paths_outside(network: Network, tmp_path: Path) -> None:
    runner = network.nodes[0].runner
    victim = runner.root.parent / "keep.txt"
    victim.write_text("keep")
    for bad in ("../keep.txt", "/etc", "..", "a/../../keep.txt", ""):
        with pytest.raises(ValidationError, match="job_id"):
            runner.folder(bad)
        runner.discard(bad)  # logged, never raised, nothing removed
    await network.wait_idle()
    assert victim.read_text() == "keep"
