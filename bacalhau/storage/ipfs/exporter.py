"""The UnixFS exporter: a CID back into bytes, a directory tree or a random-access reader.

Every block is hash-checked before its bytes are used (a :class:`BlockSource`
returns only verified blocks), and the DAG's own size claims are checked too: a
file whose leaves do not add up to the sizes its parents declare is refused, so
a reader never sees more or other bytes than the DAG promises. Reading is
streaming: a few blocks are held at a time whatever the file size.

``blocks`` arguments accept a :class:`~.blockstore.BlockStore` (local only), a
:class:`~.exchange.BlockService` (fetches missing blocks from peers) or any
object with ``async get_many(cids) -> list[bytes]`` returning verified blocks.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.to_thread
import attrs

from ...cid import DAG_PB, RAW, AnyCid, cid_str, split_cid, to_cid
from ...errors import DecodeError, StorageError
from ..base import Reader
from ._util import unwrap_group
from .blockstore import BlockStore
from .dagpb import decode_node
from .unixfs import DataType, decode_unixfs

__all__ = [
    "BlockSource",
    "Entry",
    "LocalBlocks",
    "Node",
    "as_source",
    "cat",
    "decode_block",
    "export_to_path",
    "ls",
    "open_reader",
    "read_all",
    "resolve",
]

WINDOW = 16
"""Blocks requested at once while streaming a file (4 MiB of 256 KiB chunks)."""


@runtime_checkable
class BlockSource(Protocol):
    """Where the exporter gets blocks. Must return only hash-verified bytes."""

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]: ...


@attrs.define
class LocalBlocks:
    """A :class:`BlockSource` over a local :class:`BlockStore` (no network)."""

    store: BlockStore

    async def get(self, cid: AnyCid) -> bytes:
        return await anyio.to_thread.run_sync(self.store.get_verified, to_cid(cid))

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        get = self.store.get_verified
        return await anyio.to_thread.run_sync(lambda: [get(c) for c in cids])


def as_source(blocks: Any) -> BlockSource:
    """Adapt a BlockStore, BlockService or BlockSource to a :class:`BlockSource`."""
    if isinstance(blocks, BlockStore):
        return LocalBlocks(blocks)
    if isinstance(blocks, BlockSource):
        return blocks
    raise TypeError(f"not a block source: {blocks!r}")


@attrs.frozen
class Node:
    """One decoded UnixFS node."""

    cid: bytes
    kind: DataType
    data: bytes
    links: tuple[tuple[str, bytes, int | None], ...]
    blocksizes: tuple[int, ...]
    size: int
    fanout: int | None = None


@attrs.frozen
class Entry:
    """A directory entry as :func:`ls` lists it."""

    name: str
    cid: str
    type: str
    size: int | None


def decode_block(cid: bytes, block: bytes) -> Node:
    """Decode a raw or dag-pb UnixFS block.

    Raises:
        StorageError: not UnixFS, or its sizes do not add up.
    """
    codec = split_cid(cid)[1]
    if codec == RAW:
        return Node(cid, DataType.RAW, block, (), (), len(block))
    if codec != DAG_PB:
        raise StorageError(f"{cid_str(cid)} is not UnixFS (codec 0x{codec:x})")
    try:
        pb = decode_node(block)
        if pb.data is None:
            raise DecodeError("dag-pb node without UnixFS data")
        fs = decode_unixfs(pb.data)
    except DecodeError as exc:
        raise StorageError(f"{cid_str(cid)} is not a valid UnixFS node: {exc}") from None
    links = tuple((lk.name or "", lk.hash, lk.tsize) for lk in pb.links)
    data = fs.data or b""
    if fs.type in (DataType.FILE, DataType.RAW):
        if len(fs.blocksizes) != len(links):
            raise StorageError(
                f"{cid_str(cid)}: {len(links)} links but {len(fs.blocksizes)} block sizes"
            )
        size = len(data) + sum(fs.blocksizes)
        if fs.filesize is not None and fs.filesize != size:
            raise StorageError(f"{cid_str(cid)}: filesize {fs.filesize} but parts add to {size}")
        return Node(cid, DataType.FILE, data, links, fs.blocksizes, size)
    if fs.type == DataType.SYMLINK:
        return Node(cid, fs.type, data, (), (), len(data))
    if fs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        return Node(cid, fs.type, b"", links, (), 0, fanout=fs.fanout)
    raise StorageError(f"{cid_str(cid)}: UnixFS {fs.type.name} nodes are not supported")


async def _node(src: BlockSource, cid: bytes) -> Node:
    return decode_block(cid, (await src.get_many([cid]))[0])


def _check_name(name: str, where: bytes) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise StorageError(f"directory {cid_str(where)} has an unsafe entry name {name!r}")


async def _entries(src: BlockSource, node: Node) -> list[tuple[str, bytes]]:
    """``(name, cid)`` of a directory or HAMT shard, names checked and unique."""
    out: list[tuple[str, bytes]] = []
    if node.kind == DataType.DIRECTORY:
        out = [(name, cid) for name, cid, _ in node.links]
    elif node.kind == DataType.HAMT_SHARD:
        width = len(f"{(node.fanout or 256) - 1:X}")
        for name, cid, _ in node.links:
            if len(name) == width:
                sub = await _node(src, cid)
                if sub.kind != DataType.HAMT_SHARD:
                    raise StorageError(f"{cid_str(cid)}: HAMT link to a non-shard node")
                out.extend(await _entries(src, sub))
            elif len(name) > width:
                out.append((name[width:], cid))
            else:
                raise StorageError(f"{cid_str(node.cid)}: bad HAMT link name {name!r}")
    else:
        raise StorageError(f"{cid_str(node.cid)} is not a directory")
    seen: set[str] = set()
    for name, _ in out:
        _check_name(name, node.cid)
        if name in seen:
            raise StorageError(f"directory {cid_str(node.cid)} lists {name!r} twice")
        seen.add(name)
    return out


async def resolve(blocks: Any, cid: AnyCid, path: str | None = None) -> bytes:
    """The CID at ``path`` (``a/b.txt``, leading ``/`` allowed) inside directory ``cid``.

    Raises:
        StorageError: a component is missing or not a directory.
    """
    current = to_cid(cid)
    if not path:
        return current
    src = as_source(blocks)
    for part in [p for p in path.split("/") if p]:
        node = await _node(src, current)
        if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            raise StorageError(f"{path!r}: {cid_str(current)} is not a directory")
        entries = dict(await _entries(src, node))
        if part not in entries:
            raise StorageError(f"{path!r}: no entry {part!r} in {cid_str(current)}")
        current = entries[part]
    return current


async def ls(blocks: Any, cid: AnyCid) -> list[Entry]:
    """Entries of a directory, or a single entry for a file (name ``""``)."""
    src = as_source(blocks)
    node = await _node(src, to_cid(cid))
    if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        return [Entry("", cid_str(node.cid), _type_name(node.kind), node.size)]
    out = []
    entries = await _entries(src, node)
    for i in range(0, len(entries), 256):
        batch = entries[i : i + 256]
        blocks = await src.get_many([cid for _, cid in batch])
        for (name, child), block in zip(batch, blocks, strict=True):
            sub = decode_block(child, block)
            size = sub.size if sub.kind in (DataType.FILE, DataType.RAW) else None
            out.append(Entry(name, cid_str(child), _type_name(sub.kind), size))
    return out


def _type_name(kind: DataType) -> str:
    return {
        DataType.RAW: "file",
        DataType.FILE: "file",
        DataType.DIRECTORY: "directory",
        DataType.HAMT_SHARD: "directory",
        DataType.SYMLINK: "symlink",
    }.get(kind, kind.name.lower())


async def _file_bytes(src: BlockSource, node: Node, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of a file node (offsets relative to the node)."""
    if node.kind == DataType.RAW:
        yield node.data[start:end]
        return
    pos = 0
    if node.data:
        if start < len(node.data):
            yield node.data[start:end]
        pos = len(node.data)
    wanted: list[tuple[int, int, bytes]] = []
    for (_, child, _), size in zip(node.links, node.blocksizes, strict=True):
        if pos + size > start and pos < end:
            wanted.append((pos, size, child))
        pos += size
        if pos >= end:
            break
    for i in range(0, len(wanted), WINDOW):
        window = wanted[i : i + WINDOW]
        blocks = await src.get_many([c for _, _, c in window])
        for (offset, size, child), block in zip(window, blocks, strict=True):
            sub = decode_block(child, block)
            if sub.kind not in (DataType.FILE, DataType.RAW) or sub.size != size:
                raise StorageError(
                    f"{cid_str(child)}: child of {cid_str(node.cid)} is {sub.size} bytes"
                    f" of {_type_name(sub.kind)}, its parent says {size} bytes of file"
                )
            async for piece in _file_bytes(src, sub, max(0, start - offset), end - offset):
                yield piece


async def cat(
    blocks: Any, cid: AnyCid, *, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """Stream the bytes of the file at ``cid`` (a few blocks in memory at a time).

    Raises:
        StorageError: ``cid`` is not a file, or the DAG is inconsistent.
        BlockNotFound: a block could not be had.
    """
    src = as_source(blocks)
    node = await _node(src, to_cid(cid))
    if node.kind not in (DataType.FILE, DataType.RAW):
        raise StorageError(f"{cid_str(node.cid)} is a {_type_name(node.kind)}, not a file")
    end = node.size if length is None else min(node.size, offset + length)
    if offset < 0 or offset >= end:
        return
    async for piece in _file_bytes(src, node, offset, end):
        if piece:
            yield piece


async def read_all(blocks: Any, cid: AnyCid, *, max_size: int = 64 * 1024 * 1024) -> bytes:
    """The whole file at ``cid`` as bytes (for small files such as WASM modules).

    Raises:
        StorageError: not a file, or larger than ``max_size``.
    """
    src = as_source(blocks)
    node = await _node(src, to_cid(cid))
    if node.kind in (DataType.FILE, DataType.RAW) and node.size > max_size:
        raise StorageError(f"{cid_str(node.cid)} is {node.size} bytes; the limit is {max_size}")
    return b"".join([piece async for piece in cat(src, node.cid)])


async def export_to_path(
    blocks: Any,
    cid: AnyCid,
    dest: Path,
    *,
    read_only: bool = False,
    max_size: int | None = None,
) -> Path:
    """Write the file, directory tree or symlink at ``cid`` to ``dest``.

    ``dest`` must not exist, except as an empty directory when ``cid`` is a
    directory. Files are created exclusively (never through a symlink) and
    entry names are checked (no ``/``, ``..`` or duplicates), so a hostile DAG
    cannot write outside ``dest``.

    Args:
        read_only: make files 0444 and directories 0555 when done.
        max_size: refuse to write more than this many bytes in total.

    Raises:
        StorageError: ``dest`` exists, a name is unsafe, the DAG is inconsistent,
            or ``max_size`` would be exceeded.
        BlockNotFound: a block could not be had.
    """
    src = as_source(blocks)
    budget = [max_size if max_size is not None else -1]
    await _export(src, to_cid(cid), Path(dest), read_only, budget, top=True)
    return Path(dest)


def _charge(budget: list[int], size: int, where: bytes) -> None:
    if budget[0] < 0:
        return
    if size > budget[0]:
        raise StorageError(f"{cid_str(where)}: export exceeds its size limit")
    budget[0] -= size


async def _export(
    src: BlockSource, cid: bytes, dest: Path, read_only: bool, budget: list[int], *, top: bool
) -> None:
    node = await _node(src, cid)
    if node.kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        entries = await _entries(src, node)

        def make_dir() -> None:
            try:
                dest.mkdir()
            except FileExistsError:
                if not (
                    top and dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())
                ):
                    raise StorageError(f"cannot export to {dest}: it already exists") from None

        await anyio.to_thread.run_sync(make_dir)
        for i in range(0, len(entries), 256):
            batch = entries[i : i + 256]
            blocks = await src.get_many([cid for _, cid in batch])
            small: list[tuple[Path, bytes]] = []
            for (name, child), block in zip(batch, blocks, strict=True):
                sub = decode_block(child, block)
                if sub.kind in (DataType.FILE, DataType.RAW) and not sub.links:
                    _charge(budget, sub.size, child)
                    small.append((dest / name, sub.data))
                else:
                    await _export(src, child, dest / name, read_only, budget, top=False)
            if small:  # single-block files: written together in one worker-thread call
                await anyio.to_thread.run_sync(_write_small_files, small, read_only)
        if read_only:
            await anyio.to_thread.run_sync(os.chmod, dest, 0o555)
        return
    if node.kind == DataType.SYMLINK:
        try:
            await anyio.to_thread.run_sync(os.symlink, os.fsdecode(node.data), dest)
        except FileExistsError:
            raise StorageError(f"cannot export to {dest}: it already exists") from None
        return
    if node.kind not in (DataType.FILE, DataType.RAW):
        raise StorageError(f"{cid_str(cid)}: cannot export a {_type_name(node.kind)}")
    _charge(budget, node.size, cid)
    try:
        fd = await anyio.to_thread.run_sync(os.open, dest, _CREATE, 0o644)
    except FileExistsError:
        raise StorageError(f"cannot export to {dest}: it already exists") from None
    try:
        # reading and verifying the next blocks overlaps with writing the previous ones
        send, receive = anyio.create_memory_object_stream[list[bytes]](4)

        async def produce() -> None:
            async with send:
                pending: list[bytes] = []
                held = 0
                async for piece in _file_bytes(src, node, 0, node.size):
                    pending.append(piece)
                    held += len(piece)
                    if held >= 1 << 20:
                        await send.send(pending)
                        pending, held = [], 0
                if pending:
                    await send.send(pending)

        with unwrap_group():
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                async with receive:
                    async for pieces in receive:
                        await anyio.to_thread.run_sync(_write_all, fd, pieces)
        if read_only:
            os.fchmod(fd, 0o444)
    finally:
        os.close(fd)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_small_files(files: list[tuple[Path, bytes]], read_only: bool) -> None:
    for path, data in files:
        try:
            fd = os.open(path, _CREATE, 0o444 if read_only else 0o644)
        except FileExistsError:
            raise StorageError(f"cannot export to {path}: it already exists") from None
        try:
            _write_all(fd, [data])
        finally:
            os.close(fd)


def _write_all(fd: int, pieces: list[bytes]) -> None:
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


# --- library mode: a thread-safe random-access reader ------------------------------------


@attrs.define
class _FileIndex:
    """Where each byte range of a file lives: sorted segment starts and their sources."""

    store: BlockStore
    starts: list[int]
    segments: list[tuple[int, bytes, bool]]  # (length, cid, whole block is the data)
    size: int
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _cache: dict[bytes, bytes] = attrs.Factory(dict)

    def _segment_data(self, cid: bytes, raw_block: bool) -> bytes:
        with self._lock:
            hit = self._cache.get(cid)
        if hit is not None:
            return hit
        block = self.store.get_verified(cid)
        data = block if raw_block else decode_block(cid, block).data
        with self._lock:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[cid] = data
        return data

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        end = min(self.size, offset + size)
        out = bytearray()
        i = bisect.bisect_right(self.starts, offset) - 1
        pos = offset
        while pos < end and 0 <= i < len(self.segments):
            seg_start = self.starts[i]
            length, cid, raw_block = self.segments[i]
            data = self._segment_data(cid, raw_block)
            out += data[pos - seg_start : min(end, seg_start + length) - seg_start]
            pos = seg_start + length
            i += 1
        return bytes(out)


def _index_file(store: BlockStore, cid: bytes) -> _FileIndex:
    starts: list[int] = []
    segments: list[tuple[int, bytes, bool]] = []
    pos = 0

    def visit(node: Node, expect: int | None) -> None:
        nonlocal pos
        if expect is not None and (
            node.size != expect or node.kind not in (DataType.FILE, DataType.RAW)
        ):
            raise StorageError(f"{cid_str(node.cid)}: size or type differs from its parent's claim")
        if node.kind == DataType.RAW:
            if node.data:
                starts.append(pos)
                segments.append((len(node.data), node.cid, True))
                pos += len(node.data)
            return
        if node.data:
            starts.append(pos)
            segments.append((len(node.data), node.cid, False))
            pos += len(node.data)
        for (_, child, _), size in zip(node.links, node.blocksizes, strict=True):
            visit(decode_block(child, store.get_verified(child)), size)

    root = decode_block(cid, store.get_verified(cid))
    if root.kind not in (DataType.FILE, DataType.RAW):
        raise StorageError(
            f"{cid_str(cid)} is a {_type_name(root.kind)}; library mode reads a single file"
        )
    visit(root, None)
    return _FileIndex(store, starts, segments, pos)


async def open_reader(blocks: Any, cid: AnyCid) -> tuple[Reader, int]:
    """A thread-safe ``read(offset, size) -> bytes`` over the file at ``cid``, and its size.

    The whole DAG is made local first (fetched from peers when ``blocks`` is a
    BlockService); reads then come from the local store, each block verified.
    A read past the end returns fewer bytes (``b""`` at or after the end).

    Raises:
        StorageError: ``cid`` is not a file.
        BlockNotFound: a block could not be had.
    """
    raw = to_cid(cid)
    if isinstance(blocks, BlockStore):
        store = blocks
    else:
        store = blocks.store
        await blocks.fetch_dag(raw)
    index = await anyio.to_thread.run_sync(_index_file, store, raw)
    return index.read, index.size
