"""Bacalhau's official Python client (``bacalhau-sdk`` 1.4.2 on ``bacalhau-apiclient`` 1.4.1,
from PyPI, in a venv of its own) drives a bacalhau-py node over HTTP: a docker job with an
IPFS input and a wasm job submitted, waited for, listed, got with executions and history,
their results fetched, and a running job stopped. No mock: the client's own code on the
wire, run by ``tests/bacalhau_sdk_driver.py`` with that venv's interpreter."""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from bacalhau_sdk_env import DRIVER, require_sdk_python

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.network import Network
from bacalhau.storage.ipfs import exporter
from bacalhau.storage.ipfs.importer import add_bytes
from bacalhau.testing.docker import DockerEngine, require_docker_engine

pytestmark = pytest.mark.slow

HELLO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello wasm\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return require_sdk_python()


@pytest.fixture(scope="module")
def docker_engine() -> DockerEngine:
    return require_docker_engine()


async def run_driver(
    python: Path, address: ApiAddress, home: Path, inputs: dict[str, Any]
) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "BACALHAU_DIR": str(home),
        "BACALHAU_API_HOST": address.host,
        "BACALHAU_API_PORT": str(address.port),
    }
    with anyio.fail_after(240):
        done = await anyio.run_process(
            [str(python), str(DRIVER), json.dumps(inputs)], env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
async def node_api() -> AsyncIterator[tuple[Network, ApiAddress]]:
    async with Network.in_memory(2, seed=11) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        yield net, address
        tg.cancel_scope.cancel()


@pytest.mark.docker
@pytest.mark.anyio
async def test_the_official_client_drives_a_node(
    sdk_python: Path,
    docker_engine: DockerEngine,
    node_api: tuple[Network, ApiAddress],
    tmp_path: Path,
) -> None:
    import wasmtime

    net, address = node_api
    node = net.nodes[0]
    cid = await add_bytes(node.blockstore, b"apples and pears\n", pin=True)
    inputs = {
        "image": docker_engine.image,
        "cid": cid,
        "wasm": base64.b64encode(wasmtime.wat2wasm(HELLO_WAT)).decode(),
    }
    report = await run_driver(sdk_python, address, tmp_path, inputs)

    assert report["alive"] == str({"Status": "OK"})  # the client reads it as a str
    assert report["version"]["git_version"].startswith("v")
    assert {n["info"]["node_id"] for n in report["nodes"]["nodes"]} == {
        n.node_id for n in net.nodes
    }

    docker_id = report["docker_put"]["job_id"]
    wasm_id = report["wasm_put"]["job_id"]
    assert report["docker_put"]["warnings"] == []
    assert report["docker_state"] == "Completed"
    assert report["wasm_state"] == "Completed"
    listed = {j["id"] for j in report["list"]["items"]}
    assert {docker_id, wasm_id} <= listed

    got = report["docker_get"]
    job = got["job"]
    assert job["name"] == "sdk docker"
    assert job["type"] == "batch" and job["count"] == 1
    task = job["tasks"][0]
    assert task["engine"]["params"]["Image"] == docker_engine.image
    assert task["resources"]["cpu"] == "500m"
    assert task["input_sources"][0]["source"]["params"]["CID"] == cid
    (execution,) = got["executions"]["items"]
    assert execution["compute_state"]["state_type"] == "Completed"
    assert execution["run_output"]["stdout"] == "hello docker\n"
    assert execution["run_output"]["exit_code"] == 0
    history = got["history"]["items"]
    assert history[0]["type"] == "JobLevel"
    assert history[0]["job_state"]["new"] == "Pending"
    assert history[-1]["job_state"]["new"] == "Completed"
    assert any(h["type"] == "ExecutionLevel" for h in history)
    assert report["docker_history"]["items"] == history
    assert report["docker_executions"]["items"][0]["id"] == execution["id"]
    assert "hello docker" in report["docker_logs"]

    (result,) = report["docker_results"]["items"]
    assert result["type"] == "ipfs"
    block = await exporter.resolve(node.blocks, result["params"]["CID"], "outputs/copy.txt")
    assert await exporter.read_all(node.blocks, block) == b"apples and pears\n"
    (wasm_result,) = report["wasm_results"]["items"]
    stdout = await exporter.resolve(node.blocks, wasm_result["params"]["CID"], "stdout")
    assert await exporter.read_all(node.blocks, stdout) == b"hello wasm\n"
    wasm_runs = report["wasm_get"]["executions"]["items"]
    assert wasm_runs[0]["run_output"]["stdout"] == "hello wasm\n"

    assert report["stop"] == {"evaluation_id": ""}
    assert report["stopped_state"] == "Stopped"
    assert report["stopped_get"]["job"]["state"]["message"] == "enough"


@pytest.mark.anyio
async def test_the_official_client_with_a_token(sdk_python: Path, tmp_path: Path) -> None:
    """A token-protected node, used as docs/bacalhau-users.md says: one default header."""
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0, token="tok"))
        report = await run_driver(sdk_python, address, tmp_path, {"mode": "token", "token": "tok"})
        assert report["state"] == "Completed"
        assert report["listed"] == [report["job_id"]]
        tg.cancel_scope.cancel()
