"""The bytes of the block exchange's ``want`` reply, written and read without
copying the blocks.

A reply is the msgpack map ``{"blocks": [[cid, data], ...], "missing": [cid, ...]}``.
:func:`want_reply_pieces` writes exactly what ``msgpack.packb`` writes, as
pieces with each block a piece of its own, not copied (:func:`pack_want_reply`
joins them). :func:`parse_want_reply` reads that exact layout
and gives each block as a view into the reply (no copy); anything else, a reply
laid out another way or a malformed one, is left to the caller's
``msgpack.unpackb`` and its checks (it returns None), so a peer reaches the same
result whichever path its bytes take.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pack_want_reply", "parse_want_reply", "want_reply_pieces"]

_BLOCKS = b"\xa6blocks"
_MISSING = b"\xa7missing"
_HEAD = 1 + len(_BLOCKS)


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _array_header(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def want_reply_pieces(
    blocks: Sequence[tuple[bytes, bytes]], missing: Sequence[bytes]
) -> list[bytes]:
    """``{"blocks": [[cid, data], ...], "missing": [cid, ...]}`` in msgpack, exactly as
    ``msgpack.packb`` writes it, as pieces to send one after another: each block's
    bytes are a piece of their own (not copied), the framing between them small
    pieces."""
    parts = [b"\x82" + _BLOCKS + _array_header(len(blocks))]
    for cid, data in blocks:
        parts += (b"\x92" + _bin_header(len(cid)) + cid + _bin_header(len(data)), data)
    tail = [_MISSING, _array_header(len(missing))]
    for cid in missing:
        tail += (_bin_header(len(cid)), cid)
    parts.append(b"".join(tail))
    return parts


def pack_want_reply(blocks: Sequence[tuple[bytes, bytes]], missing: Sequence[bytes]) -> bytes:
    """:func:`want_reply_pieces` joined: the block bytes copied once (one join) rather
    than through a growing buffer."""
    return b"".join(want_reply_pieces(blocks, missing))


class _Short(Exception):
    """The reply is not of the expected layout."""


def _array(view: memoryview, pos: int) -> tuple[int, int]:
    tag = view[pos]
    if 0x90 <= tag <= 0x9F:
        return tag & 0x0F, pos + 1
    if tag == 0xDC and pos + 3 <= len(view):
        return int.from_bytes(view[pos + 1 : pos + 3], "big"), pos + 3
    raise _Short


def _bin(view: memoryview, pos: int) -> tuple[memoryview, int]:
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(view[pos])
    if width is None:
        raise _Short
    start = pos + 1 + width
    stop = start + int.from_bytes(view[pos + 1 : start], "big")
    if stop > len(view):
        raise _Short
    return view[start:stop], stop


def parse_want_reply(
    reply: bytes, *, max_items: int
) -> tuple[list[tuple[bytes, memoryview]], list[bytes]] | None:
    """The blocks (``(cid, view of its bytes)``) and missing CIDs of a reply laid
    out as :func:`pack_want_reply` writes it; None for any other bytes (decode those
    with msgpack). The CIDs are not checked here; the caller checks them as it
    would a msgpack-decoded reply.

    Args:
        max_items: a reply listing more blocks, or more missing CIDs, is None.
    """
    view = memoryview(reply)
    try:
        if view[:_HEAD] != b"\x82" + _BLOCKS:
            return None
        count, pos = _array(view, _HEAD)
        if count > max_items:
            return None
        blocks: list[tuple[bytes, memoryview]] = []
        for _ in range(count):
            if view[pos] != 0x92:
                return None
            cid, pos = _bin(view, pos + 1)
            data, pos = _bin(view, pos)
            blocks.append((cid.tobytes(), data))
        if view[pos : pos + len(_MISSING)] != _MISSING:
            return None
        count, pos = _array(view, pos + len(_MISSING))
        if count > max_items:
            return None
        missing: list[bytes] = []
        for _ in range(count):
            cid, pos = _bin(view, pos)
            missing.append(cid.tobytes())
    except (_Short, IndexError):
        return None
    return (blocks, missing) if pos == len(view) else None
