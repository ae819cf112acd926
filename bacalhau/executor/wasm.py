"""The WASM executor: WASI preview 1 modules on wasmtime, deterministic and sandboxed.

A job for this executor is built with :meth:`bacalhau.JobSpec.wasm`; its
``engine.params`` hold ``module`` (a :class:`~bacalhau.models.StorageSpec` as
plain data: inline bytes or WAT text, or an ``ipfs`` CID), ``entry_point``
(default ``_start``) and ``args``.

What a module sees:

- ``argv`` is ``["module.wasm", *args]``; the environment is exactly the job's ``env``.
- Each POSIX input volume is preopened read-only at its target (a single-file
  volume appears as that file inside a read-only directory at the target's
  parent); each output volume is preopened writable at its path. Nothing else
  of the host is visible; there are no sockets and no stdin.
- Every input volume that is a single file, POSIX or library mode, can also be
  read through the ``bacalhau`` import module (see
  :mod:`bacalhau.executor.wasm_host`); library-mode volumes are visible only there.
- Clocks, random bytes, file timestamps, inode numbers and directory order are
  deterministic functions of the job id and the inputs, so two honest nodes
  produce byte-identical results folders.

Limits: linear memory is capped at ``resources.memory`` (``memory.grow``
returns -1 past it); tables, instances and memories are capped on the host side
too (``Store.set_limits``: at most 4 tables whose elements together take at most a
quarter of ``resources.memory`` more, 2 instances, 1 memory), so a module cannot
grow the node's memory through them; the run is stopped at ``timeout`` seconds, or
promptly when the calling task is cancelled, by epoch interruption driven from a
watchdog task in the event loop. The module runs on a worker thread, so the event
loop never blocks.

A module larger than ``JobLimits.wasm_max_module_bytes`` is refused. A module not
yet compiled is compiled in a child process bounded by the job's timeout and
memory (:mod:`bacalhau.executor.wasm_compile`), so compiling a hostile module
costs the job, never the node. Compiled modules are cached by the SHA-256 of
their bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import shutil
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import wasmtime

from ..convert import from_data
from ..errors import BacalhauError, ExecutorError, ValidationError
from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..models import JobSpec, StorageSpec
from ..paths import is_within
from .base import (
    MAX_LOG_BYTES,
    ExecutionContext,
    Executor,
    OutputSink,
    PreparedVolume,
    RunResult,
    write_capped,
)
from .wasm_compile import (
    COMPILE_MEMORY_FLOOR,
    INPROCESS_COMPILE_BYTES,
    compile_isolated,
    engine_config,
)
from .wasm_host import (
    Determinism,
    HostVolume,
    Interrupt,
    adapter_module,
    install_epoch_callback,
    install_host_functions,
)
from .wasm_output import PipedStdout
from .wasm_output import available as pipe_available

if TYPE_CHECKING:
    from ..storage.ipfs.blockstore import BlockStore

__all__ = ["BlockGetter", "ModuleLoader", "WasmExecutor", "WasmParams", "engine_config"]

ModuleLoader = Callable[[StorageSpec], Awaitable[bytes]]
"""Fetches a module's bytes from a non-inline StorageSpec (raise StorageError if it cannot)."""

ARGV0 = "module.wasm"
_PAGE = 65536
_TABLES = 4
_TABLE_ELEMENT_BYTES = 16
_MIN_TABLE_ELEMENTS = 10_000
_MAX_NAME_LEN = 255
MAX_MODULE_BYTES = 256 * 1024 * 1024
"""The largest module fetched by CID."""


class BlockGetter(Protocol):
    """What the executor needs of the node's ``BlockService``: something the UnixFS
    exporter (:mod:`bacalhau.storage.ipfs.exporter`) can read blocks from."""

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]: ...


@attrs.frozen(kw_only=True)
class WasmParams:
    """The validated ``engine.params`` of a wasm job."""

    module: StorageSpec
    entry_point: str = "_start"
    args: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: JobSpec) -> WasmParams:
        """Parse ``spec.engine.params``.

        Raises:
            ValidationError: naming the parameter that is wrong.
        """
        params = dict(spec.engine.params)
        unknown = sorted(set(params) - {"module", "entry_point", "args"})
        if unknown:
            raise ValidationError(f"unknown wasm parameter(s): {', '.join(unknown)}")
        if "module" not in params:
            raise ValidationError("a wasm job needs a module", field="engine.params.module")
        module = from_data(params["module"], StorageSpec, what="engine.params.module")
        entry = params.get("entry_point", "_start")
        if not isinstance(entry, str) or not entry or len(entry) > _MAX_NAME_LEN:
            raise ValidationError(
                f"must be the name of an exported function, got {entry!r}",
                field="engine.params.entry_point",
            )
        args = params.get("args", [])
        if not isinstance(args, list | tuple) or not all(
            isinstance(a, str) and "\x00" not in a for a in args
        ):
            raise ValidationError(
                "must be a list of strings without NUL", field="engine.params.args"
            )
        return cls(module=module, entry_point=entry, args=tuple(args))


@attrs.frozen
class _Plan:
    """Everything the worker thread needs for one run (built in the event loop)."""

    engine: wasmtime.Engine
    adapter: wasmtime.Module
    module: wasmtime.Module
    job_id: str
    entry_point: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    volumes: tuple[PreparedVolume, ...]
    outputs: tuple[tuple[Path, str], ...]
    results_dir: Path
    work_dir: Path
    memory_limit: int
    timeout: float
    interrupt: Interrupt
    guards: bool = True
    run_timeout: float | None = None  # what is left of ``timeout`` after compiling
    output: OutputSink | None = None
    stdout_pipe: PipedStdout | None = None


class _Capture:
    """A WASI output stream kept in memory up to ``limit`` bytes, and handed to the
    live output sink (when there is one) as the module writes it."""

    def __init__(self, limit: int, live: Callable[[bytes], None] | None = None) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0
        self.live = live

    def __call__(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.total += len(chunk)
        if self.live is not None:
            self.live(chunk)

    @property
    def truncated(self) -> bool:
        return self.total > self.limit


def _host_kind(path: Path, root: Path, target: str) -> bool:
    """True if the input volume at ``path`` is a folder, False if a file; refuse
    links, special files and anything whose real path is outside ``root`` (the
    execution folder)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise ExecutorError(f"input volume {target}: {path} is missing ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        raise ExecutorError(f"input volume {target} is a symbolic link on the host; refused")
    if not is_within(root, path):
        raise ExecutorError(f"input volume {target} lies outside the execution folder; refused")
    if stat.S_ISDIR(mode):
        return True
    if stat.S_ISREG(mode):
        return False
    raise ExecutorError(f"input volume {target} is not a regular file or folder; refused")


def _layout_preopens(plan: _Plan) -> tuple[list[tuple[Path, str, bool]], list[HostVolume]]:
    """Host directories to preopen (host, guest path, writable) and the import-module volumes.

    A single-file volume is hard-linked (or copied, across file systems) into a
    private directory preopened read-only at the file's parent path. No path is
    followed through a link: each volume is ``lstat``-ed and proven to lie inside
    the execution folder first.
    """
    preopens: list[tuple[Path, str, bool]] = []
    host_volumes: list[HostVolume] = []
    root = plan.work_dir.parent
    kinds = {
        id(v): _host_kind(v.host_path, root, v.spec.target) if plan.guards else v.host_path.is_dir()
        for v in plan.volumes
        if v.host_path is not None
    }
    dir_targets = {v.spec.target for v in plan.volumes if v.host_path and kinds[id(v)]}
    out_paths = {guest for _, guest in plan.outputs}
    file_dirs: dict[str, Path] = {}
    for volume in plan.volumes:
        target = volume.spec.target
        if volume.host_path is None:
            reader = volume.read
            if not callable(reader):
                raise ExecutorError(
                    f"input volume {target} was prepared with neither a host path nor a reader"
                )
            host_volumes.append(HostVolume(target=target, size=volume.size, reader=reader))
            continue
        host_volumes.append(HostVolume(target=target, size=volume.size, host_path=volume.host_path))
        if kinds[id(volume)]:
            preopens.append((volume.host_path, target, False))
            continue
        parent, name = posixpath.split(target)
        if parent in dir_targets or parent in out_paths:
            raise ExecutorError(
                f"input file {target} would sit inside the volume at {parent}; "
                "give it a target outside other volumes"
            )
        holder = file_dirs.get(parent)
        if holder is None:
            holder = plan.work_dir / "wasm-inputs" / str(len(file_dirs))
            holder.mkdir(parents=True, exist_ok=True)
            file_dirs[parent] = holder
            preopens.append((holder, parent, False))
        try:
            os.link(volume.host_path, holder / name, follow_symlinks=False)
        except OSError:
            shutil.copyfile(volume.host_path, holder / name, follow_symlinks=False)
    for host, guest in plan.outputs:
        host.mkdir(parents=True, exist_ok=True)
        preopens.append((host, guest, True))
    return preopens, host_volumes


_WASM_ERRORS = (wasmtime.WasmtimeError, wasmtime.Trap)
"""What wasmtime raises: traps (``Trap``) and other failures (``WasmtimeError``)."""

_CAUSE_RE = re.compile(r"Caused by:\s*(.+?)\s*$", re.DOTALL)


def _trap_reason(exc: wasmtime.WasmtimeError | wasmtime.Trap) -> str:
    """The one-line cause of a wasmtime error plus the innermost frames of its backtrace."""
    text = str(exc).strip()
    match = _CAUSE_RE.search(text)
    cause = match.group(1).splitlines()[-1].strip() if match else text.splitlines()[0]
    frames = [ln.strip() for ln in text.splitlines() if re.match(r"\s+\d+:\s", ln)][:3]
    return cause + (f" (backtrace: {'; '.join(frames)})" if frames else "")


def _error_text_reason(text: str) -> str:
    match = _CAUSE_RE.search(text.strip())
    if match:
        return match.group(1).splitlines()[-1].strip()
    return (text.strip().splitlines() or ["unknown error"])[0]


def _tail(data: bytes, limit: int = 300) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _memory_pages_near_limit(
    store: wasmtime.Store, instance: wasmtime.Instance, limit: int
) -> bool:
    memory = instance.exports(store).get("memory")
    return isinstance(memory, wasmtime.Memory) and memory.data_len(store) + _PAGE > limit


def _describe_failure(
    plan: _Plan,
    exc: wasmtime.WasmtimeError | wasmtime.Trap,
    host_volumes: list[HostVolume],
    near_memory_limit: bool,
    stderr: bytes,
) -> ExecutorError:
    interrupt = plan.interrupt
    failure = next((v.failure for v in host_volumes if v.failure), None)
    if interrupt.timed_out:
        return ExecutorError(
            f"wasm module did not finish within the job timeout of {plan.timeout:g} s and was "
            "stopped; raise the job's timeout if it needs longer"
        )
    if failure is not None:
        return ExecutorError(failure)
    if interrupt.reason is not None:
        return ExecutorError(f"wasm module was stopped: {interrupt.reason}")
    reason = _trap_reason(exc)
    said = f"; stderr ends with: {_tail(stderr)!r}" if stderr.strip() else ""
    if near_memory_limit:
        return ExecutorError(
            f"wasm module ran out of memory at the job's limit of {plan.memory_limit} bytes "
            f"(resources.memory) and then failed: {reason}{said}"
        )
    return ExecutorError(f"wasm module trapped: {reason}{said}")


def _instantiate_error(plan: _Plan, exc: wasmtime.WasmtimeError | wasmtime.Trap) -> ExecutorError:
    text = str(exc)
    unknown = re.search(r"unknown import: `([^`]+)`", text)
    if unknown:
        return ExecutorError(
            f"wasm module imports {unknown.group(1)}, which this node does not provide "
            "(available: WASI preview 1 'wasi_snapshot_preview1' and 'bacalhau')"
        )
    if "memory" in text and ("limit" in text or "minimum" in text):
        return ExecutorError(
            f"wasm module needs more memory at start than the job's limit of "
            f"{plan.memory_limit} bytes (resources.memory): {_trap_reason(exc)}"
        )
    return ExecutorError(f"wasm module could not be instantiated: {_trap_reason(exc)}")


def _execute(plan: _Plan) -> RunResult:
    """Run one module to completion on the current (worker) thread."""
    preopens, host_volumes = _layout_preopens(plan)
    sink = plan.output
    stdout = _Capture(MAX_LOG_BYTES, functools.partial(sink, "stdout") if sink else None)
    stderr = _Capture(MAX_LOG_BYTES, functools.partial(sink, "stderr") if sink else None)
    store = wasmtime.Store(plan.engine)
    store.set_limits(
        memory_size=plan.memory_limit,
        table_elements=table_elements_limit(plan.memory_limit),
        instances=2,  # the module and the WASI adapter (see wasm_host)
        tables=_TABLES,
        memories=1,
    )
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(plan.argv)
    wasi.env = [list(kv) for kv in plan.env]
    pipe = plan.stdout_pipe
    if pipe is not None:
        pipe.sink = stdout
        wasi.stdout_file = pipe.target  # the FIFO itself, not a name that can be swapped
        take = pipe.take

        def ordered_stderr(data: bytes) -> None:
            take()  # what stdout wrote before this goes first
            stderr(data)

        wasi.stderr_custom = ordered_stderr
    else:
        wasi.stdout_custom = stdout
        wasi.stderr_custom = stderr
    for host, guest, writable in preopens:
        wasi.preopen_dir(str(host), guest, writable)
    store.set_wasi(wasi)
    keep_alive = install_epoch_callback(store, plan.interrupt)
    linker = wasmtime.Linker(plan.engine)
    install_host_functions(
        linker,
        plan.engine,
        plan.adapter,
        det=Determinism(job_id=plan.job_id),
        volumes=host_volumes,
        interrupt=plan.interrupt,
    )
    budget = plan.timeout if plan.run_timeout is None else plan.run_timeout
    plan.interrupt.deadline = time.monotonic() + budget
    instance: wasmtime.Instance | None = None
    try:
        try:
            instance = linker.instantiate(store, plan.module)
        except _WASM_ERRORS as exc:
            if plan.interrupt.reason is not None:
                raise _describe_failure(plan, exc, host_volumes, False, bytes(stderr.data)) from exc
            raise _instantiate_error(plan, exc) from exc
        exports = instance.exports(store)
        entry = exports.get(plan.entry_point)
        if not isinstance(entry, wasmtime.Func):
            names = sorted(
                e.name for e in plan.module.exports if isinstance(e.type, wasmtime.FuncType)
            )
            raise ExecutorError(
                f"wasm module exports no function {plan.entry_point!r}; "
                f"its exported functions are: {', '.join(names) or '(none)'}"
            )
        func_type = entry.type(store)
        if func_type.params:
            raise ExecutorError(
                f"entry point {plan.entry_point!r} takes {len(func_type.params)} parameter(s); "
                "it must take none"
            )
        try:
            initialize = exports.get("_initialize")
            if plan.entry_point != "_start" and isinstance(initialize, wasmtime.Func):
                initialize(store)
            returned = entry(store)
            exit_code = 0
            if len(func_type.results) == 1 and isinstance(returned, int):
                exit_code = returned
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code
        except _WASM_ERRORS as exc:
            near = _memory_pages_near_limit(store, instance, plan.memory_limit)
            raise _describe_failure(plan, exc, host_volumes, near, bytes(stderr.data)) from exc
        if pipe is not None:
            pipe.take()  # the module has ended: all it wrote is in the pipe
        failure = next((v.failure for v in host_volumes if v.failure), None)
        if failure is not None:
            raise ExecutorError(failure)
        return RunResult(
            exit_code=exit_code,
            truncated=tuple(
                name for name, cap in (("stdout", stdout), ("stderr", stderr)) if cap.truncated
            ),
        )
    finally:
        if pipe is not None:
            pipe.take()  # (again, when the module failed)
        plan.results_dir.mkdir(parents=True, exist_ok=True)
        write_capped(plan.results_dir / "stdout", bytes(stdout.data))
        write_capped(plan.results_dir / "stderr", bytes(stderr.data))
        for volume in host_volumes:
            volume.close()
        del keep_alive


def table_elements_limit(memory_limit: int) -> int:
    """Elements one table may hold: all tables together take at most a quarter of
    the job's memory on the host (at least 10,000 elements each)."""
    return max(_MIN_TABLE_ELEMENTS, memory_limit // (4 * _TABLES * _TABLE_ELEMENT_BYTES))


def _compile(engine: wasmtime.Engine, data: bytes) -> wasmtime.Module:
    try:
        if data.startswith(b"\x00asm"):
            return wasmtime.Module(engine, data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ExecutorError(
                "the wasm module is neither WebAssembly binary (no \\0asm header) nor WAT text"
            ) from None
        return wasmtime.Module(engine, text)
    except wasmtime.WasmtimeError as exc:
        raise ExecutorError(f"the wasm module could not be compiled: {_trap_reason(exc)}") from exc


@attrs.define
class WasmExecutor(Executor):
    """Runs WASI preview 1 modules on wasmtime (see the module docstring for the sandbox).

    Args:
        blocks: the node's ``BlockService`` (or a local ``BlockStore``); used to
            fetch ``ipfs`` modules when no ``module_loader`` is given.
        module_loader: fetches a module's bytes for a non-inline source; takes
            precedence over ``blocks``.
        cache_size: how many compiled modules to keep (by SHA-256 of the bytes).
        tick: seconds between watchdog epoch ticks: how soon a timeout or a
            cancellation stops a running module.
        max_concurrent: how many modules run at once (worker threads); more wait.
        limits: the node's job limits (``wasm_max_module_bytes``; ``guards``).
    """

    name: ClassVar[str] = "wasm"
    storage_mode: ClassVar[Literal["posix", "library", "any"]] = "any"

    blocks: BlockGetter | BlockStore | None = None
    limits: JobLimits = DEFAULT_JOB_LIMITS
    module_loader: ModuleLoader | None = None
    cache_size: int = 32
    tick: float = 0.01
    max_concurrent: int = attrs.field(factory=lambda: max(2, os.cpu_count() or 2))
    _engine: wasmtime.Engine = attrs.field(
        init=False, factory=lambda: wasmtime.Engine(engine_config())
    )
    _adapter: wasmtime.Module | None = attrs.field(init=False, default=None)
    _modules: OrderedDict[str, wasmtime.Module] = attrs.field(init=False, factory=OrderedDict)
    _cid_digests: dict[str, str] = attrs.field(init=False, factory=dict)
    _limiter: anyio.CapacityLimiter | None = attrs.field(init=False, default=None)

    @property
    def adapter(self) -> wasmtime.Module:
        """The WASI adapter, compiled for this executor's engine at its first job (a
        network of a thousand nodes that run no WASM never compiles it)."""
        if self._adapter is None:
            self._adapter = adapter_module(self._engine)
        return self._adapter

    @property
    def engine(self) -> wasmtime.Engine:
        """The shared wasmtime engine (modules compiled for it can run here)."""
        return self._engine

    @property
    def cached_modules(self) -> int:
        return len(self._modules)

    def validate(self, spec: JobSpec) -> None:
        params = WasmParams.from_spec(spec)
        source = params.module
        if (
            source.type != "inline"
            and self.module_loader is None
            and not (source.type == "ipfs" and self.blocks is not None)
        ):
            raise ValidationError(
                f"this node cannot fetch a wasm module from a {source.type!r} source",
                field="engine.params.module",
            )

    async def close(self) -> None:
        """Drop the compiled-module cache."""
        self._modules.clear()
        self._cid_digests.clear()

    async def load_module(
        self, source: StorageSpec, *, timeout: float | None = None, memory: int | None = None
    ) -> wasmtime.Module:
        """The compiled module for ``source``, from the cache or fetched and compiled.

        With ``timeout`` (and ``memory``), compiling happens in a child process bounded
        by them (a job's own limits); without, on a worker thread.

        Raises:
            ExecutorError: the module could not be fetched, is larger than
                ``limits.wasm_max_module_bytes``, is not valid WebAssembly, or
                compiling it needed more than ``timeout`` or ``memory``.
        """
        key = f"{source.cid}:{source.path or ''}" if source.type == "ipfs" else None
        digest = self._cid_digests.get(key) if key else None
        if digest is not None and digest in self._modules:
            self._modules.move_to_end(digest)
            return self._modules[digest]
        data = await self._fetch(source)
        most = self.limits.wasm_max_module_bytes
        if len(data) > most:
            raise ExecutorError(
                f"the wasm module is {len(data)} bytes; this node accepts modules of at most "
                f"{most} bytes (wasm_max_module_bytes)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if key:
            self._cid_digests[key] = digest
        cached = self._modules.get(digest)
        if cached is not None:
            self._modules.move_to_end(digest)
            return cached
        if timeout is not None and self.limits.guards and len(data) > INPROCESS_COMPILE_BYTES:
            module = await compile_isolated(
                self._engine,
                data,
                timeout=timeout,
                memory=memory or COMPILE_MEMORY_FLOOR,
                describe=_error_text_reason,
            )
        else:
            module = await anyio.to_thread.run_sync(_compile, self._engine, data)
        self._modules[digest] = module
        while len(self._modules) > self.cache_size:
            self._modules.popitem(last=False)
        return module

    async def _fetch(self, source: StorageSpec) -> bytes:
        if source.type == "inline":
            assert source.data is not None
            return source.data
        what = source.cid or source.url or source.type
        try:
            if self.module_loader is not None:
                return await self.module_loader(source)
            if source.type == "ipfs" and self.blocks is not None:
                assert source.cid is not None
                return await _cat(
                    self.blocks, source.cid, source.path, self.limits.wasm_max_module_bytes
                )
        except (BacalhauError, OSError) as exc:
            raise ExecutorError(f"could not fetch the wasm module {what}: {exc}") from exc
        raise ExecutorError(
            f"this node cannot fetch a wasm module from a {source.type!r} source ({what})"
        )

    async def run(self, ctx: ExecutionContext) -> RunResult:
        """Run the job's module; see the module docstring for what it sees.

        Raises:
            ExecutorError: the module could not be fetched, compiled or
                instantiated, trapped, ran out of memory, or hit the timeout.
        """
        params = WasmParams.from_spec(ctx.spec)
        spec = ctx.spec
        started = time.monotonic()
        module = await self.load_module(
            params.module, timeout=spec.timeout, memory=spec.resources.memory
        )
        spec = ctx.spec
        outputs = []
        for output in spec.outputs:
            if output.name not in ctx.outputs:
                raise ExecutorError(f"the runner prepared no directory for output {output.name!r}")
            outputs.append((ctx.outputs[output.name], output.path))
        plan = _Plan(
            engine=self._engine,
            adapter=self.adapter,
            module=module,
            job_id=ctx.job_id,
            entry_point=params.entry_point,
            argv=(ARGV0, *params.args),
            env=tuple(sorted(spec.env.items())),
            volumes=ctx.volumes,
            outputs=tuple(outputs),
            results_dir=ctx.results_dir,
            work_dir=ctx.work_dir,
            memory_limit=spec.resources.memory,
            timeout=spec.timeout,
            run_timeout=max(0.0, spec.timeout - (time.monotonic() - started)),
            interrupt=Interrupt(),
            guards=self.limits.guards,
            output=ctx.output,
            stdout_pipe=PipedStdout(ctx.work_dir) if pipe_available() else None,
        )
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrent)
        outcome: RunResult | ExecutorError | None = None
        pipe = plan.stdout_pipe
        if pipe is not None:
            try:
                await anyio.to_thread.run_sync(pipe.open)
            except OSError:  # no FIFOs on this file system: the callback, slower but works
                pipe.close()
                plan, pipe = attrs.evolve(plan, stdout_pipe=None), None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watchdog, plan.interrupt)
                if pipe is not None:
                    tg.start_soon(functools.partial(anyio.to_thread.run_sync, pipe.run))
                try:
                    outcome = await anyio.to_thread.run_sync(
                        functools.partial(_execute, plan), limiter=self._limiter
                    )
                except ExecutorError as exc:
                    # Raised outside the task group, so callers get it unwrapped.
                    outcome = exc
                finally:
                    if pipe is not None:
                        pipe.stop()  # before the cancel: its thread is not cancellable
                    tg.cancel_scope.cancel()
        finally:
            if pipe is not None:
                pipe.close()
        if isinstance(outcome, ExecutorError):
            if plan.interrupt.reason == "cancelled":
                # The module stopped because this task was cancelled: deliver that.
                await anyio.lowlevel.checkpoint()
            raise outcome
        assert outcome is not None
        return outcome

    async def _watchdog(self, interrupt: Interrupt) -> None:
        """Tick the engine's epoch so the running module checks ``interrupt``; on
        cancellation, tell the module to stop."""
        try:
            while True:
                await anyio.sleep(self.tick)
                self._engine.increment_epoch()
        finally:
            interrupt.stop("cancelled")
            self._engine.increment_epoch()


async def _cat(
    blocks: BlockGetter | BlockStore, cid: str, path: str | None, max_size: int = MAX_MODULE_BYTES
) -> bytes:
    """A whole module file by CID (and optional path inside it) through the block service."""
    from ..storage.ipfs import exporter

    root: str | bytes = cid
    if path:
        root = await exporter.resolve(blocks, cid, path)
    return await exporter.read_all(blocks, root, max_size=max_size)
