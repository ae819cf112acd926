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
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import anyio.abc

from ..errors import TransportError

__all__ = [
    "MAX_FRAME",
    "BroadcastHandler",
    "ImmediateRequests",
    "Reply",
    "ReplyPiece",
    "RequestHandler",
    "Transport",
    "TransportHandler",
    "join_reply",
    "reply_pieces",
]

MAX_FRAME = 4 * 1024 * 1024
"""No frame on any transport may be larger than this (4 MiB)."""

ReplyPiece: TypeAlias = bytes | bytearray | memoryview
"""One piece of a reply given in pieces (a contiguous buffer of bytes)."""

Reply: TypeAlias = bytes | Sequence[ReplyPiece]
"""What a request handler returns: the reply frame's bytes, or the frame as
consecutive pieces (a list or tuple of buffers). A transport sends the pieces one
after another without joining them where it can (gossip: one vectored write), so a
handler can answer with large buffers it already holds (block files) without
copying them into one. The requester always receives one ``bytes``, identical to
the pieces joined. The pieces must not change until the transport has sent them:
give ``bytes``, or buffers nobody writes to any more."""

BroadcastHandler = Callable[[bytes], Awaitable[bool]]
"""Called with each broadcast frame heard; returns False if the frame was invalid
(a gossiping transport must then not forward it)."""

RequestHandler = Callable[[str, bytes], Awaitable[Reply]]
"""Called with (peer id, request frame); returns the reply frame (see :data:`Reply`)."""


def reply_pieces(reply: Reply) -> tuple[list[ReplyPiece], int]:
    """The pieces of a handler's reply and their total size in bytes.

    Raises:
        TransportError: the reply is neither bytes nor a list/tuple of byte buffers,
            or it is larger than :data:`MAX_FRAME`.
    """
    if isinstance(reply, bytes):
        pieces: list[ReplyPiece] = [reply]
    elif isinstance(reply, list | tuple):
        pieces = list(reply)
    else:
        raise TransportError(f"a reply must be bytes or a list of byte buffers, not {type(reply)}")
    size = 0
    for i, piece in enumerate(pieces):
        if isinstance(piece, memoryview):
            if not piece.c_contiguous:
                raise TransportError("a reply piece must be a contiguous buffer")
            if piece.format != "B" or piece.ndim != 1:
                pieces[i] = piece = piece.cast("B")
        elif not isinstance(piece, bytes | bytearray):
            raise TransportError(f"a reply piece must be a byte buffer, not {type(piece)}")
        size += len(piece)
    if size > MAX_FRAME:
        raise TransportError(f"reply of {size} bytes exceeds {MAX_FRAME}")
    return pieces, size


def join_reply(reply: Reply) -> bytes:
    """The reply as one ``bytes`` (no copy when it already is one); for transports
    that must hold a frame in one piece.

    Raises:
        TransportError: as :func:`reply_pieces`.
    """
    if isinstance(reply, bytes):
        reply_pieces(reply)  # the size check
        return reply
    pieces, _ = reply_pieces(reply)
    return b"".join(pieces)


class TransportHandler(abc.ABC):
    """What a transport delivers to: the node."""

    @abc.abstractmethod
    async def handle_broadcast(self, frame: bytes) -> bool:
        """A broadcast frame arrived. Return False if it is invalid (do not forward)."""

    @abc.abstractmethod
    async def handle_request(self, peer_id: str, frame: bytes) -> Reply:
        """A direct request arrived from ``peer_id``; return the reply (its bytes, or
        its pieces: see :data:`Reply`)."""


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


@runtime_checkable
class ImmediateRequests(Protocol):
    """A transport that can also carry a request without awaiting anything, when the
    peer answers at once (the in-memory one: the peer's handler runs in the caller's
    task, as :meth:`Transport.request` would run it, minus the task switches)."""

    def request_now(self, peer_id: str, frame: bytes) -> bytes | None:
        """As :meth:`Transport.request`, at once; ``None`` when it cannot be done at once
        (then nothing was sent: use :meth:`Transport.request`).

        Raises:
            PeerUnreachable: unknown peer, lost frame, or the peer failed to answer.
        """
        ...
