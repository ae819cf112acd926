"""Data locality: nodes announce the root CIDs they hold, and requesters offer a job to
the nodes holding its inputs first."""

from __future__ import annotations

import random

import anyio
import pytest

from bacalhau import JobSpec, Network, RequesterConfig
from bacalhau.models import InputSpec, NodeInfo, StorageSpec
from bacalhau.node.holdings import Holdings
from bacalhau.protocol.nodes import KnownNode, rank

pytestmark = pytest.mark.anyio

CID = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # the empty folder


def info(node_id: str, data: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        executors=("noop",),
        verifiers=("noop",),
        publishers=("noop",),
        storage=("ipfs",),
        free_slots=4,
        max_executions=4,
        data=data,
    )


def test_rank_puts_the_nodes_holding_the_inputs_first() -> None:
    spec = JobSpec.noop(inputs=(InputSpec(StorageSpec.ipfs(CID), "/a"),))
    nodes = [KnownNode(info=info(f"n{i}", (CID,) if i == 7 else ()), seen=0.0) for i in range(10)]
    for seed in range(20):  # whatever the random tie-break
        assert rank(nodes, spec, 1.0, random.Random(seed)).ready[0] == "n7"


def test_holdings_are_bounded_newest_first() -> None:
    held = Holdings(limit=3)
    for cid in ("a", "b", "c", "d", "b"):
        held.add(cid)
    assert held.announced(None) == ("b", "d", "c")


async def test_the_node_holding_a_jobs_input_gets_its_offers() -> None:
    """Eight nodes; only node 5 holds the input. Asking one node per job (no headroom),
    every job runs there: with no preference for locality, 1 job in 8 would."""
    one = RequesterConfig(offer_headroom=0, bid_timeout=5.0)
    async with Network.in_memory(8, seed=3, requester=one) as net:
        holder = net.nodes[5]
        cid = await holder.add_data(b"only node 5 has these bytes\n")
        requester = net.nodes[0]
        with anyio.fail_after(30):
            while not any(
                cid in i.data for i in requester.known_nodes() if i.node_id == holder.node_id
            ):
                await anyio.sleep(0.05)
        spec = JobSpec.noop(stdout="x", inputs=(InputSpec(StorageSpec.ipfs(cid), "/in"),))
        for _ in range(5):
            result = await requester.run_job(spec, timeout=60)
            assert result.ok, result.reason
            assert [e.node_id for e in result.executions] == [holder.node_id]
