"""The TCP gossip transport passes the transport conformance suite, on loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from bacalhau.identity import Identity
from bacalhau.testing.conformance import CHECKS, running
from bacalhau.transport.base import Transport
from bacalhau.transport.gossip import GossipOptions, GossipTransport

pytestmark = pytest.mark.anyio

FAST = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.5)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def gossip_transports(
    n: int, *, options: GossipOptions = FAST, secret: str | None = None
) -> AsyncIterator[list[Transport]]:
    """n transports on loopback; each knows only the first one's address (peer
    exchange must introduce the rest)."""
    socks = [bound_socket() for _ in range(n)]
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
        lambda n: gossip_transports(n, secret="s3cret")
    )


async def test_peer_exchange_connects_a_chain() -> None:
    async with running(gossip_transports, 6) as (ts, _):
        for t in ts:
            assert len(t.peers()) == 5
