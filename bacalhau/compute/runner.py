"""Runs executions on a compute node: prepare inputs, run the executor, propose, publish.

Each execution lives in its own folder ``<data_dir>/executions/<job_id>/``:
``inputs/`` (materialised volumes), ``results/`` (``stdout``, ``stderr``,
``exitCode`` and one folder per named output) and ``work/`` (executor scratch).
The folder is removed when the results are published, rejected or the
execution ends otherwise; nothing leaves the node before acceptance.

A job can fail, never the node: every per-job step (prepare, run, hash, publish,
clean-up) runs under one guard that turns any exception into that execution's
failure (or, for clean-up, a logged warning). Input preparation is bounded by the
job's timeout; the disk the job fills (inputs and results) is bounded by
``resources.disk`` (or the node's ``JobLimits.default_disk``) while it runs, and
folders count as entries of the results.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from ..commitment import Commitment
from ..errors import BacalhauError, ExecutorError, StorageError
from ..executor.base import ExecutionContext, PreparedVolume, RunResult, make_layout
from ..executor.noop import INLINE_BYTES as NOOP_INLINE_BYTES
from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..live.logs import LogHub
from ..models import InputSpec, JobSpec
from ..paths import remove_tree, safe_join
from ..protocol.events import (
    Event,
    ExecutionDone,
    ExecutionErrored,
    PublishDone,
    PublishErrored,
)
from ..storage.ipfs._util import unwrap_group
from ..verifier.canonical import TreeEntry, digest_manifest, hash_tree
from ..verifier.commitment import seal_commitment
from .capacity import Capacity
from .results_check import (
    MAX_RESULT_BYTES,
    MAX_RESULT_DEPTH,
    MAX_RESULT_FILES,
    check_results,
    tree_usage,
)
from .results_check import short_reason as _short

if TYPE_CHECKING:
    from ..executor.base import Executor
    from ..publisher.base import Publisher
    from ..storage.base import StorageProvider
    from ..verifier.base import Verifier

__all__ = ["ExecutionRunner", "Produced", "check_results", "tree_usage"]

log = logging.getLogger("bacalhau.compute")

SUMMARY_BYTES = 16 * 1024
"""How much of stdout/stderr travels in ``ResultsPublished`` (the rest is in the results)."""

TIMEOUT_GRACE = 5.0
"""Seconds past ``spec.timeout`` before the runner itself stops an executor."""

DISK_POLL = 0.5
"""Seconds between two looks at the disk a running job fills."""


STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")


def _tail(path: Path, size: int) -> tuple[bytes, bool]:
    """The last ``size`` bytes of the file, and whether they are the whole file."""
    with path.open("rb") as f:
        length = os.fstat(f.fileno()).st_size
        f.seek(max(0, length - size))
        return f.read(size), length <= size


def _head(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.read(SUMMARY_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


class Produced(NamedTuple):
    """What running a job left: see :meth:`ExecutionRunner.produce`."""

    results: Path
    exit_code: int
    stdout: str
    stderr: str
    digest: bytes | None


@attrs.define(eq=False)
class ExecutionRunner:
    """Carries out RunExecution / CancelExecution / PublishResults / DiscardResults.

    None of its commands ever raises into the caller (the node's driver): a failure
    of one job's step becomes that job's ``ExecutionErrored`` / ``PublishErrored``,
    and a clean-up that fails is logged and skipped, so neither a running node nor a
    restarting one (recovery discards what it finds) can be brought down by a job.
    """

    node_id: str
    root: Path
    executors: Mapping[str, Executor]
    storage: Mapping[str, StorageProvider]
    verifiers: Mapping[str, Verifier]
    publishers: Mapping[str, Publisher]
    capacity: Capacity
    feed: Callable[[Event], None]
    limits: JobLimits = DEFAULT_JOB_LIMITS
    sign: Callable[[bytes], bytes] | None = None
    """The node's signing key: signs the results commitment (fraud proofs, receipts)."""
    logs: LogHub = attrs.Factory(LogHub)
    """Live output of this node's executions (``bacalhau logs -f``)."""
    _tg: anyio.abc.TaskGroup | None = None
    _scopes: dict[str, anyio.CancelScope] = attrs.Factory(dict)
    _stopping: dict[str, anyio.CancelScope] = attrs.Factory(dict)
    _folders: dict[str, Path] = attrs.Factory(dict)
    removing: set[str] = attrs.Factory(set)
    """Execution folders being removed on a worker thread right now."""
    _held: dict[str, dict[str, bytes]] = attrs.Factory(dict)
    """Results kept in memory, never written to disk (:meth:`_hold`): by job id, the
    files of the results folder."""

    def bind(self, tg: anyio.abc.TaskGroup, *, keep: Iterable[str] = ()) -> None:
        """Start serving in ``tg``; leftovers of a previous run (a crash, a restart)
        are removed in the background: no execution survives its node. Folders of the
        jobs in ``keep`` stay: results proposed or accepted before the restart, which the
        node still proposes or publishes."""
        self._tg = tg
        tg.start_soon(self._sweep, frozenset(keep))

    async def _sweep(self, keep: frozenset[str]) -> None:
        def names() -> list[str]:
            try:
                return [
                    e.name
                    for e in os.scandir(self.root)
                    if e.name not in self._scopes and e.name not in keep
                ]
            except OSError:
                return []

        for name in await anyio.to_thread.run_sync(names):
            busy = name in self._scopes or name in self._stopping or name in self.removing
            if not busy:
                await self._remove_async(name)

    async def sweep_stale(self, *, older_than: float, keep: Iterable[str] = ()) -> int:
        """Remove execution folders no execution uses (not running, not being stopped or
        removed, not in ``keep``: results still to propose or publish) whose last change
        is before ``older_than`` (a unix time): leftovers of a removal that failed or of
        an execution the node lost track of. Returns how many it removed."""
        kept = frozenset(keep)

        def stale() -> list[str]:
            found: list[str] = []
            try:
                for entry in os.scandir(self.root):
                    if entry.name in kept or entry.name in self._scopes:
                        continue
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < older_than:
                            found.append(entry.name)
            except OSError:
                return []
            return found

        removed = 0
        for name in await anyio.to_thread.run_sync(stale):
            busy = name in self._scopes or name in self._stopping or name in self.removing
            if not busy and name not in kept:
                await self._remove_async(name)
                removed += 1
        return removed

    @property
    def active(self) -> int:
        """Executions running or still cleaning up after a cancel."""
        return len(self._scopes) + len(self._stopping)

    @property
    def running(self) -> frozenset[str]:
        """Ids of the jobs whose execution runs (not counting ones being stopped)."""
        return frozenset(self._scopes)

    @property
    def stopping(self) -> int:
        """Executions cancelled but still cleaning up."""
        return len(self._stopping)

    def has_results(self, job_id: str, spec: JobSpec | None = None) -> bool:
        """Whether ``job_id``'s results are at hand: its results folder is on disk (it
        survives a restart), or they are held in memory, or (given the job's ``spec``)
        its publisher never reads them and its executor makes them again from the spec
        alone (:meth:`~bacalhau.executor.base.Executor.run_in_memory`)."""
        if job_id in self._held or (spec is not None and self._reproducible(spec)):
            return True
        try:
            return (self.folder(job_id) / "results").is_dir()
        except BacalhauError:
            return False

    def _reproducible(self, spec: JobSpec) -> bool:
        """Whether ``spec``'s results need no folder: its publisher never reads them and
        its executor makes them from the spec alone."""
        publisher = self.publishers.get(spec.publisher)
        executor = self.executors.get(spec.engine.type)
        if publisher is None or publisher.reads_results or executor is None:
            return False
        if spec.inputs or spec.outputs:
            return False
        try:
            return executor.run_in_memory(spec) is not None
        except BacalhauError:
            return False

    def folder(self, job_id: str) -> Path:
        """The execution folder of ``job_id`` (a job id is never a path: it is checked,
        once per execution while it lives)."""
        folder = self._folders.get(job_id)
        if folder is None:
            folder = safe_join(self.root, job_id, field="job_id")
            if len(self._folders) >= 4096:
                self._folders.clear()
            self._folders[job_id] = folder
        return folder

    # --- commands -------------------------------------------------------------------------

    def start(self, job_id: str, spec: JobSpec, seal_key: bytes) -> None:
        assert self._tg is not None, "runner not bound to a task group"
        if self._run_now(job_id, spec, seal_key):
            return
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
        """Remove the execution's folder (on a worker thread when the runner is bound)."""
        if job_id in self._scopes or job_id in self._stopping:
            return
        if self._held.pop(job_id, None) is not None:  # never on disk
            self._folders.pop(job_id, None)
            return
        if self._tg is not None:
            self.removing.add(job_id)  # from now, so a waiter sees it before the task starts
            self._tg.start_soon(self._remove_async, job_id)
        else:
            self._remove(job_id)

    def publish(self, job_id: str, spec: JobSpec) -> None:
        assert self._tg is not None, "runner not bound to a task group"
        publisher = self.publishers.get(spec.publisher)
        if job_id in self._held and publisher is not None and not publisher.reads_results:
            ref = publisher.publish_now(job_id, f"{job_id}/{self.node_id}")
            if ref is not None:  # nothing to wait for: no task
                self._held.pop(job_id, None)
                self._folders.pop(job_id, None)
                self.feed(PublishDone(job_id, ref))
                return
        self._tg.start_soon(self._publish, job_id, spec)

    def _run_now(self, job_id: str, spec: JobSpec, seal_key: bytes) -> bool:
        """Run here and now a job whose results are held in memory (:meth:`_hold`) when
        room is free at once (no execution waits before it) and every step can be taken
        without waiting: its outcome is fed before this returns, and no task is started.
        False, having changed nothing: run it as any other job (which also reports any
        error it meets)."""
        executor = self.executors.get(spec.engine.type)
        verifier = self.verifiers.get(spec.verifier)
        publisher = self.publishers.get(spec.publisher)
        if executor is None or verifier is None or not verifier.reads_only:
            return False
        if publisher is None or publisher.reads_results or spec.inputs or spec.outputs:
            return False
        if not self.capacity.try_acquire(spec.resources):
            return False
        try:
            done = self._execute_held(job_id, spec, seal_key, executor, verifier)
        except Exception:  # the task path meets it again and reports it
            done = None
        finally:
            self.capacity.release(spec.resources)
        if done is None:
            self._held.pop(job_id, None)
            return False
        self.capacity.unreserve(job_id)
        self.feed(done)
        return True

    def _execute_held(
        self, job_id: str, spec: JobSpec, seal_key: bytes, executor: Executor, verifier: Verifier
    ) -> ExecutionDone | None:
        """:meth:`_execute` for results held in memory, without waiting; None when a
        step would have to wait (a verifier that reads a folder) or the job needs one."""
        held = self._hold(job_id, spec, executor)
        if held is None:
            return None
        exit_code, stdout, stderr, digest = held
        proposal = verifier.propose_digest(
            digest, job_id=job_id, node_id=self.node_id, requester_key=seal_key
        )
        if proposal is None:
            return None
        commitment = Commitment.of(
            results_digest=digest, exit_code=exit_code, stdout=stdout, stderr=stderr, cid=None
        )
        return self._done(job_id, spec, seal_key, proposal, commitment, (exit_code, stdout, stderr))

    # --- work -----------------------------------------------------------------------------

    async def _guard(
        self, job_id: str, step: Callable[[], Awaitable[Event]], failed: Callable[[str], Event]
    ) -> Event:
        """Run one job's ``step``; any exception becomes ``failed(reason)``."""
        try:
            with unwrap_group():
                return await step()
        except BacalhauError as exc:
            return failed(self._public(str(exc)))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            return failed(self._public(f"node storage error: {exc.strerror or exc}{where}"))
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job_id)
            return failed(self._public(f"internal error: {type(exc).__name__}: {exc}"))

    def _public(self, reason: str) -> str:
        """``reason`` as a peer may read it: shortened, and without this node's paths."""
        root = str(self.root)
        reason = reason.replace(root, "<executions>").replace(str(self.root.parent), "<data>")
        return _short(reason)

    async def _run(
        self, job_id: str, spec: JobSpec, seal_key: bytes, scope: anyio.CancelScope
    ) -> None:
        outcome: Event | None = None
        with scope:
            # The bid held this job's room (Capacity.reserve): it now waits its turn in the
            # queue (never fails for being busy).
            self.capacity.unreserve(job_id)
            await self.capacity.acquire(spec.resources)
            try:
                outcome = await self._guard(
                    job_id,
                    lambda: self._execute(job_id, spec, seal_key),
                    lambda reason: ExecutionErrored(job_id, reason),
                )
            finally:
                self.capacity.release(spec.resources)
        if self._scopes.get(job_id) is scope:
            del self._scopes[job_id]
        if outcome is None or scope.cancel_called or isinstance(outcome, ExecutionErrored):
            with anyio.CancelScope(shield=True):
                await self._remove_async(job_id)
        if self._stopping.get(job_id) is scope:
            del self._stopping[job_id]
        if outcome is not None and not scope.cancel_called:
            self.feed(outcome)

    async def _remove_async(self, job_id: str, spec: JobSpec | None = None) -> None:
        self.removing.add(job_id)
        try:
            if spec is not None and tiny(spec):
                self._remove(job_id)  # a few small files: less than a hop to a thread
            else:
                await anyio.to_thread.run_sync(self._remove, job_id)
        finally:
            self.removing.discard(job_id)

    def _remove(self, job_id: str) -> None:
        """Remove the execution folder; never raises (a failure is logged)."""
        self._held.pop(job_id, None)  # one atomic step (any thread)
        try:
            folder = self._folders.pop(job_id, None)  # one atomic step (any thread)
            remove_tree(folder or safe_join(self.root, job_id, field="job_id"))
        except FileNotFoundError:  # removed meanwhile (the node's data dir going away)
            log.debug("the folder of execution %s was already gone", job_id)
        except Exception as exc:
            log.warning("could not remove the folder of execution %s: %r", job_id, exc)

    def _disk(self, spec: JobSpec) -> int:
        return spec.resources.disk or self.limits.default_disk

    async def _execute(self, job_id: str, spec: JobSpec, seal_key: bytes) -> Event:
        executor = self.executors.get(spec.engine.type)
        if executor is None:
            raise ExecutorError(f"no {spec.engine.type!r} executor on this node")
        verifier = self.verifiers.get(spec.verifier)
        if verifier is None:
            raise ExecutorError(f"no {spec.verifier!r} verifier on this node")
        early = verifier.reads_only  # else the digest is taken after proposing
        held = self._hold(job_id, spec, executor) if early else None
        results: Path | None = None  # held: no folder unless something reads one
        if held is None:
            produced = await self.produce(job_id, spec, self.folder(job_id), digest=early)
            results, exit_code, stdout, stderr, digest = produced
        else:
            exit_code, stdout, stderr, digest = held
        proposal = (
            None
            if digest is None
            else verifier.propose_digest(
                digest, job_id=job_id, node_id=self.node_id, requester_key=seal_key
            )
        )
        if proposal is None:
            results = results or await self._materialise(job_id, spec)
            proposal = await verifier.propose(
                job_id=job_id, node_id=self.node_id, results_dir=results, requester_key=seal_key
            )
        if digest is None:
            assert results is not None  # held results have their digest
            digest = await anyio.to_thread.run_sync(hash_tree, results)
        publisher = self.publishers.get(spec.publisher)
        if results is None and publisher is not None and publisher.reads_results:
            results = await self._materialise(job_id, spec)
        commitment = await self._commit(spec, results, digest, exit_code, stdout, stderr)
        return self._done(job_id, spec, seal_key, proposal, commitment, (exit_code, stdout, stderr))

    def _done(
        self,
        job_id: str,
        spec: JobSpec,
        seal_key: bytes,
        proposal: bytes,
        commitment: Commitment,
        ran: tuple[int, str, str],
    ) -> ExecutionDone:
        """The execution's outcome: its proposal, what it ``ran`` to (exit code, stdout
        and stderr heads) and its commitment, sealed to the requester and signed."""
        exit_code, stdout, stderr = ran
        sealed = seal_commitment(
            commitment,
            job_id=job_id,
            node_id=self.node_id,
            requester_key=seal_key,
            sign=self.sign,
            spec=spec,
        )
        return ExecutionDone(
            job_id=job_id,
            proposal=proposal,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            commitment=sealed,
        )

    def _hold(
        self, job_id: str, spec: JobSpec, executor: Executor
    ) -> tuple[int, str, str, bytes] | None:
        """Run a job whose results are a few small files and whose publisher never reads
        them, keeping the files in memory (no folder, no disk work): what :meth:`produce`
        returns for it, with the same digest :func:`hash_tree` takes of the folder
        :meth:`produce` would have written (exit code, stdout and stderr heads, digest).
        None: the job needs a folder."""
        publisher = self.publishers.get(spec.publisher)
        if spec.inputs or spec.outputs or publisher is None or publisher.reads_results:
            return None
        ran = executor.run_in_memory(spec)
        if ran is None:
            return None
        result, made = ran
        files = dict.fromkeys(STREAMS, b"") | made
        files["exitCode"] = str(result.exit_code).encode()
        guards = self.limits.guards
        max_files = self.limits.max_result_entries if guards else MAX_RESULT_FILES
        max_bytes = min(self._disk(spec), MAX_RESULT_BYTES) if guards else MAX_RESULT_BYTES
        if len(files) > max_files or sum(len(data) for data in files.values()) > max_bytes:
            return None  # in a folder: check_results refuses it with its reason
        for name in files:  # top-level file names only (the executor's contract)
            if not name or "/" in name or name in (".", "..") or "\0" in name:
                raise ExecutorError(f"{executor.name} executor made a bad file name {name!r}")
        live = self.logs.open(job_id, f"{job_id}/{self.node_id}")
        try:
            for name in STREAMS:
                live.write(name, files[name][-live.max_bytes :])
        finally:
            live.close()
        entries = sorted(
            (
                TreeEntry(kind="F", path=name, size=len(data), sha256=hashlib.sha256(data).digest())
                for name, data in files.items()
            ),
            key=lambda e: os.fsencode(e.path),
        )
        self._held[job_id] = files
        stdout, stderr = (
            files[name][:SUMMARY_BYTES].decode("utf-8", "replace") for name in STREAMS
        )
        return result.exit_code, stdout, stderr, digest_manifest(entries)

    async def _materialise(self, job_id: str, spec: JobSpec) -> Path:
        """Write results held in memory to the execution's folder (a verifier or a
        publisher that reads them needs them there); the results folder."""
        files = self._held.get(job_id)
        if files is None:
            return self.folder(job_id) / "results"

        def write() -> None:
            layout = make_layout(self.folder(job_id), spec)
            for name, data in files.items():
                (layout.results / name).write_bytes(data)
            remove_tree(layout.work)
            remove_tree(layout.inputs)

        await anyio.to_thread.run_sync(write)
        self._held.pop(job_id, None)
        return self.folder(job_id) / "results"

    async def produce(
        self, job_id: str, spec: JobSpec, folder: Path, *, digest: bool = False
    ) -> Produced:
        """Run the job in ``folder``: its checked results folder, exit code, stdout and
        stderr heads, and with ``digest`` the results' canonical digest
        (:func:`~bacalhau.verifier.canonical.hash_tree`, taken on the same worker thread
        that checks them). Also how a node re-runs a job to check an audit or a fraud
        proof.

        Raises:
            ExecutorError, StorageError: the job could not run.
        """
        executor = self.executors.get(spec.engine.type)
        if executor is None:
            raise ExecutorError(f"no {spec.engine.type!r} executor on this node")
        if spec.inputs:
            layout = await anyio.to_thread.run_sync(make_layout, folder, spec)
        else:  # a few empty folders: less than a hop to a worker thread costs
            layout = make_layout(folder, spec)
        results, work, inputs, outputs = (
            layout.results,
            layout.work,
            layout.inputs,
            layout.outputs,
        )
        volumes = []
        guards = self.limits.guards
        with anyio.move_on_after(spec.timeout if guards else None) as preparing:
            for i, volume in enumerate(spec.inputs):
                volumes.append(await self._prepare(executor, volume, inputs / str(i)))
        if preparing.cancelled_caught:
            raise StorageError(
                f"preparing the inputs took longer than the job's timeout of {spec.timeout:g}s"
            )
        disk = self._disk(spec)
        if guards and spec.inputs:
            used = (await anyio.to_thread.run_sync(tree_usage, inputs))[1]
            if used > disk:
                raise StorageError(
                    f"the inputs take {used} bytes, more than the job's disk of {disk} bytes "
                    "(resources.disk)"
                )
        execution_id = f"{job_id}/{self.node_id}"
        live = self.logs.open(job_id, execution_id)
        ctx = ExecutionContext(
            job_id=job_id,
            execution_id=execution_id,
            spec=spec,
            volumes=tuple(volumes),
            outputs=outputs,
            results_dir=results,
            work_dir=work,
            node_id=self.node_id,
            output=live.write,
        )
        try:
            with anyio.move_on_after(spec.timeout + TIMEOUT_GRACE) as deadline:
                if guards and not executor.bounded_output:
                    result = await self._run_watched(executor, ctx, folder, disk)
                else:
                    result = await executor.run(ctx)
        except BaseException:
            live.close()
            raise
        if deadline.cancelled_caught:
            live.close()
            raise ExecutorError(f"job timed out after {spec.timeout:g}s")
        streamed = live.written > 0

        def finish() -> tuple[str, str, bytes | None]:
            heads: dict[str, str] = {}
            try:
                for name in STREAMS:
                    path = results / name
                    if not path.exists():
                        path.write_bytes(b"")
                        heads[name] = ""
                    elif not streamed:  # an executor without live output: show its files
                        tail, whole = _tail(path, live.max_bytes)
                        live.write(name, tail)
                        if whole:  # read once: its head is in hand too
                            heads[name] = tail[:SUMMARY_BYTES].decode("utf-8", "replace")
            finally:
                live.close()
            (results / "exitCode").write_text(str(result.exit_code))
            remove_tree(work)
            remove_tree(inputs)
            check_results(
                results,
                max_files=self.limits.max_result_entries if guards else MAX_RESULT_FILES,
                max_bytes=min(disk, MAX_RESULT_BYTES) if guards else MAX_RESULT_BYTES,
            )
            out, err = (heads[name] if name in heads else _head(results / name) for name in STREAMS)
            return out, err, (hash_tree(results) if digest else None)

        if tiny(spec):  # a few small files: less than a hop to a worker thread costs
            stdout, stderr, hashed = finish()
        else:
            stdout, stderr, hashed = await anyio.to_thread.run_sync(finish)
        return Produced(results, result.exit_code, stdout, stderr, hashed)

    async def _commit(
        self,
        spec: JobSpec,
        results: Path | None,
        digest: bytes,
        exit_code: int,
        stdout: str,
        stderr: str,
    ) -> Commitment:
        """What this node will publish, committed before the requester accepts it
        (:mod:`bacalhau.verifier.commitment`). No ``results`` folder (held in memory, for
        a publisher that never reads them): no CID to commit to."""
        publisher = self.publishers.get(spec.publisher)
        cid = await publisher.predict(results) if publisher and results else None
        return Commitment.of(
            results_digest=digest, exit_code=exit_code, stdout=stdout, stderr=stderr, cid=cid
        )

    async def _run_watched(
        self, executor: Executor, ctx: ExecutionContext, folder: Path, disk: int
    ) -> RunResult:
        """Run the executor while watching the disk its execution folder fills."""
        over: list[str] = []
        result: RunResult | None = None
        with unwrap_group():
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while True:
                        await anyio.sleep(DISK_POLL)
                        try:
                            entries, used = await anyio.to_thread.run_sync(
                                lambda: tree_usage(
                                    folder,
                                    max_entries=2 * self.limits.max_result_entries,
                                    max_bytes=disk,
                                    max_depth=MAX_RESULT_DEPTH + 2,
                                )
                            )
                        except ExecutorError:
                            entries = used = 0
                            over.append(f"folders that nest deeper than {MAX_RESULT_DEPTH} levels")
                        if used > disk:
                            over.append(f"more than its disk of {disk} bytes (resources.disk)")
                        elif entries > 2 * self.limits.max_result_entries:
                            over.append(
                                f"more than {2 * self.limits.max_result_entries} files and folders"
                            )
                        if over:
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                result = await executor.run(ctx)
                tg.cancel_scope.cancel()
        if over:
            raise ExecutorError(f"the job was stopped: it wrote {over[0]}")
        assert result is not None
        return result

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
        async def step() -> Event:
            publisher = self.publishers.get(spec.publisher)
            if publisher is None:
                raise BacalhauError(f"no {spec.publisher!r} publisher on this node")
            if job_id in self._held and not publisher.reads_results:
                results = self.root / job_id / "results"  # never read (nor made)
            elif job_id in self._held:  # not this job's publisher when it ran
                results = await self._materialise(job_id, spec)
            else:
                results = self.folder(job_id) / "results"
                if not results.is_dir() and not self._reproducible(spec):
                    raise BacalhauError("results folder is gone (node restarted?)")
            ref = await publisher.publish(job_id, f"{job_id}/{self.node_id}", results)
            return PublishDone(job_id, ref)

        # Cancelled (the node stops) the folder stays, as after a crash: the node
        # publishes it when it starts again.
        outcome = await self._guard(job_id, step, lambda reason: PublishErrored(job_id, reason))
        with anyio.CancelScope(shield=True):
            if self._held.pop(job_id, None) is None:
                await self._remove_async(job_id, spec)
            else:
                self._folders.pop(job_id, None)
        self.feed(outcome)


def tiny(spec: JobSpec) -> bool:
    """A no-op job with no inputs, no files and small stdout/stderr: its folder holds a
    few small files, so the runner handles it on the event loop. A hop to a worker
    thread costs more than that file work, and with a thousand jobs in flight each hop
    is a hand-over of the GIL both ways."""
    if spec.engine.type != "noop" or spec.inputs or spec.outputs:
        return False
    p = spec.engine.params
    size = sum(len(str(p.get(n, ""))) for n in ("stdout", "stderr"))
    return not p.get("files") and size <= NOOP_INLINE_BYTES
