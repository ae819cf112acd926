"""The memory transport passes the transport conformance suite, and its faults work."""

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from bacalhau.identity import Identity
from bacalhau.testing.conformance import CHECKS, running
from bacalhau.transport.base import Transport
from bacalhau.transport.memory import Faults, MemoryHub

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def memory_transports(n: int, hub: MemoryHub | None = None) -> AsyncIterator[list[Transport]]:
    hub = hub or MemoryHub(seed=1)
    yield [hub.transport(Identity.generate().node_id) for _ in range(n)]


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance(check: str) -> None:
    await CHECKS[check](memory_transports)


async def test_partition_and_heal() -> None:
    hub = MemoryHub(seed=2)
    async with running(lambda n: memory_transports(n, hub), 4) as (ts, hs):
        a, b = {ts[0].node_id, ts[1].node_id}, {ts[2].node_id, ts[3].node_id}
        hub.partition(a, b)
        assert ts[0].peers() == {ts[1].node_id}
        await ts[0].broadcast(b"split")
        await hs[1].wait_for(lambda: b"split" in hs[1].heard)
        await anyio.sleep(0.05)
        assert b"split" not in hs[2].heard and b"split" not in hs[3].heard
        hub.heal()
        await ts[0].broadcast(b"whole")
        for h in hs[1:]:
            await h.wait_heard([b"whole"])


async def test_drop_duplicate_delay_are_seeded() -> None:
    def run_once() -> list[int]:
        hub = MemoryHub(seed=7, faults=Faults(drop=0.3, duplicate=0.3, delay=(0, 0.01)))
        return [len(hub._plan("a", "b", "broadcast", b"x")) for _ in range(50)]

    first, second = run_once(), run_once()
    assert first == second
    assert 0 in first and 2 in first and 1 in first


async def test_custom_filter_drops_requests() -> None:
    hub = MemoryHub(faults=Faults(filter=lambda s, d, kind, f: kind != "request"))
    async with running(lambda n: memory_transports(n, hub), 2) as (ts, _):
        from bacalhau.errors import PeerUnreachable

        with pytest.raises(PeerUnreachable):
            await ts[0].request(ts[1].node_id, b"x")
