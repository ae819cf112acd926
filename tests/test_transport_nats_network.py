"""Whole nodes over NATS, in this process: jobs, block exchange, a dying server, JetStream catch-up.

The multi-process versions (nodes in separate processes) are in
``test_transport_nats_processes.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from bacalhau import Deal, JobSpec, Network
from bacalhau.executor.base import ExecutionContext, Executor, RunResult
from bacalhau.identity import Identity
from bacalhau.models import EngineSpec, InputSpec, JobState, OutputSpec, StorageSpec
from bacalhau.node.node import Node
from bacalhau.storage.ipfs import BlockService, add_bytes
from bacalhau.testing.conformance import status_count
from bacalhau.testing.nats import NatsCluster, NatsServer
from bacalhau.transport.nats import NatsOptions, NatsTransport

pytestmark = [pytest.mark.anyio, pytest.mark.nats]
pytest_plugins = ["bacalhau.testing.nats"]

FAST: dict[str, Any] = {"heartbeat": 1.0, "reconnect_wait": 0.1}


def blocks_of(node: Node) -> BlockService:
    """The node's block service (every node in these tests has one)."""
    assert node.blocks is not None
    return node.blocks


def spread_over(urls: list[str], **options: Any) -> Callable[[Identity], NatsTransport]:
    """Node i's home server is ``urls[i % len(urls)]``; the others are its fail-overs."""
    counter = itertools.count()
    subject = "bacalhau.net" + os.urandom(4).hex()

    def make(identity: Identity) -> NatsTransport:
        i = next(counter) % len(urls)
        servers = tuple(urls[i:] + urls[:i])
        opts = NatsOptions(servers=servers, subject=subject, **{**FAST, **options})
        return NatsTransport(identity, opts)

    return make


class DigestExecutor(Executor):
    """Prints the sha256 of its one input volume (a host path) and copies it to output ``out``."""

    name = "digest"
    storage_mode = "posix"

    async def run(self, ctx: ExecutionContext) -> RunResult:
        def work() -> None:
            volume = ctx.volumes[0]
            assert volume.host_path is not None
            data = volume.host_path.read_bytes()
            (ctx.results_dir / "stdout").write_text(hashlib.sha256(data).hexdigest())
            shutil.copyfile(volume.host_path, ctx.outputs["out"] / "copy")

        await anyio.to_thread.run_sync(work)
        return RunResult(exit_code=0)


async def wait_peers(net: Network, limit: float = 20.0) -> None:
    with anyio.fail_after(limit):
        while any(len(n.peers()) < len(net.nodes) - 1 for n in net.nodes):
            await anyio.sleep(0.05)


async def test_jobs_over_a_three_server_cluster(nats_cluster: NatsCluster) -> None:
    """Six nodes on three servers run 50 jobs; one job's input is held by a node on
    another server than the node that runs it, and moves by block exchange over NATS."""
    data = os.urandom(1024 * 1024 + 7)  # 5 leaves and a root: 6 blocks, 1 MiB over NATS
    requester_only = [{"compute": None}, {}, {}, {}, {}, {}]
    async with Network.custom(
        6, spread_over(nats_cluster.urls), seed=5, per_node_options=requester_only
    ) as net:
        await wait_peers(net)
        requester, holder, runner = net.nodes[0], net.nodes[1], net.nodes[2]
        servers = {n.node_id: n.transport.status()["server"] for n in net.nodes}
        assert servers[holder.node_id] != servers[runner.node_id]
        assert len(set(servers.values())) == 3
        runner.plugins.add(DigestExecutor())  # the only node that can run "digest"
        cid = await add_bytes(holder.blockstore, data, pin=True)
        results: dict[int, Any] = {}

        async def run(i: int) -> None:
            spec = JobSpec.noop(stdout=f"job {i}", timeout=30, deal=Deal(min_bids=3))
            results[i] = await requester.run_job(spec, timeout=60)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(run, i)
            digest_spec = JobSpec(
                engine=EngineSpec("digest"),
                inputs=(InputSpec(StorageSpec.ipfs(cid), "/inputs/data.bin"),),
                outputs=(OutputSpec("out", "/outputs"),),
                timeout=60,
            )
            digest = await requester.run_job(digest_spec, timeout=90)
        assert all(r.ok for r in results.values()), [r.reason for r in results.values() if not r.ok]
        assert sorted(r.accepted[0].stdout for r in results.values()) == sorted(
            f"job {i}" for i in range(50)
        )
        ran_on = {e.node_id for r in results.values() for e in r.accepted}
        assert len(ran_on) >= 3, "jobs spread over the nodes (and so over the servers)"
        assert requester.node_id not in ran_on
        assert digest.ok, digest.reason
        assert digest.accepted[0].node_id == runner.node_id
        assert digest.accepted[0].stdout == hashlib.sha256(data).hexdigest()
        assert blocks_of(runner).stats["blocks_fetched"] == 6
        assert blocks_of(holder).stats["blocks_served"] >= 6


@pytest.mark.slow
async def test_a_server_killed_mid_run_loses_no_job(nats_cluster: NatsCluster) -> None:
    """kill -9 one of three servers while 50 jobs run: its clients fail over, every job ends."""
    async with Network.custom(6, spread_over(nats_cluster.urls), seed=6) as net:
        await wait_peers(net)
        requester = net.nodes[0]
        victims = [n for n in net.nodes if n.transport.status()["server"] == nats_cluster.urls[1]]
        assert len(victims) == 2
        handles = [
            await requester.submit(JobSpec.noop(stdout=f"{i}", delay=0.3, timeout=30))
            for i in range(50)
        ]
        with anyio.fail_after(30):
            while sum(requester.describe(h.job_id).state.terminal for h in handles) < 10:
                await anyio.sleep(0.02)
        nats_cluster.servers[1].kill()
        results = [await h.wait(timeout=120) for h in handles]
        states = [r.state for r in results]
        assert states == [JobState.COMPLETED] * 50, [r.reason for r in results if not r.ok]
        # the jobs may all have ended elsewhere: each victim fails over in its own time
        with anyio.fail_after(30):
            while not all(
                status_count(n.transport, "reconnects") >= 1 and n.transport.status()["connected"]
                for n in victims
            ):
                await anyio.sleep(0.05)
        for node in victims:
            assert status_count(node.transport, "reconnects") >= 1
            assert node.transport.status()["server"] in (nats_cluster.urls[0], nats_cluster.urls[2])


async def test_jetstream_requester_restarted_mid_job_catches_up(nats_server: NatsServer) -> None:
    """The requester goes away while the job runs; the proposal waits in JetStream and
    reaches it when it comes back with the same key and data: the job completes."""
    factory = spread_over([nats_server.url], jetstream=True, jetstream_memory=True)
    async with Network.custom(
        3, factory, per_node_options=[{"compute": None, "durable": True}, {}, {}]
    ) as net:
        await wait_peers(net)
        requester = net.nodes[0]
        data_dir, identity = requester.data_dir, requester.identity
        handle = await requester.submit(JobSpec.noop(stdout="late", delay=1.0, timeout=30))
        with anyio.fail_after(20):
            while requester.describe(handle.job_id).state is not JobState.RUNNING:
                await anyio.sleep(0.02)
        runner_id = requester.describe(handle.job_id).executions[0].node_id
        runner = next(n for n in net.nodes if n.node_id == runner_id)
        await net.stop_node(requester)
        with anyio.fail_after(20):
            while handle.job_id not in runner.compute.jobs or runner.compute.jobs[
                handle.job_id
            ].state.value not in ("proposed", "publishing", "published"):
                await anyio.sleep(0.02)
        back = await net.add_node(identity=identity, data_dir=data_dir, compute=None, durable=True)
        result = await back.handle(handle.job_id).wait(timeout=60)
        assert result.ok, result.reason
        assert result.accepted[0].stdout == "late"
        assert status_count(back.transport, "replayed") >= 1, (
            "it learned what it missed from the stream"
        )


async def test_nodes_without_the_network_secret_are_refused(nats_server: NatsServer) -> None:
    """Three members and one node without the secret on the same subject: the outsider is no
    peer of anyone, never runs a member's job, and its own job finds no bidder."""
    from bacalhau import RequesterConfig

    subject = "bacalhau.priv" + os.urandom(4).hex()
    secrets = iter(
        [
            b"correct horse battery staple",
            b"correct horse battery staple",
            b"correct horse battery staple",
            None,
        ]
    )

    def factory(identity: Identity) -> NatsTransport:
        opts = NatsOptions(servers=(nats_server.url,), subject=subject, **FAST)
        return NatsTransport(identity, opts, secret=next(secrets))

    quick = {"requester": RequesterConfig(bid_timeout=1.0)}
    async with Network.custom(4, factory, per_node_options=[{}, {}, {}, quick]) as net:
        members, outsider = net.nodes[:3], net.nodes[3]
        with anyio.fail_after(20):
            while any(len(n.peers()) < 2 for n in members):
                await anyio.sleep(0.05)
        assert outsider.peers() == frozenset()
        assert all(outsider.node_id not in n.peers() for n in members)
        results = [
            await members[0].run_job(JobSpec.noop(stdout="m", deal=Deal(min_bids=3)), timeout=30)
            for _ in range(5)
        ]
        assert all(r.ok for r in results)
        assert {e.node_id for r in results for e in r.accepted} <= {n.node_id for n in members}
        own = await outsider.run_job(
            JobSpec.noop(stdout="alone", deal=Deal(min_bids=2), queue_timeout=3), timeout=30
        )
        assert own.state is JobState.FAILED
        assert status_count(members[0].transport, "refused") > 0
