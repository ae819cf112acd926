"""A hostile peer on the real transports (handshake, its own key) attacks a real node.

Each attack of issue #17 is sent over TCP gossip (and the decoding ones over NATS);
each is refused and counted, and the victim keeps serving and loses nothing: its
key, its job store and its blocks are intact, and it still runs a job.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

from bacalhau import JobSpec, JobState, Node
from bacalhau.identity import Identity
from bacalhau.testing.hostile_peer import HostilePeer
from bacalhau.testing.nats import NatsServer
from bacalhau.transport.gossip import GossipOptions, GossipTransport

pytestmark = pytest.mark.anyio
pytest_plugins = ["bacalhau.testing.nats"]  # nats_server

FAST = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.2, max_invalid=16)
SECRET = "a private network for this test"
ATTACK_IDS = ["..", "../..", "/", "/tmp/evil", "j-../../x", "j-a/b", "j-" + "a" * 200]


async def wait_until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.02)


class Victim:
    """A durable node and what it must not lose."""

    def __init__(self, node: Node, data_dir: Path) -> None:
        self.node = node
        self.data_dir = data_dir
        self.key = (data_dir / "node.key").read_bytes()
        self.cid = ""

    async def still_intact(self) -> None:
        assert (self.data_dir / "node.key").read_bytes() == self.key
        assert (self.data_dir / "state.db").is_file()
        assert await self.node.cat(self.cid) == b"the victim's own data"
        result = await self.node.run_job(JobSpec.noop(stdout="still here"), timeout=30)
        assert result.state is JobState.COMPLETED, result.reason
        assert not (self.data_dir.parent / "evil").exists()
        executions = self.data_dir / "executions"
        if executions.is_dir():
            assert all(p.name.startswith("j-") for p in executions.iterdir())


@contextlib.asynccontextmanager
async def victim_and_attacker(
    tmp_path: Path, secret: str | None = None
) -> AsyncIterator[tuple[Victim, HostilePeer]]:
    data_dir = tmp_path / "victim"
    identity = Identity.load_or_create(data_dir / "node.key")
    transport = GossipTransport(identity, options=FAST, secret=secret)
    async with Node(transport=transport, identity=identity, data_dir=data_dir) as node:
        victim = Victim(node, data_dir)
        victim.cid = await node.add_data(b"the victim's own data")
        ident = Identity.generate()
        attacker = HostilePeer(
            GossipTransport(ident, options=FAST, secret=secret, peers=[transport.address]), ident
        )
        async with anyio.create_task_group() as tg:
            await tg.start(attacker.run)
            await wait_until(lambda: attacker.node_id in transport.peers())
            yield victim, attacker
            tg.cancel_scope.cancel()


async def test_identifiers_that_would_name_paths_are_refused(tmp_path: Path) -> None:
    async with victim_and_attacker(tmp_path, SECRET) as (victim, attacker):
        stats = victim.node.stats
        before = stats["dropped_invalid"]
        for job_id in ATTACK_IDS:
            await attacker.broadcast(attacker.job_created(job_id))
            await attacker.send(victim.node.node_id, attacker.job_created(job_id))
        await wait_until(lambda: stats["dropped_invalid"] >= before + 2 * len(ATTACK_IDS))
        assert not any(j in victim.node.compute.jobs for j in ATTACK_IDS)
        await victim.still_intact()


async def test_nan_and_infinite_times_are_refused(tmp_path: Path) -> None:
    async with victim_and_attacker(tmp_path) as (victim, attacker):
        stats = victim.node.stats
        before = stats["dropped_invalid"]
        for value in (math.nan, math.inf, -math.inf):
            await attacker.broadcast(
                attacker.envelope("BidPlaced", {"job_id": "j-1"}, sent_at=value)
            )
            await attacker.broadcast(attacker.job_created("j-nan", created_at=value))
        await wait_until(lambda: stats["dropped_invalid"] >= before + 6)
        assert "j-nan" not in victim.node.compute.jobs
        await victim.still_intact()


async def test_a_flood_of_large_jobs_holds_bounded_memory(tmp_path: Path) -> None:
    async with victim_and_attacker(tmp_path) as (victim, attacker):
        compute = victim.node.compute
        compute.max_heard_bytes = 4 * 1024 * 1024  # small bound, so the test stays small
        flood = attacker.heard_flood(40, 256 * 1024)
        for frame in flood:
            await attacker.broadcast(frame)
        await wait_until(lambda: compute.evicted > 0)
        await wait_until(lambda: victim.node.transport.status()["inbox_bytes"] == 0)
        assert compute.heard_bytes <= 4 * 1024 * 1024
        assert len(compute.jobs) <= 16
        await victim.still_intact()
        await victim.node.store.flush()  # type: ignore[union-attr]
        assert (victim.data_dir / "state.db").stat().st_size < 2 * 1024 * 1024


async def test_a_peer_sending_bad_signatures_is_cut_off(tmp_path: Path) -> None:
    async with victim_and_attacker(tmp_path) as (victim, attacker):
        transport = victim.node.transport
        assert isinstance(transport, GossipTransport)
        for _ in range(200):
            await attacker.broadcast(attacker.bad_signature())
            if attacker.node_id not in transport.peers():
                break
        await wait_until(lambda: attacker.node_id not in transport.peers())
        assert transport.stats["invalid"] <= 200
        await victim.still_intact()


@pytest.mark.nats
async def test_the_same_attacks_over_nats(tmp_path: Path, nats_server: NatsServer) -> None:
    from bacalhau.transport.nats import NatsOptions, NatsTransport

    subject = "bacalhau.hostile" + os.urandom(4).hex()
    opts = NatsOptions(servers=(nats_server.url,), subject=subject)
    data_dir = tmp_path / "victim"
    identity = Identity.load_or_create(data_dir / "node.key")
    transport = NatsTransport(identity, opts, secret=SECRET)
    async with Node(transport=transport, identity=identity, data_dir=data_dir) as node:
        victim = Victim(node, data_dir)
        victim.cid = await node.add_data(b"the victim's own data")
        ident = Identity.generate()
        attacker = HostilePeer(NatsTransport(ident, opts, secret=SECRET), ident)
        async with anyio.create_task_group() as tg:
            await tg.start(attacker.run)
            await wait_until(lambda: attacker.node_id in transport.peers())
            before = node.stats["dropped_invalid"]
            for job_id in ATTACK_IDS:
                await attacker.broadcast(attacker.job_created(job_id))
            await attacker.broadcast(
                attacker.envelope("BidPlaced", {"job_id": "j-1"}, sent_at=math.nan)
            )
            await attacker.broadcast(attacker.bad_signature())
            await wait_until(lambda: node.stats["dropped_invalid"] >= before + len(ATTACK_IDS) + 2)
            await victim.still_intact()
            tg.cancel_scope.cancel()
