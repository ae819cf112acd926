"""Durable node state in SQLite: the requester's jobs, the compute side's executions,
and the reputation record.

One SQLite file per node (``<data_dir>/state.db``) in WAL mode with
``synchronous=FULL``: a committed transaction survives a crash or a power cut.
Records are snapshots (msgpack of the whole job record), written by one writer
task in batches: the event loop only encodes and queues; the writes happen on a
worker thread. :meth:`StateStore.flush` waits until everything queued so far is
on disk, which ``Node.submit`` does before it returns, so an accepted job is
never lost.

A full or read-only disk makes :meth:`flush` raise
:class:`~bacalhau.errors.StoreError`; what was committed before stays intact.

The schema carries a version (SQLite's ``user_version``). Opening a database
written by an older release runs the migrations from its version up to
:data:`SCHEMA_VERSION`, in one transaction; a database from a newer release is
refused with a clear error rather than misread.

Disk use follows what is live. The file uses SQLite's incremental auto-vacuum (a new
database is created with it; a database from an older release is converted once, by
:meth:`StateStore.convert`: a ``VACUUM`` the node runs on a worker thread while it serves,
and only with enough free disk), so :meth:`StateStore.compact`, run after each
retention sweep, gives the pages that expired records freed back to the file system a
bounded number at a time, then checkpoints the write-ahead log and truncates it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import cattrs

from ..errors import StoreError
from ..protocol.compute import ComputeJob
from ..protocol.requester import RequesterJob
from ..wire import pack, unpack
from .history import (
    SCHEMA_2,
    SCHEMA_3,
    JobPage,
    JobQuery,
    JobRow,
    index_job,
    query_jobs,
    unindex_job,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StateStore",
    "StoreError",
    "free_bytes",
    "migrate",
    "use_incremental_vacuum",
]

log = logging.getLogger("bacalhau.store")

_conv = cattrs.Converter()
_conv.register_unstructure_hook(bytes, lambda b: b)
_conv.register_structure_hook(bytes, lambda b, _: bytes(b))

SCHEMA_VERSION = 3
COMPACT_PAGES = 4096
"""Most free pages one :meth:`StateStore.compact` gives back (16 MiB of 4 KiB pages)."""
WAL_LIMIT = 4 << 20
"""Bytes a checkpointed write-ahead log is truncated to (``journal_size_limit``)."""
"""The version this release writes. Version 0 is a database from before versioning."""


def _migrate_to_1(db: sqlite3.Connection) -> None:
    """The first versioned schema: one snapshot per requester job, compute job and node
    (version 0 had the same tables, or none in a new database)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS requester_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS compute_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS reputation (node_id TEXT PRIMARY KEY, record BLOB NOT NULL)"
    )


def _migrate_to_2(db: sqlite3.Connection) -> None:
    """Job history as an index (:mod:`bacalhau.node.history`); version 3 fills it."""
    for statement in SCHEMA_2:
        db.execute(statement)


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """The index sorts by last change and by name too; (re)built from the records."""
    for statement in SCHEMA_3:
        db.execute(statement)
    for (raw,) in db.execute("SELECT record FROM requester_jobs").fetchall():
        index_job(db, JobRow.of(_conv.structure(unpack(raw, max_size=1 << 30), RequesterJob)))


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
    3: _migrate_to_3,
}
"""``MIGRATIONS[n]`` takes a database from version ``n - 1`` to ``n``."""


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; return the version it had.

    Raises:
        StoreError: the database was written by a newer release.
    """
    (found,) = db.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the node's state at {path} has schema version {found}, newer than this "
            f"release's {SCHEMA_VERSION}: upgrade bacalhau-py or use another --data-dir"
        )
    if found == SCHEMA_VERSION:
        return int(found)
    db.execute("BEGIN IMMEDIATE")
    try:
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if found:
        log.info("migrated %s from schema version %d to %d", path, found, SCHEMA_VERSION)
    return int(found)


def use_incremental_vacuum(db: sqlite3.Connection) -> bool:
    """Make a new database give freed pages back on ``PRAGMA incremental_vacuum``;
    return True if the database already existed without it (it needs
    :meth:`StateStore.convert`, a one-time ``VACUUM``, which this does not run).

    Call it on a connection outside a transaction, before WAL mode writes the header.
    """
    (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
    if mode == 2:  # INCREMENTAL
        return False
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
    if mode == 2:  # a new, empty file takes the setting as is
        return False
    (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if not tables:  # an empty file that had its header written: rewriting it is free
        db.execute("VACUUM")
        return False
    return True


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on the file system holding ``path``."""
    return shutil.disk_usage(path).free


class StateStore:
    """Snapshots of records by key, written in batches on a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.needs_conversion = use_incremental_vacuum(self._db)  # before WAL mode
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT:d}")
            self.migrated_from = migrate(self._db, path)
        except StoreError:
            self._db.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the node's state at {path}: {exc}") from None
        self._lock = threading.Lock()
        self._reader = self._connect_reader()
        self._reader_lock = threading.Lock()
        self._querier = self._connect_reader()
        self._querier_lock = threading.Lock()
        self._pending: dict[tuple[str, str], bytes] = {}
        self._inflight: dict[tuple[str, str], bytes] = {}
        self._rows: dict[str, JobRow] = {}
        self._queued = 0
        self._written = 0
        self._wake = anyio.Event()
        self._done = anyio.Event()
        self._closed = False
        self._db_closed = False  # under _lock: the writer connection is closed
        self.error: StoreError | None = None
        self.writes = 0
        self.conversion = "converting" if self.needs_conversion else "not needed"
        """Where the one-time conversion to incremental auto-vacuum stands: "not
        needed", "converting", "converted in N s" or "skipped: <why>"."""

    def _connect_reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA query_only = 1")
        return db

    # --- reading --------------------------------------------------------------------------

    def load(self) -> tuple[list[RequesterJob], list[ComputeJob], dict[str, dict[str, int]]]:
        """What a node holds in memory at start: its *live* requester jobs (finished ones
        stay in the store, read on demand), compute jobs, reputation by node."""
        rows = {
            table: self._db.execute(f"SELECT record FROM {table}").fetchall()
            for table in ("compute_jobs", "reputation")
        }
        rows["requester_jobs"] = self._db.execute(
            "SELECT record FROM requester_jobs WHERE job_id IN "
            "(SELECT job_id FROM jobs WHERE live = 1)"
        ).fetchall()
        requester = [
            _conv.structure(unpack(r[0], max_size=1 << 30), RequesterJob)
            for r in rows["requester_jobs"]
        ]
        compute = [
            _conv.structure(unpack(r[0], max_size=1 << 30), ComputeJob)
            for r in rows["compute_jobs"]
        ]
        reputation = {}
        for (raw,) in rows["reputation"]:
            data = unpack(raw)
            reputation[data["node_id"]] = data["counts"]
        return requester, compute, reputation

    def get_job(self, job_id: str) -> RequesterJob | None:
        """A requester job's record (one indexed read; sees writes not yet committed)."""
        key = ("requester_jobs", job_id)
        raw = self._pending.get(key) or self._inflight.get(key)
        if raw is None:
            with self._reader_lock:
                found = self._reader.execute(
                    "SELECT record FROM requester_jobs WHERE job_id = ?", (job_id,)
                ).fetchone()
            if found is None:
                return None
            raw = found[0]
        return _conv.structure(unpack(raw, max_size=1 << 30), RequesterJob)

    def find_jobs(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Ids of stored requester jobs starting with ``prefix`` (an index range read)."""
        pending = [k for (t, k) in (*self._pending, *self._inflight) if t == "jobs"]
        with self._reader_lock:
            found = self._reader.execute(
                "SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            ).fetchall()
        ids = {r[0] for r in found} | {k for k in pending if k.startswith(prefix)}
        return sorted(ids)[:limit]

    def expired_at(self, job_id: str) -> float | None:
        """When retention removed ``job_id``'s record (None: it never did)."""
        with self._reader_lock:
            found = self._reader.execute(
                "SELECT expired_at FROM expired_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if found is None else float(found[0])

    def query(self, query: JobQuery) -> JobPage:
        """Run a history query (blocking: call it on a worker thread)."""
        with self._querier_lock:
            return query_jobs(self._querier, query)

    def expire(self, *, before: float, keep_tombstones: float, limit: int, now: float) -> int:
        """Delete up to ``limit`` finished jobs last changed before ``before``, leaving a
        tombstone (so they answer "expired on ..."); drop tombstones older than
        ``keep_tombstones``. Blocking: call it on a worker thread. Returns how many."""
        with self._lock:
            if self._db_closed:  # the node stopped while retention was due: nothing to do
                return 0
            try:
                self._db.execute("BEGIN IMMEDIATE")
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT job_id FROM jobs WHERE live = 0 AND updated_at < ? LIMIT ?",
                        (before, limit),
                    ).fetchall()
                ]
                for job_id in ids:
                    unindex_job(self._db, job_id)
                self._db.executemany(
                    "INSERT OR REPLACE INTO expired_jobs VALUES (?, ?)", [(j, now) for j in ids]
                )
                self._db.execute(
                    "DELETE FROM expired_jobs WHERE job_id IN (SELECT job_id FROM expired_jobs "
                    "WHERE expired_at < ? LIMIT ?)",
                    (keep_tombstones, limit),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"could not expire jobs in {self.path}: {exc}") from None
        return len(ids)

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk: the database file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def compact(self, *, max_pages: int = COMPACT_PAGES) -> int:
        """Give up to ``max_pages`` free pages back to the file system, then checkpoint
        the write-ahead log and truncate it; return how many pages were freed.

        Blocking (call it on a worker thread); bounded work per call, so a large
        backlog shrinks over several retention runs. The writer waits meanwhile, the
        event loop never does. A reader in the middle of a query can keep the log from
        being truncated this time; the next call does it.
        """
        if max_pages < 1:
            return 0
        with self._lock:
            if self._db_closed:
                return 0
            try:
                (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
                if free:
                    # executescript steps the pragma to its end (execute frees one page)
                    self._db.executescript(f"PRAGMA incremental_vacuum({min(free, max_pages):d});")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"could not compact {self.path}: {exc}") from None
        return int(min(free, max_pages))

    def convert(self, *, free: Callable[[Path], int] | None = None) -> bool:
        """Convert a store from an older release to incremental auto-vacuum (so that it
        shrinks as jobs expire); return True if it did. A no-op for any other store.

        Blocking and slow on a large file (a ``VACUUM`` rewrites it): the node runs it
        on a worker thread once it serves, and writes wait until it is done (reads do
        not). The rewrite needs room: a copy of the file and a write-ahead log as large
        as the file. With less free disk than twice the file's size it is skipped, with
        a warning: the node runs on, its file does not shrink, and the next start tries
        again.
        """
        if not self.needs_conversion:
            return False
        size = self.disk_bytes()
        room = (free or free_bytes)(self.path.parent)
        if room < 2 * size:
            self.conversion = f"skipped: {room / 1e6:.1f} MB free, {2 * size / 1e6:.1f} MB needed"
            log.warning(
                "%s is not converted to incremental auto-vacuum: the one-time VACUUM needs "
                "about %.1f MB free (twice the file) and the disk has %.1f MB. The node runs "
                "on as before, but the file will not shrink when jobs expire; free some disk "
                "and restart the node to convert it",
                self.path,
                2 * size / 1e6,
                room / 1e6,
            )
            return False
        log.warning(
            "%s: converting to incremental auto-vacuum, a one-time VACUUM of %.1f MB on a "
            "worker thread (the node serves meanwhile; saving waits until it is done)",
            self.path,
            size / 1e6,
        )
        started = time.monotonic()
        with self._lock:
            if self._db_closed:
                return False
            try:
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._db.execute("VACUUM")  # the setting takes effect for an existing file
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                self.conversion = f"skipped: {exc}"
                log.warning("%s is not converted to incremental auto-vacuum: %s", self.path, exc)
                return False
        took = time.monotonic() - started
        self.needs_conversion = False
        self.conversion = f"converted in {took:.1f} s"
        log.warning(
            "%s: converted to incremental auto-vacuum in %.1f s (%.1f MB now); disk use now "
            "follows retention",
            self.path,
            took,
            self.disk_bytes() / 1e6,
        )
        return True

    async def convert_off_loop(self) -> bool:
        """:meth:`convert` on a worker thread (a node starts it once it serves)."""
        return await anyio.to_thread.run_sync(lambda: self.convert())

    # --- writing --------------------------------------------------------------------------

    def save_requester(self, job: RequesterJob) -> None:
        """Queue the job's record and its history row (written in one transaction)."""
        self._rows[job.job_id] = JobRow.of(job)
        self._queue("jobs", job.job_id, b"row")
        self._queue("requester_jobs", job.job_id, pack(_conv.unstructure(job)))

    def save_compute(self, job: ComputeJob) -> None:
        self._queue("compute_jobs", job.job_id, pack(_conv.unstructure(job)))

    def save_reputation(self, node_id: str, counts: dict[str, int]) -> None:
        self._queue("reputation", node_id, pack({"node_id": node_id, "counts": dict(counts)}))

    def forget_compute(self, job_id: str) -> None:
        self._queue("compute_jobs", job_id, b"")

    def _queue(self, table: str, key: str, record: bytes) -> None:
        self._pending[(table, key)] = record
        self._queued += 1
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed.

        Raises:
            StoreError: the write failed (the reason says why: disk full, read-only, ...).
        """
        target = self._queued
        while self._written < target:
            if self.error is not None:
                raise self.error
            if self._closed:
                raise StoreError(f"{self.path} is closed (its node stopped): nothing more is saved")
            done = self._done
            await done.wait()
        if self.error is not None:
            raise self.error

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The one writer task."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self._write_pending()
        finally:
            with anyio.CancelScope(shield=True):
                await self._write_pending()
                await anyio.to_thread.run_sync(self.close)
            self._closed = True
            done, self._done = self._done, anyio.Event()
            done.set()  # wake flushes still waiting: they raise, nothing more is written

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        rows, self._rows = self._rows, {}
        self._inflight = batch
        upto = self._queued
        try:
            with anyio.CancelScope(shield=True):  # a taken batch is always written
                await anyio.to_thread.run_sync(self._commit, batch, rows)
        except StoreError as exc:
            self.error = exc
            log.error("%s", exc)
            for key, value in batch.items():  # keep them for the next try
                self._pending.setdefault(key, value)
            for job_id, row in rows.items():
                self._rows.setdefault(job_id, row)
        else:
            self.error = None
            self._written = upto
        self._inflight = {}
        done, self._done = self._done, anyio.Event()
        done.set()

    def _commit(self, batch: dict[tuple[str, str], bytes], rows: dict[str, JobRow]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for (table, key), record in batch.items():
                    if table == "jobs":
                        index_job(self._db, rows[key])
                        continue
                    column = "node_id" if table == "reputation" else "job_id"
                    if record:
                        self._db.execute(
                            f"INSERT OR REPLACE INTO {table} ({column}, record) VALUES (?, ?)",
                            (key, record),
                        )
                    else:
                        self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
                self._db.execute("COMMIT")
                self.writes += 1
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"could not save the node's state in {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the database now (:meth:`run` closes it when it stops).

        Each connection is closed under its own lock: a retention run or a query on a
        worker thread finishes first (closing a connection another thread is using can
        crash the process), and what comes after finds the store closed."""
        with self._querier_lock:
            self._querier.close()
        with self._reader_lock:
            self._reader.close()
        with self._lock:
            self._db_closed = True
            self._db.close()

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "commits": self.writes, "pending": len(self._pending)}
