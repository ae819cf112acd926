"""kill -9 of a requester process mid-job, then a restart from the same data dir.

The job must complete (or end with a reason), and ``describe`` must show its
whole history: from before the crash, the recovery, and what came after.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_gossip_processes import ServeProcess, wait_connected

from bacalhau.models import JobSpec, JobState
from bacalhau.testing.ports import PortClash, free_port
from bacalhau.wire import unpack

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def start_on_fixed_port(
    data_dir: Path, secret: str, port: int, *, retries: int = 0
) -> ServeProcess:
    """A requester on ``port`` (its peers and its restart need to know the port).

    ``retries``: how often to try the same port again (after a short back-off) when
    another process holds it; then :class:`PortClash` is raised.
    """
    for attempt in range(retries + 1):
        proc = ServeProcess(data_dir, secret, "--node-type", "requester", "--port", str(port))
        try:
            return await proc.wait_ready()
        except PortClash:
            proc.kill()
            if attempt == retries:
                raise
            await anyio.sleep(0.5)
        except BaseException:
            proc.kill()
            raise
    raise AssertionError("unreachable")


async def test_requester_killed_mid_job_and_restarted(tmp_path: Path) -> None:
    secret = os.urandom(8).hex()
    procs: list[ServeProcess] = []
    try:
        for attempt in range(8):  # a port another process took first: try a fresh one
            port = free_port()
            try:
                requester = await start_on_fixed_port(tmp_path / "requester", secret, port)
                break
            except PortClash:
                if attempt == 7:
                    raise
        procs.append(requester)
        peer = ("--peer", f"127.0.0.1:{port}")
        workers = [ServeProcess(tmp_path / f"w{i}", secret, *peer) for i in range(2)]
        procs.extend(workers)
        for p in workers:
            await p.wait_ready()
        await wait_connected(procs)

        async with requester.client() as c:
            job_id = await c.submit(JobSpec.noop(stdout="made it", delay=4, timeout=60))
            with anyio.fail_after(30):
                while not any(e.kind == "bid_accepted" for e in (await c.describe(job_id)).events):
                    await anyio.sleep(0.1)
            before = (await c.describe(job_id)).events
        # describe reads memory; the store writes the record on its own thread: kill once
        # the history described is on disk (a kill sooner may lose what was not written)
        with anyio.fail_after(30):
            while len(stored_requester_history(tmp_path / "requester", job_id)) < len(before):
                await anyio.sleep(0.05)

        requester.kill()  # SIGKILL: no clean-up, no goodbye
        reborn = await start_on_fixed_port(tmp_path / "requester", secret, port, retries=5)
        procs.append(reborn)
        assert reborn.node_id == requester.node_id, "the node key survived in the data dir"

        async with reborn.client() as c:
            result = await c.wait(job_id, timeout=120)
    finally:
        for p in procs:
            p.kill()

    assert result.state is JobState.COMPLETED, result.reason
    assert result.accepted[0].stdout == "made it"
    kinds = [e.kind for e in result.events]
    assert result.events[: len(before)] == before, "history from before the crash is kept"
    assert "recovered" in kinds and kinds[-1] == "completed"


def stored_record(data_dir: Path, table: str, job_id: str) -> dict[str, Any] | None:
    """The record a node's store holds for ``job_id`` in ``table`` (read-only, from
    outside)."""
    try:
        db = sqlite3.connect(f"file:{data_dir / 'state.db'}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute(f"SELECT record FROM {table} WHERE job_id = ?", (job_id,)).fetchone()
    except sqlite3.Error:  # not created yet
        return None
    finally:
        db.close()
    if row is None:
        return None
    record: dict[str, Any] = unpack(row[0], max_size=1 << 30)
    return record


def stored_compute_state(data_dir: Path, job_id: str) -> str | None:
    """The state a compute node's store holds for ``job_id`` (read-only, from outside)."""
    record = stored_record(data_dir, "compute_jobs", job_id)
    return None if record is None else str(record["state"])


def stored_requester_history(data_dir: Path, job_id: str) -> list[Any]:
    """The history a requester's store holds for ``job_id`` (empty if none yet)."""
    record = stored_record(data_dir, "requester_jobs", job_id)
    return [] if record is None else list(record["history"])


async def test_compute_node_killed_mid_job_and_restarted(tmp_path: Path) -> None:
    """A compute node's ``serve`` process is killed with SIGKILL while it runs a job, then
    started again from its data dir: it reports the execution failed at once ("node
    restarted"), the requester gives the job to the other compute node (a retry), and
    the job completes with its results; nothing is lost and nothing waits out a timeout."""
    secret = os.urandom(8).hex()
    procs: list[ServeProcess] = []
    try:
        for attempt in range(8):  # a port another process took first: try a fresh one
            port = free_port()
            try:
                requester = await start_on_fixed_port(tmp_path / "requester", secret, port)
                break
            except PortClash:
                if attempt == 7:
                    raise
        procs.append(requester)
        peer = ("--peer", f"127.0.0.1:{port}", "--node-type", "compute")
        workers = [ServeProcess(tmp_path / f"w{i}", secret, *peer) for i in range(2)]
        procs.extend(workers)
        for p in workers:
            await p.wait_ready()
        await wait_connected(procs)

        async with requester.client() as c:
            # long enough that the kill lands while it runs (checked below, not assumed)
            spec = JobSpec.noop(stdout="made it", delay=10, timeout=120, retries=2)
            job_id = await c.submit(spec)
            with anyio.fail_after(60):
                while True:
                    events = (await c.describe(job_id)).events
                    accepted = [e.node_id for e in events if e.kind == "bid_accepted"]
                    if accepted:
                        break
                    await anyio.sleep(0.1)
        (victim,) = [w for w in workers if w.node_id == accepted[0]]
        with anyio.fail_after(60):  # the victim has recorded that it runs the job
            while stored_compute_state(victim.log.parent, job_id) != "running":
                await anyio.sleep(0.1)
        victim.kill()  # SIGKILL: no clean-up, no goodbye
        async with requester.client() as c:
            before = (await c.describe(job_id)).events
        assert not [e for e in before if e.node_id == victim.node_id and e.kind == "proposed"], (
            "the kill landed while the job ran"
        )
        reborn = ServeProcess(victim.log.parent, secret, *peer)
        procs.append(reborn)
        await reborn.wait_ready()
        assert reborn.node_id == victim.node_id, "the node key survived in the data dir"

        async with requester.client() as c:
            result = await c.wait(job_id, timeout=120)
    finally:
        for p in procs:
            p.kill()

    assert result.state is JobState.COMPLETED, result.reason
    (done,) = [e for e in result.executions if e.published is not None]
    assert done.node_id != victim.node_id and done.stdout == "made it"
    lost = [e for e in result.executions if e.node_id == victim.node_id]
    assert [e.state.value for e in lost] == ["failed"]
    assert "node restarted" in lost[0].reason, lost[0].reason
    kinds = [e.kind for e in result.events]
    assert kinds.count("bid_accepted") == 2, "one retry used"
    assert result.events[: len(before)] == before, "history from before the crash is kept"
    assert kinds[-1] == "completed"
