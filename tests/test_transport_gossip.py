"""The TCP gossip transport passes the transport conformance suite, on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from bacalhau.identity import Identity
from bacalhau.testing.conformance import CHECKS, RecordingHandler, running
from bacalhau.testing.ports import listening_socket
from bacalhau.transport.base import Transport
from bacalhau.transport.gossip import GossipOptions, GossipTransport

pytestmark = pytest.mark.anyio

FAST = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.5)


@contextlib.asynccontextmanager
async def gossip_transports(
    n: int, *, options: GossipOptions = FAST, secret: str | None = None
) -> AsyncIterator[list[Transport]]:
    """n transports on loopback; each knows only the first one's address (peer
    exchange must introduce the rest)."""
    socks = [listening_socket() for _ in range(n)]
    first = socks[0].getsockname()
    try:
        yield [
            GossipTransport(
                Identity.generate(),
                listen_socket=sock,
                peers=[first] if i else [],
                secret=secret,
                options=options,
                seed=i,
            )
            for i, sock in enumerate(socks)
        ]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance(check: str) -> None:
    await CHECKS[check](gossip_transports)


async def test_conformance_with_a_network_secret() -> None:
    await CHECKS["broadcast_reaches_all_others_once"](
        lambda n: gossip_transports(n, secret="correct horse battery staple")
    )


async def test_peer_exchange_connects_a_chain() -> None:
    async with running(gossip_transports, 6) as (ts, _):
        for t in ts:
            assert len(t.peers()) == 5


@contextlib.asynccontextmanager
async def mdns_transports(n: int) -> AsyncIterator[list[Transport]]:
    """n transports that know no address: they find each other by mDNS on loopback
    (a fresh network secret keeps other tests' nodes out)."""
    secret = os.urandom(8).hex()
    yield [
        GossipTransport(
            Identity.generate(),
            port=0,
            secret=secret,
            mdns=True,
            mdns_interfaces=["127.0.0.1"],
            options=FAST,
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("check", ["broadcast_reaches_all_others_once", "peers", "request_reply"])
async def test_conformance_by_mdns_alone(check: str) -> None:
    await CHECKS[check](mdns_transports)


async def test_mdns_ignores_other_networks() -> None:
    run = os.urandom(8).hex()  # test runs in parallel on this machine stay apart
    ours = [
        GossipTransport(
            Identity.generate(),
            secret=secret,
            mdns=True,
            mdns_interfaces=[interface],
            options=FAST,
        )
        for secret, interface in (
            (f"one-{run}", "lo"),  # an interface name works too
            (f"one-{run}", "127.0.0.1"),
            (f"two-{run}", "127.0.0.1"),
        )
    ]
    async with anyio.create_task_group() as tg:
        for t in ours:
            await tg.start(t.run, RecordingHandler(t.node_id))
        with anyio.fail_after(20):
            while ours[0].peers() != {ours[1].node_id}:
                await anyio.sleep(0.05)
        await anyio.sleep(1.0)  # time for a wrong dial to show up
        assert ours[2].peers() == frozenset()
        assert ours[0].stats["cut_off"] == 0, "the other network's record is never dialed"
        tg.cancel_scope.cancel()


async def test_a_network_of_nodes_over_tcp_gossip_runs_jobs() -> None:
    from bacalhau import Deal, JobSpec, Network
    from bacalhau.transport.gossip import gossip_transport_factory

    async with Network.custom(3, gossip_transport_factory(options=FAST)) as net:
        with anyio.fail_after(20):
            while any(len(n.peers()) < 2 for n in net.nodes):
                await anyio.sleep(0.02)
        spec = JobSpec.noop(stdout="over tcp", deal=Deal(concurrency=3), timeout=20)
        result = await net.nodes[1].run_job(spec, timeout=30)
        assert result.ok, result.reason
        assert {e.stdout for e in result.accepted} == {"over tcp"}
        assert {e.node_id for e in result.accepted} == {n.node_id for n in net.nodes}


async def test_invalid_frames_are_not_forwarded_and_valid_ones_are_relayed() -> None:
    """A line a - b - c (a and c may hold one peer each): c hears a only through b,
    and b does not relay what its node found invalid."""
    socks = [listening_socket() for _ in range(3)]
    hub = socks[1].getsockname()
    edge = GossipOptions(heartbeat=0.1, max_peers=1, target_peers=1, backoff_min=0.05)
    a, b, c = (
        GossipTransport(Identity.generate(), listen_socket=socks[0], peers=[hub], options=edge),
        GossipTransport(Identity.generate(), listen_socket=socks[1], options=FAST),
        GossipTransport(Identity.generate(), listen_socket=socks[2], peers=[hub], options=edge),
    )
    hs = [RecordingHandler(t.node_id) for t in (a, b, c)]
    async with anyio.create_task_group() as tg:
        for t, h in zip((a, b, c), hs, strict=True):
            await tg.start(t.run, h)
        with anyio.fail_after(20):  # each side sees the link in its own time
            while (b.peers(), a.peers(), c.peers()) != (
                frozenset({a.node_id, c.node_id}),
                frozenset({b.node_id}),
                frozenset({b.node_id}),
            ):
                await anyio.sleep(0.02)
        await a.broadcast(b"invalid: b's node refuses this")
        await a.broadcast(b"valid")
        await hs[2].wait_for(lambda: b"valid" in hs[2].heard)
        await anyio.sleep(0.3)
        assert hs[1].heard == [b"invalid: b's node refuses this", b"valid"]
        assert hs[2].heard == [b"valid"], "the invalid frame stopped at b"
        assert b.stats["invalid"] == 1
        tg.cancel_scope.cancel()


async def test_an_unknown_mdns_interface_is_a_clear_error() -> None:
    from bacalhau.errors import ValidationError

    t = GossipTransport(Identity.generate(), mdns=True, mdns_interfaces=["nope0"])
    with pytest.raises(ValidationError, match="'nope0' is neither an IP address nor an interface"):
        await t.run(RecordingHandler(t.node_id))


async def test_no_copies_cross_a_full_mesh_beyond_the_first_hop() -> None:
    """Each node tells its peers who all its peers are; a message straight from its
    origin is then forwarded only to nodes the origin did not reach itself.

    In a full mesh nothing is forwarded. The one other way a second copy can arrive is
    the lazy repair: under load a heartbeat's IHAVE can overtake the copy itself, and
    the IWANT it prompts is answered; so duplicates are bounded by IWANTs served."""
    async with running(gossip_transports, 6) as (ts, hs):
        ids = {t.node_id for t in ts}
        gossip = [t for t in ts if isinstance(t, GossipTransport)]
        with anyio.fail_after(30):  # a hang guard: peer exchange needs a few heartbeats
            while not all(
                c.peer_peers == frozenset(ids - {t.node_id, c.peer_id})
                for t in gossip
                for c in t._conns.values()
            ):
                await anyio.sleep(0.02)

        def total(stat: str) -> int:
            return sum(t.stats[stat] for t in gossip)

        before = {stat: total(stat) for stat in ("duplicates", "forwarded", "iwant_served")}
        frames = [os.urandom(64) for _ in range(30)]
        for i, frame in enumerate(frames):
            await ts[i % 6].broadcast(frame)
        for i, h in enumerate(hs):
            want = {f for j, f in enumerate(frames) if j % 6 != i}
            await h.wait_heard(want)
        await anyio.sleep(0.3)
        assert total("forwarded") == before["forwarded"]
        repairs = total("iwant_served") - before["iwant_served"]
        assert total("duplicates") - before["duplicates"] <= repairs


async def test_serve_sockets_accepts_until_cancelled_and_leaves_the_socket_open() -> None:
    """The race-free accept loop (transport/accept.py): every connection reaches the
    handler; cancelling it while a client waits in the backlog raises nothing."""

    from bacalhau.transport.accept import serve_sockets

    got: list[bytes] = []
    done = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            got.append(await stream.receive())
            if len(got) == 3:
                done.set()

    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_sockets, [sock], handler, tg)
            for i in range(3):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(b"hello %d" % i)
            with anyio.fail_after(10):
                await done.wait()
            late = await anyio.connect_tcp("127.0.0.1", port)  # still in the backlog
            tg.cancel_scope.cancel()
        await late.aclose()
        assert sorted(got) == [b"hello 0", b"hello 1", b"hello 2"]
        assert sock.fileno() != -1  # the owner closes it, not the loop
