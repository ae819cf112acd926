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
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
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

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StateStore", "StoreError", "migrate"]

log = logging.getLogger("bacalhau.store")

SCHEMA_VERSION = 1
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


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1}
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


_conv = cattrs.Converter()
_conv.register_unstructure_hook(bytes, lambda b: b)
_conv.register_structure_hook(bytes, lambda b, _: bytes(b))


class StateStore:
    """Snapshots of records by key, written in batches on a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self.migrated_from = migrate(self._db, path)
        except StoreError:
            self._db.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the node's state at {path}: {exc}") from None
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], bytes] = {}
        self._queued = 0
        self._written = 0
        self._wake = anyio.Event()
        self._done = anyio.Event()
        self.error: StoreError | None = None
        self.writes = 0

    # --- reading (at start) ---------------------------------------------------------------

    def load(self) -> tuple[list[RequesterJob], list[ComputeJob], dict[str, dict[str, int]]]:
        """Everything stored: requester jobs, compute jobs, reputation by node."""
        rows = {
            table: self._db.execute(f"SELECT record FROM {table}").fetchall()
            for table in ("requester_jobs", "compute_jobs", "reputation")
        }
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

    # --- writing --------------------------------------------------------------------------

    def save_requester(self, job: RequesterJob) -> None:
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
                await anyio.to_thread.run_sync(self._db.close)

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        upto = self._queued
        try:
            with anyio.CancelScope(shield=True):  # a taken batch is always written
                await anyio.to_thread.run_sync(self._commit, batch)
        except StoreError as exc:
            self.error = exc
            log.error("%s", exc)
            for key, value in batch.items():  # keep them for the next try
                self._pending.setdefault(key, value)
        else:
            self.error = None
            self._written = upto
        done, self._done = self._done, anyio.Event()
        done.set()

    def _commit(self, batch: dict[tuple[str, str], bytes]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for (table, key), record in batch.items():
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
        """Close the database now (:meth:`run` closes it when it stops)."""
        self._db.close()

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "commits": self.writes, "pending": len(self._pending)}
