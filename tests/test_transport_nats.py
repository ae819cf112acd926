"""The NATS transport against real nats-server processes on loopback ports.

Conformance (single server, 3-server cluster, JetStream on and off, tiny
max_payload), fail-over after SIGKILL of a server, the bounded outgoing buffer,
authentication, the network secret, hostile packets, JetStream catch-up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import nats
import pytest

from bacalhau.errors import PeerUnreachable, TransportError
from bacalhau.identity import Identity
from bacalhau.testing.conformance import CHECKS, RecordingHandler, running
from bacalhau.testing.nats import (  # noqa: F401 - fixtures
    NatsCluster,
    NatsServer,
    nats_cluster,
    nats_factory,
    nats_server,
)
from bacalhau.transport.base import Transport
from bacalhau.transport.nats import NatsOptions, NatsTransport
from bacalhau.transport.nats_frames import Kind, encode_packets

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

FAST = {"heartbeat": 1.0, "reconnect_wait": 0.1, "connect_timeout": 10.0}


def factory_for(
    urls: list[str], *, spread: bool = True, secret: bytes | None = None, **options: Any
) -> Callable[[int], contextlib.AbstractAsyncContextManager[list[Transport]]]:
    """A conformance factory: node i connects first to server i (mod the cluster size)."""
    subject = "bacalhau.t" + os.urandom(4).hex()

    @contextlib.asynccontextmanager
    async def make(n: int) -> AsyncIterator[list[Transport]]:
        out: list[Transport] = []
        for i in range(n):
            first = i % len(urls) if spread else 0
            servers = tuple(urls[first:] + urls[:first])
            opts = NatsOptions(servers=servers, subject=subject, **{**FAST, **options})
            out.append(NatsTransport(Identity.generate(), opts, secret=secret))
        yield out

    return make


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance_single_server(nats_server: NatsServer, check: str) -> None:
    await CHECKS[check](factory_for([nats_server.url]))
