"""What a node costs to make is paid once, or only when used (a 1,000-node network);
what a small no-op job costs is paid on the event loop, not in a worker thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from multiformats import multibase

from bacalhau.executor.wasm import WasmExecutor
from bacalhau.identity import Identity, node_id_from_public_key, public_key_from_node_id

pytestmark = pytest.mark.anyio


def test_node_ids_are_the_libp2p_peer_ids_multibase_makes() -> None:
    for key in [bytes(32), b"\xff" * 32, *(os.urandom(32) for _ in range(200))]:
        expected = str(multibase.encode(b"\x00\x24\x08\x01\x12\x20" + key, "base58btc"))[1:]
        node_id = node_id_from_public_key(key)
        assert node_id == expected
        assert public_key_from_node_id(node_id) == key
    assert Identity.generate().node_id.startswith("12D3KooW")


def test_the_wasm_adapter_is_compiled_at_first_use_only() -> None:
    executor = WasmExecutor()
    assert executor._adapter is None  # a node that runs no WASM job never compiles it
    adapter = executor.adapter
    assert adapter is executor.adapter  # once


def test_only_small_no_op_jobs_skip_the_worker_thread() -> None:
    from bacalhau.compute.runner import tiny
    from bacalhau.executor.noop import INLINE_BYTES
    from bacalhau.models import JobSpec, OutputSpec

    assert tiny(JobSpec.noop(stdout="hi", publisher="noop"))
    assert not tiny(JobSpec.noop(stdout="x" * (INLINE_BYTES + 1)))
    out = [OutputSpec(name="out", path="/out")]
    assert not tiny(JobSpec.noop(files={"out/a.txt": "a"}, outputs=out))
    assert not tiny(JobSpec.noop(outputs=out))
    assert not tiny(JobSpec.wasm(b"\0asm\x01\0\0\0"))


async def test_a_small_no_op_job_runs_and_leaves_no_folder(tmp_path: Path) -> None:
    from bacalhau import JobSpec, Network

    async with Network.in_memory(2, data_dir=tmp_path) as net:
        result = await net.nodes[0].run_job(JobSpec.noop(stdout="hi\n"), timeout=30)
        assert result.ok, result.reason
        await net.wait_idle()
        for node in net.nodes:  # published: the execution folder is gone
            folders = node.data_dir / "executions"
            assert not folders.is_dir() or not any(folders.iterdir())
