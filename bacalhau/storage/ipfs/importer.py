"""The UnixFS importer: files and directories to a DAG, with the CIDs Kubo prints.

Same layout as Kubo's ``ipfs add`` defaults: fixed-size chunks (256 KiB),
a balanced DAG of at most 174 links per node, dag-pb leaves and CIDv0, or with
``cid_version=1`` raw leaves and CIDv1 (``raw_leaves`` overrides either way).
Directories are added recursively (``ipfs add -r``) with links sorted by name;
``wrap_with_directory`` wraps the result in one more directory (``ipfs add -w``).
Hidden files (names starting with ``.``) are skipped unless ``hidden=True``, as
Kubo does. Symlinks become UnixFS symlink nodes (never followed).

Streaming: chunks are read with ``preadv`` into reused buffers (no allocation
per chunk; when only hashing, one chunk-sized buffer that stays in the CPU's
cache) and hashed in batches on worker threads, a few batches at a time, so
memory stays flat whatever the file size and hashing uses every core.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import attrs

from ...cid import DAG_PB, RAW, cid_from_digest, cid_str
from ...errors import StorageError, ValidationError
from ._util import unwrap_group
from .blockstore import BlockStore
from .dagpb import PBLink, PBNode, encode_node
from .hamt import SHARDING_THRESHOLD, build_shards, needs_sharding
from .unixfs import DataType, UnixFSData, encode_unixfs, file_leaf_parts

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_LINKS",
    "EntryCallback",
    "ImportOptions",
    "add_bytes",
    "add_path",
]

DEFAULT_CHUNK_SIZE = 262144
MAX_LINKS = 174
MAX_CHUNK_SIZE = 1024 * 1024
"""Kubo refuses chunks above 1 MiB (blocks over 2 MiB do not travel over bitswap)."""

_BATCH_BYTES = 4 * 1024 * 1024
_HASH_BATCH_BYTES = 32 * 1024 * 1024
"""File bytes per worker-thread call when only hashing: a batch then costs no memory
(one chunk's buffer, reused), only a thread hand-off, which costs about a
millisecond of CPU on a loaded small VM; a file still gets two batches per worker."""
_WORKERS = max(2, min(4, os.cpu_count() or 2))

EntryCallback = Callable[[str, str], None]
"""``(relative path, cid)``: called for every file and directory added, children first."""
BytesCallback = Callable[[int], None]
"""Told how many more bytes of file data were chunked and hashed (a progress bar)."""

T = TypeVar("T")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class ImportOptions:
    """How to chunk and name data. Defaults match ``ipfs add``."""

    cid_version: int = 0
    raw_leaves: bool | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = MAX_LINKS
    hidden: bool = False
    shard_threshold: int = SHARDING_THRESHOLD

    def __attrs_post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValidationError("must be 0 or 1", field="cid_version")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(
                f"must be between 1 byte and 1 MiB, got {self.chunk_size}", field="chunk_size"
            )
        if not 2 <= self.max_links <= 8192:
            raise ValidationError("must be between 2 and 8192", field="max_links")

    @property
    def leaves_raw(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves


@attrs.frozen
class _Child:
    cid: bytes
    tsize: int
    filesize: int


async def _pipeline(
    items: Iterable[T] | AsyncIterable[T],
    work: Callable[[T], R],
    consume: Callable[[R], Awaitable[None]],
    *,
    limit: int = _WORKERS,
) -> None:
    """Run ``work`` on worker threads, at most ``limit`` at once, and ``consume`` the
    results in input order."""

    @attrs.define
    class Box:
        event: anyio.Event = attrs.Factory(anyio.Event)
        result: object = None

    send, recv = anyio.create_memory_object_stream[Box](limit - 1 if limit > 1 else 0)

    async def run(item: T, box: Box) -> None:
        try:
            box.result = await anyio.to_thread.run_sync(work, item)
        finally:
            box.event.set()

    async def produce() -> None:
        async with send:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    box = Box()
                    await send.send(box)
                    tg.start_soon(run, item, box)
            else:
                for item in items:
                    box = Box()
                    await send.send(box)
                    tg.start_soon(run, item, box)

    with unwrap_group():
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with recv:
                async for box in recv:
                    await box.event.wait()
                    await consume(box.result)  # type: ignore[arg-type]


@attrs.define
class _Importer:
    store: BlockStore | None
    opts: ImportOptions
    on_entry: EntryCallback | None = None
    on_bytes: BytesCallback | None = None
    _buffers: list[bytearray] = attrs.Factory(list)
    """Read buffers of finished batches, reused (at most one per batch in flight)."""

    @property
    def _node_version(self) -> int:
        return self.opts.cid_version

    # --- leaves (worker threads) --------------------------------------------------------

    def _leaf(
        self, chunk: bytes | memoryview
    ) -> tuple[bytes, tuple[bytes | memoryview, ...], _Child]:
        """A chunk's leaf: its CID, the pieces of its block, and what its parent needs."""
        if not chunk and not self.opts.leaves_raw:
            # Kubo's empty file: UnixFS{File, filesize=0}, no Data field
            block = encode_node(PBNode((), encode_unixfs(UnixFSData(DataType.FILE, filesize=0))))
            cid = cid_from_digest(
                hashlib.sha256(block).digest(), codec=DAG_PB, version=self._node_version
            )
            return cid, (block,), _Child(cid, len(block), 0)
        if self.opts.leaves_raw:
            cid = cid_from_digest(hashlib.sha256(chunk).digest(), codec=RAW, version=1)
            return cid, (chunk,), _Child(cid, len(chunk), len(chunk))
        head, tail = file_leaf_parts(len(chunk))
        hasher = hashlib.sha256(head)
        hasher.update(chunk)
        hasher.update(tail)
        cid = cid_from_digest(hasher.digest(), codec=DAG_PB, version=self._node_version)
        return cid, (head, chunk, tail), _Child(cid, len(head) + len(chunk) + len(tail), len(chunk))

    def _leaves(self, chunks: Sequence[bytes | memoryview]) -> list[_Child]:
        out = []
        batch: list[tuple[bytes, tuple[bytes | memoryview, ...]]] = []
        for chunk in chunks:
            cid, parts, child = self._leaf(chunk)
            batch.append((cid, parts))
            out.append(child)
        if self.store is not None:
            self.store.put_many(batch)  # one batch of writes (and of syncs, when durable)
        return out

    def _read_leaves(self, job: tuple[int, int, int, int]) -> list[_Child]:
        """Read a batch of chunks into a reused buffer, hashing each one right after
        reading it (while it is still in the CPU's cache), then store the batch from
        views of the buffer: no allocation per chunk. The buffer goes back to the
        pool once the batch is written."""
        fd, offset, count, end = job
        size = self.opts.chunk_size
        total = min(count * size, end - offset)
        pool = self._buffers
        # only hashing: one chunk's room, reused for each (it stays in the CPU's cache)
        room = _BATCH_BYTES if self.store is not None else size
        try:
            buf = pool.pop()
        except IndexError:
            buf = bytearray(max(room, size))
        out: list[_Child] = []
        batch: list[tuple[bytes, tuple[bytes | memoryview, ...]]] = []
        try:
            with memoryview(buf) as whole:
                for start in range(0, total, size):
                    at = start if self.store is not None else 0
                    chunk = whole[at : at + min(size, total - start)]
                    got = 0
                    while got < len(chunk):
                        n = os.preadv(fd, [chunk[got:]], offset + start + got)
                        if n == 0:
                            raise StorageError(
                                "the file shrank while it was being added; add it again"
                            )
                        got += n
                    cid, parts, child = self._leaf(chunk)
                    batch.append((cid, parts))
                    out.append(child)
                if self.store is not None:
                    self.store.put_many(batch)
                del batch, parts, chunk  # the views into the buffer end here
        finally:
            pool.append(buf)
        return out

    # --- internal nodes -----------------------------------------------------------------

    def _node(self, children: Sequence[_Child]) -> tuple[_Child, bytes]:
        data = UnixFSData(
            DataType.FILE,
            filesize=sum(c.filesize for c in children),
            blocksizes=tuple(c.filesize for c in children),
        )
        block = encode_node(
            PBNode(tuple(PBLink(c.cid, "", c.tsize) for c in children), encode_unixfs(data))
        )
        cid = cid_from_digest(
            hashlib.sha256(block).digest(), codec=DAG_PB, version=self._node_version
        )
        child = _Child(cid, len(block) + sum(c.tsize for c in children), data.filesize or 0)
        return child, block

    async def _put(self, cid: bytes, block: bytes) -> None:
        if self.store is not None:
            await anyio.to_thread.run_sync(self.store.put_parts, cid, (block,))

    async def _file_from(
        self, batches: Iterable[T] | AsyncIterable[T], work: Callable[[T], list[_Child]]
    ) -> _Child:
        levels: list[list[_Child]] = [[]]
        count = 0

        async def push(level: int, child: _Child) -> None:
            if len(levels) == level:
                levels.append([])
            levels[level].append(child)
            if len(levels[level]) == self.opts.max_links:
                node, block = self._node(levels[level])
                levels[level] = []
                await self._put(node.cid, block)
                await push(level + 1, node)

        async def consume(leaves: list[_Child]) -> None:
            nonlocal count
            for leaf in leaves:
                count += 1
                await push(0, leaf)
            if self.on_bytes is not None:
                self.on_bytes(sum(leaf.filesize for leaf in leaves))

        await _pipeline(batches, work, consume)
        if count == 0:
            return (await anyio.to_thread.run_sync(self._leaves, [b""]))[0]
        if count == 1:
            return levels[0][0]
        level = 0
        while True:
            pending = levels[level]
            above = any(levels[level + 1 :])
            if pending and not above and len(pending) == 1 and level > 0:
                return pending[0]
            if pending:
                node, block = self._node(pending)
                levels[level] = []
                await self._put(node.cid, block)
                await push(level + 1, node)
            level += 1

    async def file(self, path: Path) -> _Child:
        fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            end = os.fstat(fd).st_size
            size = self.opts.chunk_size
            per_batch = max(1, _BATCH_BYTES // size)
            nchunks = -(-end // size)
            if self.store is None:
                per_batch = max(
                    per_batch, min(_HASH_BATCH_BYTES // size, nchunks // (2 * _WORKERS))
                )
            jobs = (
                (fd, i * size, min(per_batch, nchunks - i), end)
                for i in range(0, nchunks, per_batch)
            )
            return await self._file_from(jobs, self._read_leaves)
        finally:
            os.close(fd)

    async def stream(self, data: AsyncIterable[bytes] | Iterable[bytes]) -> _Child:
        size = self.opts.chunk_size
        per_batch = max(1, _BATCH_BYTES // size)

        async def batches() -> AsyncIterable[list[bytes]]:
            buf = bytearray()
            batch: list[bytes] = []
            if isinstance(data, AsyncIterable):
                async for piece in data:
                    buf += piece
                    while len(buf) >= size:
                        batch.append(bytes(buf[:size]))
                        del buf[:size]
                        if len(batch) == per_batch:
                            yield batch
                            batch = []
            else:
                for piece in data:
                    buf += piece
                    while len(buf) >= size:
                        batch.append(bytes(buf[:size]))
                        del buf[:size]
                        if len(batch) == per_batch:
                            yield batch
                            batch = []
            if buf:
                batch.append(bytes(buf))
            if batch:
                yield batch

        return await self._file_from(batches(), self._leaves)

    # --- directories --------------------------------------------------------------------

    def _dag_cid(self, block: bytes) -> bytes:
        return cid_from_digest(
            hashlib.sha256(block).digest(), codec=DAG_PB, version=self._node_version
        )

    async def directory(self, entries: Sequence[tuple[str, _Child]]) -> _Child:
        ordered = sorted(entries, key=lambda e: e[0].encode("utf-8", "surrogateescape"))
        if needs_sharding([(name, c.cid) for name, c in ordered], self.opts.shard_threshold):
            blocks, root, tsize = build_shards(
                [(name, c.cid, c.tsize) for name, c in ordered], self._dag_cid
            )
            if self.store is not None:
                store = self.store

                await anyio.to_thread.run_sync(
                    store.put_many, [(cid, (block,)) for cid, block in blocks]
                )
            return _Child(root, tsize, 0)
        block = encode_node(
            PBNode(
                tuple(PBLink(c.cid, name, c.tsize) for name, c in ordered),
                encode_unixfs(UnixFSData(DataType.DIRECTORY)),
            )
        )
        cid = cid_from_digest(
            hashlib.sha256(block).digest(), codec=DAG_PB, version=self._node_version
        )
        await self._put(cid, block)
        return _Child(cid, len(block) + sum(c.tsize for _, c in ordered), 0)

    async def symlink(self, target: str) -> _Child:
        block = encode_node(
            PBNode((), encode_unixfs(UnixFSData(DataType.SYMLINK, data=os.fsencode(target))))
        )
        cid = cid_from_digest(
            hashlib.sha256(block).digest(), codec=DAG_PB, version=self._node_version
        )
        await self._put(cid, block)
        return _Child(cid, len(block), 0)

    def _small_files(self, paths: Sequence[Path]) -> list[_Child | None]:
        """Whole single-chunk files in one worker-thread call (None: it grew; redo it)."""
        out: list[_Child | None] = []
        limit = self.opts.chunk_size
        for path in paths:
            with open(path, "rb", buffering=0) as fh:
                data = fh.read(limit + 1)
            out.append(None if len(data) > limit else self._leaves([data])[0])
        return out

    async def _directory_at(self, path: Path, rel: str) -> _Child:
        hidden = self.opts.hidden

        def scan() -> list[tuple[str, int, int]]:
            with os.scandir(path) as it:
                found = [
                    (e.name, *_mode_size(e)) for e in it if hidden or not e.name.startswith(".")
                ]
            return sorted(found)

        entries: list[tuple[str, _Child]] = []
        small: list[str] = []

        async def flush() -> None:
            children = await anyio.to_thread.run_sync(
                self._small_files, [path / name for name in small]
            )
            read = 0
            for name, child in zip(small, children, strict=True):
                sub = f"{rel}/{name}" if rel else name
                if child is None:
                    child = await self.path(path / name, sub)
                else:
                    read += child.filesize
                    if self.on_entry is not None:
                        self.on_entry(sub, cid_str(child.cid))
                entries.append((name, child))
            small.clear()
            if read and self.on_bytes is not None:
                self.on_bytes(read)

        for name, mode, size in await anyio.to_thread.run_sync(scan):
            if stat.S_ISREG(mode) and size <= self.opts.chunk_size:
                small.append(name)
                if len(small) >= 256:
                    await flush()
                continue
            await flush()
            sub = f"{rel}/{name}" if rel else name
            entries.append((name, await self.path(path / name, sub)))
        await flush()
        return await self.directory(entries)

    async def path(self, path: Path, rel: str) -> _Child:
        st = await anyio.to_thread.run_sync(os.lstat, path)
        if stat.S_ISLNK(st.st_mode):
            child = await self.symlink(await anyio.to_thread.run_sync(os.readlink, path))
        elif stat.S_ISREG(st.st_mode):
            child = await self.file(path)
        elif stat.S_ISDIR(st.st_mode):
            child = await self._directory_at(path, rel)
        else:
            raise StorageError(f"cannot add {path}: not a regular file, directory or symlink")
        if self.on_entry is not None:
            self.on_entry(rel, cid_str(child.cid))
        return child


def _mode_size(entry: os.DirEntry[str]) -> tuple[int, int]:
    st = entry.stat(follow_symlinks=False)
    return st.st_mode, st.st_size


async def add_path(
    store: BlockStore | None,
    path: str | os.PathLike[str],
    *,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    wrap_with_directory: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    hidden: bool = False,
    pin: bool = False,
    pin_expires: float | None = None,
    on_entry: EntryCallback | None = None,
    shard_threshold: int = SHARDING_THRESHOLD,
    on_bytes: BytesCallback | None = None,
) -> str:
    """Add a file or directory (recursively) and return its root CID.

    The CID is the one ``ipfs add [-r] [-w] [--cid-version N] [--raw-leaves]``
    prints for the same path.

    Args:
        store: where to write the blocks, or None to only compute the CID.
        path: a regular file, a directory (added recursively) or a symlink.
        cid_version: 0 (``Qm...``) or 1 (``bafy...``, which also implies raw leaves).
        raw_leaves: leaves as raw blocks; default: True for CIDv1, else False.
        wrap_with_directory: wrap the result in a directory holding it by its name.
        chunk_size: bytes per leaf (at most 1 MiB).
        hidden: include names starting with ``.`` (Kubo's ``--hidden``).
        pin: pin the root recursively (needs ``store``).
        pin_expires: the pin ends at this unix time (None: it lasts until unpinned).
        on_entry: called with (path relative to ``path``'s parent, CID) per entry.
        shard_threshold: directories whose links estimate (name + CID bytes) reaches
            this become HAMT shards (Kubo's ``UnixFSHAMTDirectorySizeThreshold``).
        on_bytes: told how many more bytes of file data were added, as they are
            (a batch of chunks at a time; for a progress bar).

    Raises:
        StorageError: the path cannot be read, or changed while being added.
        ValidationError: a bad option.
    """
    opts = ImportOptions(
        cid_version=cid_version,
        raw_leaves=raw_leaves,
        chunk_size=chunk_size,
        hidden=hidden,
        shard_threshold=shard_threshold,
    )
    source = Path(path)
    name = source.name or (await anyio.Path(source).resolve()).name
    importer = _Importer(store, opts, on_entry, on_bytes)

    async def run() -> str:
        try:
            child = await importer.path(source, name)
        except OSError as exc:
            raise StorageError(f"cannot add {path}: {exc.strerror or exc}") from None
        if wrap_with_directory:
            child = await importer.directory([(name, child)])
            if on_entry is not None:
                on_entry("", cid_str(child.cid))
        if pin and store is not None:
            cid = child.cid
            await anyio.to_thread.run_sync(lambda: store.pin(cid, expires=pin_expires))
        return cid_str(child.cid)

    return await _guarded(store, run)


async def add_bytes(
    store: BlockStore | None,
    data: bytes | AsyncIterable[bytes] | Iterable[bytes],
    *,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    name: str | None = None,
    pin: bool = False,
    on_bytes: BytesCallback | None = None,
) -> str:
    """Add bytes (or a stream of byte pieces) as one file; return its root CID.

    With ``name``, the file is wrapped in a directory under that name.
    Options are as for :func:`add_path`.
    """
    opts = ImportOptions(cid_version=cid_version, raw_leaves=raw_leaves, chunk_size=chunk_size)
    importer = _Importer(store, opts, on_bytes=on_bytes)
    source: AsyncIterable[bytes] | Iterable[bytes] = (data,) if isinstance(data, bytes) else data

    async def run() -> str:
        child = await importer.stream(source)
        if name is not None:
            if not name or "/" in name or name in (".", ".."):
                raise ValidationError(f"not a file name: {name!r}", field="name")
            child = await importer.directory([(name, child)])
        if pin and store is not None:
            await anyio.to_thread.run_sync(store.pin, child.cid)
        return cid_str(child.cid)

    return await _guarded(store, run)


async def _guarded(store: BlockStore | None, run: Callable[[], Awaitable[str]]) -> str:
    """Run an import holding the store's gc guard (so gc cannot remove fresh blocks)."""
    if store is None:
        return await run()
    cm = store.guard()
    await anyio.to_thread.run_sync(cm.__enter__)
    try:
        return await run()
    finally:
        cm.__exit__(None, None, None)
