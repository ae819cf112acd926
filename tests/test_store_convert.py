"""A store from an older release (auto-vacuum off) is converted to incremental
auto-vacuum once, by a ``VACUUM`` on a worker thread while the node serves, and only when
the disk has room for it; without room the node runs on, unconverted, and says why."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from bacalhau import JobSpec, JobState, Network
from bacalhau.node import store as store_module
from bacalhau.node.store import StateStore, _conv
from bacalhau.protocol.requester import RequesterJob
from bacalhau.wire import pack


def _older_store(path: Path, jobs: int = 50) -> list[str]:
    """A state.db as releases before incremental auto-vacuum wrote it (schema 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE requester_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL)")
    db.execute("CREATE TABLE compute_jobs (job_id TEXT PRIMARY KEY, record BLOB NOT NULL)")
    db.execute("CREATE TABLE reputation (node_id TEXT PRIMARY KEY, record BLOB NOT NULL)")
    ids = []
    for i in range(jobs):
        job = RequesterJob(
            job_id=f"old-{i:04d}", spec=JobSpec.noop(stdout=f"{i} " + "x" * 1000), created_at=1.0
        )
        job.state = JobState.COMPLETED
        db.execute(
            "INSERT INTO requester_jobs VALUES (?, ?)", (job.job_id, pack(_conv.unstructure(job)))
        )
        ids.append(job.job_id)
    db.commit()
    db.close()
    return ids


def _auto_vacuum(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        return int(mode)
    finally:
        db.close()


def test_without_room_on_disk_the_store_is_not_converted_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    ids = _older_store(path)
    store = StateStore(path)
    size = store.disk_bytes()
    with caplog.at_level(logging.WARNING, logger="bacalhau.store"):
        assert not store.convert(free=lambda _: 2 * size - 1)
    assert store.needs_conversion and store.conversion.startswith("skipped: ")
    assert "not converted to incremental auto-vacuum" in caplog.text
    assert "free some disk" in caplog.text
    assert _auto_vacuum(path) == 0, "nothing was rewritten"

    async def main() -> None:  # the store works on as before
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            job = store.get_job(ids[3])
            assert job is not None
            job.state = JobState.FAILED
            store.save_requester(job)
            await store.flush()
            tg.cancel_scope.cancel()

    anyio.run(main)
    again = StateStore(path)
    assert again.needs_conversion, "the next start tries again"
    saved = again.get_job(ids[3])
    assert saved is not None and saved.state is JobState.FAILED
    assert again.convert(free=lambda _: 2 * size)  # with just enough room, it converts
    again.close()
    assert _auto_vacuum(path) == 2


@pytest.mark.anyio
async def test_a_node_converts_an_older_store_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion is held on its worker thread until the node has run a job: the
    event loop served meanwhile. Had it run on the loop, the hold could not be released
    by the test (it waits on the loop), and ``released`` would be False."""
    ids = _older_store(tmp_path / "node0" / "state.db")
    release, converted = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    real = StateStore.convert

    def held(self: StateStore, **kwargs: object) -> bool:
        seen["off_loop"] = threading.current_thread() is not threading.main_thread()
        seen["released"] = release.wait(30)  # bounded: only a guard against a hang
        try:
            return real(self)
        finally:
            converted.set()

    monkeypatch.setattr(StateStore, "convert", held)
    async with Network.in_memory(1, data_dir=tmp_path, durable=True) as net:
        node = net.nodes[0]
        assert node.store is not None and node.store.needs_conversion
        result = await node.run_job(JobSpec.noop(stdout="while converting"), timeout=20)
        assert result.state is JobState.COMPLETED
        release.set()
        assert await anyio.to_thread.run_sync(converted.wait, 30)
        assert seen == {"off_loop": True, "released": True}
        assert node.store.conversion.startswith("converted in "), node.store.conversion
        assert not node.store.needs_conversion
        old = node.store.get_job(ids[7])
        assert old is not None and old.state is JobState.COMPLETED, "its history is intact"
        after = await node.run_job(JobSpec.noop(stdout="after converting"), timeout=20)
        assert after.state is JobState.COMPLETED
    assert _auto_vacuum(tmp_path / "node0" / "state.db") == 2


@pytest.mark.anyio
async def test_a_node_without_room_to_convert_serves_unconverted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _older_store(tmp_path / "node0" / "state.db")
    monkeypatch.setattr(store_module, "free_bytes", lambda _: 0)
    done = threading.Event()
    real = StateStore.convert

    def convert(self: StateStore, **kwargs: object) -> bool:
        try:
            return real(self)
        finally:
            done.set()

    monkeypatch.setattr(StateStore, "convert", convert)
    with caplog.at_level(logging.WARNING, logger="bacalhau.store"):
        async with Network.in_memory(1, data_dir=tmp_path, durable=True) as net:
            node = net.nodes[0]
            assert node.store is not None
            result = await node.run_job(JobSpec.noop(stdout="unconverted"), timeout=20)
            assert result.state is JobState.COMPLETED
            assert await anyio.to_thread.run_sync(done.wait, 30)  # its verdict is in
            assert node.store.conversion.startswith("skipped: 0.0 MB free")
    assert "not converted to incremental auto-vacuum" in caplog.text
    assert _auto_vacuum(tmp_path / "node0" / "state.db") == 0
