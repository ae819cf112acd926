"""``bacalhau serve`` processes over gossip and over NATS schedule as in-memory networks
do: nodes learn each other's labels from announcements, selectors place jobs, ops jobs
reach every matching node."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from test_gossip_processes import ServeProcess, cluster, wait_connected

from bacalhau.models import JobSpec
from bacalhau.selectors import parse_selectors
from bacalhau.testing.nats import NatsServer, nats_server
from bacalhau.testing.ports import PortClash

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

__all__ = ["cluster", "nats_server"]  # fixtures, imported for this module's tests


async def start(
    tmp: Path, secret: str, name: str, labels: str, extra: tuple[str, ...] = ()
) -> ServeProcess:
    for attempt in range(3):
        proc = ServeProcess(tmp / f"{name}-{attempt}", secret, "--labels", labels, *extra)
        try:
            return await proc.wait_ready()
        except PortClash:
            proc.kill()
    raise AssertionError("no free port in three tries")


async def check_scheduling(procs: list[ServeProcess]) -> None:
    await wait_connected(procs)
    with anyio.fail_after(60):
        for proc in procs:
            async with proc.client() as c:
                while len((await c.list_nodes()).nodes) < 3:
                    await anyio.sleep(0.25)
    async with procs[1].client() as c:
        described = await c.describe_node(procs[2].node_id)
        assert described.labels == {"region": "eu", "ssd": "nvme"}
        spec = JobSpec.noop(stdout="x", selectors=parse_selectors("region=eu, ssd"))
        result = await c.run(spec, timeout=60)
        assert result.ok, result.reason
        assert [e.node_id for e in result.executions] == [procs[2].node_id]
        ops = JobSpec.noop(stdout="o", selectors=parse_selectors("region=eu"), target="all")
        result = await c.run(ops, timeout=60)
        assert result.ok, result.reason
        assert {e.node_id for e in result.executions} == {procs[0].node_id, procs[2].node_id}


LABELS = (("a", "region=eu"), ("b", "region=us"), ("c", "region=eu,ssd=nvme"))


async def test_gossip_serve_processes_place_jobs_by_selector(
    cluster: tuple[list[ServeProcess], Path, str],
) -> None:
    procs, tmp, secret = cluster
    for name, labels in LABELS:
        procs.append(await start(tmp, secret, name, labels))
    await check_scheduling(procs)


@pytest.mark.nats
async def test_nats_serve_processes_place_jobs_by_selector(
    cluster: tuple[list[ServeProcess], Path, str], nats_server: NatsServer
) -> None:
    procs, tmp, secret = cluster
    extra = ("--transport", "nats", "--nats-url", nats_server.url, "--nats-subject", f"s{secret}")
    for name, labels in LABELS:
        procs.append(await start(tmp, secret, name, labels, extra))
    await check_scheduling(procs)
