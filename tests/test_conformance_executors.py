"""The executor conformance suite against every executor: noop, wasm, docker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

from bacalhau.executor.base import ExecutionContext, Executor, RunResult
from bacalhau.executor.docker import DockerExecutor
from bacalhau.executor.noop import NoopExecutor
from bacalhau.executor.wasm import WasmExecutor
from bacalhau.models import EngineSpec, JobSpec, OutputSpec
from bacalhau.testing.conformance import executor as suite
from bacalhau.testing.docker import require_docker_engine

pytestmark = pytest.mark.anyio

OUT = (OutputSpec("out", "/out"),)


class NoopHarness(suite.ExecutorHarness):
    features: ClassVar[frozenset[str]] = frozenset(
        {"echo", "exit_code", "hang", "flood", "fail", "bad_params"}
    )

    async def make(self) -> Executor:
        return NoopExecutor()

    def succeed(self, tag: str) -> JobSpec:
        return JobSpec.noop(stdout=tag, files={"out/tag.txt": tag}, outputs=OUT)

    def echo(self, text: str) -> JobSpec:
        return JobSpec.noop(stdout=text)

    def exit_with(self, code: int) -> JobSpec:
        return JobSpec.noop(exit_code=code)

    def hang(self) -> JobSpec:
        return JobSpec.noop(delay=3000, timeout=3600)

    def flood(self, size: int) -> JobSpec:
        return JobSpec.noop(stdout="a" * size)

    def fail(self) -> JobSpec:
        return JobSpec.noop(error="this job cannot run, on purpose")

    def bad_params(self) -> JobSpec:
        return JobSpec(engine=EngineSpec("noop", {"no_such_param": 1}))


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write"'
    " (func $fd_write (param i32 i32 i32 i32) (result i32)))"
)


class WasmHarness(suite.ExecutorHarness):
    features: ClassVar[frozenset[str]] = frozenset(
        {"echo", "exit_code", "hang", "flood", "fail", "bad_params"}
    )

    async def make(self) -> Executor:
        return WasmExecutor()

    def succeed(self, tag: str) -> JobSpec:
        return self.echo(f"tag {tag}\n")

    def echo(self, text: str) -> JobSpec:
        data = text.encode()
        return JobSpec.wasm(
            f"""(module {FD_WRITE}
              (memory (export "memory") 1)
              (data (i32.const 64) "{_wat_bytes(data)}")
              (func (export "_start")
                (i32.store (i32.const 0) (i32.const 64))
                (i32.store (i32.const 4) (i32.const {len(data)}))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
        )

    def exit_with(self, code: int) -> JobSpec:
        return JobSpec.wasm(
            f"""(module
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $exit (i32.const {code}))))"""
        )

    def hang(self) -> JobSpec:
        return JobSpec.wasm(
            """(module (memory (export "memory") 1)
              (func (export "_start") (loop $forever (br $forever))))""",
            timeout=3600,
        )

    def flood(self, size: int) -> JobSpec:
        rounds = size // 65536 + 1
        return JobSpec.wasm(
            f"""(module {FD_WRITE}
              (memory (export "memory") 2)
              (func (export "_start") (local $i i32)
                (i32.store (i32.const 0) (i32.const 65536))
                (i32.store (i32.const 4) (i32.const 65536))
                (local.set $i (i32.const {rounds}))
                (loop $more
                  (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                  (local.set $i (i32.sub (local.get $i) (i32.const 1)))
                  (br_if $more (local.get $i)))))"""
        )

    def fail(self) -> JobSpec:
        return JobSpec.wasm(b"\x00asm but not really a module")

    def bad_params(self) -> JobSpec:
        # a module by CID, on an executor that was given no block store to fetch it from
        return JobSpec.wasm("QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB")


class DockerHarness(suite.ExecutorHarness):
    """Jobs on the provisioned engine's busybox image. ``fail`` is left out: the only
    job Docker cannot run is one whose image is missing, and that would reach for a
    registry."""

    features: ClassVar[frozenset[str]] = frozenset(
        {"echo", "exit_code", "hang", "flood", "bad_params"}
    )

    def __init__(self) -> None:
        self.image = require_docker_engine().image

    async def make(self) -> Executor:
        return DockerExecutor()

    def _sh(self, script: str, **kwargs: object) -> JobSpec:
        return JobSpec.docker(self.image, ["sh", "-c", script], **kwargs)  # type: ignore[arg-type]

    def succeed(self, tag: str) -> JobSpec:
        return self._sh(f"echo tag {tag}; echo {tag} > /out/tag.txt", outputs=OUT)

    def echo(self, text: str) -> JobSpec:
        return JobSpec.docker(self.image, ["printf", "%s", text])

    def exit_with(self, code: int) -> JobSpec:
        return self._sh(f"exit {code}")

    def hang(self) -> JobSpec:
        return JobSpec.docker(self.image, ["sleep", "3000"], timeout=3600)

    def flood(self, size: int) -> JobSpec:
        return self._sh(f"head -c {size} /dev/zero")

    def bad_params(self) -> JobSpec:
        return JobSpec(engine=EngineSpec("docker", {"image": self.image, "no_such_param": 1}))


@pytest.mark.parametrize("check", suite.checks_for(NoopHarness))
async def test_noop(check: str, tmp_path: Path) -> None:
    await suite.CHECKS[check](NoopHarness(), tmp_path)


@pytest.mark.parametrize("check", suite.checks_for(WasmHarness))
async def test_wasm(check: str, tmp_path: Path) -> None:
    await suite.CHECKS[check](WasmHarness(), tmp_path)


@pytest.mark.docker
@pytest.mark.parametrize("check", suite.checks_for(DockerHarness))
async def test_docker(check: str, tmp_path: Path) -> None:
    await suite.CHECKS[check](DockerHarness(), tmp_path)


def test_every_check_runs_somewhere() -> None:
    """Each check applies to at least one of the harnesses above (none is dead code)."""
    covered = {c for h in (NoopHarness, WasmHarness, DockerHarness) for c in suite.checks_for(h)}
    assert covered == set(suite.CHECKS)


class CarelessNoop(NoopExecutor):
    """Broken on purpose: random stdout, and a file dropped beside the execution folder."""

    async def run(self, ctx: ExecutionContext) -> RunResult:
        result = await super().run(ctx)
        (ctx.results_dir / "stdout").write_text(os.urandom(8).hex())
        (ctx.work_dir.parent.parent / "stray.txt").write_text("oops")
        return result


class CarelessHarness(NoopHarness):
    async def make(self) -> Executor:
        return CarelessNoop()


@pytest.mark.parametrize(
    ("check", "words"),
    [
        ("success", "beside the execution"),
        ("results_depend_on_the_job_only", "same job gave different results"),
    ],
)
async def test_the_suite_catches_a_careless_executor(
    check: str, words: str, tmp_path: Path
) -> None:
    with pytest.raises(AssertionError, match=words):
        await suite.CHECKS[check](CarelessHarness(), tmp_path)
