"""Signed msgpack envelopes: how every lifecycle event crosses any transport.

A frame is ``msgpack([signed, signature])`` where ``signed`` is
``msgpack([VERSION, kind, sender_public_key, msg_id, sent_at, body])`` and the
signature is the sender's Ed25519 signature over ``signed``. The sender's node
id derives from the public key, so no key lookup is needed.

Several messages to one destination may travel in one frame, signed once: kind
:data:`BATCH`, whose body is a list of at most :data:`MAX_BATCH` msgpack-encoded
``[kind, body]`` pairs (:func:`encode_batch`, :func:`unbatch`). The envelope's
checks (signature, message id, age) then cover every message in it.

Verification costs about 100 us, and in a gossip mesh or an in-process network
every node hears every frame, so a :class:`VerifiedCache` remembers frames whose
signature already checked out. Nodes of one process share one cache (the
:class:`~bacalhau.network.Network` hands the same cache to all of them), so an
event is verified at most once per process, not once per node, and frames signed
inside the process are never verified at all.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections import OrderedDict
from typing import Any

import attrs
import msgpack

from .errors import DecodeError, WireError
from .identity import Identity, node_id_from_public_key, verify_signature

__all__ = [
    "BATCH",
    "MAX_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_FRAME",
    "Envelope",
    "VerifiedCache",
    "decode_envelope",
    "encode_batch",
    "encode_envelope",
    "unbatch",
]

VERSION = 1
MAX_EVENT_FRAME = 2 * 1024 * 1024
"""Largest event frame accepted (a job spec with 1 MiB of inline data fits)."""

BATCH = "Batch"
"""The kind of a frame that carries several messages."""
MAX_BATCH = 64
"""Most messages in one batch frame."""
MAX_BATCH_BYTES = 256 * 1024
"""A batch is closed once its messages take this many bytes (a larger message travels
alone)."""
DECODED_FRAMES = 8192
"""How many frames signed in this process a :class:`VerifiedCache` keeps decoded."""
LONE_FRAMES = 8192
"""Digests kept by the cache of a node that shares it with no other node (``bacalhau
serve``). Such a node checks each frame it receives once (gossip drops the copies
before), so its cache mostly serves its own frames coming back: 8,192 digests take about
1.2 MB, where the 65,536 of a shared cache take 10 MB, which a busy node fills over
minutes (its RSS then keeps rising that long)."""
LONE_DECODED = 1024
"""Frames a lone node's cache keeps decoded (its own, until they come back to it)."""
DECODED_MAX_BYTES = 64 * 1024
"""Larger frames are not kept decoded (the cache holds what they say in memory)."""

MAX_TIME = 2.0**40
"""Largest absolute ``sent_at`` accepted (seconds; about 35,000 years)."""

_SENDER_IDS: dict[bytes, str] = {}


def _sender_id(public: bytes) -> str:
    node_id = _SENDER_IDS.get(public)
    if node_id is None:
        node_id = node_id_from_public_key(public)
        if len(_SENDER_IDS) > 65536:
            _SENDER_IDS.clear()
        _SENDER_IDS[public] = node_id
    return node_id


@attrs.frozen(kw_only=True)
class Envelope:
    """A decoded, signature-checked frame. ``body`` is plain data (see ``models.from_data``)."""

    kind: str
    sender: str
    msg_id: bytes
    sent_at: float
    body: Any = attrs.field(eq=False, hash=False)


class VerifiedCache:
    """A bounded LRU of the digests of frames whose signatures are known good.

    Share one per process. A node also :meth:`add` s every frame it signs itself,
    so other nodes of the same process never verify it: it is exactly what a key
    whose id is inside it signed. Keys are sha256 digests (about 1 us for a small
    frame, against about 100 us for a signature check), so memory stays small
    however large the frames are.
    """

    def __init__(self, maxsize: int = 65536, *, decoded_max: int = DECODED_FRAMES) -> None:
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._decoded: OrderedDict[bytes, Any] = OrderedDict()
        self.maxsize = maxsize
        self.decoded_max = decoded_max
        self.hits = 0
        self.verifications = 0

    def add(self, frame: bytes, decoded: Any = None) -> None:
        """Remember ``frame`` as well signed (call only for frames signed here).

        ``decoded``: what the frame says, as its signer built it (kept for small frames,
        so the nodes of this process need not decode the frame again; see
        :meth:`decoded`).
        """
        digest = hashlib.sha256(frame).digest()
        self._remember(digest)
        if decoded is not None and len(frame) <= DECODED_MAX_BYTES:
            self._decoded[digest] = decoded
            if len(self._decoded) > self.decoded_max:
                self._decoded.popitem(last=False)

    def decoded(self, frame: bytes) -> Any:
        """What a frame signed in this process says (as given to :meth:`add`), or None.
        The same bytes always say the same thing, so this stands for decoding them."""
        if not self._decoded:
            return None
        return self._decoded.get(hashlib.sha256(frame).digest())

    def _remember(self, digest: bytes) -> None:
        self._digests[digest] = None
        if len(self._digests) > self.maxsize:
            self._digests.popitem(last=False)

    def check(self, frame: bytes, sender: str, signature: bytes, signed: bytes) -> bool:
        digest = hashlib.sha256(frame).digest()
        if digest in self._digests:
            self._digests.move_to_end(digest)
            self.hits += 1
            return True
        self.verifications += 1
        if not verify_signature(sender, signature, signed):
            return False
        self._remember(digest)
        return True


def unpack(data: bytes, *, max_size: int = MAX_EVENT_FRAME, use_list: bool = True) -> Any:
    """msgpack-decode untrusted ``data`` with size limits; DecodeError on anything wrong.
    With ``use_list=False`` arrays become tuples (cheaper to keep: the garbage collector
    stops tracking tuples of plain values)."""
    if len(data) > max_size:
        raise DecodeError(f"frame of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=use_list)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise DecodeError(f"malformed msgpack: {e}") from None
    except Exception as e:  # msgpack raises a few undocumented types on hostile input
        raise DecodeError(f"malformed msgpack: {type(e).__name__}: {e}") from None


def pack(data: Any) -> bytes:
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]


class _MessageIds:
    """16-byte message ids: 8 random bytes per process, then a counter (one syscall per
    process instead of one per message; unique across restarts). A forked child draws a
    fresh prefix, so parent and child never produce the same id."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = itertools.count()

    def next(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "big")


_IDS = _MessageIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.reseed)


def encode_envelope(identity: Identity, kind: str, body: Any, *, now: float) -> tuple[bytes, bytes]:
    """Sign and frame ``body``; return (frame, msg_id)."""
    msg_id = _IDS.next()
    signed = pack([VERSION, kind, identity.public_key, msg_id, now, body])
    return pack([signed, identity.sign(signed)]), msg_id


def encode_batch(identity: Identity, entries: list[bytes], *, now: float) -> tuple[bytes, bytes]:
    """Sign and frame several messages as one :data:`BATCH` frame; return (frame, msg_id).

    Args:
        entries: each message as ``pack([kind, body])`` (2 to :data:`MAX_BATCH` of
            them; the caller keeps their total within :data:`MAX_BATCH_BYTES`). A lone
            message travels in a plain envelope (:func:`encode_envelope`) instead.
    """
    if not 1 < len(entries) <= MAX_BATCH:
        raise ValueError(f"a batch holds 2 to {MAX_BATCH} messages, not {len(entries)}")
    return encode_envelope(identity, BATCH, entries, now=now)


def unbatch(env: Envelope) -> list[tuple[str, Any]]:
    """The ``(kind, body)`` messages an envelope carries (one, or a batch's).

    Raises:
        DecodeError: a malformed batch (not a list of at most :data:`MAX_BATCH`
            encoded ``[kind, body]`` pairs, or a batch inside a batch).
    """
    if env.kind != BATCH:
        return [(env.kind, env.body)]
    if not isinstance(env.body, list) or not 0 < len(env.body) <= MAX_BATCH:
        raise DecodeError(f"a batch is a list of 1 to {MAX_BATCH} messages")
    items: list[tuple[str, Any]] = []
    for entry in env.body:
        if not isinstance(entry, bytes):
            raise DecodeError("a batch entry must be an encoded [kind, body]")
        pair = unpack(entry)
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise DecodeError("a batch entry must be [kind, body]")
        kind, body = pair
        if kind == BATCH or not 0 < len(kind) <= 64:
            raise DecodeError("a batch entry's kind must be a short string, not a batch")
        items.append((kind, body))
    return items


def decode_envelope(
    frame: bytes, *, cache: VerifiedCache | None = None, max_size: int = MAX_EVENT_FRAME
) -> Envelope:
    """Check and decode one frame.

    Raises:
        DecodeError: malformed or oversized.
        WireError: the signature does not verify.
    """
    outer = unpack(frame, max_size=max_size)
    if not (
        isinstance(outer, list) and len(outer) == 2 and all(isinstance(x, bytes) for x in outer)
    ):
        raise DecodeError("an envelope is [signed bytes, signature bytes]")
    signed, signature = outer
    inner = unpack(signed, max_size=max_size)
    if not (isinstance(inner, list) and len(inner) == 6):
        raise DecodeError("signed part must be a 6-element array")
    version, kind, public, msg_id, sent_at, body = inner
    if version != VERSION:
        raise DecodeError(f"unsupported envelope version {version!r}")
    if not isinstance(kind, str) or not 0 < len(kind) <= 64:
        raise DecodeError("envelope kind must be a short string")
    if not (isinstance(public, bytes) and len(public) == 32):
        raise DecodeError("sender key must be 32 bytes")
    if not (isinstance(msg_id, bytes) and len(msg_id) == 16):
        raise DecodeError("message id must be 16 bytes")
    if (
        not isinstance(sent_at, float | int)
        or isinstance(sent_at, bool)
        or not math.isfinite(sent_at)
        or abs(sent_at) > MAX_TIME
    ):
        raise DecodeError("sent_at must be a finite time in seconds")
    if len(signature) != 64:
        raise WireError("bad signature length")
    sender = _sender_id(public)
    ok = (
        cache.check(frame, sender, signature, signed)
        if cache is not None
        else verify_signature(sender, signature, signed)
    )
    if not ok:
        raise WireError(f"bad signature on {kind} claiming to be from {sender}")
    return Envelope(kind=kind, sender=sender, msg_id=msg_id, sent_at=float(sent_at), body=body)
