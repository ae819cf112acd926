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
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
import anyio.to_thread
import attrs

from ...cid import DAG_PB, RAW, AnyCid, cid_str, split_cid, to_cid
from ...errors import DecodeError, StorageError
from ...limits import DEFAULT_DAG_LIMITS, DagBudget, DagLimits
from ..base import Reader
from ._util import unwrap_group
from .blockstore import BlockStore
from .dagpb import decode_node
from .unixfs import DataType, decode_unixfs, file_leaf_parts

__all__ = [
    "BlockSource",
    "Entry",
    "LocalBlocks",
    "Node",
    "SymlinkPolicy",
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
IOV_BATCH = 64
"""Most buffers written by one vectored write while exporting a file (16 MiB of
256 KiB chunks; well under Linux's IOV_MAX of 1024)."""


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


@attrs.frozen(kw_only=True)
class Node:
    """One decoded UnixFS node."""

    cid: bytes
    kind: DataType
    data: bytes
    links: tuple[tuple[str, bytes, int | None], ...]
    blocksizes: tuple[int, ...]
    size: int
    fanout: int | None = None


@attrs.frozen(kw_only=True)
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
        return Node(
            cid=cid, kind=DataType.RAW, data=block, links=(), blocksizes=(), size=len(block)
        )
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
        return Node(
            cid=cid, kind=DataType.FILE, data=data, links=links, blocksizes=fs.blocksizes, size=size
        )
    if fs.type == DataType.SYMLINK:
        return Node(cid=cid, kind=fs.type, data=data, links=(), blocksizes=(), size=len(data))
    if fs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        return Node(
            cid=cid, kind=fs.type, data=b"", links=links, blocksizes=(), size=0, fanout=fs.fanout
        )
    raise StorageError(f"{cid_str(cid)}: UnixFS {fs.type.name} nodes are not supported")


async def _node(src: BlockSource, cid: bytes) -> Node:
    return decode_block(cid, (await src.get_many([cid]))[0])


def _check_name(name: str, where: bytes) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise StorageError(f"directory {cid_str(where)} has an unsafe entry name {name!r}")


async def _entries(
    src: BlockSource, node: Node, budget: DagBudget | None = None
) -> list[tuple[str, bytes]]:
    """``(name, cid)`` of a directory or HAMT shard, names checked and unique.

    Every entry (and every HAMT sub-shard visited) is counted against ``budget``;
    a HAMT's fan-out and depth are checked against it too.
    """
    budget = budget if budget is not None else DagBudget()
    out: list[tuple[str, bytes]] = []
    where = cid_str(node.cid)
    if node.kind == DataType.DIRECTORY:
        budget.entry(where, len(node.links))
        out = [(name, cid) for name, cid, _ in node.links]
    elif node.kind == DataType.HAMT_SHARD:
        fanout = budget.fanout(node.fanout, where)
        # each level consumes log2(fanout) bits of a 64-bit hash: deeper is malformed
        levels = -(-64 // (fanout.bit_length() - 1))
        await _shard_entries(src, node, fanout, levels, budget, out)
    else:
        raise StorageError(f"{where} is not a directory")
    seen: set[str] = set()
    for name, _ in out:
        _check_name(name, node.cid)
        if name in seen:
            raise StorageError(f"directory {where} lists {name!r} twice")
        seen.add(name)
    return out


async def _shard_entries(
    src: BlockSource,
    node: Node,
    fanout: int,
    levels: int,
    budget: DagBudget,
    out: list[tuple[str, bytes]],
) -> None:
    where = cid_str(node.cid)
    if levels <= 0:
        raise StorageError(f"{where}: HAMT shards nest deeper than a 64-bit hash allows")
    if node.fanout is not None and node.fanout != fanout:
        raise StorageError(f"{where}: HAMT sub-shard fan-out differs from its parent's")
    if len(node.links) > fanout:
        raise StorageError(f"{where}: HAMT shard has more links than its fan-out {fanout}")
    width = len(f"{fanout - 1:X}")
    for name, cid, _ in node.links:
        budget.entry(where)
        if len(name) == width:
            sub = await _node(src, cid)
            if sub.kind != DataType.HAMT_SHARD:
                raise StorageError(f"{cid_str(cid)}: HAMT link to a non-shard node")
            await _shard_entries(src, sub, fanout, levels - 1, budget, out)
        elif len(name) > width:
            out.append((name[width:], cid))
        else:
            raise StorageError(f"{where}: bad HAMT link name {name!r}")


async def resolve(
    blocks: Any, cid: AnyCid, path: str | None = None, *, limits: DagLimits = DEFAULT_DAG_LIMITS
) -> bytes:
    """The CID at ``path`` (``a/b.txt``, leading ``/`` allowed) inside directory ``cid``.

    Raises:
        StorageError: a component is missing or not a directory, or the folders on
            the way exceed ``limits``.
    """
    current = to_cid(cid)
    if not path:
        return current
    src = as_source(blocks)
    budget = DagBudget(limits=limits)
    parts = [p for p in path.split("/") if p]
    budget.depth(len(parts), repr(path))
    for part in parts:
        node = await _node(src, current)
        if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            raise StorageError(f"{path!r}: {cid_str(current)} is not a directory")
        entries = dict(await _entries(src, node, budget))
        if part not in entries:
            raise StorageError(f"{path!r}: no entry {part!r} in {cid_str(current)}")
        current = entries[part]
    return current


async def ls(blocks: Any, cid: AnyCid, *, limits: DagLimits = DEFAULT_DAG_LIMITS) -> list[Entry]:
    """Entries of a directory, or a single entry for a file (name ``""``).

    Raises:
        StorageError: the directory (with its HAMT shards) exceeds ``limits``.
    """
    src = as_source(blocks)
    node = await _node(src, to_cid(cid))
    if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        return [Entry(name="", cid=cid_str(node.cid), type=_type_name(node.kind), size=node.size)]
    out = []
    entries = await _entries(src, node, DagBudget(limits=limits))
    for i in range(0, len(entries), 256):
        batch = entries[i : i + 256]
        blocks = await src.get_many([cid for _, cid in batch])
        for (name, child), block in zip(batch, blocks, strict=True):
            sub = decode_block(child, block)
            size = sub.size if sub.kind in (DataType.FILE, DataType.RAW) else None
            out.append(Entry(name=name, cid=cid_str(child), type=_type_name(sub.kind), size=size))
    return out


def _type_name(kind: DataType) -> str:
    return {
        DataType.RAW: "file",
        DataType.FILE: "file",
        DataType.DIRECTORY: "directory",
        DataType.HAMT_SHARD: "directory",
        DataType.SYMLINK: "symlink",
    }.get(kind, kind.name.lower())


async def _file_bytes(
    src: BlockSource,
    node: Node,
    start: int,
    end: int,
    depth: int = 0,
    max_depth: int = DEFAULT_DAG_LIMITS.max_depth,
    *,
    views: bool = False,
) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of a file node (offsets relative to the node).

    With ``views`` the data of a canonical dag-pb leaf (as ``ipfs add`` and the
    importer write them) comes as a memoryview into its block, not decoded (two
    copies) first; the caller must accept buffers, not only ``bytes``.
    """
    if depth > max_depth:
        raise StorageError(
            f"{cid_str(node.cid)}: file DAG nests deeper than {max_depth} levels "
            "(the node's limit on DAG depth)"
        )
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
            leaf = _leaf_data(child, block, size) if views else None
            if leaf is not None:
                lo = max(0, start - offset)
                if lo < size:
                    yield leaf[lo : end - offset]  # type: ignore[misc]
                continue
            sub = decode_block(child, block)
            if sub.kind not in (DataType.FILE, DataType.RAW) or sub.size != size:
                raise StorageError(
                    f"{cid_str(child)}: child of {cid_str(node.cid)} is {sub.size} bytes"
                    f" of {_type_name(sub.kind)}, its parent says {size} bytes of file"
                )
            async for piece in _file_bytes(
                src, sub, max(0, start - offset), end - offset, depth + 1, max_depth, views=views
            ):
                yield piece


def _leaf_data(cid: bytes, block: bytes, size: int) -> memoryview | None:
    """The data of ``block`` as a view when it is exactly the canonical dag-pb leaf of
    ``size`` bytes of file data (``head + data + tail``, see
    :func:`~bacalhau.storage.ipfs.unixfs.file_leaf_parts`): what decoding it would
    give, without the copies. None for any other block (decode it)."""
    if size <= 0 or split_cid(cid)[1] != DAG_PB:
        return None
    head, tail = file_leaf_parts(size)
    if (
        len(block) != len(head) + size + len(tail)
        or not block.startswith(head)
        or not block.endswith(tail)
    ):
        return None
    return memoryview(block)[len(head) : len(head) + size]


def _reading(blocks: Any, cid: AnyCid) -> contextlib.AbstractContextManager[None]:
    """The local store's lease on the DAG a streamed read serves (:meth:`BlockStore.reading`)."""
    store = blocks if isinstance(blocks, BlockStore) else getattr(blocks, "store", None)
    return store.reading(cid) if isinstance(store, BlockStore) else contextlib.nullcontext()


async def cat(
    blocks: Any, cid: AnyCid, *, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """Stream the bytes of the file at ``cid`` (a few blocks in memory at a time).

    While the stream runs, the local store keeps the file's blocks and counts them as
    used (:meth:`BlockStore.reading`), so eviction under a disk budget never removes a
    block the stream has yet to reach, however slowly it is read.

    Raises:
        StorageError: ``cid`` is not a file, or the DAG is inconsistent.
        BlockNotFound: a block could not be had.
    """
    src = as_source(blocks)
    with _reading(blocks, cid):
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


SymlinkPolicy = Literal["refuse", "contain"]
"""What :func:`export_to_path` does with a UnixFS symlink: ``refuse`` (the export
fails, naming it: job inputs) or ``contain`` (written only when it resolves inside
the export's root folder, else the export fails: ``get`` and ``data get``)."""


async def export_to_path(
    blocks: Any,
    cid: AnyCid,
    dest: Path,
    *,
    read_only: bool = False,
    max_size: int | None = None,
    limits: DagLimits = DEFAULT_DAG_LIMITS,
    symlinks: SymlinkPolicy = "contain",
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Write the file, directory tree or symlink at ``cid`` to ``dest``.

    ``dest`` must not exist, except as an empty directory when ``cid`` is a
    directory. Files are created exclusively (never through a symlink) and
    entry names are checked (no ``/``, ``..`` or duplicates), so a hostile DAG
    cannot write outside ``dest``. Links are never followed while writing; what
    is done with them is ``symlinks``: with ``contain``, a link is written only if
    its target is relative and stays inside ``dest`` lexically, and once the
    whole tree is written every link is resolved (``realpath``) once more, so a
    chain of links cannot leave ``dest`` either.

    Args:
        read_only: make files 0444 and directories 0555 when done.
        max_size: refuse to write more than this many bytes in total.
        limits: entries, depth, total size and HAMT fan-out allowed (a shared
            node counts each time it is reached).
        symlinks: ``refuse`` or ``contain`` (see :data:`SymlinkPolicy`).
        on_bytes: told how many more bytes of file data were written, as they are
            (for a progress bar).

    Raises:
        StorageError: ``dest`` exists, a name is unsafe, the DAG is inconsistent,
            exceeds ``limits`` or ``max_size``, or holds a link ``symlinks`` refuses.
        BlockNotFound: a block could not be had.
    """
    src = as_source(blocks)
    budget = [max_size if max_size is not None else -1]
    root = Path(dest)
    walk = _Walk(
        src=src,
        root=root,
        read_only=read_only,
        budget=budget,
        dag=DagBudget(limits=limits),
        symlinks=symlinks,
        on_bytes=on_bytes,
    )
    with _reading(blocks, cid):  # a slow export keeps its blocks under a disk budget
        await _export(walk, to_cid(cid), root, 0)
    if walk.links:
        await anyio.to_thread.run_sync(_check_links, root, walk.links)
    return root


@attrs.define
class _Walk:
    """One export in progress."""

    src: BlockSource
    root: Path
    read_only: bool
    budget: list[int]
    dag: DagBudget
    symlinks: SymlinkPolicy
    links: list[Path] = attrs.Factory(list)
    on_bytes: Callable[[int], None] | None = None


def _charge(budget: list[int], size: int, where: bytes) -> None:
    if budget[0] < 0:
        return
    if size > budget[0]:
        raise StorageError(f"{cid_str(where)}: export exceeds its size limit")
    budget[0] -= size


def _rel(walk: _Walk, path: Path) -> str:
    return path.relative_to(walk.root).as_posix() if path != walk.root else "."


def _link_target(walk: _Walk, node: Node, dest: Path) -> str:
    """The target to write for a symlink node at ``dest``, or raise."""
    target = os.fsdecode(node.data)
    rel = _rel(walk, dest)
    if walk.symlinks == "refuse":
        raise StorageError(
            f"{rel} is a symbolic link (to {target!r}); links are refused in job inputs"
        )
    if dest == walk.root:
        raise StorageError(f"{cid_str(node.cid)} is a symbolic link (to {target!r}), not data")
    inside = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if "\x00" in target or not target or target.startswith("/") or inside.split("/")[0] == "..":
        raise StorageError(
            f"{rel} is a symbolic link pointing outside the folder (to {target!r}); refused"
        )
    return target


def _check_links(root: Path, links: list[Path]) -> None:
    real_root = os.path.realpath(root)
    for link in links:
        real = os.path.realpath(link)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            target = os.readlink(link)
            os.unlink(link)
            raise StorageError(
                f"{link.relative_to(root).as_posix()} is a symbolic link that resolves "
                f"outside the folder (to {target!r}, through other links); refused"
            )


async def _export(walk: _Walk, cid: bytes, dest: Path, depth: int) -> None:
    src = walk.src
    walk.dag.depth(depth, _rel(walk, dest))
    node = await _node(src, cid)
    if node.kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        entries = await _entries(src, node, walk.dag)
        top = dest == walk.root

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
                    _charge(walk.budget, sub.size, child)
                    walk.dag.data(sub.size, _rel(walk, dest / name))
                    small.append((dest / name, sub.data))
                else:
                    await _export(walk, child, dest / name, depth + 1)
            if small:  # single-block files: written together in one worker-thread call
                await anyio.to_thread.run_sync(_write_small_files, small, walk.read_only)
                if walk.on_bytes is not None:
                    walk.on_bytes(sum(len(data) for _, data in small))
        if walk.read_only:
            await anyio.to_thread.run_sync(os.chmod, dest, 0o555)
        return
    if node.kind == DataType.SYMLINK:
        target = _link_target(walk, node, dest)
        try:
            await anyio.to_thread.run_sync(os.symlink, target, dest)
        except FileExistsError:
            raise StorageError(f"cannot export to {dest}: it already exists") from None
        walk.links.append(dest)
        return
    if node.kind not in (DataType.FILE, DataType.RAW):
        raise StorageError(f"{cid_str(cid)}: cannot export a {_type_name(node.kind)}")
    _charge(walk.budget, node.size, cid)
    walk.dag.data(node.size, _rel(walk, dest))
    try:
        fd = await anyio.to_thread.run_sync(os.open, dest, _CREATE, 0o644)
    except FileExistsError:
        raise StorageError(f"cannot export to {dest}: it already exists") from None
    try:
        # reading and verifying the next blocks overlaps with writing the previous ones
        send, receive = anyio.create_memory_object_stream[list[bytes]](4)
        max_depth = walk.dag.limits.max_depth

        async def produce() -> None:
            async with send:
                pending: list[bytes] = []
                held = 0
                async for piece in _file_bytes(src, node, 0, node.size, 0, max_depth, views=True):
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
                        # what else is ready goes in the same worker-thread call: a
                        # thread hand-off costs more than the write of a few MiB
                        with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                            while len(pieces) < IOV_BATCH:
                                pieces = pieces + receive.receive_nowait()
                        await anyio.to_thread.run_sync(_write_all, fd, pieces)
                        if walk.on_bytes is not None:
                            walk.on_bytes(sum(map(len, pieces)))
        if walk.read_only:
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
    """Write ``pieces`` in order, vectored (at most :data:`IOV_BATCH` buffers a call)."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    at = 0
    while at < len(views):
        n = os.writev(fd, views[at : at + IOV_BATCH])
        while at < len(views) and n >= len(views[at]):
            n -= len(views[at])
            at += 1
        if n:
            views[at] = views[at][n:]


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


def _index_file(
    store: BlockStore, cid: bytes, limits: DagLimits = DEFAULT_DAG_LIMITS
) -> _FileIndex:
    starts: list[int] = []
    segments: list[tuple[int, bytes, bool]] = []
    pos = 0
    budget = DagBudget(limits=attrs.evolve(limits, max_entries=8 * limits.max_entries))
    where = cid_str(cid)

    def visit(node: Node, expect: int | None, depth: int) -> None:
        nonlocal pos
        budget.depth(depth, where)
        budget.entry(where)
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
            visit(decode_block(child, store.get_verified(child)), size, depth + 1)

    root = decode_block(cid, store.get_verified(cid))
    if root.kind not in (DataType.FILE, DataType.RAW):
        raise StorageError(
            f"{cid_str(cid)} is a {_type_name(root.kind)}; library mode reads a single file"
        )
    budget.data(root.size, where)
    visit(root, None, 0)
    return _FileIndex(store, starts, segments, pos)


async def open_reader(
    blocks: Any, cid: AnyCid, *, limits: DagLimits = DEFAULT_DAG_LIMITS
) -> tuple[Reader, int]:
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
    index = await anyio.to_thread.run_sync(_index_file, store, raw, limits)
    return index.read, index.size
