"""Content addressing on a real in-process network: data moves between nodes by block exchange.

A 5-node network; the job's input CID is held by one node only. The job runs on
that node and on one that lacks the input (which fetches it from the holder);
both publish their results with the ``ipfs`` publisher, and a third node, which
ran nothing, fetches the results by CID.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import anyio
import anyio.to_thread
import attrs
import pytest

from bacalhau import ComputeConfig, Deal, JobSpec, Network
from bacalhau.executor.base import ExecutionContext, Executor, RunResult
from bacalhau.models import EngineSpec, InputSpec, OutputSpec, StorageSpec
from bacalhau.node.node import Node
from bacalhau.storage.ipfs import BlockService, add_bytes, export_to_path, read_all, resolve

pytestmark = pytest.mark.anyio


def blocks_of(node: Node) -> BlockService:
    """The node's block service (every node in these tests has one)."""
    assert node.blocks is not None
    return node.blocks


class DigestExecutor(Executor):
    """Reads every input volume (a host path), prints its sha256 and copies it to output ``out``."""

    name = "digest"
    storage_mode = "posix"

    async def run(self, ctx: ExecutionContext) -> RunResult:
        def work() -> str:
            lines = []
            for i, volume in enumerate(ctx.volumes):
                assert volume.host_path is not None
                data = volume.host_path.read_bytes()
                lines.append(f"{i} {hashlib.sha256(data).hexdigest()} {len(data)}")
                shutil.copyfile(volume.host_path, ctx.outputs["out"] / f"input{i}")
            (ctx.results_dir / "stdout").write_text("\n".join(lines) + "\n")
            return "ok"

        await anyio.to_thread.run_sync(work)
        return RunResult(exit_code=0)


async def test_input_moves_by_block_exchange_and_results_are_fetched_elsewhere(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)  # 13 leaves and a root
    async with Network.in_memory(5, seed=3) as net:
        holder, lacker, third, _, requester = net.nodes
        for node in (holder, lacker):  # only these two can run "digest" jobs, so both bid
            node.plugins.add(DigestExecutor())
        cid = await add_bytes(holder.blockstore, data, pin=True)
        for node in net.nodes[1:]:
            assert not await blocks_of(node).has_locally(cid)
        spec = JobSpec(
            engine=EngineSpec("digest"),
            inputs=(InputSpec(StorageSpec.ipfs(cid), "/inputs/data.bin"),),
            outputs=(OutputSpec("out", "/outputs"),),
            deal=Deal(concurrency=2, min_bids=2),
            publisher="ipfs",
            timeout=60,
        )
        result = await requester.run_job(spec, timeout=60)
        assert result.ok, result.reason
        ran_on = {e.node_id for e in result.accepted}
        assert ran_on == {holder.node_id, lacker.node_id}
        expected = f"0 {hashlib.sha256(data).hexdigest()} {len(data)}\n"
        assert {e.stdout for e in result.accepted} == {expected}
        # the input reached the node that lacked it by block exchange, from the only holder
        assert blocks_of(lacker).stats["blocks_fetched"] == 14
        assert blocks_of(holder).stats["blocks_served"] >= 14
        # both published the same results folder, so one CID
        cids = {e.published.cid for e in result.accepted if e.published}
        assert cids == {result.cid}
        assert result.cid is not None
        assert not await blocks_of(third).has_locally(result.cid)
        out = tmp_path / "results"
        await export_to_path(third.blocks, result.cid, out)
        assert (out / "stdout").read_text() == expected
        assert (out / "exitCode").read_text() == "0"
        assert (out / "out" / "input0").read_bytes() == data
        inner = await resolve(third.blocks, result.cid, "out/input0")
        assert await read_all(third.blocks, inner) == data
        await net.wait_idle()


async def test_data_locality_local_bids_only_where_the_dag_is() -> None:
    local = ComputeConfig(data_locality="local")
    async with Network.in_memory(3, seed=5, compute=local) as net:
        holder = net.nodes[2]
        cid = await add_bytes(holder.blockstore, os.urandom(600_000))
        spec = JobSpec.noop(
            stdout="ran",
            inputs=(InputSpec(StorageSpec.ipfs(cid), "/in"),),
            deal=Deal(concurrency=1),
            timeout=30,
        )
        result = await net.nodes[0].run_job(spec, timeout=30)
        assert result.ok, result.reason
        assert [e.node_id for e in result.accepted] == [holder.node_id]
        assert any("data not local" in e.detail for e in result.events if e.kind == "declined")
        await net.wait_idle()


async def test_data_locality_nearby_bids_where_a_provider_is_known() -> None:
    nearby = ComputeConfig(data_locality="nearby")
    async with Network.in_memory(3, seed=5, compute=nearby) as net:
        holder = net.nodes[2]
        cid = await add_bytes(holder.blockstore, os.urandom(600_000), pin=True)
        other = await add_bytes(None, b"held by no node")
        spec = JobSpec.noop(
            stdout="ran",
            inputs=(InputSpec(StorageSpec.ipfs(other), "/in"),),
            deal=Deal(concurrency=1),
            timeout=30,
            queue_timeout=3,  # nobody will bid: every node declines and the job fails
        )
        result = await net.nodes[0].run_job(spec, timeout=30)
        assert not result.ok  # nobody holds it or knows a provider: nobody bids
        assert any("data not nearby" in e.detail for e in result.events if e.kind == "declined")
        assert await blocks_of(holder).announce(cid) == 2  # now every node has a record
        spec = attrs.evolve(
            spec, inputs=(InputSpec(StorageSpec.ipfs(cid), "/in"),), queue_timeout=20
        )
        result = await net.nodes[0].run_job(spec, timeout=30)
        assert result.ok, result.reason
        await net.wait_idle()
