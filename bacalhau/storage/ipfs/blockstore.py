"""The on-disk block store: one file per block, pins, garbage collection.

Layout under the store's directory (Kubo's flatfs sharding, ``next-to-last/2``)::

    blocks/<XY>/<KEY>.data   KEY = base32 (upper, unpadded) of the block's multihash,
                             XY = the two characters before KEY's last one
    pins/<CID>               a pin: the file holds ``recursive`` or ``direct``, and on a
                             second line ``expires <unix time>`` for a pin that ends
    tmp/                     blocks being written (renamed into place when complete)
    gc.lock                  flock: shared while importing/pinning, exclusive during gc

Blocks are keyed by multihash, as in Kubo, so a CIDv0 and a CIDv1 naming the
same bytes share one file. Writes go to ``tmp/`` and are renamed into place, so
a reader never sees a partial block and concurrent writers of one block are
harmless (both write the same bytes). Garbage collection keeps every block
reachable from a pin and removes the rest; it takes the exclusive lock, so it
never runs between an import's writes and its pin (importers hold the shared
lock through :meth:`BlockStore.guard`).

Disk bounded by what is live: pins may expire (:meth:`BlockStore.expire_pins`), and
:meth:`BlockStore.evict` keeps the store under a byte budget by removing unpinned blocks
least recently used first. It never removes a block reachable from a pin, nor one read
within a grace period, and it takes the exclusive gc lock, so it never runs while an
import, a pin or an input being prepared for a job holds the shared one.

All methods are synchronous and thread-safe; async callers run them through
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import itertools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from ...cid import (
    DAG_PB,
    RAW,
    AnyCid,
    block_digest_ok,
    cid_str,
    identity_data,
    split_cid,
    to_cid,
)
from ...errors import BlockNotFound, CorruptBlock, DecodeError, StorageError
from .dagpb import decode_node

__all__ = ["BlockStore", "blockstore_path", "links_of"]

_STALE_TMP_SECONDS = 3600.0
MAX_TRACKED = 100_000
"""Most blocks whose last read is remembered in memory (beyond it, the oldest are
forgotten and fall back to their file's time, as after a restart)."""


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux ``syncfs(2)`` through libc, or None where it is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs() if sys.platform.startswith("linux") else None


def _write_parts(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    written = os.writev(fd, parts)
    total = sum(len(p) for p in parts)
    if written != total:
        view = memoryview(b"".join(parts))[written:]
        while view:
            view = view[os.write(fd, view) :]


def _read_file(path: str) -> bytes:
    """A whole file's bytes: one open, one ``fstat``, one read of that size (a block
    file never changes once renamed into place; a short read is read on to EOF)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size) if size else b""
        if len(data) == size:
            return data
        parts = [data]
        while more := os.read(fd, 1024 * 1024):
            parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=8192)
def _key(cid: bytes) -> str:
    """The flatfs key of a block: base32 (upper, unpadded) of its multihash (the
    recent ones remembered: a fetched block's key is wanted again right away)."""
    return base64.b32encode(split_cid(cid)[2]).decode("ascii").rstrip("=")


def blockstore_path(data_dir: Path) -> Path:
    """Where a node keeps its block store inside its data dir."""
    return Path(data_dir) / "blocks"


def links_of(cid: bytes, block: bytes) -> list[bytes]:
    """Child CIDs of a block: dag-pb links; none for raw and other codecs.

    Raises:
        DecodeError: a dag-pb block that does not decode.
    """
    if split_cid(cid)[1] != DAG_PB:
        return []
    return [link.hash for link in decode_node(block).links]


@attrs.define
class BlockStore:
    """Blocks on disk under ``path``; see the module docstring.

    Args:
        path: the store's directory (created if missing).
        fsync: fsync each block before renaming it into place (durable across
            power loss, slower).
    """

    path: Path = attrs.field(converter=Path)
    fsync: bool = attrs.field(default=False, kw_only=True)
    _shards: set[str] = attrs.field(factory=set, init=False, repr=False)
    _used: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    """Block file name -> when it was last read, least recent first."""
    _used_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _names: Iterator[int] = attrs.field(factory=itertools.count, init=False, repr=False)
    """Numbers for temporary file names (``next`` on a count is atomic under the GIL)."""
    _blocks_dir: str = attrs.field(default="", init=False, repr=False)
    _tmp_dir: str = attrs.field(default="", init=False, repr=False)
    _reading: dict[bytes, int] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for sub in ("blocks", "pins", "tmp"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        (self.path / "gc.lock").touch(exist_ok=True)
        self._blocks_dir = os.fspath(self.path / "blocks")
        self._tmp_dir = os.fspath(self.path / "tmp")

    # --- keys ---------------------------------------------------------------------------

    def _path(self, cid: bytes) -> tuple[str, str]:
        """The block's file path and file name, as strings (cheaper than :class:`Path`
        on the hot paths: every block served or read goes through here)."""
        key = _key(cid)
        name = f"{key}.data"
        return f"{self._blocks_dir}/{key[-3:-1]}/{name}", name

    def _file(self, cid: bytes) -> tuple[Path, str]:
        key = _key(cid)
        shard = key[-3:-1]
        return self.path / "blocks" / shard / f"{key}.data", shard

    # --- blocks -------------------------------------------------------------------------

    def has(self, cid: AnyCid) -> bool:
        """True if the block is stored (identity CIDs are always present)."""
        raw = to_cid(cid)
        if identity_data(raw) is not None:
            return True
        return os.path.exists(self._path(raw)[0])

    def get(self, cid: AnyCid) -> bytes:
        """The block's bytes, as stored (not re-hashed; see :meth:`get_verified`).

        Raises:
            BlockNotFound: not in this store.
        """
        raw = to_cid(cid)
        inline = identity_data(raw)
        if inline is not None:
            return inline
        path, name = self._path(raw)
        try:
            data = _read_file(path)
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid_str(raw)} is not in the local store") from None
        self._touch(name)
        return data

    def _touch(self, name: str) -> None:
        """Remember that block file ``name`` was just read (for least-recently-used)."""
        with self._used_lock:
            self._used.pop(name, None)
            self._used[name] = time.time()
            if len(self._used) > MAX_TRACKED:
                for old in list(self._used)[: MAX_TRACKED // 10]:
                    del self._used[old]

    def _peek(self, raw: bytes) -> bytes:
        """A block's bytes without counting as a use (walks over pins, locality checks)."""
        inline = identity_data(raw)
        if inline is not None:
            return inline
        try:
            return _read_file(self._path(raw)[0])
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid_str(raw)} is not in the local store") from None

    def get_verified(self, cid: AnyCid) -> bytes:
        """The block's bytes after checking their hash; a corrupt block is deleted.

        Raises:
            BlockNotFound: not in this store.
            CorruptBlock: the stored bytes did not match (the file was removed).
        """
        raw = to_cid(cid)
        data = self.get(raw)
        if not block_digest_ok(raw, data):
            self.delete(raw)
            raise CorruptBlock(f"block {cid_str(raw)} was corrupt on disk and has been removed")
        return data

    def size(self, cid: AnyCid) -> int:
        """Stored size of a block in bytes.

        Raises:
            BlockNotFound: not in this store.
        """
        raw = to_cid(cid)
        try:
            return os.stat(self._path(raw)[0]).st_size
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid_str(raw)} is not in the local store") from None

    def put(self, cid: AnyCid, data: bytes | memoryview, *, verify: bool = True) -> None:
        """Store a block (a no-op if already present).

        Raises:
            CorruptBlock: ``verify`` is set and ``data`` does not hash to ``cid``.
        """
        raw = to_cid(cid)
        if verify and not block_digest_ok(raw, data):
            raise CorruptBlock(f"refusing to store block {cid_str(raw)}: bytes do not match")
        self.put_parts(raw, (data,))

    def put_parts(self, cid: bytes, parts: Sequence[bytes | memoryview]) -> None:
        """Store a block given as consecutive pieces, unverified (for the importer)."""
        self.put_many([(cid, parts)])

    def put_many(self, blocks: Sequence[tuple[bytes, Sequence[bytes | memoryview]]]) -> int:
        """Store several blocks (each given as consecutive pieces), unverified: the
        caller has checked or computed their hashes. Returns how many were new.

        One batch costs one pass of file writes and renames; with ``fsync`` the whole
        batch is made durable by one ``syncfs`` of the store's file system before the
        renames and one after them (not one ``fsync`` per block), so when this returns
        every block of the batch survives a power loss. Without ``fsync`` a crash may
        lose the newest blocks (never leave a partial one under its name): they are
        missing, and fetched or added again.
        """
        staged: list[tuple[str, str]] = []
        seen: set[str] = set()
        blocks_dir = self._blocks_dir
        tmp_prefix = f"{self._tmp_dir}/put-{os.getpid()}-{threading.get_ident()}-"
        try:
            for cid, parts in blocks:
                if identity_data(cid) is not None:
                    continue
                key = _key(cid)
                shard = key[-3:-1]
                dest = f"{blocks_dir}/{shard}/{key}.data"
                if dest in seen or os.path.exists(dest):
                    continue
                seen.add(dest)
                if shard not in self._shards:
                    os.makedirs(f"{blocks_dir}/{shard}", exist_ok=True)
                    self._shards.add(shard)
                # a name no other live writer uses (pid, thread, counter); a leftover of a
                # crashed process of the same pid may hold it: then a random one
                tmp = f"{tmp_prefix}{next(self._names)}"
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    fd, tmp = tempfile.mkstemp(dir=self._tmp_dir, prefix="put-")
                staged.append((tmp, dest))
                try:
                    _write_parts(fd, parts)
                finally:
                    os.close(fd)
            if staged and self.fsync:
                self._sync([tmp for tmp, _ in staged])
            for tmp, dest in staged:
                os.replace(tmp, dest)
            if staged and self.fsync:
                self._sync([os.path.dirname(dest) for _, dest in staged])
        except BaseException:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        return len(staged)

    def _sync(self, paths: Sequence[str]) -> None:
        """Make ``paths`` (files or directories) durable: one ``syncfs`` when the
        platform has it, else an ``fsync`` of each."""
        if _syncfs is not None:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        for path in dict.fromkeys(paths):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def delete(self, cid: AnyCid) -> bool:
        """Remove a block; True if it was there. Pins are not consulted."""
        raw = to_cid(cid)
        try:
            self._file(raw)[0].unlink()
        except FileNotFoundError:
            return False
        return True

    def all_cids(self) -> Iterator[bytes]:
        """Multihashes of every stored block (as raw-codec CIDv1 bytes)."""
        root = self.path / "blocks"
        for shard in sorted(os.listdir(root)):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for name in sorted(os.listdir(root / shard)):
                    if name.endswith(".data"):
                        key = name[:-5]
                        try:
                            mh = base64.b32decode(key + "=" * (-len(key) % 8))
                        except ValueError:
                            continue
                        yield b"\x01" + bytes((RAW,)) + mh

    def stat(self) -> tuple[int, int]:
        """``(number of blocks, total bytes)``."""
        count = total = 0
        root = self.path / "blocks"
        for entry in os.scandir(root):
            if entry.is_dir():
                for item in os.scandir(entry.path):
                    if item.name.endswith(".data"):
                        count += 1
                        total += item.stat().st_size
        return count, total

    # --- DAGs ---------------------------------------------------------------------------

    def walk(self, cid: AnyCid, *, skip_missing: bool = False) -> Iterator[bytes]:
        """Every CID of the DAG under ``cid``, depth-first, each once.

        Raises:
            BlockNotFound: a block is missing (unless ``skip_missing``).
        """
        seen: set[bytes] = set()
        stack = [to_cid(cid)]
        while stack:
            current = stack.pop()
            mh = split_cid(current)[2]
            if mh in seen:
                continue
            seen.add(mh)
            try:
                block = self._peek(current)
            except BlockNotFound:
                if skip_missing:
                    continue
                raise
            yield current
            try:
                stack.extend(reversed(links_of(current, block)))
            except DecodeError as exc:
                raise StorageError(f"block {cid_str(current)} is damaged: {exc}") from None

    def missing(self, cid: AnyCid, *, limit: int | None = None) -> list[bytes]:
        """CIDs of the DAG under ``cid`` that are not stored (first ``limit`` of them)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack = [to_cid(cid)]
        while stack and (limit is None or len(out) < limit):
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            inline = identity_data(current)
            if inline is not None:
                block = inline
            elif split_cid(current)[1] != DAG_PB:  # no links: only whether it is here
                if not os.path.exists(self._path(current)[0]):
                    out.append(current)
                continue
            else:  # (not _peek: an absent block is the usual case here, and needs no message)
                try:
                    block = _read_file(self._path(current)[0])
                except FileNotFoundError:
                    out.append(current)
                    continue
            with contextlib.suppress(DecodeError):
                stack.extend(reversed(links_of(current, block)))
        return out

    def has_dag(self, cid: AnyCid) -> bool:
        """True if every block of the DAG under ``cid`` is stored."""
        return not self.missing(cid, limit=1)

    # --- pins and gc --------------------------------------------------------------------

    def _pin_file(self, cid: bytes) -> Path:
        return self.path / "pins" / cid_str(cid)

    def pin(self, cid: AnyCid, recursive: bool = True, *, expires: float | None = None) -> None:
        """Protect ``cid`` (and with ``recursive`` its whole DAG) from :meth:`gc` and
        :meth:`evict`, until ``expires`` (a unix time; None: until unpinned).

        Only the root must be stored; a recursive pin of an incomplete DAG keeps
        whichever of its blocks are here. Pinning a pinned CID again keeps the stronger
        of the two: recursive over direct, the later expiry, and no expiry over any.

        Raises:
            BlockNotFound: the root block is not stored.
        """
        raw = to_cid(cid)
        if not self.has(raw):
            raise BlockNotFound(f"cannot pin {cid_str(raw)}: its root block is not stored")
        kind = "recursive" if recursive else "direct"
        path = self._pin_file(raw)
        old = _read_pin(path)
        if old is not None:
            old_kind, old_expires = old
            if old_kind == "recursive":
                kind = "recursive"
            lasting = old_expires is None or expires is None
            expires = None if lasting else max(expires or 0.0, old_expires or 0.0)
            if (old_kind, old_expires) == (kind, expires):
                return
        fd, tmp = tempfile.mkstemp(dir=self.path / "tmp", prefix="pin-")
        with os.fdopen(fd, "w") as fh:
            fh.write(kind if expires is None else f"{kind}\nexpires {expires!r}")
        os.replace(tmp, path)

    def pin_expires(self, cid: AnyCid) -> float | None:
        """When the pin of ``cid`` ends (None: it does not, or there is no pin)."""
        found = _read_pin(self._pin_file(to_cid(cid)))
        return None if found is None else found[1]

    def expire_pins(self, now: float, *, limit: int = 10_000) -> int:
        """Remove up to ``limit`` pins whose time has come; return how many."""
        removed = 0
        for entry in os.scandir(self.path / "pins"):
            if removed >= limit:
                break
            found = _read_pin(Path(entry.path))
            if found is not None and found[1] is not None and found[1] <= now:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def unpin(self, cid: AnyCid) -> bool:
        """Remove a pin; True if there was one."""
        try:
            self._pin_file(to_cid(cid)).unlink()
        except FileNotFoundError:
            return False
        return True

    def pins(self) -> dict[str, str]:
        """``{cid string: "recursive" | "direct"}`` of every pin."""
        out: dict[str, str] = {}
        for entry in os.scandir(self.path / "pins"):
            found = _read_pin(Path(entry.path))
            if found is not None:
                out[entry.name] = found[0]
        return out

    def is_pinned(self, cid: AnyCid) -> bool:
        return self._pin_file(to_cid(cid)).exists()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Hold off :meth:`gc` (shared lock) while blocks are written and then pinned.

        Blocks until a running gc finishes; call it from a worker thread in async code.
        """
        with open(self.path / "gc.lock", "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def reading(self, cid: AnyCid) -> Iterator[None]:
        """Mark the DAG under ``cid`` as in use while a streamed read serves it.

        Until the block is left, :meth:`evict` and :meth:`gc` keep every block of that
        DAG however long the read takes (a slow client, a large file), and each
        eviction that finds the read still running marks those blocks as used then, so
        they stay the most recently used when it ends. Unlike :meth:`guard` it holds off
        neither, so a read that never ends cannot stop the store from being trimmed
        elsewhere. Cheap to enter and leave (no I/O: safe on an event loop); nestable
        and thread-safe.
        """
        root = to_cid(cid)
        with self._used_lock:
            self._reading[root] = self._reading.get(root, 0) + 1
        try:
            yield
        finally:
            with self._used_lock:
                left = self._reading[root] - 1
                if left:
                    self._reading[root] = left
                else:
                    del self._reading[root]

    def _in_use(self) -> set[bytes]:
        """Multihashes of the stored blocks of every DAG a streamed read is serving."""
        with self._used_lock:
            roots = list(self._reading)
        keep: set[bytes] = set()
        for root in roots:
            with contextlib.suppress(StorageError):  # a damaged DAG: keep what was walked
                for cid in self.walk(root, skip_missing=True):
                    keep.add(split_cid(cid)[2])
        for mh in keep:  # used now: still the most recent when the read ends
            self._touch(base64.b32encode(mh).decode("ascii").rstrip("=") + ".data")
        return keep

    def gc(self) -> int:
        """Remove every block not reachable from a pin; return how many were removed.

        Waits for running imports (see :meth:`guard`) and blocks new ones meanwhile.
        """
        with open(self.path / "gc.lock", "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return self._gc_locked()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _pinned(self) -> set[bytes]:
        """Multihashes of every stored block reachable from a pin."""
        keep: set[bytes] = set()
        for name, kind in self.pins().items():
            try:
                root = to_cid(name)
            except ValueError:  # includes ValidationError: a stray file in pins/
                continue
            if kind == "recursive":
                for cid in self.walk(root, skip_missing=True):
                    keep.add(split_cid(cid)[2])
            else:
                keep.add(split_cid(root)[2])
        return keep

    def evict(
        self, budget: int, *, grace: float = 600.0, limit: int = 10_000, now: float | None = None
    ) -> tuple[int, int]:
        """Bring the store under ``budget`` bytes by removing unpinned blocks, least
        recently used (read, or else written) first; return ``(blocks, bytes)`` removed.

        Never removes a block reachable from a pin, nor one used within ``grace``
        seconds of ``now``; removes at most ``limit`` blocks per call (so one call never
        holds the store for long). Waits for running imports and input preparation
        (:meth:`guard`) and blocks new ones meanwhile, as :meth:`gc` does.
        """
        now = time.time() if now is None else now
        with open(self.path / "gc.lock", "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return self._evict_locked(budget, grace, limit, now)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _evict_locked(self, budget: int, grace: float, limit: int, now: float) -> tuple[int, int]:
        files: list[tuple[str, str, int, float]] = []  # (path, name, size, mtime)
        total = 0
        for shard in os.scandir(self.path / "blocks"):
            if not shard.is_dir():
                continue
            for item in os.scandir(shard.path):
                if item.name.endswith(".data"):
                    with contextlib.suppress(FileNotFoundError):
                        st = item.stat()
                        files.append((item.path, item.name, st.st_size, st.st_mtime))
                        total += st.st_size
        if total <= budget:
            return 0, 0
        in_use = self._in_use()
        keep = {
            base64.b32encode(mh).decode("ascii").rstrip("=") + ".data"
            for mh in self._pinned() | in_use
        }
        with self._used_lock:
            used = dict(self._used)
        candidates = sorted(
            (max(mtime, used.get(name, 0.0)), path, name, size)
            for path, name, size, mtime in files
            if name not in keep
        )
        removed = freed = 0
        for last, path, name, size in candidates:
            if total <= budget or removed >= limit or last > now - grace:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
                freed += size
                total -= size
            with self._used_lock:
                self._used.pop(name, None)
        return removed, freed

    def _gc_locked(self) -> int:
        keep = self._pinned() | self._in_use()
        removed = 0
        for key in list(self.all_cids()):
            mh = split_cid(key)[2]
            if mh not in keep and self.delete(key):
                removed += 1
        now = time.time()
        for entry in os.scandir(self.path / "tmp"):
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                    os.unlink(entry.path)
        return removed


def _read_pin(path: Path) -> tuple[str, float | None] | None:
    """A pin file's kind and expiry (None: no such pin, or not a pin file)."""
    try:
        lines = path.read_text().split("\n")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None
    kind = lines[0].strip()
    if kind not in ("recursive", "direct"):
        return None
    expires = None
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "expires":
            with contextlib.suppress(ValueError):
                expires = float(value)
    return kind, expires
