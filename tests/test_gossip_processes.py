"""``bacalhau serve`` processes on 127.0.0.1 that find each other by mDNS alone.

Each test starts real node processes (``python -m bacalhau serve``) with the
gossip transport on loopback, mDNS bound to 127.0.0.1 and a fresh network
secret (so nodes of other tests on this machine stay out), talks to them only
through their HTTP APIs, and kills every process at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from bacalhau.api.client import Client
from bacalhau.models import (
    Deal,
    ExecutionState,
    InputSpec,
    JobResult,
    JobSpec,
    JobState,
    StorageSpec,
)
from bacalhau.testing.ports import PortClash, free_port, is_port_clash

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Reads /inputs/data.txt (the parent dir is preopened as fd 3) and writes it to stdout.
CAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "data.txt")
  (func (export "_start")
    (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 8)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const 200))
    (drop (call $fd_read (i32.load (i32.const 64)) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 32) (i32.const 2048))
    (i32.store (i32.const 36) (i32.load (i32.const 24)))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))
"""


class ServeProcess:
    """One ``bacalhau serve`` process and what it printed when ready."""

    def __init__(self, data_dir: Path, secret: str, *extra: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "serve.log"
        args = [
            *("serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0"),
            *("--api-port", "0", "--mdns-interface", "127.0.0.1", "--secret", secret),
            *("--max-executions", "8"),
            *extra,
        ]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bacalhau", "--log-level", "info", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "BACALHAU_API_TOKEN": ""},
            )
        self.node_id = self.api = ""

    async def wait_ready(self, limit: float = 90.0) -> ServeProcess:
        assert self.proc.stdout is not None
        with anyio.fail_after(limit):
            while True:
                line = await anyio.to_thread.run_sync(
                    self.proc.stdout.readline, abandon_on_cancel=True
                )
                if not line:
                    code, log = self.proc.wait(), self.log.read_text()
                    if is_port_clash(log):
                        raise PortClash(f"serve could not bind its port: {log[-500:]}")
                    raise AssertionError(f"serve exited with {code}: {log[-2000:]}")
                if line.startswith("Node id: "):
                    self.node_id = line.split()[-1]
                elif line.startswith("API: "):
                    self.api = line.split()[-1]
                elif line.startswith("Ready."):
                    return self

    def client(self) -> Client:
        return Client(self.api, timeout=60)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[ServeProcess], Path, str]]:
    """A list to start serve processes into; every one is killed at the end."""
    started: list[ServeProcess] = []
    yield started, tmp_path, os.urandom(8).hex()
    for p in started:
        p.kill()


async def peer_counts(nodes: list[ServeProcess]) -> list[int]:
    counts = []
    for node in nodes:
        async with node.client() as c:
            counts.append(len((await c.node_info()).peers))
    return counts


async def wait_connected(nodes: list[ServeProcess], limit: float = 60.0) -> None:
    want = [len(nodes) - 1] * len(nodes)
    with anyio.fail_after(limit):
        while await peer_counts(nodes) != want:
            await anyio.sleep(0.25)


async def run_all(jobs: list[tuple[ServeProcess, JobSpec]], limit: float) -> list[JobResult]:
    ids: list[tuple[ServeProcess, str]] = []
    for node, spec in jobs:
        async with node.client() as c:
            ids.append((node, await c.submit(spec)))
    return await wait_all(ids, limit)


async def wait_all(ids: list[tuple[ServeProcess, str]], limit: float) -> list[JobResult]:
    results: list[JobResult] = [None] * len(ids)  # type: ignore[list-item]

    async def wait(i: int, node: ServeProcess, job_id: str) -> None:
        async with node.client() as c:
            results[i] = await c.wait(job_id, timeout=limit)

    async with anyio.create_task_group() as tg:
        for i, (node, job_id) in enumerate(ids):
            tg.start_soon(wait, i, node, job_id)
    return results


async def running_on(ids: list[tuple[ServeProcess, str]], nodes: set[str]) -> int:
    """How many of the jobs have an execution accepted and still running on ``nodes``
    (one client per requester, all jobs asked at once: a pass must be quick next to a
    job's run time, or a short job can start and end between two looks)."""
    count = 0

    async def look(client: Client, job_id: str) -> None:
        nonlocal count
        job = await client.describe(job_id)
        count += sum(
            e.node_id in nodes and e.state is ExecutionState.ACCEPTED for e in job.executions
        )

    async with contextlib.AsyncExitStack() as stack:
        clients: dict[int, Client] = {}
        for requester, _ in ids:
            if id(requester) not in clients:
                clients[id(requester)] = await stack.enter_async_context(requester.client())
        async with anyio.create_task_group() as tg:
            for requester, job_id in ids:
                tg.start_soon(look, clients[id(requester)], job_id)
    return count


async def test_eight_serve_processes_by_mdns_alone_with_churn(
    cluster: tuple[list[ServeProcess], Path, str],
) -> None:
    procs, tmp, secret = cluster
    for i in range(8):
        procs.append(ServeProcess(tmp / f"n{i}", secret))
    for p in procs:
        await p.wait_ready()
    await wait_connected(procs)

    # 50 jobs submitted to different nodes, and one whose input lives on node 0 only.
    data = os.urandom(24).hex().encode()
    async with procs[0].client() as c:
        cid = (await c.add_bytes(data)).cid
    jobs = [(procs[i % 8], JobSpec.noop(stdout=f"job-{i}", timeout=30)) for i in range(50)]
    results = await run_all(jobs, 120)
    assert [r.state for r in results] == [JobState.COMPLETED] * 50, [r.reason for r in results]
    assert [r.accepted[0].stdout for r in results] == [f"job-{i}" for i in range(50)]
    assert len({r.accepted[0].node_id for r in results}) >= 4, "the work spreads over nodes"

    cat = JobSpec.wasm(
        CAT,
        inputs=[InputSpec(StorageSpec.ipfs(cid), "/inputs/data.txt")],
        deal=Deal(concurrency=3),
        publisher="noop",
        timeout=60,
    )
    [result] = await run_all([(procs[5], cat)], 120)
    assert result.state is JobState.COMPLETED, result.reason
    ran_on = {e.node_id for e in result.accepted}
    assert len(ran_on) == 3
    assert ran_on - {procs[0].node_id}, "the input crossed to another node"
    assert {e.stdout for e in result.accepted} == {data.decode()}

    # Churn: kill -9 two nodes while 40 jobs run, then start a new one.
    survivors = procs[:6]
    jobs = [
        (survivors[i % 6], JobSpec.noop(stdout=f"churn-{i}", delay=8.0, timeout=30))
        for i in range(40)
    ]
    ids: list[tuple[ServeProcess, str]] = []
    for node, spec in jobs:
        async with node.client() as c:
            ids.append((node, await c.submit(spec)))
    # Kill once work is running on the victims (seen in the requesters' records), not
    # after a guessed delay: under load the jobs may not have been placed yet. Jobs placed
    # there early may have finished by then; the ones still running are what the kill tests.
    victims = {procs[6].node_id, procs[7].node_id}
    with anyio.fail_after(90):
        while await running_on(ids, victims) < 2:
            await anyio.sleep(0.1)
    procs[6].kill()
    procs[7].kill()
    newcomer = ServeProcess(tmp / "n8", secret)
    procs.append(newcomer)
    await newcomer.wait_ready()
    churn = await wait_all(ids, 180)
    assert all(r.state.terminal for r in churn)
    assert [r.state for r in churn] == [JobState.COMPLETED] * 40, [r.reason for r in churn]
    killed = {procs[6].node_id, procs[7].node_id}
    cut_short = [
        r
        for r in churn
        if any(
            e.node_id in killed and e.state is not ExecutionState.PUBLISHED for e in r.executions
        )
    ]
    assert cut_short, "some jobs were still running on the killed nodes"
    for r in cut_short:  # each finished elsewhere
        published = [e for e in r.executions if e.state is ExecutionState.PUBLISHED]
        assert published and all(e.node_id not in killed for e in published), r.executions
    assert {r.accepted[0].stdout for r in churn} == {f"churn-{i}" for i in range(40)}

    live = [*survivors, newcomer]
    await wait_connected(live)
    spec = JobSpec.noop(stdout="everyone", deal=Deal(concurrency=7), timeout=30)
    [everyone] = await run_all([(survivors[0], spec)], 60)
    assert everyone.state is JobState.COMPLETED, everyone.reason
    assert newcomer.node_id in {e.node_id for e in everyone.accepted}, "the new node takes work"
    async with newcomer.client() as c:
        mine = await c.run(JobSpec.noop(stdout="from the newcomer", timeout=30), timeout=60)
    assert mine.state is JobState.COMPLETED


async def test_serve_stops_cleanly_on_sigterm_and_keeps_its_key(
    cluster: tuple[list[ServeProcess], Path, str],
) -> None:
    procs, tmp, secret = cluster
    first = await ServeProcess(tmp / "a", secret).wait_ready()
    procs.append(first)
    first.proc.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(first.proc.wait, 30) == 0
    again = await ServeProcess(tmp / "a", secret).wait_ready()
    procs.append(again)
    assert again.node_id == first.node_id, "the node key persists in the data dir"
    again.proc.send_signal(signal.SIGINT)
    assert await anyio.to_thread.run_sync(again.proc.wait, 30) == 0


async def test_serve_on_a_taken_port_is_a_port_clash(tmp_path: Path) -> None:
    """What the harness retries on: ``serve`` exits with "address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen(1)
        port = str(held.getsockname()[1])
        proc = ServeProcess(tmp_path / "n", os.urandom(8).hex(), "--port", port)
        try:
            with pytest.raises(PortClash):
                await proc.wait_ready()
        finally:
            proc.kill()
