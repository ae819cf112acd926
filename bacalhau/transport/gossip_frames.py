"""Frames of the gossip transport: length-prefixed msgpack, read and written with
as few copies as the bytes allow.

Every frame is a 4-byte big-endian length followed by that many bytes of
msgpack. The bulk of the bytes a node moves are the payloads of three messages,
``[PUBLISH, frame, first_hop]``, ``[REQUEST, req_id, frame]`` and
``[REPLY, req_id, frame]``, so those have a path of their own in both directions:

* sending (:func:`encode_bin_message`, :func:`encode_reply` for a reply in
  pieces): the length prefix and msgpack header are written in front of the
  payload, which is queued and sent as it is; no ``msgpack.packb`` copy and no
  concatenation. The bytes on the wire are exactly
  those ``msgpack.packb`` writes (a test holds them equal).
* receiving (:meth:`FrameReader.read_message`): received chunks are kept as they
  arrived and a frame is cut from them as views; when its msgpack header shows
  one of those three messages, the payload is joined out of the views in one copy
  and the header checked by hand. Anything else, or anything that does not match
  the expected shape byte for byte, goes through ``msgpack.unpackb`` and its
  checks, so a peer cannot reach a different result through the fast path. On a
  connection read directly (:meth:`FrameReader.read_directly`, the gossip
  transport after its handshake) a large request or reply is read straight into
  its payload instead, which then needs no join.

Size limits are checked on the length prefix before any of the frame is
buffered, as before.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
from collections import deque
from collections.abc import Sequence, Sized
from io import BytesIO
from time import monotonic
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import msgpack
from anyio.abc import SocketAttribute

from ..errors import DecodeError, WireError
from .base import ReplyPiece
from .errors import ConnectionClosed

__all__ = [
    "FrameReader",
    "decode",
    "decode_parts",
    "encode",
    "encode_bin_message",
    "encode_reply",
]

(
    PUBLISH,
    IHAVE,
    IWANT,
    GRAFT,
    PRUNE,
    PING,
    PEERS,
    REQUEST,
    REPLY,
    ERROR,
    BYE,
    IDONTWANT,
    RETIRE,
) = range(1, 14)
MESSAGE_TYPES = frozenset(range(1, 14))

HEADER = 4
"""Bytes of the length prefix."""
RECEIVE_SIZE = 256 * 1024
"""Bytes asked of the stream per receive (asyncio reads at most this much at once)."""
DIRECT_MAX = 1024 * 1024
"""Most bytes asked of the socket per direct read (see :meth:`FrameReader.read_directly`)."""
PAYLOAD_MIN = 128 * 1024
"""A request or reply frame at least this large is read straight into its payload
(see :meth:`FrameReader.read_directly`)..."""
PAYLOAD_AHEAD = 1024 * 1024
"""... when at most this much of it has not arrived yet: a peer cannot make us hold
more memory than it sent plus this, per connection, by announcing a large frame."""
FAST_MIN = 2048
"""Frames at least this large take the by-hand path (smaller ones: msgpack is faster)."""

_TRUE, _FALSE = b"\xc3", b"\xc2"


def encode(message: list[Any]) -> bytes:
    """Length-prefix the msgpack encoding of ``message``."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return len(body).to_bytes(HEADER, "big") + body


def _uint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value < 0x100:
        return b"\xcc" + value.to_bytes(1, "big")
    if value < 0x10000:
        return b"\xcd" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\xce" + value.to_bytes(4, "big")
    return b"\xcf" + value.to_bytes(8, "big")


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode_bin_message(kind: int, arg: int | bool, payload: bytes) -> tuple[bytes, ...]:
    """The frame of ``[kind, arg, payload]`` (REQUEST or REPLY, ``arg`` the request
    id) or ``[PUBLISH, payload, arg]`` (``arg`` first_hop), as pieces to send one
    after another: the same bytes as :func:`encode`, without copying ``payload``.

    Raises:
        ValueError: an unsupported message type, or a negative request id.
    """
    if kind == PUBLISH and isinstance(arg, bool):
        head = b"\x93\x01" + _bin_header(len(payload))
        tail = _TRUE if arg else _FALSE
        size = len(head) + len(payload) + 1
        return (size.to_bytes(HEADER, "big") + head, payload, tail)
    if kind in (REQUEST, REPLY) and not isinstance(arg, bool) and 0 <= arg < 2**64:
        head = bytes((0x93, kind)) + _uint(arg) + _bin_header(len(payload))
        size = len(head) + len(payload)
        return (size.to_bytes(HEADER, "big") + head, payload)
    raise ValueError(f"no by-hand encoding for message type {kind} with {arg!r}")


def encode_reply(req_id: int, pieces: Sequence[ReplyPiece], size: int) -> tuple[ReplyPiece, ...]:
    """The frame of ``[REPLY, req_id, payload]`` for a payload given as ``pieces`` of
    ``size`` bytes in all: the header, then the pieces as they are (not joined). The
    same bytes as :func:`encode` of the joined payload.

    Raises:
        ValueError: a negative request id.
    """
    if not 0 <= req_id < 2**64:
        raise ValueError(f"no by-hand encoding for request id {req_id!r}")
    head = bytes((0x93, REPLY)) + _uint(req_id) + _bin_header(size)
    return ((len(head) + size).to_bytes(HEADER, "big") + head, *pieces)


def decode(frame: bytes | bytearray | memoryview) -> list[Any]:
    """Decode one post-handshake frame into ``[type, ...]``.

    Raises:
        DecodeError: not msgpack, not an array, or an unknown message type.
    """
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types on hostile input
        raise DecodeError(f"malformed msgpack frame ({type(exc).__name__}: {exc})") from None
    if not (isinstance(msg, list) and msg and type(msg[0]) is int and msg[0] in MESSAGE_TYPES):
        raise DecodeError("frame is not a [type, ...] array of a known message type")
    return msg


def _join(parts: list[memoryview], start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` of the concatenation of ``parts``, copied once."""
    pieces: list[memoryview] = []
    offset = 0
    for part in parts:
        end = offset + len(part)
        if end > start and offset < stop:
            pieces.append(part[max(start - offset, 0) : min(stop, end) - offset])
        if end >= stop:
            break
        offset = end
    if len(pieces) == 1:
        whole = pieces[0].obj
        if type(whole) is bytes and len(whole) == pieces[0].nbytes:
            return whole  # all of one bytes object (a payload read in place): no copy
        return pieces[0].tobytes()
    return b"".join(pieces)


def _layout(head: bytes, size: int) -> tuple[int, int, int, int] | None:
    """Where the payload of a ``[PUBLISH|REQUEST|REPLY, ...]`` frame of ``size``
    bytes lies, from its first bytes ``head``: (kind, arg, start, stop) with arg
    the request id, or for PUBLISH the first_hop flag's offset. None: not of that
    exact shape (the caller decodes it with msgpack instead)."""
    if len(head) < 3 or head[0] != 0x93:
        return None
    kind = head[1]
    pos = 2
    arg = 0
    if kind in (REQUEST, REPLY):
        tag = head[2]
        if tag < 0x80:
            arg, pos = tag, 3
        else:
            width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(tag)
            if width is None or len(head) < 3 + width:
                return None
            arg, pos = int.from_bytes(head[3 : 3 + width], "big"), 3 + width
    elif kind != PUBLISH:
        return None
    if len(head) < pos + 1:
        return None
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(head[pos])
    if width is None or len(head) < pos + 1 + width:
        return None
    length = int.from_bytes(head[pos + 1 : pos + 1 + width], "big")
    start = pos + 1 + width
    stop = start + length
    if kind == PUBLISH:
        if stop + 1 != size:  # exactly one byte, the flag, must follow
            return None
        return kind, stop, start, stop
    if stop != size:
        return None
    return kind, arg, start, stop


def decode_parts(parts: list[memoryview]) -> list[Any]:
    """Decode a frame given as consecutive pieces (see :func:`decode`), copying a
    large PUBLISH/REQUEST/REPLY payload once and nothing else of it.

    Raises:
        DecodeError: as :func:`decode`.
    """
    size = sum(len(p) for p in parts)
    if size >= FAST_MIN:
        first = parts[0]
        head = first[:16].tobytes() if len(first) >= 16 else _join(parts, 0, min(16, size))
        layout = _layout(head, size)
        if layout is not None:
            kind, arg, start, stop = layout
            payload = _join(parts, start, stop)
            if kind != PUBLISH:
                return [kind, arg, payload]
            flag = _join(parts, arg, arg + 1)
            if flag in (_TRUE, _FALSE):
                return [kind, payload, flag == _TRUE]
    return decode(parts[0] if len(parts) == 1 else _join(parts, 0, size))


@attrs.define(eq=False)
class FrameReader:
    """Reads length-prefixed frames from a byte stream, with a size limit.

    Received chunks are kept as they arrived (no growing buffer); a frame is cut
    from them as views and copied once, when it is decoded.

    Time limits are the caller's: :attr:`partial_since` tells since when a
    begun frame has been incomplete (None between frames), so a watchdog can
    cut off a peer that trickles bytes (slow-loris) without a cancel scope per
    frame on the hot path.

    After :meth:`read_directly`, bytes already waiting in the socket are taken
    from it straight away, and the stream is only awaited when there are none.
    """

    stream: anyio.abc.ByteReceiveStream
    partial_since: float | None = None
    _chunks: deque[memoryview] = attrs.Factory(deque)
    _have: int = 0
    _sock: Any = None
    """The stream's socket (asyncio hands out a wrapper: only its ``fileno`` is used)."""
    _held: Sized = ()
    """What the stream has received and not handed out yet (read before the socket)."""
    _reads: int = 0
    """Direct reads so far (with :attr:`_awaits`: whether a frame came without an await)."""
    _awaits: int = 0

    def read_directly(self) -> bool:
        """Take waiting bytes from the socket itself, not through the stream, from now
        on; returns whether this is done (else frames are read as before).

        anyio's asyncio socket stream reads a socket in 256 KiB chunks and pauses
        and resumes the socket's reader around every ``receive``: two ``epoll_ctl``
        calls, an event and a task switch per chunk. Reading the (non-blocking)
        socket directly while it has bytes costs one ``recv`` per up to
        :data:`DIRECT_MAX`; only when it has none is the stream awaited. The byte
        order is kept: what the stream has received (its queue) always came before
        what is still in the socket, and the socket is read only when that queue is
        empty (checked and read with no await between). This looks at the stream's
        queue, an anyio detail, so it is done only where that queue is found; the
        caller must be the stream's only reader.

        A ``REQUEST`` or ``REPLY`` frame of :data:`PAYLOAD_MIN` bytes or more is
        then read into its payload's own buffer, the socket writing into it
        directly: no chunk to allocate and no join (the payload is a ``bytes``
        made from an :class:`io.BytesIO` without a copy), when no more than
        :data:`PAYLOAD_AHEAD` of it is still to come. A read cancelled in the
        middle of such a payload loses the frame: after a cancellation the
        connection must be dropped (the gossip read loop is cancelled only then).
        """
        sock = getattr(self.stream, "extra", lambda *_: None)(SocketAttribute.raw_socket, None)
        held = getattr(getattr(self.stream, "_protocol", None), "read_queue", None)
        if sock is None or not isinstance(held, deque):
            return False
        try:
            if sock.type != socket.SOCK_STREAM or sock.gettimeout() != 0.0:
                return False  # only a non-blocking stream socket: a read must never block
        except (AttributeError, OSError):
            return False
        self._sock, self._held = sock, held
        return True

    def _recv_now(self, size: int) -> bytes | None:
        """Bytes the socket has right now (at most ``size``), or None: nothing waiting,
        or the stream must be asked (it holds bytes, or the socket is at EOF or
        failed: the stream then reports it as it would have)."""
        if self._sock is None or self._held:
            return None
        fd = self._sock.fileno()  # -1 once the stream closed it (asked afresh each time)
        if fd < 0:
            return None
        try:
            data = os.read(fd, min(size, DIRECT_MAX))
        except OSError:  # BlockingIOError: nothing waiting; others: the stream says
            return None
        return data or None  # b"": EOF, which the stream sees as well

    def _readinto_now(self, target: memoryview) -> int:
        """Like :meth:`_recv_now`, into ``target``: how many bytes came (0: none now,
        or the stream must be asked)."""
        if self._sock is None or self._held:
            return 0
        fd = self._sock.fileno()
        if fd < 0:
            return 0
        try:
            return os.readv(fd, [target])
        except OSError:
            return 0

    def _queued(self) -> int:
        """Bytes waiting in the socket (0 when unknown)."""
        fd = self._sock.fileno() if self._sock is not None else -1
        if fd < 0:
            return 0
        try:
            got = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", got)[0])

    async def _payload(self, size: int, begun: int) -> bytes:
        """The next ``size`` bytes (a frame's payload, of which ``begun`` bytes came
        before), read in place: first what is buffered, then what the socket has,
        and only when it has nothing, what the stream receives."""
        out = BytesIO()
        out.seek(size - 1)
        out.write(b"\0")
        pos = 0
        with out.getbuffer() as view:
            while pos < size:
                if self._have:
                    for piece in self._pop(min(self._have, size - pos)):
                        view[pos : pos + len(piece)] = piece
                        pos += len(piece)
                    continue
                got = self._readinto_now(view[pos:])
                if got:
                    pos += got
                    self._reads += 1
                    continue
                if self.partial_since is None:
                    self.partial_since = monotonic()
                try:
                    await self._fill(1)
                except ConnectionClosed:
                    raise ConnectionClosed(
                        f"connection closed mid-frame ({begun + pos} of {begun + size}"
                        " bytes received)"
                    ) from None
        return out.getvalue()  # the buffer itself, not a copy (no view of it is left)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a frame."""
        return self._have

    async def _fill(self, size: int) -> None:
        """Receive until ``size`` bytes are buffered."""
        while self._have < size:
            if self._have and self.partial_since is None:
                self.partial_since = monotonic()
            want = max(RECEIVE_SIZE, size - self._have)
            chunk = self._recv_now(want)
            if chunk is not None:
                self._reads += 1
            else:
                self._awaits += 1
                try:
                    chunk = await self.stream.receive(want)
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    if self._have:
                        raise ConnectionClosed(
                            f"connection closed mid-frame ({self._have} of {size} bytes received)"
                        ) from None
                    raise ConnectionClosed("connection closed by peer") from None
            if chunk:
                self._chunks.append(memoryview(chunk))
                self._have += len(chunk)

    def _pop(self, n: int) -> list[memoryview]:
        """Take the first ``n`` buffered bytes off the front, as views (no copy)."""
        out: list[memoryview] = []
        chunks = self._chunks
        self._have -= n
        while n:
            first = chunks[0]
            if len(first) <= n:
                chunks.popleft()
                out.append(first)
                n -= len(first)
            else:
                out.append(first[:n])
                chunks[0] = first[n:]
                n = 0
        return out

    def _peek(self, n: int) -> bytes:
        """The first ``n`` buffered bytes (a small copy; there must be that many)."""
        first = self._chunks[0]
        if len(first) >= n:
            return first[:n].tobytes()
        out = bytearray()
        for chunk in self._chunks:
            out += chunk[: n - len(out)]
            if len(out) == n:
                break
        return bytes(out)

    async def _frame(self, max_size: int) -> list[memoryview]:
        reads, awaits = self._reads, self._awaits
        if self._have < HEADER:
            await self._fill(HEADER)
        size = int.from_bytes(self._peek(HEADER), "big")
        if size > max_size:
            raise WireError(f"frame of {size} bytes exceeds the {max_size}-byte limit")
        parts: list[memoryview] | None = None
        if self._sock is not None and size >= PAYLOAD_MIN and self._have < HEADER + size:
            await self._fill(HEADER + 16)  # the msgpack head: where the payload starts
            layout = _layout(self._peek(HEADER + 16)[HEADER:], size)
            ahead = HEADER + size - self._have - self._queued()
            if layout is not None and layout[0] in (REQUEST, REPLY) and ahead <= PAYLOAD_AHEAD:
                start = layout[2]
                self._pop(HEADER)
                parts = self._pop(start)
                parts.append(memoryview(await self._payload(size - start, HEADER + start)))
        if parts is None:
            if self._have < HEADER + size:
                await self._fill(HEADER + size)
            self._pop(HEADER)
            parts = self._pop(size) if size else [memoryview(b"")]
        if self._reads != reads and self._awaits == awaits:
            # all of it was taken from the socket without an await: one checkpoint, so
            # a peer that keeps the socket full cannot starve the other tasks
            await anyio.lowlevel.checkpoint()
        self.partial_since = monotonic() if self._have else None
        return parts

    async def read(self, *, max_size: int) -> bytes:
        """Read one frame's bytes.

        Args:
            max_size: largest frame accepted; a larger length is refused at once.

        Raises:
            WireError: oversized frame, or the peer closed the connection.
        """
        parts = await self._frame(max_size)
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    async def read_message(self, *, max_size: int) -> list[Any]:
        """Read and decode one post-handshake frame (see :func:`decode_parts`).

        Raises:
            WireError: oversized frame, the peer closed the connection, or
                (:class:`DecodeError`) a malformed frame.
        """
        return decode_parts(await self._frame(max_size))

    def check(self, now: float, frame_timeout: float) -> str | None:
        """Why the connection must be cut (a frame begun too long ago), or None."""
        since = self.partial_since
        if since is not None and now - since > frame_timeout:
            return (
                f"frame not complete within {frame_timeout:g}s ({self._have} bytes of it received)"
            )
        return None
