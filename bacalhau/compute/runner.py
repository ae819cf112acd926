"""Runs executions on a compute node: prepare inputs, run the executor, propose, publish.

Each execution lives in its own folder ``<data_dir>/executions/<job_id>/``:
``inputs/`` (materialised volumes), ``results/`` (``stdout``, ``stderr``,
``exitCode`` and one folder per named output) and ``work/`` (executor scratch).
The folder is removed when the results are published, rejected or the
execution ends otherwise; nothing leaves the node before acceptance.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from ..errors import BacalhauError, ExecutorError, StorageError
from ..executor.base import ExecutionContext, PreparedVolume, make_layout
from ..models import InputSpec, JobSpec
from ..protocol.events import (
    Event,
    ExecutionDone,
    ExecutionErrored,
    PublishDone,
    PublishErrored,
)
from .capacity import Capacity

if TYPE_CHECKING:
    from ..executor.base import Executor
    from ..publisher.base import Publisher
    from ..storage.base import StorageProvider
    from ..verifier.base import Verifier

__all__ = ["ExecutionRunner"]

log = logging.getLogger("bacalhau.compute")

SUMMARY_BYTES = 16 * 1024
"""How much of stdout/stderr travels in ``ResultsPublished`` (the rest is in the results)."""

TIMEOUT_GRACE = 5.0

MAX_RESULT_FILES = 10_000
MAX_RESULT_BYTES = 4 * 1024**3
"""A results folder with more files or bytes than this is refused (the execution fails)."""


def check_results(
    results: Path, *, max_files: int = MAX_RESULT_FILES, max_bytes: int = MAX_RESULT_BYTES
) -> None:
    """Refuse a results folder holding links, devices, pipes or too much.

    Nothing is followed: a job could have left a symlink to the host's files in an
    output volume, and publishing must never read through it.

    Raises:
        ExecutorError: naming the first offending path.
    """
    files = total = 0
    stack = [results]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = Path(entry.path).relative_to(results)
                if entry.is_symlink():
                    raise ExecutorError(
                        f"results refused: {rel} is a symbolic link "
                        f"(to {os.readlink(entry.path)!r}); outputs must "
                        "hold plain files and folders"
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
                else:
                    raise ExecutorError(f"results refused: {rel} is not a regular file")
                if files > max_files:
                    raise ExecutorError(f"results refused: more than {max_files} files")
                if total > max_bytes:
                    raise ExecutorError(f"results refused: more than {max_bytes} bytes")


"""Seconds past ``spec.timeout`` before the runner itself stops an executor."""


def _head(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.read(SUMMARY_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


@attrs.define(eq=False)
class ExecutionRunner:
    """Carries out RunExecution / CancelExecution / PublishResults / DiscardResults."""

    node_id: str
    root: Path
    executors: Mapping[str, Executor]
    storage: Mapping[str, StorageProvider]
    verifiers: Mapping[str, Verifier]
    publishers: Mapping[str, Publisher]
    capacity: Capacity
    feed: Callable[[Event], None]
    _tg: anyio.abc.TaskGroup | None = None
    _scopes: dict[str, anyio.CancelScope] = attrs.Factory(dict)
    _stopping: dict[str, anyio.CancelScope] = attrs.Factory(dict)

    def bind(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    @property
    def active(self) -> int:
        """Executions running or still cleaning up after a cancel."""
        return len(self._scopes) + len(self._stopping)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    # --- commands -------------------------------------------------------------------------

    def start(self, job_id: str, spec: JobSpec, seal_key: bytes) -> None:
        assert self._tg is not None, "runner not bound to a task group"
        scope = anyio.CancelScope()
        self._scopes[job_id] = scope
        self._tg.start_soon(self._run, job_id, spec, seal_key, scope)

    def cancel(self, job_id: str) -> None:
        """Stop the execution; it stays :attr:`active` until its clean-up has finished."""
        scope = self._scopes.pop(job_id, None)
        if scope is not None:
            self._stopping[job_id] = scope
            scope.cancel()
        self.discard(job_id)

    def discard(self, job_id: str) -> None:
        if job_id not in self._scopes and job_id not in self._stopping:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def publish(self, job_id: str, spec: JobSpec) -> None:
        assert self._tg is not None, "runner not bound to a task group"
        self._tg.start_soon(self._publish, job_id, spec)

    # --- work -----------------------------------------------------------------------------

    async def _run(
        self, job_id: str, spec: JobSpec, seal_key: bytes, scope: anyio.CancelScope
    ) -> None:
        outcome: Event | None = None
        with scope:
            if self.capacity.queue_full():
                self._scopes.pop(job_id, None)
                self.feed(ExecutionErrored(job_id, "busy: execution queue is full"))
                return
            await self.capacity.acquire(spec.resources)
            try:
                outcome = await self._execute(job_id, spec, seal_key)
            except BacalhauError as exc:
                outcome = ExecutionErrored(job_id, str(exc))
            except OSError as exc:
                where = f" ({exc.filename})" if exc.filename else ""
                outcome = ExecutionErrored(
                    job_id, f"node storage error: {exc.strerror or exc}{where}"
                )
            except Exception as exc:
                log.exception("execution of %s failed unexpectedly", job_id)
                outcome = ExecutionErrored(job_id, f"internal error: {exc!r}")
            finally:
                self.capacity.release(spec.resources)
        if self._scopes.get(job_id) is scope:
            del self._scopes[job_id]
        if outcome is None or scope.cancel_called or isinstance(outcome, ExecutionErrored):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._remove, job_id)
        if self._stopping.get(job_id) is scope:
            del self._stopping[job_id]
        if outcome is not None and not scope.cancel_called:
            self.feed(outcome)

    def _remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    async def _execute(self, job_id: str, spec: JobSpec, seal_key: bytes) -> Event:
        executor = self.executors.get(spec.engine.type)
        if executor is None:
            raise ExecutorError(f"no {spec.engine.type!r} executor on this node")
        verifier = self.verifiers.get(spec.verifier)
        if verifier is None:
            raise ExecutorError(f"no {spec.verifier!r} verifier on this node")
        layout = await anyio.to_thread.run_sync(make_layout, self.folder(job_id), spec)
        results, work, inputs, outputs = (
            layout.results,
            layout.work,
            layout.inputs,
            layout.outputs,
        )
        volumes = []
        for i, volume in enumerate(spec.inputs):
            volumes.append(await self._prepare(executor, volume, inputs / str(i)))
        ctx = ExecutionContext(
            job_id=job_id,
            execution_id=f"{job_id}/{self.node_id}",
            spec=spec,
            volumes=tuple(volumes),
            outputs=outputs,
            results_dir=results,
            work_dir=work,
            node_id=self.node_id,
        )
        with anyio.move_on_after(spec.timeout + TIMEOUT_GRACE) as deadline:
            result = await executor.run(ctx)
        if deadline.cancelled_caught:
            raise ExecutorError(f"job timed out after {spec.timeout:g}s")

        def finish() -> tuple[str, str]:
            for name in ("stdout", "stderr"):
                if not (results / name).exists():
                    (results / name).write_bytes(b"")
            (results / "exitCode").write_text(str(result.exit_code))
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(inputs, ignore_errors=True)
            check_results(results)
            return _head(results / "stdout"), _head(results / "stderr")

        stdout, stderr = await anyio.to_thread.run_sync(finish)
        proposal = await verifier.propose(
            job_id=job_id, node_id=self.node_id, results_dir=results, requester_key=seal_key
        )
        return ExecutionDone(job_id, proposal, result.exit_code, stdout, stderr)

    async def _prepare(self, executor: Executor, volume: InputSpec, dest: Path) -> PreparedVolume:
        provider = self.storage.get(volume.source.type)
        if provider is None:
            raise StorageError(f"no {volume.source.type!r} storage on this node")
        # "any" executors get files, which every program can read; only executors that
        # cannot take files get a byte stream (when the provider can give one).
        if executor.storage_mode == "library":
            opened = await provider.open_reader(volume.source)
            if opened is not None:
                reader, size = opened
                return PreparedVolume(spec=volume, read=reader, size=size)
        path = await provider.prepare(volume.source, dest)
        return PreparedVolume(spec=volume, host_path=path)

    async def _publish(self, job_id: str, spec: JobSpec) -> None:
        publisher = self.publishers.get(spec.publisher)
        results = self.folder(job_id) / "results"
        outcome: Event
        try:
            if publisher is None:
                raise BacalhauError(f"no {spec.publisher!r} publisher on this node")
            if not results.is_dir():
                raise BacalhauError("results folder is gone (node restarted?)")
            ref = await publisher.publish(job_id, f"{job_id}/{self.node_id}", results)
        except BacalhauError as exc:
            outcome = PublishErrored(job_id, str(exc))
        except Exception as exc:
            log.exception("publishing %s failed unexpectedly", job_id)
            outcome = PublishErrored(job_id, f"internal error: {exc!r}")
        else:
            outcome = PublishDone(job_id, ref)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._remove, job_id)
        self.feed(outcome)
