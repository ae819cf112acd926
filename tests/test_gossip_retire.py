"""Two connections to one peer: the one replaced is retired, not cut, so nothing in
flight on it fails.

Two nodes that dial each other at once (mDNS finds both at the same moment) end up
with two connections; both ends keep the one opened by the node with the smaller id.
A clean-clone CI run failed ``test_conformance_by_mdns_alone[request_reply]`` with
``PeerUnreachable(... lost: replaced by a newer connection)``: the replaced connection
was closed with a request still waiting on it. These tests force that interleaving:
a request is in the peer's handler when the smaller id dials a second connection.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from bacalhau.errors import PeerUnreachable
from bacalhau.identity import Identity
from bacalhau.testing.ports import listening_socket
from bacalhau.transport.base import TransportHandler
from bacalhau.transport.gossip import GossipOptions, GossipTransport

pytestmark = pytest.mark.anyio

FAST = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.5)


class HeldHandler(TransportHandler):
    """Answers every request with ``b"re:" + frame``, once ``release`` is set."""

    def __init__(self) -> None:
        self.arrived: list[bytes] = []
        self.arrival = anyio.Event()
        self.release = anyio.Event()

    async def handle_broadcast(self, frame: bytes) -> bool:
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        self.arrived.append(frame)
        self.arrival.set()
        await self.release.wait()
        return b"re:" + frame


@asynccontextmanager
async def pair(
    options: GossipOptions = FAST,
) -> AsyncIterator[tuple[GossipTransport, GossipTransport, HeldHandler, HeldHandler]]:
    """(small, big, small's handler, big's handler), connected by one connection that
    the *bigger* id dialled: the one a second connection from the smaller id replaces."""
    a, b = Identity.generate(), Identity.generate()
    small_id, big_id = sorted([a, b], key=lambda i: i.node_id)
    socks = [listening_socket(), listening_socket()]
    try:
        small = GossipTransport(small_id, listen_socket=socks[0], options=options)
        big = GossipTransport(
            big_id, listen_socket=socks[1], peers=[socks[0].getsockname()], options=options
        )
        handlers = HeldHandler(), HeldHandler()
        async with anyio.create_task_group() as tg:
            await tg.start(small.run, handlers[0])
            await tg.start(big.run, handlers[1])
            with anyio.fail_after(10):
                while small.peers() != {big.node_id} or big.peers() != {small.node_id}:
                    await anyio.sleep(0.01)
            yield small, big, *handlers
            tg.cancel_scope.cancel()
    finally:
        for sock in socks:
            sock.close()


async def _replace_connection(small: GossipTransport, big: GossipTransport) -> None:
    """The smaller id dials the bigger one again; wait until both ends retired the
    connection they had."""
    known = small._book.get(big.node_id)
    assert known is not None, "the handshake told small where big listens"
    assert small._tg is not None
    small._tg.start_soon(small._dial, known)
    with anyio.fail_after(10):
        while small.stats["retired"] < 1 or big.stats["retired"] < 1:
            await anyio.sleep(0.01)


@pytest.mark.parametrize("asker", ["small", "big"])
async def test_a_request_in_flight_survives_its_connection_being_replaced(asker: str) -> None:
    async with pair() as (small, big, small_handler, big_handler):
        ask, answer = (small, big) if asker == "small" else (big, small)
        answerer = big_handler if asker == "small" else small_handler
        replies: dict[str, bytes] = {}

        async def send(name: str, frame: bytes) -> None:
            replies[name] = await ask.request(answer.node_id, frame, timeout=20)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "before", b"one")
            with anyio.fail_after(10):
                await answerer.arrival.wait()  # in the handler, on the old connection
            await _replace_connection(small, big)
            tg.start_soon(send, "after", b"two")  # goes on the new connection
            with anyio.fail_after(10):
                while len(answerer.arrived) < 2:
                    await anyio.sleep(0.01)
            answerer.release.set()
        assert replies == {"before": b"re:one", "after": b"re:two"}

        # the old connection closes at both ends once its work is done; the new one stays
        with anyio.fail_after(10):
            while small._retiring or big._retiring:
                await anyio.sleep(0.01)
        assert small.peers() == {big.node_id} and big.peers() == {small.node_id}
        assert ask.stats["cut_off"] == 0 and answer.stats["cut_off"] == 0
        assert await ask.request(answer.node_id, b"three", timeout=10) == b"re:three"


async def test_a_retired_connection_still_busy_is_cut_at_its_time_limit() -> None:
    """A request whose handler never answers cannot keep the old connection forever."""
    options = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.5, retire_timeout=0.5)
    async with pair(options) as (small, big, _, big_handler):
        failure: list[Exception] = []

        async def send() -> None:
            try:
                await small.request(big.node_id, b"stuck", timeout=30)
            except PeerUnreachable as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            with anyio.fail_after(10):
                await big_handler.arrival.wait()
            await _replace_connection(small, big)
            # no release: the old connection is cut once retire_timeout has passed
        # it failed when the old connection was cut (by either end), not by its own timeout
        assert len(failure) == 1 and "within" not in str(failure[0])
        # the other end sees the cut (or its own limit passes) in its own time
        with anyio.fail_after(10):
            while small._retiring or big._retiring:
                await anyio.sleep(0.01)
        assert small.peers() == {big.node_id}


async def test_a_peer_that_dials_again_and_again_keeps_one_old_connection_at_most() -> None:
    """Retiring keeps an old connection open while work is in flight on it; a peer that
    redials in a loop must not pile them up (each would hold a socket for up to
    ``retire_timeout``): beyond one per peer, a replaced connection is closed at once."""
    async with pair() as (small, big, _, big_handler), anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(small.request, big.node_id, b"held", timeout=30))
        with anyio.fail_after(10):
            await big_handler.arrival.wait()
        await _replace_connection(small, big)
        for _ in range(3):  # the smaller id dials again, each time replacing the last
            before = small._conns[big.node_id], big._conns[small.node_id]
            known = small._book.get(big.node_id)
            assert known is not None and small._tg is not None
            small._tg.start_soon(small._dial, known)
            with anyio.fail_after(10):  # both ends took the new connection
                while small._conns.get(big.node_id) in (None, before[0]) or big._conns.get(
                    small.node_id
                ) in (None, before[1]):
                    await anyio.sleep(0.01)
        # the first old connection is still busy: every later one was closed, not retired
        assert small.stats["retired"] == big.stats["retired"] == 1
        assert len(small._retiring) == len(big._retiring) == 1
        assert small.peers() == {big.node_id}
        big_handler.release.set()
