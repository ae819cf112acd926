"""The state store's disk use follows what is live: once jobs expire, the database file
and its write-ahead log shrink back (incremental auto-vacuum and a truncating
checkpoint), and a database from an older release is converted when it opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from bacalhau import JobSpec, JobState, Network
from bacalhau.models import JobEvent
from bacalhau.node.clock import VirtualClock
from bacalhau.node.store import StateStore, _conv
from bacalhau.protocol.requester import RequesterJob
from bacalhau.wire import pack

PAD = "x" * 2000  # records of a few KiB, so 1,500 jobs make a file of several MiB


def _finished(i: int) -> RequesterJob:
    job = RequesterJob(
        job_id=f"j-{i:06d}", spec=JobSpec.noop(stdout=f"{i} {PAD}"), created_at=float(i)
    )
    job.history = [JobEvent(time=float(i), kind="completed", node_id="n")]
    job.state = JobState.COMPLETED
    return job


def _auto_vacuum(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        return int(mode)
    finally:
        db.close()


async def _fill(store: StateStore, count: int) -> None:
    for i in range(count):
        store.save_requester(_finished(i))
        if i % 500 == 499:
            await store.flush()
    await store.flush()


def test_the_store_shrinks_back_once_its_jobs_expire(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    sizes: dict[str, int] = {}

    async def main() -> None:
        store = StateStore(path)
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            await _fill(store, 1500)
            sizes["full"] = store.disk_bytes()
            for _ in range(10):  # bounded: 1,500 records, 500 per run
                done = await anyio.to_thread.run_sync(
                    lambda: store.expire(before=1e12, keep_tombstones=0.0, limit=500, now=1e12)
                )
                if not done:
                    break
            sizes["expired"] = store.disk_bytes()
            for _ in range(20):  # bounded: each call frees at most max_pages
                if not await anyio.to_thread.run_sync(lambda: store.compact(max_pages=500)):
                    break
            await anyio.to_thread.run_sync(store.compact)  # the last checkpoint
            sizes["compacted"] = store.disk_bytes()
            assert store.load()[0] == [] and store.get_job("j-000007") is None
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert sizes["full"] > 4_000_000, sizes
    assert sizes["expired"] >= sizes["full"] // 2, f"expiring alone frees no disk: {sizes}"
    assert sizes["compacted"] < sizes["full"] // 8, f"the file shrank back: {sizes}"
    assert path.stat().st_size < 500_000
    wal = path.with_name("state.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the log was truncated"


def test_a_store_keeps_what_is_live_when_it_compacts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def main() -> None:
        store = StateStore(path)
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            await _fill(store, 600)
            await anyio.to_thread.run_sync(
                lambda: store.expire(before=300.0, keep_tombstones=0.0, limit=1000, now=1e12)
            )
            for _ in range(20):
                if not await anyio.to_thread.run_sync(lambda: store.compact(max_pages=200)):
                    break
            tg.cancel_scope.cancel()

    anyio.run(main)
    again = StateStore(path)
    assert again.get_job("j-000299") is None
    kept = again.get_job("j-000599")
    assert kept is not None and kept.spec == _finished(599).spec
    assert again.expired_at("j-000000") == 1e12
    (ok,) = again._db.execute("PRAGMA integrity_check").fetchone()
    assert ok == "ok"
    again.close()


def test_an_older_database_is_converted_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE requester_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL)")
    job = _finished(1)
    db.execute(
        "INSERT INTO requester_jobs VALUES (?, ?)", (job.job_id, pack(_conv.unstructure(job)))
    )
    db.commit()
    db.close()
    assert _auto_vacuum(path) == 0  # NONE: what releases before this one created

    store = StateStore(path)
    assert store.migrated_from == 0
    assert store.needs_conversion and _auto_vacuum(path) == 0, "opening it rewrites nothing"
    assert store.convert()
    assert store.conversion.startswith("converted in ")
    found = store.get_job(job.job_id)
    assert found is not None and found.spec == job.spec
    assert not store.convert(), "once is enough"
    store.close()
    assert _auto_vacuum(path) == 2  # INCREMENTAL
    again = StateStore(path)
    assert not again.needs_conversion and again.conversion == "not needed"
    again.close()
    assert _auto_vacuum(path) == 2


def test_a_new_store_uses_incremental_vacuum(tmp_path: Path) -> None:
    StateStore(tmp_path / "state.db").close()
    assert _auto_vacuum(tmp_path / "state.db") == 2


@pytest.mark.anyio
async def test_retention_compacts_the_store_of_a_node() -> None:
    clock = VirtualClock()
    async with Network.in_memory(
        1, durable=True, clock=clock, job_retention=60.0, gc_interval=10_000.0
    ) as net:
        node = net.nodes[0]
        for i in range(3):
            await node.run_job(JobSpec.noop(stdout=f"{i} {PAD * 20}"), timeout=20)
        clock.advance(120)
        assert await node.collect_garbage() == 3
        assert node.stats["store_pages_freed"] > 0
        assert node.store is not None
        assert await anyio.to_thread.run_sync(node.store.compact) == 0, "nothing left to free"


def test_record_retention_catches_up_when_a_run_removes_a_full_batch() -> None:
    """A node finishing more than ``gc_batch`` jobs per ``gc_interval`` (the soak: 1,270 a
    minute against 1,000) must not fall further behind every run."""
    from bacalhau.node.retention import CATCH_UP, record_pause

    assert record_pause(1000, batch=1000, interval=60.0) == CATCH_UP
    assert record_pause(999, batch=1000, interval=60.0) == 60.0
    assert record_pause(0, batch=1000, interval=60.0) == 60.0
    assert record_pause(5, batch=5, interval=0.5) == 0.5, "never slower than the interval"


@pytest.mark.anyio
async def test_a_node_behind_on_retention_expires_a_full_batch_per_run() -> None:
    clock = VirtualClock()
    async with Network.in_memory(
        1, durable=True, clock=clock, job_retention=60.0, gc_interval=10_000.0, gc_batch=2
    ) as net:
        node = net.nodes[0]
        for i in range(5):
            await node.run_job(JobSpec.noop(stdout=f"{i}"), timeout=20)
        clock.advance(120)
        assert [await node.collect_garbage() for _ in range(4)] == [2, 2, 1, 0]


def test_close_waits_for_a_retention_run_on_another_thread(tmp_path: Path) -> None:
    """A node stopping while its retention runs on a worker thread: the writer
    connection is closed only once that run is done (closing a connection another thread
    is using crashed a `serve` process with SIGSEGV), and a run due after that is a no-op."""
    import threading

    store = StateStore(tmp_path / "state.db")
    closed = threading.Event()

    def close() -> None:
        store.close()
        closed.set()

    with store._lock:  # a retention run (expire or compact) is using the connection
        closer = threading.Thread(target=close)
        closer.start()
        assert not closed.wait(0.2)  # bounded: close must wait for the run, not close under it
        assert store._db.execute("SELECT 1").fetchone() == (1,)
    closer.join(10)
    assert closed.is_set()
    assert store.compact() == 0
    assert store.expire(before=1.0, keep_tombstones=1.0, limit=10, now=1.0) == 0
