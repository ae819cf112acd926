"""The executor conformance suite: what every :class:`~bacalhau.executor.base.Executor` must do.

Write an :class:`ExecutorHarness` for your executor (how to make it, and a job that
succeeds with results that depend on a tag), declare which optional programs it can
express in ``features``, and run the applicable checks::

    from bacalhau.testing.conformance import executor as suite

    class UpperHarness(suite.ExecutorHarness):
        features = frozenset({"bad_params", "fail"})

        async def make(self) -> Executor:
            return UpperExecutor()

        def succeed(self, tag: str) -> JobSpec:
            ...

    @pytest.mark.parametrize("check", suite.checks_for(UpperHarness))
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await suite.CHECKS[check](UpperHarness(), tmp_path)

The suite runs jobs as the node's runner does: the folders of
:func:`~bacalhau.testing.execution_context`, inputs prepared as host files (or as
readers for ``storage_mode = "library"``). Inputs of the harness's jobs must be
``inline`` sources (the suite prepares those itself).

Features (optional programs; a check that needs one runs only if it is declared):

===============  ===========================================================================
``echo``         :meth:`~ExecutorHarness.echo`: stdout is exactly the given text
``exit_code``    :meth:`~ExecutorHarness.exit_with`: the job exits with the given status
``hang``         :meth:`~ExecutorHarness.hang`: the job runs until it is cancelled
``flood``        :meth:`~ExecutorHarness.flood`: the job writes at least ``size`` bytes
                 to stdout (the executor must cap the file at ``MAX_LOG_BYTES``)
``fail``         :meth:`~ExecutorHarness.fail`: a job the executor cannot run
                 (it must raise ``ExecutorError``)
``bad_params``   :meth:`~ExecutorHarness.bad_params`: params ``validate`` must refuse
===============  ===========================================================================
"""

from __future__ import annotations

import abc
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread
import attrs

from ...compute.runner import check_results
from ...errors import ExecutorError, ValidationError
from ...executor.base import MAX_LOG_BYTES, ExecutionContext, Executor, PreparedVolume, RunResult
from ...models import JobSpec
from ...storage.inline import InlineStorage
from ...verifier.canonical import hash_tree
from ..executors import execution_context
from ._suite import Suite

__all__ = ["CHECKS", "ExecutorHarness", "checks_for", "run_job"]

CANCEL_BOUND = 30.0
"""Seconds a cancelled run may take to return (a generous bound, not a timing claim)."""


class ExecutorHarness(abc.ABC):
    """How the suite makes your executor and expresses jobs for it."""

    features: ClassVar[frozenset[str]] = frozenset()
    """The optional programs this harness can express (see the module docstring)."""

    @abc.abstractmethod
    async def make(self) -> Executor:
        """A fresh executor (the suite calls ``start()`` and ``close()`` on it)."""

    @abc.abstractmethod
    def succeed(self, tag: str) -> JobSpec:
        """A job that exits 0 and whose results (stdout, outputs) are a deterministic
        function of ``tag``: the same for the same tag, different for different tags."""

    def echo(self, text: str) -> JobSpec:
        """A job whose stdout is exactly ``text`` (UTF-8), exit status 0."""
        raise NotImplementedError

    def exit_with(self, code: int) -> JobSpec:
        """A job that exits with status ``code`` (0 to 125)."""
        raise NotImplementedError

    def hang(self) -> JobSpec:
        """A job that runs until it is cancelled (its timeout far away)."""
        raise NotImplementedError

    def flood(self, size: int) -> JobSpec:
        """A job that writes at least ``size`` bytes to stdout."""
        raise NotImplementedError

    def fail(self) -> JobSpec:
        """A valid job the executor cannot run (``run`` raises ``ExecutorError``)."""
        raise NotImplementedError

    def bad_params(self) -> JobSpec:
        """A job for this engine whose params ``validate`` refuses."""
        raise NotImplementedError


_suite: Suite[ExecutorHarness] = Suite()
CHECKS = _suite.checks
checks_for = _suite.checks_for


@contextlib.asynccontextmanager
async def _started(harness: ExecutorHarness) -> AsyncIterator[Executor]:
    executor = await harness.make()
    await executor.start()
    try:
        yield executor
    finally:
        with anyio.CancelScope(shield=True):
            await executor.close()


async def _volumes(executor: Executor, ctx: ExecutionContext) -> tuple[PreparedVolume, ...]:
    prepared = []
    inline = InlineStorage()
    for i, volume in enumerate(ctx.spec.inputs):
        source = volume.source
        if source.type != "inline":
            raise ValueError(
                f"input {i} is a {source.type!r} source: the suite prepares inline inputs only"
            )
        if executor.storage_mode == "library":
            opened = await inline.open_reader(source)
            assert opened is not None
            reader, size = opened
            prepared.append(PreparedVolume(spec=volume, read=reader, size=size))
        else:
            dest = ctx.work_dir.parent / "inputs" / str(i)
            path = await inline.prepare(source, dest)
            prepared.append(PreparedVolume(spec=volume, host_path=path))
    return tuple(prepared)


async def run_job(
    executor: Executor, spec: JobSpec, folder: Path
) -> tuple[RunResult, ExecutionContext]:
    """Validate and run ``spec`` in ``folder`` as the node's runner would; check what every
    run must give (an exit status of 0 to 255, results without links or special files)."""
    executor.validate(spec)
    ctx = await anyio.to_thread.run_sync(execution_context, folder, spec)
    ctx = attrs.evolve(ctx, volumes=await _volumes(executor, ctx))
    result = await executor.run(ctx)
    assert isinstance(result, RunResult), f"run() returned {result!r}, not a RunResult"
    assert isinstance(result.exit_code, int), result.exit_code
    assert 0 <= result.exit_code <= 255, result.exit_code
    assert set(result.truncated) <= {"stdout", "stderr"}, result.truncated
    await anyio.to_thread.run_sync(check_results, ctx.results_dir)
    for name in ("stdout", "stderr"):
        path = ctx.results_dir / name
        if path.exists() or path.is_symlink():
            mode = path.lstat().st_mode
            assert stat.S_ISREG(mode), f"{name} in the results is not a regular file"
    return result, ctx


def _snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mode) for p in paths}


def _input_files(ctx: ExecutionContext) -> list[Path]:
    files: list[Path] = []
    for volume in ctx.volumes:
        if volume.host_path is None:
            continue
        root = volume.host_path
        files += [p for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else [root]
    return files


@_suite.check()
async def check_installed(harness: ExecutorHarness, folder: Path) -> None:
    """The harness runs where the engine is: ``is_installed`` says so, and a job of its
    own has no reason not to be bid on."""
    async with _started(harness) as executor:
        assert await executor.is_installed() is True
        spec = harness.succeed("installed")
        assert spec.engine.type == executor.name, "the harness's jobs are for this engine"
        executor.validate(spec)
        assert await executor.unsupported_reason(spec) is None


@_suite.check()
async def check_success(harness: ExecutorHarness, folder: Path) -> None:
    """A job that succeeds exits 0, leaves its inputs as they were and writes nothing
    outside its execution folder."""
    spec = harness.succeed("success")
    async with _started(harness) as executor:
        executor.validate(spec)
        ctx = await anyio.to_thread.run_sync(execution_context, folder / "exec", spec)
        ctx = attrs.evolve(ctx, volumes=await _volumes(executor, ctx))
        before = await anyio.to_thread.run_sync(_snapshot, _input_files(ctx))
        result = await executor.run(ctx)
        after = await anyio.to_thread.run_sync(_snapshot, _input_files(ctx))
    assert result.exit_code == 0, f"the harness's succeed() job exited {result.exit_code}"
    assert after == before, "the executor changed its input files"
    assert sorted(os.listdir(folder)) == ["exec"], "something was written beside the execution"
    assert set(os.listdir(folder / "exec")) == {"inputs", "results", "work"}


@_suite.check()
async def check_results_depend_on_the_job_only(harness: ExecutorHarness, folder: Path) -> None:
    """The same job twice gives the same results; another job, other results."""
    async with _started(harness) as executor:
        digests = []
        for i, tag in enumerate(["alpha", "alpha", "beta"]):
            _, ctx = await run_job(executor, harness.succeed(tag), folder / str(i))
            digests.append(await anyio.to_thread.run_sync(hash_tree, ctx.results_dir))
    assert digests[0] == digests[1], "the same job gave different results"
    assert digests[0] != digests[2], "different jobs gave the same results"


@_suite.check()
async def check_concurrent_runs_are_isolated(harness: ExecutorHarness, folder: Path) -> None:
    """Runs at the same time on one executor each get their own results."""
    tags = ["one", "two", "three"]
    async with _started(harness) as executor:
        alone = (await run_job(executor, harness.succeed("one"), folder / "alone"))[1]
        together: dict[str, bytes] = {}

        async def run(tag: str) -> None:
            _, ctx = await run_job(executor, harness.succeed(tag), folder / tag)
            together[tag] = await anyio.to_thread.run_sync(hash_tree, ctx.results_dir)

        async with anyio.create_task_group() as tg:
            for tag in tags:
                tg.start_soon(run, tag)
        reference = await anyio.to_thread.run_sync(hash_tree, alone.results_dir)
    assert len(set(together.values())) == len(tags), "concurrent runs mixed their results"
    assert together["one"] == reference, "a run beside others differs from the same run alone"


@_suite.check("echo")
async def check_stdout_is_what_the_job_wrote(harness: ExecutorHarness, folder: Path) -> None:
    text = "hello, conformance: ol\u00e1 \u2713\n"
    async with _started(harness) as executor:
        result, ctx = await run_job(executor, harness.echo(text), folder)
    assert result.exit_code == 0
    assert (ctx.results_dir / "stdout").read_bytes() == text.encode()
    assert result.truncated == ()


@_suite.check("exit_code")
async def check_exit_status_is_a_result(harness: ExecutorHarness, folder: Path) -> None:
    """A non-zero exit is a result (``RunResult.exit_code``), never an exception."""
    async with _started(harness) as executor:
        for code in (3, 0, 125):  # WASI allows statuses below 126 only
            result, _ = await run_job(executor, harness.exit_with(code), folder / str(code))
            assert result.exit_code == code


@_suite.check("hang")
async def check_cancellation_stops_the_job(harness: ExecutorHarness, folder: Path) -> None:
    """Cancelling a run stops it (within a generous bound) and the executor stays usable."""
    async with _started(harness) as executor:
        with anyio.fail_after(CANCEL_BOUND):
            with anyio.move_on_after(0.5) as scope:
                await run_job(executor, harness.hang(), folder / "hung")
            assert scope.cancelled_caught, "the hang() job returned by itself"
        result, _ = await run_job(executor, harness.succeed("after"), folder / "after")
    assert result.exit_code == 0


@_suite.check("flood")
async def check_stdout_is_capped(harness: ExecutorHarness, folder: Path) -> None:
    size = MAX_LOG_BYTES + 64 * 1024
    async with _started(harness) as executor:
        result, ctx = await run_job(executor, harness.flood(size), folder)
    written = (ctx.results_dir / "stdout").stat().st_size
    assert 0 < written <= MAX_LOG_BYTES, written
    assert "stdout" in result.truncated


@_suite.check("fail")
async def check_a_job_that_cannot_run_raises_executor_error(
    harness: ExecutorHarness, folder: Path
) -> None:
    async with _started(harness) as executor:
        error: ExecutorError | None = None
        try:
            await run_job(executor, harness.fail(), folder)
        except ExecutorError as exc:
            error = exc
        assert error is not None, "run() of the harness's fail() job did not raise ExecutorError"
        assert str(error).strip(), "an ExecutorError says what went wrong"
        result, _ = await run_job(executor, harness.succeed("after"), folder / "after")
    assert result.exit_code == 0


@_suite.check("bad_params")
async def check_validate_names_the_bad_field(harness: ExecutorHarness, folder: Path) -> None:
    async with _started(harness) as executor:
        spec = harness.bad_params()
        assert spec.engine.type == executor.name
        error: ValidationError | None = None
        try:
            executor.validate(spec)
        except ValidationError as exc:
            error = exc
    assert error is not None, "validate() accepted the harness's bad_params() job"
    assert error.field is not None, "a ValidationError names the field"
    assert error.field.startswith(("engine", "resources", "inputs", "outputs")), error.field
