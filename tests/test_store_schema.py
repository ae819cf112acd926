"""The state store's schema version and migrations: an older database opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from bacalhau import JobSpec
from bacalhau.errors import StoreError
from bacalhau.node.history import JobQuery
from bacalhau.node.store import SCHEMA_VERSION, StateStore, _conv
from bacalhau.protocol.requester import RequesterJob
from bacalhau.wire import pack

V0_SCHEMA = """
CREATE TABLE requester_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE compute_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE reputation (node_id TEXT PRIMARY KEY, record BLOB NOT NULL);
"""
"""The schema as releases before versioning wrote it (``user_version`` 0)."""


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        return int(version)
    finally:
        db.close()


def test_a_database_from_before_versioning_opens_and_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(V0_SCHEMA)
    job = RequesterJob(job_id="j-old", spec=JobSpec.noop(stdout="kept"), created_at=1.0)
    db.execute("INSERT INTO requester_jobs VALUES (?, ?)", ("j-old", pack(_conv.unstructure(job))))
    db.execute(
        "INSERT INTO reputation VALUES (?, ?)",
        ("n-1", pack({"node_id": "n-1", "counts": {"failed": 2}})),
    )
    db.commit()
    db.close()
    assert _version(path) == 0

    store = StateStore(path)
    assert store.migrated_from == 0
    requester, compute, reputation = store.load()
    assert [j.job_id for j in requester] == ["j-old"]
    assert requester[0].spec.engine == job.spec.engine
    assert compute == [] and reputation == {"n-1": {"failed": 2}}
    page = store.query(JobQuery())
    assert [r.job_id for r in page.rows] == ["j-old"], "the migration indexed the history"
    store.close()
    assert _version(path) == SCHEMA_VERSION


def test_a_new_database_is_created_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def main() -> None:
        store = StateStore(path)
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            store.save_requester(RequesterJob(job_id="j-1", spec=JobSpec.noop(), created_at=0.0))
            await store.flush()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert _version(path) == SCHEMA_VERSION
    again = StateStore(path)
    assert again.migrated_from == SCHEMA_VERSION
    assert [j.job_id for j in again.load()[0]] == ["j-1"]
    again.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this release"):
        StateStore(path)


def test_a_version_2_database_gains_the_sort_columns(tmp_path: Path) -> None:
    """Schema 2 (history without names or a last-change index) migrates to the current one."""
    path = tmp_path / "state.db"

    async def write() -> None:
        store = StateStore(path)
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            for i, name in enumerate(("b", "", "a")):
                spec = JobSpec.noop(name=name)
                store.save_requester(RequesterJob(job_id=f"j-{i}", spec=spec, created_at=i))
            await store.flush()
            tg.cancel_scope.cancel()

    anyio.run(write)
    db = sqlite3.connect(path)
    for index in ("jobs_by_name", "jobs_by_updated"):
        db.execute(f"DROP INDEX {index}")
    db.execute("ALTER TABLE jobs DROP COLUMN name")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()

    store = StateStore(path)
    assert store.migrated_from == 2
    page = store.query(JobQuery(sort="name", order="oldest"))
    assert [(r.name, r.job_id) for r in page.rows] == [("a", "j-2"), ("b", "j-0"), ("j-1", "j-1")]
    store.close()
    assert _version(path) == SCHEMA_VERSION
