"""Packets of the NATS transport: a fixed header, an optional network-secret tag, chunking.

Every NATS message the transport sends is one packet::

    header (50 bytes) | extra | body | tag (32 bytes, only on a private network)

``header`` is ``!BB32s8sHHI``: version, kind (low bits) and flags (``0x80``: a
tag follows), the sender's raw Ed25519 public key, an 8-byte message id, the
chunk index and chunk count, and the length of the whole frame. ``extra`` is
empty except on request packets: the requester's signature (64 bytes), then
the reply subject (one length byte, then ASCII) - in band, so that a request
replayed from a JetStream stream can still be checked and answered. The tag is
HMAC-SHA256, keyed from the network secret, over everything before it.

A frame larger than what one NATS message may carry (the server's
``max_payload``) goes out as several packets of one message id; a
:class:`Reassembler` puts them back together with limits on size, count and
age, so a hostile or broken sender cannot make a node hold unbounded memory.

This module is pure (no I/O, no clock): callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections import OrderedDict
from enum import IntEnum

import attrs

from ..errors import DecodeError, WireError
from .base import MAX_FRAME
from .errors import Refused

__all__ = [
    "HEADER_SIZE",
    "SIG_SIZE",
    "TAG_SIZE",
    "Kind",
    "Packet",
    "Reassembler",
    "Refused",
    "decode_packet",
    "encode_packets",
    "mac_key",
    "request_extra",
    "request_signing_bytes",
]

VERSION = 1
_HEADER = struct.Struct("!BB32s8sHHI")
HEADER_SIZE = _HEADER.size
SIG_SIZE = 64
TAG_SIZE = 32
_FLAG_TAG = 0x80
MIN_CHUNK = 512
"""No packet body is smaller than this (except the last of a frame): a bound on chunk counts."""
MAX_CHUNKS = MAX_FRAME // MIN_CHUNK + 1


class Kind(IntEnum):
    """What a packet carries."""

    BROADCAST = 1
    REQUEST = 2
    REPLY = 3
    ERROR = 4
    HELLO = 5
    HERE = 6
    BYE = 7


@attrs.frozen(kw_only=True)
class Packet:
    """One decoded packet (one NATS message)."""

    kind: Kind
    sender_key: bytes
    msg_id: bytes
    index: int
    count: int
    total: int
    extra: bytes
    body: bytes

    @property
    def signature(self) -> bytes:
        """A request's signature (empty on other kinds)."""
        return self.extra[:SIG_SIZE]

    @property
    def reply(self) -> str:
        """A request's reply subject (empty on other kinds)."""
        return self.extra[SIG_SIZE + 1 :].decode("ascii")


def mac_key(secret: bytes | str, *, network: str = "bacalhau.default") -> bytes:
    """The HMAC key derived from a network secret (never the secret itself on the wire).

    The secret becomes a network key first (:func:`~bacalhau.transport.secret.parse_secret`:
    a generated 256-bit key as it is, a passphrase stretched by scrypt salted with the
    ``network`` name), because anyone who can subscribe on the NATS server sees the tags.
    """
    from .secret import parse_secret

    return parse_secret(secret, network=network).derive("nats-mac/v1")


def request_signing_bytes(dst_key: bytes, msg_id: bytes, reply: str, frame: bytes) -> bytes:
    """What a requester signs: the receiver, the message id, the reply subject, the frame hash."""
    return b"".join(
        (
            b"bacalhau/nats/request/v1\x00",
            dst_key,
            msg_id,
            reply.encode(),
            hashlib.sha256(frame).digest(),
        )
    )


def request_extra(signature: bytes, reply: str) -> bytes:
    """The ``extra`` of a request packet: signature, then the reply subject."""
    raw = reply.encode("ascii")
    if len(signature) != SIG_SIZE or not 0 < len(raw) < 256:
        raise WireError("a request needs a 64-byte signature and a reply subject under 256 bytes")
    return signature + bytes([len(raw)]) + raw


def encode_packets(
    kind: Kind,
    sender_key: bytes,
    msg_id: bytes,
    frame: bytes,
    *,
    max_packet: int,
    key: bytes | None,
    extra: bytes = b"",
) -> list[bytes]:
    """Split ``frame`` into packets of at most ``max_packet`` bytes each.

    Raises:
        WireError: ``max_packet`` leaves less than ``MIN_CHUNK`` bytes of body.
    """
    overhead = HEADER_SIZE + len(extra) + (TAG_SIZE if key else 0)
    chunk = max_packet - overhead
    if chunk < MIN_CHUNK:
        raise WireError(
            f"a NATS max_payload of {max_packet} bytes is too small (need {overhead + MIN_CHUNK})"
        )
    total = len(frame)
    count = max(1, math.ceil(total / chunk))
    flags = int(kind) | (_FLAG_TAG if key else 0)
    view = memoryview(frame)
    packets = []
    for index in range(count):
        head = _HEADER.pack(VERSION, flags, sender_key, msg_id, index, count, total)
        data = b"".join((head, extra, view[index * chunk : (index + 1) * chunk]))
        if key is not None:
            data += hmac.digest(key, data, "sha256")
        packets.append(data)
    return packets


def decode_packet(data: bytes, *, key: bytes | None) -> Packet:
    """Check and parse one packet.

    Raises:
        Refused: the network-secret tag is missing, wrong, or present while this node has no secret.
        DecodeError: the packet is malformed.
    """
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"NATS packet of {len(data)} bytes is shorter than its header")
    version, flags, sender_key, msg_id, index, count, total = _HEADER.unpack_from(data)
    if version != VERSION:
        raise DecodeError(f"unsupported NATS packet version {version}")
    tagged = bool(flags & _FLAG_TAG)
    if key is None:
        if tagged:
            raise Refused("packet is from a private network (it carries a network-secret tag)")
        end = len(data)
    else:
        if not tagged or len(data) < HEADER_SIZE + TAG_SIZE:
            raise Refused("packet carries no network-secret tag")
        end = len(data) - TAG_SIZE
        if not hmac.compare_digest(hmac.digest(key, data[:end], "sha256"), data[end:]):
            raise Refused("packet's network-secret tag is wrong")
    try:
        kind = Kind(flags & 0x7F)
    except ValueError:
        raise DecodeError(f"unknown NATS packet kind {flags & 0x7F}") from None
    extra_len = 0
    if kind is Kind.REQUEST:
        if end < HEADER_SIZE + SIG_SIZE + 1:
            raise DecodeError("NATS request packet is too short for its signature")
        extra_len = SIG_SIZE + 1 + data[HEADER_SIZE + SIG_SIZE]
        reply = data[HEADER_SIZE + SIG_SIZE + 1 : HEADER_SIZE + extra_len]
        if end < HEADER_SIZE + extra_len or not reply.isascii() or b" " in reply:
            raise DecodeError("NATS request packet has a bad reply subject")
    if not (0 < count <= MAX_CHUNKS and index < count and total <= MAX_FRAME):
        raise DecodeError(f"bad chunking: {index}/{count} of a {total}-byte frame")
    return Packet(
        kind=kind,
        sender_key=sender_key,
        msg_id=msg_id,
        index=index,
        count=count,
        total=total,
        extra=data[HEADER_SIZE : HEADER_SIZE + extra_len],
        body=data[HEADER_SIZE + extra_len : end],
    )


@attrs.define
class _Partial:
    count: int
    total: int
    started: float
    parts: dict[int, bytes] = attrs.Factory(dict)
    size: int = 0


PartKey = tuple[str, bytes, bytes]
"""(path, sender key, message id): one frame being reassembled."""


@attrs.define(kw_only=True)
class Reassembler:
    """Puts chunked frames back together.

    Limits: at most ``per_sender`` frames in progress per (path, sender), at most
    ``max_bytes`` declared bytes in progress overall (the oldest frame is dropped
    to make room), and a frame not complete within ``timeout`` seconds is dropped.
    ``path`` keeps apart copies of one frame that arrive by different routes
    (core NATS and a JetStream consumer).
    """

    timeout: float = 30.0
    per_sender: int = 8
    max_bytes: int = 8 * MAX_FRAME
    _partials: OrderedDict[PartKey, _Partial] = attrs.Factory(OrderedDict)
    _bytes: int = 0
    dropped: int = 0

    @property
    def pending(self) -> int:
        """Frames in progress."""
        return len(self._partials)

    def add(self, path: str, packet: Packet, now: float) -> bytes | None:
        """Add one packet; return the whole frame once its last packet is in, else None.

        Raises:
            DecodeError: the packet contradicts earlier packets of its frame, or sizes are wrong.
        """
        if packet.count == 1:
            if len(packet.body) != packet.total:
                raise DecodeError("single-packet frame length does not match its header")
            return packet.body
        self.expire(now)
        key = (path, packet.sender_key, packet.msg_id)
        partial = self._partials.get(key)
        if partial is None:
            self._make_room(path, packet.sender_key, packet.total)
            partial = self._partials[key] = _Partial(packet.count, packet.total, now)
            self._bytes += packet.total
        elif (partial.count, partial.total) != (packet.count, packet.total):
            self._drop(key)
            raise DecodeError("chunk disagrees with earlier chunks of its frame")
        if packet.index in partial.parts:
            return None
        partial.parts[packet.index] = packet.body
        partial.size += len(packet.body)
        if partial.size > partial.total:
            self._drop(key)
            raise DecodeError("chunks add up to more than the frame's declared length")
        if len(partial.parts) < partial.count:
            return None
        self._drop(key, complete=True)
        if partial.size != partial.total:
            raise DecodeError("chunks add up to less than the frame's declared length")
        return b"".join(partial.parts[i] for i in range(partial.count))

    def expire(self, now: float) -> None:
        """Drop frames older than ``timeout``."""
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if now - partial.started < self.timeout:
                break
            self._drop(key)

    def _make_room(self, path: str, sender: bytes, size: int) -> None:
        mine = [k for k in self._partials if k[0] == path and k[1] == sender]
        while len(mine) >= self.per_sender:
            self._drop(mine.pop(0))
        while self._partials and self._bytes + size > self.max_bytes:
            self._drop(next(iter(self._partials)))

    def _drop(self, key: PartKey, *, complete: bool = False) -> None:
        partial = self._partials.pop(key, None)
        if partial is not None:
            self._bytes -= partial.total
            if not complete:
                self.dropped += 1
