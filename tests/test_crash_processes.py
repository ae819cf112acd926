"""kill -9 of a requester process mid-job, then a restart from the same data dir.

The job must complete (or end with a reason), and ``describe`` must show its
whole history: from before the crash, the recovery, and what came after.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest
from test_gossip_processes import ServeProcess, wait_connected

from bacalhau.models import JobSpec, JobState

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_requester_killed_mid_job_and_restarted(tmp_path: Path) -> None:
    secret = os.urandom(8).hex()
    port = free_port()
    requester_args = ("--node-type", "requester", "--port", str(port))
    peer = ("--peer", f"127.0.0.1:{port}")
    procs: list[ServeProcess] = []
    try:
        requester = ServeProcess(tmp_path / "requester", secret, *requester_args)
        procs.append(requester)
        workers = [ServeProcess(tmp_path / f"w{i}", secret, *peer) for i in range(2)]
        procs.extend(workers)
        for p in procs:
            await p.wait_ready()
        await wait_connected(procs)

        async with requester.client() as c:
            job_id = await c.submit(JobSpec.noop(stdout="made it", delay=4, timeout=60))
            with anyio.fail_after(30):
                while not any(e.kind == "bid_accepted" for e in (await c.describe(job_id)).events):
                    await anyio.sleep(0.1)
            before = (await c.describe(job_id)).events

        requester.kill()  # SIGKILL: no clean-up, no goodbye
        reborn = ServeProcess(tmp_path / "requester", secret, *requester_args)
        procs.append(reborn)
        await reborn.wait_ready()
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
