"""kill -9 of a requester process mid-job, then a restart from the same data dir.

The job must complete (or end with a reason), and ``describe`` must show its
whole history: from before the crash, the recovery, and what came after.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from test_gossip_processes import ServeProcess, wait_connected

from bacalhau.models import JobSpec, JobState
from bacalhau.testing.ports import PortClash, free_port

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
