"""Live logs of a Docker job, from the engine's log stream, while the container runs."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from bacalhau.api.server import serve_api
from bacalhau.convert import from_json_data
from bacalhau.live import LogChunkLive
from bacalhau.models import JobSpec, JobState, OutputSpec
from bacalhau.network import Network
from bacalhau.testing.docker import DockerEngine, require_docker_engine

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

# print, wait until the test creates /outputs/go, print again (and once to stderr)
SCRIPT = (
    "echo first line; while [ ! -e /outputs/go ]; do sleep 0.05; done; "
    "echo to stderr >&2; echo second line"
)


@pytest.fixture(scope="module")
def docker_engine() -> DockerEngine:
    return require_docker_engine()


@pytest.fixture
async def stack(docker_engine: DockerEngine) -> AsyncIterator[tuple[Network, str]]:
    options: list[dict[str, Any]] = [{"compute": None}, {"requester": None}]
    async with (
        Network.in_memory(2, seed=5, per_node_options=options) as net,
        anyio.create_task_group() as tg,
    ):
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        yield net, str(address)
        tg.cancel_scope.cancel()


def docker_spec(engine: DockerEngine) -> JobSpec:
    return JobSpec.docker(
        engine.image,
        ["sh", "-c", SCRIPT],
        outputs=[OutputSpec("outputs", "/outputs")],
        publisher="noop",
        timeout=60,
    )


async def test_docker_lines_arrive_while_the_container_runs(
    stack: tuple[Network, str], docker_engine: DockerEngine
) -> None:
    net, address = stack
    requester, compute = net.nodes
    handle = await requester.submit(docker_spec(docker_engine))
    gate = compute.runner.folder(handle.job_id) / "results" / "outputs" / "go"
    seen: list[tuple[str, str]] = []
    with anyio.fail_after(90):
        async with (
            httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
            http.stream(
                "GET", f"/api/v1/jobs/{handle.job_id}/logs/stream", params={"follow": "true"}
            ) as response,
        ):
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                for record in from_json_data(json.loads(line), LogChunkLive).records():
                    if record.end:
                        continue
                    seen.append((record.stream, record.text))
                    if record.text == "first line":
                        assert seen == [("stdout", "first line")]
                        assert not handle.result().state.terminal
                        gate.write_bytes(b"")
        result = await handle.wait(60)
    assert result.state is JobState.COMPLETED, result.reason
    assert seen[0] == ("stdout", "first line")
    assert sorted(seen[1:]) == [("stderr", "to stderr"), ("stdout", "second line")]


async def test_cli_logs_follow_of_a_docker_job(
    stack: tuple[Network, str], docker_engine: DockerEngine
) -> None:
    net, address = stack
    requester, compute = net.nodes
    handle = await requester.submit(docker_spec(docker_engine))
    gate = compute.runner.folder(handle.job_id) / "results" / "outputs" / "go"
    command = [sys.executable, "-m", "bacalhau", "logs", "-f", handle.job_id, "--api", address]
    with anyio.fail_after(90):
        async with await anyio.open_process(command, env=dict(os.environ)) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            out = b""
            while b"first line\n" not in out:
                out += await proc.stdout.receive()
            assert b"second line" not in out
            assert not handle.result().state.terminal
            gate.write_bytes(b"")
            async for chunk in proc.stdout:
                out += chunk
            err = b"".join([c async for c in proc.stderr])
            assert await proc.wait() == 0, err
    assert out == b"first line\nsecond line\n"
    assert b"to stderr" in err
