"""The Transport interface: broadcast to every node, request/response to one peer.

A transport moves opaque, already-signed frames; it never decides what a frame
means. The node above it verifies signatures and roles. A transport only:

* delivers every broadcast frame to every other reachable node, at most once
  per node (it deduplicates), but never back to the sender;
* carries a direct request to one peer and returns that peer's reply;
* tells which peers it currently knows.

Implementations: :mod:`bacalhau.transport.memory` (one process),
:mod:`bacalhau.transport.gossip` (TCP mesh + mDNS),
:mod:`bacalhau.transport.nats` (a NATS cluster).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

import anyio.abc

__all__ = ["MAX_FRAME", "BroadcastHandler", "RequestHandler", "Transport", "TransportHandler"]

MAX_FRAME = 4 * 1024 * 1024
"""No frame on any transport may be larger than this (4 MiB)."""

BroadcastHandler = Callable[[bytes], Awaitable[bool]]
"""Called with each broadcast frame heard; returns False if the frame was invalid
(a gossiping transport must then not forward it)."""

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
"""Called with (peer id, request frame); returns the reply frame."""


class TransportHandler(abc.ABC):
    """What a transport delivers to: the node."""

    @abc.abstractmethod
    async def handle_broadcast(self, frame: bytes) -> bool:
        """A broadcast frame arrived. Return False if it is invalid (do not forward)."""

    @abc.abstractmethod
    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        """A direct request arrived from ``peer_id``; return the reply."""


class Transport(abc.ABC):
    """Moves frames between nodes. See the module docstring for the contract."""

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """This node's id (the transport carries the node's identity)."""

    @abc.abstractmethod
    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and serve until cancelled; ``task_status.started()`` once usable."""

    @abc.abstractmethod
    async def broadcast(self, frame: bytes) -> None:
        """Send ``frame`` to every other node. Returns once handed to the transport;
        delivery is best effort (the protocol's timers cover loss)."""

    @abc.abstractmethod
    async def request(self, peer_id: str, frame: bytes, *, timeout: float = 10.0) -> bytes:
        """Send ``frame`` to one peer and return its reply.

        Raises:
            PeerUnreachable: unknown peer, connection lost, or no reply in ``timeout``.
        """

    @abc.abstractmethod
    def peers(self) -> frozenset[str]:
        """Node ids of the peers this transport can currently reach."""

    def status(self) -> dict[str, object]:
        """Transport-specific status for ``node info`` (connected, buffered, ...)."""
        return {}
