"""WASM jobs on in-memory networks (WAT modules, no clang needed)."""

from __future__ import annotations

import anyio
import pytest

import bacalhau
from bacalhau.models import Deal, ExecutionState, JobSpec, JobState

HELLO = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from wasm\\n")
  (func (export "_start")
    ;; 16 bytes of hello, then 8 random bytes: deterministic per job.
    (drop (call $random_get (i32.const 80) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""

TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'
LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'


@pytest.mark.anyio
async def test_wasm_job_passes_the_deterministic_verifier_on_three_nodes() -> None:
    async with bacalhau.Network.in_memory(3, seed=1) as net:
        spec = JobSpec.wasm(
            HELLO,
            deal=Deal(concurrency=3, confidence=3),
            verifier="deterministic",
            publisher="noop",
            timeout=20,
        )
        result = await net.nodes[1].run_job(spec, timeout=30)
        assert result.state is JobState.COMPLETED, result.reason
        outputs = {e.stdout for e in result.accepted}
        assert len(result.accepted) == 3
        assert len(outputs) == 1
        assert outputs.pop().startswith("hello from wasm\n")


@pytest.mark.anyio
async def test_trapping_module_fails_with_the_trap_and_the_node_keeps_serving() -> None:
    async with bacalhau.Network.in_memory(1) as net:
        node = net.nodes[0]
        failed = await node.run_job(
            JobSpec.wasm(TRAP, retries=0, publisher="noop", timeout=20), timeout=30
        )
        assert failed.state is JobState.FAILED
        reasons = [e.reason for e in failed.executions if e.state is ExecutionState.FAILED]
        assert reasons
        assert "unreachable" in reasons[0]
        ok = await node.run_job(JobSpec.wasm(HELLO, publisher="noop", timeout=20), timeout=30)
        assert ok.state is JobState.COMPLETED, ok.reason


@pytest.mark.anyio
async def test_endless_module_fails_at_its_timeout_with_a_clear_reason() -> None:
    async with bacalhau.Network.in_memory(1) as net:
        result = await net.nodes[0].run_job(
            JobSpec.wasm(LOOP, retries=0, publisher="noop", timeout=0.5), timeout=30
        )
        assert result.state is JobState.FAILED
        assert any("timeout of 0.5 s" in e.reason for e in result.executions)


@pytest.mark.anyio
async def test_cancelling_a_running_wasm_job_stops_the_module() -> None:
    async with bacalhau.Network.in_memory(1) as net:
        node = net.nodes[0]
        handle = await node.submit(JobSpec.wasm(LOOP, publisher="noop", timeout=3600))
        async for event in handle.events():
            if event.kind == "bid_accepted":
                break
        with anyio.fail_after(60):  # the acceptance reaches the node in its own time
            while node.runner.active == 0:
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)  # let the module start looping
        assert node.runner.active == 1
        await handle.cancel()
        result = await handle.wait(timeout=10)
        assert result.state is JobState.CANCELLED
        await net.wait_idle(timeout=10)
