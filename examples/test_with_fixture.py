"""Testing your own code against a bacalhau network, with the fixtures the package ships.

Installing bacalhau-py registers a pytest plugin (entry point ``pytest11``), so any
project's tests can ask for ``bacalhau_network``: a whole in-memory network, started
for the test and checked for leaked executions when it closes. Run this file with

    pytest examples/test_with_fixture.py

The code under test here is ``count_words``: the kind of function an application
built on bacalhau would have.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import pytest

from bacalhau import (
    Deal,
    Faults,
    InputSpec,
    JobSpec,
    JobState,
    Network,
    Node,
    OutputSpec,
    RequesterConfig,
    StorageSpec,
)
from bacalhau.testing import open_network
from bacalhau.testing.chaos import chaos_run

WORDCOUNT = (Path(__file__).parent / "wasm" / "prebuilt" / "wordcount.wasm").read_bytes()

pytestmark = pytest.mark.anyio  # every test here is async (anyio's pytest plugin)


# --- the code under test ----------------------------------------------------------------


async def count_words(node: Node, text: str, *, nodes_agreeing: int = 1) -> int:
    """Count the words of ``text`` on the network ``node`` belongs to.

    With ``nodes_agreeing`` > 1, that many nodes run the job and their results must
    hash the same (the deterministic verifier) before anyone publishes them.
    """
    spec = JobSpec.wasm(
        WORDCOUNT,  # the module travels inline, inside the job
        args=["/in/text.txt", "/out"],
        inputs=[InputSpec(StorageSpec.inline(text), "/in/text.txt")],
        outputs=[OutputSpec("counts", "/out")],
        deal=Deal(concurrency=nodes_agreeing, confidence=nodes_agreeing),
        verifier="deterministic" if nodes_agreeing > 1 else "noop",
        timeout=30,
    )
    result = (await node.run_job(spec, timeout=60)).raise_for_state()
    # stdout looks like "1 files, 2 lines, 9 words, 50 bytes"
    return int(result.accepted[0].stdout.split(",")[2].split()[0])


# --- tests ------------------------------------------------------------------------------


async def test_count_words(bacalhau_network: Network) -> None:
    """The default fixture: three in-memory nodes."""
    assert await count_words(bacalhau_network.nodes[0], "one two three\nfour\n") == 4


@pytest.mark.bacalhau_network(n=5, seed=1)
async def test_count_words_verified_by_three_nodes(bacalhau_network: Network) -> None:
    """The marker configures the network: here 5 nodes and a seed for the hub's randomness."""
    assert len(bacalhau_network.nodes) == 5
    words = await count_words(bacalhau_network.nodes[4], "a b c d e f g\n", nodes_agreeing=3)
    assert words == 7


@pytest.mark.bacalhau_network(n=4, seed=3, faults=Faults(drop=0.05, duplicate=0.1))
async def test_survives_a_lossy_network(bacalhau_network: Network) -> None:
    """Frames dropped and duplicated at random (seeded): the protocol's retries cope."""
    results: list[int] = []
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(_append, results, bacalhau_network.nodes[i % 4], i)
    assert sorted(results) == list(range(10))


async def _append(results: list[int], node: Node, i: int) -> None:
    result = await node.run_job(JobSpec.noop(stdout=str(i)), timeout=60)
    results.append(int(result.raise_for_state().accepted[0].stdout))


async def test_a_crashed_node_is_replaced() -> None:
    """``open_network`` is what the fixture uses; call it directly for per-node options.

    Node 0 only requests (``compute=None``), so it never runs the job itself; the
    node that does run it is stopped mid-run, and the requester gives the job to
    another bidder once the silent node's deadline passes. (The job runs 2 s, so a
    stalled test process still stops its node before it ends.)
    """
    fast = RequesterConfig(bid_window=0.05, execution_grace=0.5)
    async with open_network(3, requester=fast, per_node_options=[{"compute": None}, {}, {}]) as net:
        handle = await net.nodes[0].submit(JobSpec.noop(stdout="done", delay=2, timeout=3))
        # aclosing: leaving the loop early closes the event stream at once (trio insists)
        async with contextlib.aclosing(handle.events()) as events:
            async for event in events:
                if event.kind == "bid_accepted":
                    victim = next(n for n in net.nodes if n.node_id == event.node_id)
                    await net.stop_node(victim)
                    break
        result = await handle.wait(timeout=30)
        assert result.state is JobState.COMPLETED
        kinds = [e.kind for e in result.events]
        assert "execution_lost" in kinds
        assert result.accepted[0].node_id != victim.node_id


async def test_chaos_harness_keeps_its_invariants() -> None:
    """The seeded chaos harness: drops, delays, duplicates and a crash-restart (it can also
    split the network: ``partitions=``); at the end every job is terminal and no result was
    accepted without agreement."""
    report = await chaos_run(seed=5, nodes=5, jobs=20, partitions=0, crashes=1, duration=2.0)
    report.raise_for_problems()  # names the seed, so a failure can be replayed
    assert sum(report.states.values()) == 20
