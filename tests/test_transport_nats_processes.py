"""Nodes in separate processes, each process on another server of a 3-server NATS cluster.

This process holds the requester; two child processes (``python -m
bacalhau.testing.nats nodes``) hold three compute nodes each: one process's home
is server 1 and its first node holds the input data, the other's is server 2 and
only its nodes can run the ``digest`` job, so the input crosses processes and
servers by block exchange over NATS. Then server 2 is killed with SIGKILL while
jobs run: its clients fail over and every job still completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from bacalhau import Deal, JobSpec, Network
from bacalhau.models import EngineSpec, InputSpec, JobState, StorageSpec
from bacalhau.testing.nats import NatsCluster
from bacalhau.transport.nats import nats_transport_factory

pytestmark = [pytest.mark.anyio, pytest.mark.nats, pytest.mark.slow]
pytest_plugins = ["bacalhau.testing.nats"]


class NodeProcess:
    """``python -m bacalhau.testing.nats nodes ...`` and the JSON line it prints when ready."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bacalhau.testing.nats", "nodes", *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.ready: dict[str, Any] = {}

    async def wait_ready(self, limit: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with anyio.fail_after(limit):
            line = await anyio.to_thread.run_sync(self.proc.stdout.readline, abandon_on_cancel=True)
        if not line:
            raise AssertionError(f"node process exited with {self.proc.wait()} before it was ready")
        self.ready = json.loads(line)
        return self.ready

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for p in started:
        p.stop()


async def test_jobs_across_processes_and_servers_survive_a_killed_server(
    nats_cluster: NatsCluster, processes: list[NodeProcess], tmp_path: Path
) -> None:
    urls = nats_cluster.urls
    subject = "bacalhau.mp" + os.urandom(4).hex()
    data = os.urandom(700_000)
    (tmp_path / "input.bin").write_bytes(data)

    def home(i: int) -> list[str]:  # server i first, then the others as fail-overs
        return [arg for url in urls[i:] + urls[:i] for arg in ("--nats-url", url)]

    common = ["--subject", subject, "--count", "3"]
    processes.append(NodeProcess(*home(1), *common, "--hold", str(tmp_path / "input.bin")))
    processes.append(NodeProcess(*home(2), *common, "--digest"))
    holders, runners = [await p.wait_ready() for p in processes]
    assert set(holders["servers"]) == {urls[1]}
    assert set(runners["servers"]) == {urls[2]}
    factory = nats_transport_factory(urls, subject=subject, heartbeat=1.0, reconnect_wait=0.1)
    async with Network.custom(1, factory, per_node_options=[{"compute": None}]) as net:
        requester = net.nodes[0]
        with anyio.fail_after(30):
            while len(requester.peers()) < 6:
                await anyio.sleep(0.05)

        # 50 jobs spread over both processes, and one whose input crosses them.
        handles = [
            await requester.submit(JobSpec.noop(stdout=f"{i}", deal=Deal(min_bids=4), timeout=30))
            for i in range(50)
        ]
        digest = await requester.submit(
            JobSpec(
                engine=EngineSpec("digest"),
                inputs=(InputSpec(StorageSpec.ipfs(holders["cid"]), "/inputs/data.bin"),),
                timeout=60,
            )
        )
        results = [await h.wait(timeout=120) for h in handles]
        assert [r.state for r in results] == [JobState.COMPLETED] * 50
        ran_on = {r.accepted[0].node_id for r in results}
        assert ran_on & set(holders["nodes"]), "some jobs ran in the first process"
        assert ran_on & set(runners["nodes"]), "and some in the second"
        result = await digest.wait(timeout=120)
        assert result.ok, result.reason
        assert result.accepted[0].node_id in runners["nodes"]
        assert result.accepted[0].stdout == hashlib.sha256(data).hexdigest()

        # kill -9 the second process's server while jobs run: nothing is lost.
        handles = [
            await requester.submit(JobSpec.noop(stdout=f"k{i}", delay=0.2, timeout=30))
            for i in range(50)
        ]
        with anyio.fail_after(60):
            while sum(requester.describe(h.job_id).state.terminal for h in handles) < 5:
                await anyio.sleep(0.02)
        nats_cluster.servers[2].kill()
        results = [await h.wait(timeout=180) for h in handles]
        assert [r.state for r in results] == [JobState.COMPLETED] * 50, [
            r.reason for r in results if not r.ok
        ]
        assert {r.accepted[0].stdout for r in results} == {f"k{i}" for i in range(50)}
        with anyio.fail_after(30):
            while len(requester.peers()) < 6:
                await anyio.sleep(0.05)
