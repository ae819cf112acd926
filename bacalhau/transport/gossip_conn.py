"""One TCP connection of the gossip transport: frames, handshake, bounded send queues.

Wire format: every frame is a 4-byte big-endian length followed by that many
bytes of msgpack. Before the handshake completes a frame may hold at most
:data:`HANDSHAKE_MAX` bytes; after it, at most :data:`WIRE_MAX` (a transport
frame of :data:`~bacalhau.transport.base.MAX_FRAME` plus its header).

The handshake that comes first is in :mod:`bacalhau.transport.gossip_handshake`.

After the handshake every frame is ``[type, ...]``::

    [PUBLISH, frame, first_hop]   a broadcast; first_hop: sent by its origin, which
                                  sent it to all its peers (flood publish)
    [IHAVE, [id, ...]]            recent message ids (lazy repair)
    [IWANT, [id, ...]]            please send these
    [IDONTWANT, [id, ...]]        do not send these (I have them)
    [GRAFT] / [PRUNE]             join / leave the sender's mesh
    [PING]                        keep-alive, when nothing else was sent
    [PEERS, [[id, host, port], ...], complete]
                                  peer exchange; complete: these are all my peers
    [REQUEST, req_id, frame] / [REPLY, req_id, frame] / [ERROR, req_id, text]
    [BYE, reason]                 closing, and why
    [RETIRE]                      this end sends no new requests here (the connection
                                  was replaced by a newer one to the same peer); it
                                  closes once the work in flight on it is done
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Sequence
from time import monotonic
from typing import TypeAlias

import anyio
import anyio.abc
import attrs
from anyio.abc import SocketAttribute

from ..errors import ConnectionRetired, PeerUnreachable
from .base import MAX_FRAME, ReplyPiece
from .gossip_frames import (
    BYE,
    ERROR,
    GRAFT,
    IDONTWANT,
    IHAVE,
    IWANT,
    MESSAGE_TYPES,
    PEERS,
    PING,
    PRUNE,
    PUBLISH,
    REPLY,
    REQUEST,
    RETIRE,
    FrameReader,
    decode,
    encode,
    encode_bin_message,
    encode_reply,
)

__all__ = [
    "BYE",
    "ERROR",
    "GRAFT",
    "IDONTWANT",
    "IHAVE",
    "IWANT",
    "MESSAGE_TYPES",
    "PEERS",
    "PING",
    "PRUNE",
    "PUBLISH",
    "REPLY",
    "REQUEST",
    "RETIRE",
    "WIRE_MAX",
    "Connection",
    "Frame",
    "FrameReader",
    "decode",
    "encode",
    "encode_bin_message",
    "encode_reply",
]

log = logging.getLogger("bacalhau.transport.gossip")

HANDSHAKE_MAX = 4096
WIRE_MAX = MAX_FRAME + 64
"""Largest frame after the handshake: a MAX_FRAME payload plus the message header."""

Frame: TypeAlias = bytes | tuple[ReplyPiece, ...]
"""A frame to send: its bytes, or pieces sent one after another (see encode_bin_message
and encode_reply); memoryviews among them are of unsigned bytes (format ``B``)."""

SEND_JOIN_MAX = 64 * 1024
"""Pieces smaller than this are joined with their neighbours into one buffer; larger
ones are sent as they are (a copy of them would cost more than a buffer more)."""
SEND_BUFFER = 4 * 1024 * 1024
"""Kernel send buffer asked for each connection (the kernel caps it at
``net.core.wmem_max``): a whole block-exchange reply fits, so a reply is written
to the socket at once rather than partly copied into the stream's buffer."""
IOV_MAX = 1024
"""Most buffers in one vectored write (Linux's IOV_MAX)."""


def _size(frame: Frame) -> int:
    return len(frame) if isinstance(frame, bytes) else sum(map(len, frame))


def _coalesce(pieces: Sequence[ReplyPiece]) -> list[ReplyPiece]:
    """The buffers to send for ``pieces``: runs of small ones joined, large ones as
    they are (no copy)."""
    out: list[ReplyPiece] = []
    run: list[ReplyPiece] = []
    for piece in pieces:
        if len(piece) < SEND_JOIN_MAX:
            run.append(piece)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run = []
        out.append(piece)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def _write_now(fd: int, buffers: list[ReplyPiece]) -> list[ReplyPiece]:
    """Write as much of ``buffers`` to the non-blocking socket ``fd`` as it takes now,
    in vectored writes (no copy, no join); return what is left (empty: all written).

    Raises:
        OSError: the write failed (connection reset, ...).
    """
    while buffers:
        batch = buffers[:IOV_MAX]
        try:
            sent = os.writev(fd, batch)
        except (BlockingIOError, InterruptedError):
            return buffers
        whole = sent == sum(map(len, batch))
        done = 0
        while done < len(batch) and sent >= len(batch[done]):
            sent -= len(batch[done])
            done += 1
        buffers = buffers[done:]
        if not whole:  # the socket's buffer is full: the rest waits
            buffers[0] = memoryview(buffers[0])[sent:]
            return buffers
    return buffers


@attrs.define(eq=False)
class _Pending:
    event: anyio.Event = attrs.Factory(anyio.Event)
    reply: bytes | None = None
    error: str | None = None


@attrs.define(eq=False)
class Connection:
    """An authenticated connection to one peer, with bounded outgoing queues.

    Three queues, drained in this order by :meth:`write_loop`: control messages
    (small; dropped past ``max_frames``), direct requests and replies (a sender
    waits for room), and broadcast frames (dropped past ``max_bytes``, to be
    repaired by IHAVE/IWANT). So a peer that reads slowly costs at most about
    ``2 * max_bytes`` of memory and never blocks a broadcast; a peer that stops
    reading for ``write_timeout`` is disconnected.
    """

    peer_id: str
    stream: anyio.abc.ByteStream
    reader: FrameReader
    outbound: bool
    remote: tuple[str, int]
    listen_addr: tuple[str, int] | None
    max_bytes: int = 8 * 1024 * 1024
    max_frames: int = 4096
    last_recv: float = 0.0
    last_sent: float = 0.0
    dropped: int = 0
    inflight: int = 0
    valid: int = 0
    """Broadcasts from this peer the node found valid, and invalid (a score)."""
    invalid: int = 0
    close_reason: str | None = None
    peer_peers: frozenset[str] | None = None
    """The peer's own peers, from its latest complete PEERS message (else None)."""
    write_since: float | None = None
    scope: anyio.CancelScope | None = None
    retiring: str | None = None
    """Why this connection is being retired (None while it is the peer's connection)."""
    retire_by: float = 0.0
    peer_retired: bool = False
    """The peer sent RETIRE: it sends no new requests on this connection."""
    closed: anyio.Event = attrs.Factory(anyio.Event)
    pending: dict[int, _Pending] = attrs.Factory(dict)
    _control: deque[bytes] = attrs.Factory(deque)
    _direct: deque[Frame] = attrs.Factory(deque)
    _bulk: deque[Frame] = attrs.Factory(deque)
    _direct_bytes: int = 0
    _bulk_bytes: int = 0
    _wake: anyio.Event = attrs.Factory(anyio.Event)
    _room: anyio.Event = attrs.Factory(anyio.Event)
    _next_request: int = 0

    @property
    def queued_bytes(self) -> int:
        return self._direct_bytes + self._bulk_bytes + sum(map(len, self._control))

    def _kick(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    @property
    def backlogged(self) -> bool:
        """More than half the broadcast queue is in use."""
        return self._bulk_bytes > self.max_bytes // 2 or len(self._bulk) > self.max_frames // 2

    def send_control(self, data: bytes) -> bool:
        """Queue a small control frame; False (dropped) if the control queue is full."""
        if self.close_reason is not None or len(self._control) >= self.max_frames:
            self.dropped += 1
            return False
        self._control.append(data)
        self._kick()
        return True

    def send_bulk(self, data: Frame) -> bool:
        """Queue a broadcast frame; False (dropped) if the peer is too far behind."""
        size = _size(data)
        if self.close_reason is not None or (
            self._bulk
            and (self._bulk_bytes + size > self.max_bytes or len(self._bulk) >= self.max_frames)
        ):
            self.dropped += 1
            return False
        self._bulk.append(data)
        self._bulk_bytes += size
        self._kick()
        return True

    async def send_direct(self, data: Frame, *, request: bool = False) -> None:
        """Queue a request or reply frame, waiting for room (the caller bounds the wait).

        Raises:
            PeerUnreachable: the connection closed.
            ConnectionRetired: ``request`` is true and the connection was retired (the request
                was not sent: it may go on the peer's current connection).
        """
        size = _size(data)
        while self._direct and self._direct_bytes + size > self.max_bytes:
            if self.close_reason is not None or (request and self.retiring is not None):
                break
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()
        if self.close_reason is not None:
            raise PeerUnreachable(f"connection to {self.peer_id} closed: {self.close_reason}")
        if request and self.retiring is not None:
            raise ConnectionRetired(f"connection to {self.peer_id} retired: {self.retiring}")
        self._direct.append(data)
        self._direct_bytes += size
        self._kick()

    async def request(self, frame: bytes, within: float) -> bytes:
        """Send a request and wait for its reply.

        Raises:
            PeerUnreachable: no reply within ``within`` seconds, the peer's handler failed,
                or the connection closed.
            ConnectionRetired: the connection was retired before the request was sent.
        """
        self._next_request += 1
        req_id = self._next_request
        pending = self.pending[req_id] = _Pending()
        try:
            with anyio.fail_after(within):
                await self.send_direct(encode_bin_message(REQUEST, req_id, frame), request=True)
                await pending.event.wait()
        except TimeoutError:
            raise PeerUnreachable(f"no reply from {self.peer_id} within {within:g}s") from None
        finally:
            self.pending.pop(req_id, None)
            if self.retiring is not None:
                self._kick()
        if pending.error is not None:
            raise PeerUnreachable(pending.error)
        assert pending.reply is not None
        return pending.reply

    def resolve(self, req_id: int, reply: bytes | None, error: str | None) -> None:
        """A REPLY or ERROR arrived for ``req_id`` (ignored if that request gave up)."""
        pending = self.pending.get(req_id)
        if pending is not None and not pending.event.is_set():
            pending.reply, pending.error = reply, error
            pending.event.set()

    def retire(self, reason: str, *, within: float) -> None:
        """Stop using this connection, and close it once the work in flight on it is done.

        Two nodes that dial each other at once end up with two connections, and both
        keep the same one. The other is retired rather than closed, so nothing in
        flight on it fails: this end tells the peer (RETIRE) and sends no new requests
        on it; it still answers the peer's requests and takes the replies to its own.
        It closes once both ends have retired it, no request of either end is
        outstanding on it and its queues are written out (TCP keeps the order, so
        every request the peer sent before its RETIRE has been answered by then),
        or after ``within`` seconds at most.
        """
        if self.close_reason is not None or self.retiring is not None:
            return
        self.retiring = reason
        self.retire_by = monotonic() + within
        # after every request already queued (the control queue is written first)
        retire = encode([RETIRE])
        self._direct.append(retire)
        self._direct_bytes += len(retire)
        self._kick()

    def on_peer_retired(self) -> None:
        """The peer sent RETIRE."""
        self.peer_retired = True
        self._kick()

    def served(self) -> None:
        """A request from the peer was answered (its reply is queued, or it gave up)."""
        self.inflight -= 1
        if self.retiring is not None:
            self._kick()

    @property
    def drained(self) -> bool:
        """Retired by both ends, with nothing outstanding and nothing left to write."""
        return (
            self.peer_retired
            and not self.pending
            and self.inflight == 0
            and not (self._control or self._direct or self._bulk)
        )

    def close(self, reason: str) -> None:
        """Close the connection: fail its pending requests, cancel its tasks."""
        if self.close_reason is None:
            self.close_reason = reason
        for pending in self.pending.values():
            self.resolve_error(pending, f"connection to {self.peer_id} lost: {reason}")
        self._room.set()
        self._kick()
        self.closed.set()
        if self.scope is not None:
            self.scope.cancel()

    @staticmethod
    def resolve_error(pending: _Pending, error: str) -> None:
        if not pending.event.is_set():
            pending.error = error
            pending.event.set()

    async def write_loop(self, *, batch: int = 256 * 1024) -> None:
        """Drain the queues into the socket until closed.

        A write that does not complete is the watchdog's business: see
        :attr:`write_since` and :meth:`check`.
        """
        # this loop is the connection's only writer once it runs (the handshake came
        # before): so the socket may be written directly while the stream is drained
        raw = self.stream.extra(SocketAttribute.raw_socket, None)
        if raw is not None:
            with contextlib.suppress(OSError):
                if raw.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < SEND_BUFFER:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        while self.close_reason is None:
            if not (self._control or self._direct or self._bulk):
                if self.retiring is not None and self.drained:
                    self.close(f"retired: {self.retiring}")
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            pieces: list[ReplyPiece] = []
            size = 0
            for queue in (self._control, self._direct, self._bulk):
                while queue and size < batch:
                    data = queue.popleft()
                    n = _size(data)
                    if isinstance(data, bytes):
                        pieces.append(data)
                    else:
                        pieces.extend(data)
                    size += n
                    if queue is self._direct:
                        self._direct_bytes -= n
                    elif queue is self._bulk:
                        self._bulk_bytes -= n
            self._room.set()
            try:
                self.write_since = monotonic()
                buffers = _coalesce(pieces)
                # while the stream holds nothing unsent (every send below returns once
                # its bytes are written), write straight to the socket, vectored: no
                # join, and no copy into the stream's buffer of what the socket takes
                fd = raw.fileno() if raw is not None else -1
                if fd >= 0:
                    buffers = _write_now(fd, buffers)
                for buffer in buffers:
                    self.write_since = monotonic()
                    await self.stream.send(buffer)  # type: ignore[arg-type]
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self.close(f"write failed: {exc!r}")
                return
            self.write_since = None
            self.last_sent = monotonic()

    def check(
        self, now: float, *, idle_timeout: float, frame_timeout: float, write_timeout: float
    ) -> str | None:
        """The watchdog: why this connection must be cut now, or None."""
        if self.retiring is not None and now >= self.retire_by:
            return f"retired ({self.retiring}), still busy past its time"
        if now - self.last_recv > idle_timeout:
            return f"peer sent nothing for {now - self.last_recv:.0f}s"
        if self.write_since is not None and now - self.write_since > write_timeout:
            return f"peer stopped reading (a write stalled for {now - self.write_since:.0f}s)"
        return self.reader.check(now, frame_timeout)
