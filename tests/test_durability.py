"""Nothing lost: requester and compute restarts, and a full disk."""

from __future__ import annotations

import sqlite3

import anyio
import pytest

from bacalhau import BacalhauError, ExecutionState, JobSpec, JobState, Network, RequesterConfig
from bacalhau.node.store import StateStore, StoreError

pytestmark = pytest.mark.anyio

CFG = RequesterConfig(bid_timeout=3, execution_grace=3, publish_timeout=5)


async def wait_for(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_requester_restart_mid_job_completes() -> None:
    async with Network.in_memory(3, seed=21, durable=True, requester=CFG) as net:
        requester = net.nodes[0]
        handle = await requester.submit(JobSpec.noop(stdout="survived", delay=1.0))
        job_id = handle.job_id
        await wait_for(lambda: any(e.kind == "bid_accepted" for e in handle.result().events))
        reborn = await net.restart_node(requester)
        assert job_id in reborn.requester.jobs, "the job was recovered from disk"
        result = await reborn.handle(job_id).wait(30)
    assert result.state is JobState.COMPLETED, result.reason
    kinds = [e.kind for e in result.events]
    assert "recovered" in kinds
    assert kinds.index("created") < kinds.index("recovered") < kinds.index("completed")
    assert result.accepted[0].stdout == "survived"


async def test_submit_to_a_stopped_node_fails_at_once() -> None:
    """A crashed node refuses new jobs (it used to queue the record and wait forever for
    a store writer that had stopped: the chaos run's hang)."""
    async with Network.in_memory(2, seed=22, durable=True, requester=CFG) as net:
        victim = net.nodes[0]
        await net.stop_node(victim)
        with anyio.fail_after(10), pytest.raises(BacalhauError, match="stopped"):
            await victim.submit(JobSpec.noop())
        # The rest of the network is unaffected.
        result = await net.nodes[0].run_job(JobSpec.noop(stdout="still here"), timeout=30)
    assert result.state is JobState.COMPLETED, result.reason


async def test_store_flush_after_close_raises(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = StateStore(tmp_path / "state.db")
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        tg.cancel_scope.cancel()
    store.save_reputation("n", {"ok": 1})
    with anyio.fail_after(10), pytest.raises(StoreError, match="closed"):
        await store.flush()


async def test_finished_jobs_survive_restart() -> None:
    async with Network.in_memory(2, seed=22, durable=True) as net:
        done = await net.nodes[0].run_job(JobSpec.noop(stdout="kept"), timeout=10)
        reborn = await net.restart_node(net.nodes[0])
        again = reborn.describe(done.job_id[:10])
    assert again.state is JobState.COMPLETED
    assert again.events == done.events and again.executions == done.executions


async def test_compute_restart_after_acceptance_is_rescheduled() -> None:
    async with Network.in_memory(
        3, seed=23, durable=True, requester=CFG, per_node_options=[{"compute": None}, {}, {}]
    ) as net:
        requester = net.nodes[0]
        handle = await requester.submit(JobSpec.noop(stdout="second try", delay=1.5))
        await wait_for(lambda: any(e.kind == "bid_accepted" for e in handle.result().events))
        first = next(e.node_id for e in handle.result().events if e.kind == "bid_accepted")
        worker = next(n for n in net.nodes if n.node_id == first)
        await wait_for(lambda: handle.job_id in worker.runner.running)
        assert worker.store is not None
        await worker.store.flush()  # the crash comes after the node recorded the execution
        await net.restart_node(worker)
        result = await handle.wait(30)
        await net.wait_idle()
    assert result.state is JobState.COMPLETED, result.reason
    failed = [e for e in result.executions if e.state is ExecutionState.FAILED]
    assert [e.reason for e in failed] == ["node restarted"]
    assert len(result.accepted) == 1 and result.accepted[0].node_id != first


async def test_full_disk_gives_a_clear_error_and_keeps_what_was_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with Network.in_memory(2, seed=24, durable=True, data_dir=tmp_path) as net:
        node = net.nodes[0]
        kept = await node.run_job(JobSpec.noop(stdout="before"), timeout=10)
        assert node.store is not None
        await node.store.flush()
        pages = node.store._db.execute("PRAGMA page_count").fetchone()[0]
        node.store._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError, match="database or disk is full"):
            for _ in range(50):  # fill the last free pages
                await node.submit(JobSpec.noop(stdout="x" * 2000))
        assert node.describe(kept.job_id).ok, "the node keeps serving what it has"
        db_path = node.store.path
    store = StateStore(db_path)
    requester_jobs, _, _ = store.load()
    assert kept.job_id not in {j.job_id for j in requester_jobs}, "finished: not loaded"
    saved = store.get_job(kept.job_id)
    assert saved is not None and saved.state is JobState.COMPLETED
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_store_refuses_unopenable_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the node's state"):
        StateStore(blocker / "state.db")


def test_sqlite_is_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = StateStore(tmp_path / "state.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert isinstance(store._db, sqlite3.Connection)


def test_results_with_links_or_devices_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from bacalhau.compute.runner import check_results
    from bacalhau.errors import ExecutorError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ok.txt").write_text("fine")
    check_results(tmp_path)
    (tmp_path / "out" / "escape").symlink_to("/etc/shadow")
    with pytest.raises(ExecutorError, match=r"out/escape is a symbolic link \(to '/etc/shadow'\)"):
        check_results(tmp_path)
    (tmp_path / "out" / "escape").unlink()
    os.mkfifo(tmp_path / "out" / "pipe")
    with pytest.raises(ExecutorError, match="out/pipe is not a regular file"):
        check_results(tmp_path)
    (tmp_path / "out" / "pipe").unlink()
    with pytest.raises(ExecutorError, match="more than 0 files"):
        check_results(tmp_path, max_files=0)
    with pytest.raises(ExecutorError, match="more than 2 bytes"):
        check_results(tmp_path, max_bytes=2)
