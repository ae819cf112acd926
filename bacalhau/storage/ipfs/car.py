"""CAR (Content Addressable aRchive) import and export of whole DAGs.

CARv1 (https://ipld.io/specs/transport/car/carv1/) is what ``ipfs dag export``
writes and ``ipfs dag import`` reads::

    varint(len(header)) || dag-cbor {"roots": [CID, ...], "version": 1}
    then per block: varint(len(cid) + len(data)) || cid || data

Export writes blocks depth-first from each root, each block once. Import reads
CARv1 and CARv2 (the v1 payload inside it), checks every block's hash before
storing it, and pins the roots. Both stream: one block in memory at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread

from ...cid import (
    AnyCid,
    block_digest_ok,
    cid_str,
    decode_varint,
    encode_varint,
    split_cid,
    to_cid,
)
from ...errors import BlockNotFound, CorruptBlock, DecodeError, StorageError
from .blockstore import BlockStore, links_of

__all__ = ["MAX_IMPORT_BLOCKS", "MAX_SECTION", "export_car", "import_car", "iter_car", "write_car"]

MAX_HEADER = 1024 * 1024
MAX_SECTION = 8 * 1024 * 1024
"""Largest block section accepted on import (Kubo's blocks are at most 2 MiB)."""

_V2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if value < 1 << (8 * struct.calcsize(fmt)):
            return bytes((major << 5 | extra,)) + struct.pack(fmt, value)
    raise ValueError("value too large for CBOR")


def encode_header(roots: Sequence[bytes]) -> bytes:
    """The dag-cbor CARv1 header (canonical: keys ``roots`` then ``version``)."""
    out = bytearray(b"\xa2" + _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots)))
    for root in roots:
        body = b"\x00" + root
        out += b"\xd8\x2a" + _cbor_head(2, len(body)) + body
    out += _cbor_head(3, 7) + b"version" + b"\x01"
    return bytes(out)


def _cbor_decode(data: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
    if depth > 8:
        raise ValueError("CBOR nested too deeply")
    if pos >= len(data):
        raise ValueError("truncated CBOR")
    first = data[pos]
    major, info = first >> 5, first & 31
    pos += 1
    if info < 24:
        value = info
    elif info <= 27:
        n = 1 << (info - 24)
        if pos + n > len(data):
            raise ValueError("truncated CBOR")
        value = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        raise ValueError("indefinite-length CBOR is not dag-cbor")
    if major == 0:
        return value, pos
    if major == 1:
        return -1 - value, pos
    if major in (2, 3):
        if pos + value > len(data):
            raise ValueError("truncated CBOR string")
        raw = data[pos : pos + value]
        return (raw if major == 2 else raw.decode("utf-8")), pos + value
    if major == 4:
        items = []
        for _ in range(value):
            item, pos = _cbor_decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        out: dict[Any, Any] = {}
        for _ in range(value):
            key, pos = _cbor_decode(data, pos, depth + 1)
            out[key] = None
            out[key], pos = _cbor_decode(data, pos, depth + 1)
        return out, pos
    if major == 6:
        inner, pos = _cbor_decode(data, pos, depth + 1)
        if value == 42:
            if not isinstance(inner, bytes) or not inner.startswith(b"\x00"):
                raise ValueError("bad CID in CBOR tag 42")
            return ("cid", inner[1:]), pos
        return inner, pos
    if major == 7 and value in (20, 21, 22):
        return {20: False, 21: True, 22: None}[value], pos
    raise ValueError(f"unsupported CBOR item 0x{first:02x}")


def decode_header(data: bytes) -> list[bytes]:
    """Roots of a CARv1 header.

    Raises:
        DecodeError: not a CARv1 header.
    """
    try:
        header, end = _cbor_decode(data, 0)
        if end != len(data) or not isinstance(header, dict):
            raise ValueError("header is not a single map")
        if header.get("version") != 1:
            raise ValueError(f"unsupported CAR version {header.get('version')!r}")
        roots = header.get("roots")
        if not isinstance(roots, list):
            raise ValueError("header has no roots list")
        out = []
        for root in roots:
            if not (isinstance(root, tuple) and root[0] == "cid"):
                raise ValueError("a root is not a CID")
            split_cid(root[1])
            out.append(root[1])
        return out
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a CAR header: {exc}") from None


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise DecodeError("CAR truncated inside a block")
    return data


def _cid_prefix_len(section: bytes) -> int:
    if len(section) >= 34 and section[0] == 0x12 and section[1] == 0x20:
        return 34
    _, pos = decode_varint(section, 0)  # version
    _, pos = decode_varint(section, pos)  # codec
    _, pos = decode_varint(section, pos)  # hash function
    length, pos = decode_varint(section, pos)
    if pos + length > len(section):
        raise ValueError("CID runs past its section")
    return pos + length


def iter_car(fh: BinaryIO) -> tuple[list[bytes], Iterator[tuple[bytes, bytes]]]:
    """``(roots, blocks)`` of a CARv1 or CARv2 stream; blocks are *not* verified.

    Raises:
        DecodeError: malformed (raised lazily by the iterator for later sections).
    """
    start = fh.read(len(_V2_PRAGMA))
    limit: int | None = None
    if start == _V2_PRAGMA:
        fixed = _read_exact(fh, 40)
        data_offset, data_size = struct.unpack_from("<QQ", fixed, 16)
        if not len(_V2_PRAGMA) + 40 <= data_offset < 2**62 or data_size >= 2**62:
            raise DecodeError(
                f"CARv2 header points outside the file (data at {data_offset}, {data_size} bytes)"
            )
        fh.seek(data_offset)
        limit = data_size
        start = b""
    consumed = 0

    def read(n: int) -> bytes:
        nonlocal start, consumed
        take, start = start[:n], start[n:]
        if len(take) < n:
            take += fh.read(n - len(take))
        consumed += len(take)
        return take

    def varint() -> int | None:
        value = shift = 0
        for i in range(10):
            if limit is not None and consumed >= limit:
                return None if i == 0 else _raise("CAR truncated inside a length prefix")
            byte = read(1)
            if not byte:
                return None if i == 0 else _raise("CAR truncated inside a length prefix")
            value |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                return value
            shift += 7
        raise DecodeError("CAR length prefix too long")

    header_len = varint()
    if header_len is None or not 0 < header_len <= MAX_HEADER:
        raise DecodeError("not a CAR file: missing or oversized header")
    header = read(header_len)
    if len(header) != header_len:
        raise DecodeError("CAR truncated inside its header")
    roots = decode_header(header)

    def blocks() -> Iterator[tuple[bytes, bytes]]:
        while True:
            length = varint()
            if length is None:
                return
            if not 0 < length <= MAX_SECTION:
                raise DecodeError(f"CAR section of {length} bytes (limit {MAX_SECTION})")
            section = read(length)
            if len(section) != length:
                raise DecodeError("CAR truncated inside a block")
            try:
                n = _cid_prefix_len(section)
                cid = section[:n]
                split_cid(cid)
            except (ValueError, IndexError):
                raise DecodeError("CAR section does not start with a valid CID") from None
            yield cid, section[n:]

    return roots, blocks()


def _raise(message: str) -> int:
    raise DecodeError(message)


def write_car(store: BlockStore, roots: Sequence[AnyCid], fh: BinaryIO) -> int:
    """Write the DAGs under ``roots`` from ``store`` to ``fh`` as CARv1; return the block count.

    Raises:
        BlockNotFound: a block of the DAG is not stored.
    """
    raw_roots = [to_cid(r) for r in roots]
    header = encode_header(raw_roots)
    fh.write(encode_varint(len(header)) + header)
    seen: set[bytes] = set()
    count = 0
    for root in raw_roots:
        stack = [root]
        while stack:
            cid = stack.pop()
            mh = split_cid(cid)[2]
            if mh in seen:
                continue
            seen.add(mh)
            data = store.get_verified(cid)
            fh.write(encode_varint(len(cid) + len(data)))
            fh.write(cid)
            fh.write(data)
            count += 1
            try:
                stack.extend(reversed(links_of(cid, data)))
            except DecodeError as exc:
                raise StorageError(f"block {cid_str(cid)} is damaged: {exc}") from None
    return count


MAX_IMPORT_BLOCKS = 1_000_000
"""Most blocks one CAR import stores (a CAR holding more is refused part-way)."""


def _import(store: BlockStore, path: Path, pin: bool, max_blocks: int) -> list[str]:
    with store.guard(), open(path, "rb") as fh:
        roots, blocks = iter_car(fh)
        for count, (cid, data) in enumerate(blocks, 1):
            if count > max_blocks:
                raise StorageError(
                    f"{path}: the archive holds more than {max_blocks} blocks (the import limit)"
                )
            if not block_digest_ok(cid, data):
                raise CorruptBlock(f"{path}: block {cid_str(cid)} does not match its CID")
            store.put_parts(cid, (data,))
        if pin:
            for root in roots:
                if not store.has(root):
                    raise BlockNotFound(f"{path}: root {cid_str(root)} is not in the archive")
                store.pin(root)
    return [cid_str(r) for r in roots]


async def import_car(
    store: BlockStore, path: Path, *, pin: bool = True, max_blocks: int = MAX_IMPORT_BLOCKS
) -> list[str]:
    """Import every block of a CAR file (hash-checked) and pin its roots; return the roots.

    Importing stores blocks only; expanding them later (``get``, ``ls``, job inputs)
    is bounded by :class:`~bacalhau.limits.DagLimits`.

    Raises:
        StorageError: more than ``max_blocks`` blocks (those before stay stored, unpinned).
        DecodeError: the file is not a CAR.
        CorruptBlock: a block does not match its CID (blocks before it stay stored, unpinned).
    """
    return await anyio.to_thread.run_sync(_import, store, Path(path), pin, max_blocks)


async def export_car(blocks: Any, root: AnyCid, path: Path) -> int:
    """Write the DAG under ``root`` to a CARv1 file at ``path``; return the block count.

    ``blocks`` is a BlockStore, or a BlockService (missing blocks are fetched first).
    The file is written under a temporary name and renamed into place when complete.
    """
    raw = to_cid(root)
    if isinstance(blocks, BlockStore):
        store = blocks
    else:
        store = blocks.store
        await blocks.fetch_dag(raw)
    dest = Path(path)

    def run() -> int:
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with open(tmp, "wb") as fh:
                count = write_car(store, [raw], fh)
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return count

    return await anyio.to_thread.run_sync(run)
