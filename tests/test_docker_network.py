"""Docker jobs on in-memory networks, against a real engine.

The architecture's first example end to end, a container killed from outside,
cancellation, and a node without an engine that does not bid.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import bacalhau
from bacalhau.executor.docker import LABEL_JOB, DockerExecutor
from bacalhau.models import (
    Deal,
    ExecutionState,
    InputSpec,
    JobSpec,
    JobState,
    OutputSpec,
    StorageSpec,
)
from bacalhau.storage.ipfs import exporter
from bacalhau.storage.ipfs.importer import add_bytes
from bacalhau.testing.docker import DockerEngine, require_docker_engine

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker_engine() -> DockerEngine:
    return require_docker_engine()


def job_containers(engine: DockerEngine, job_id: str) -> list[dict[str, Any]]:
    client = engine.client()
    try:
        found: list[dict[str, Any]] = client.api.containers(
            all=True, filters={"label": f"{LABEL_JOB}={job_id}"}
        )
        return found
    finally:
        client.close()


async def running_container(engine: DockerEngine, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            found = await anyio.to_thread.run_sync(job_containers, engine, job_id)
            if found and found[0]["State"] == "running":
                return found[0]
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_architecture_example_on_three_nodes(docker_engine: DockerEngine) -> None:
    """``bacalhau docker run -v $cid:/file.txt -o apples:/output_folder IMAGE
    sh -c 'cat /file.txt > /output_folder/file.txt'``: the input CID is mounted, the output
    volume's file is in the published results CID, with stdout, stderr and exitCode."""
    async with bacalhau.Network.in_memory(3, seed=7) as net:
        node = net.nodes[0]
        cid = await add_bytes(node.blockstore, b"apples and pears\n")
        spec = JobSpec.docker(
            docker_engine.image,
            ["sh", "-c", "cat /file.txt > /output_folder/file.txt; echo done; echo note >&2"],
            inputs=[InputSpec(StorageSpec.ipfs(cid), "/file.txt")],
            outputs=[OutputSpec("apples", "/output_folder")],
            deal=Deal(concurrency=3, confidence=3),
            verifier="deterministic",
            publisher="ipfs",
            timeout=60,
        )
        result = await node.run_job(spec, timeout=120)
        assert result.state is JobState.COMPLETED, result.reason
        assert len(result.accepted) == 3
        assert {e.node_id for e in result.accepted} == {n.node_id for n in net.nodes}
        for execution in result.accepted:
            assert execution.exit_code == 0
            assert execution.stdout == "done\n"
            assert execution.stderr == "note\n"
        assert len({e.published.cid for e in result.accepted if e.published}) == 1
        assert result.cid is not None
        entries = {e.name for e in await exporter.ls(node.blocks, result.cid)}
        assert {"apples", "stdout", "stderr", "exitCode"} <= entries
        for path, content in (
            ("apples/file.txt", b"apples and pears\n"),
            ("stdout", b"done\n"),
            ("stderr", b"note\n"),
            ("exitCode", b"0"),
        ):
            block = await exporter.resolve(node.blocks, result.cid, path)
            assert await exporter.read_all(node.blocks, block) == content, path
        assert await anyio.to_thread.run_sync(job_containers, docker_engine, result.job_id) == []


@pytest.mark.anyio
async def test_container_killed_from_outside_fails_the_job_and_node_carries_on(
    docker_engine: DockerEngine,
) -> None:
    async with bacalhau.Network.in_memory(1) as net:
        node = net.nodes[0]
        handle = await node.submit(
            JobSpec.docker(docker_engine.image, ["sleep", "60"], retries=0, publisher="noop")
        )
        found = await running_container(docker_engine, handle.job_id)
        client = docker_engine.client()
        try:
            await anyio.to_thread.run_sync(client.api.kill, found["Id"])
        finally:
            client.close()
        failed = await handle.wait(timeout=30)
        assert failed.state is JobState.FAILED
        reasons = [e.reason for e in failed.executions if e.state is ExecutionState.FAILED]
        assert any("killed from outside the executor" in r for r in reasons), reasons
        ok = await node.run_job(
            JobSpec.docker(docker_engine.image, ["echo", "still here"], publisher="noop"),
            timeout=60,
        )
        assert ok.state is JobState.COMPLETED, ok.reason
        assert ok.accepted[0].stdout == "still here\n"
        # a hang guard: a loaded engine takes a while to remove containers
        await net.wait_idle(timeout=60)
        for job_id in (failed.job_id, ok.job_id):
            assert await anyio.to_thread.run_sync(job_containers, docker_engine, job_id) == []


@pytest.mark.anyio
async def test_cancelling_a_docker_job_stops_its_container(docker_engine: DockerEngine) -> None:
    async with bacalhau.Network.in_memory(1) as net:
        node = net.nodes[0]
        handle = await node.submit(
            JobSpec.docker(docker_engine.image, ["sleep", "600"], publisher="noop", timeout=3600)
        )
        await running_container(docker_engine, handle.job_id)
        await handle.cancel()
        result = await handle.wait(timeout=30)
        assert result.state is JobState.CANCELLED
        # The runner forgets a cancelled execution at once; its task removes the container
        # while unwinding, so give it a moment.
        with anyio.fail_after(15):
            while await anyio.to_thread.run_sync(job_containers, docker_engine, handle.job_id):
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_node_without_an_engine_does_not_bid(
    docker_engine: DockerEngine, tmp_path: Any
) -> None:
    async with bacalhau.Network.in_memory(2, seed=3) as net:
        blind, able = net.nodes
        original = blind.plugins.executors["docker"]
        blind.plugins.executors["docker"] = DockerExecutor(
            node_id=blind.node_id, base_url=f"unix://{tmp_path}/no-engine.sock"
        )
        await original.close()
        spec = JobSpec.docker(docker_engine.image, ["echo", "hi"], publisher="noop")
        result = await blind.run_job(spec, timeout=60)
        assert result.state is JobState.COMPLETED, result.reason
        assert [e.node_id for e in result.accepted] == [able.node_id]
        assert all(e.node_id != blind.node_id for e in result.executions)
