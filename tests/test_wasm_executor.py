"""The WASM executor run directly with hand-built contexts (WAT modules: no clang needed)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import anyio
import attrs
import pytest

from bacalhau.errors import ExecutorError, StorageError, ValidationError
from bacalhau.executor.base import MAX_LOG_BYTES, ExecutionContext, PreparedVolume, RunResult
from bacalhau.executor.wasm import WasmExecutor, WasmParams
from bacalhau.models import EngineSpec, InputSpec, JobSpec, OutputSpec, Resources, StorageSpec
from bacalhau.testing.executors import execution_context

# --- helpers ------------------------------------------------------------------------------------

FD_WRITE = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'  # noqa: E501
PROC_EXIT = '(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))'


def wasi(name: str, params: str, result: bool = True) -> str:
    res = " (result i32)" if result else ""
    return f'(import "wasi_snapshot_preview1" "{name}" (func ${name} (param {params}){res}))'


def wat_bytes(blob: bytes) -> str:
    return "".join("\\" + format(b, "02x") for b in blob)


def module(*imports: str, body: str, data: dict[int, bytes] | None = None) -> str:
    """A WAT module exporting memory, with ``$write(fd, ptr, len)`` and ``body`` as ``_start``.

    Memory layout: 0..16 scratch (iovec, nwritten), 64..1024 results, data from 1024.
    """
    segments = "".join(
        f'(data (i32.const {offset}) "{wat_bytes(blob)}")' for offset, blob in (data or {}).items()
    )
    return f"""
(module
  {FD_WRITE}
  {" ".join(imports)}
  (memory (export "memory") 2)
  {segments}
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") {body}))
"""


def make_ctx(
    tmp_path: Path,
    spec: JobSpec,
    *,
    volumes: tuple[PreparedVolume, ...] = (),
    job_id: str = "job-1",
    name: str = "run",
) -> ExecutionContext:
    return execution_context(tmp_path / name, spec, volumes, job_id=job_id)


def read(ctx: ExecutionContext, name: str) -> bytes:
    return (ctx.results_dir / name).read_bytes()


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def executor() -> WasmExecutor:
    return WasmExecutor()


HELLO = module(
    PROC_EXIT,
    body="(call $write (i32.const 1) (i32.const 1024) (i32.const 6))"
    "(call $write (i32.const 2) (i32.const 1030) (i32.const 5))"
    "(call $proc_exit (i32.const 3))",
    data={1024: b"hello\noops\n"},
)

LOOP_FOREVER = module(body="(loop $l (br $l))")

# --- stdout, stderr, exit code --------------------------------------------------------------------


@pytest.mark.anyio
async def test_stdout_stderr_and_proc_exit_code(executor: WasmExecutor, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(HELLO))
    result = await executor.run(ctx)
    assert result == RunResult(exit_code=3)
    assert read(ctx, "stdout") == b"hello\n"
    assert read(ctx, "stderr") == b"oops\n"


@pytest.mark.anyio
async def test_returning_from_start_is_exit_zero(executor: WasmExecutor, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(module(body="")))
    assert (await executor.run(ctx)).exit_code == 0
    assert read(ctx, "stdout") == b""


@pytest.mark.anyio
async def test_argv_and_env_are_exactly_the_jobs(executor: WasmExecutor, tmp_path: Path) -> None:
    wat = module(
        wasi("args_sizes_get", "i32 i32"),
        wasi("args_get", "i32 i32"),
        wasi("environ_sizes_get", "i32 i32"),
        wasi("environ_get", "i32 i32"),
        body="""
        (drop (call $args_sizes_get (i32.const 64) (i32.const 68)))
        (drop (call $args_get (i32.const 128) (i32.const 4096)))
        (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 68)))
        (drop (call $environ_sizes_get (i32.const 64) (i32.const 68)))
        (drop (call $environ_get (i32.const 128) (i32.const 8192)))
        (call $write (i32.const 2) (i32.const 8192) (i32.load (i32.const 68)))""",
    )
    spec = JobSpec.wasm(wat, args=["a", "b c"], env={"GREETING": "hi", "A": "1"})
    ctx = make_ctx(tmp_path, spec)
    await executor.run(ctx)
    assert read(ctx, "stdout") == b"module.wasm\0a\0b c\0"
    assert sorted(read(ctx, "stderr").split(b"\0")) == [b"", b"A=1", b"GREETING=hi"]


@pytest.mark.anyio
async def test_output_over_one_mebibyte_is_truncated(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    # 20 writes of 64 KiB = 1.25 MiB to stdout, 10 bytes to stderr.
    wat = module(
        body="""(local $i i32)
        (loop $l
          (call $write (i32.const 1) (i32.const 0) (i32.const 65536))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 20))))
        (call $write (i32.const 2) (i32.const 1024) (i32.const 10))""",
        data={1024: b"0123456789"},
    )
    ctx = make_ctx(tmp_path, JobSpec.wasm(wat))
    result = await executor.run(ctx)
    assert result.truncated == ("stdout",)
    assert len(read(ctx, "stdout")) == MAX_LOG_BYTES
    assert read(ctx, "stderr") == b"0123456789"


@pytest.mark.anyio
async def test_custom_entry_point_returning_i32_is_the_exit_code(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    wat = '(module (memory (export "memory") 1) (func (export "main") (result i32) i32.const 42))'
    ctx = make_ctx(tmp_path, JobSpec.wasm(wat, entry_point="main"))
    assert (await executor.run(ctx)).exit_code == 42


# --- volumes --------------------------------------------------------------------------------------

PATH_OPEN = wasi("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32")
FD_READ = wasi("fd_read", "i32 i32 i32 i32")
O_CREAT = 1
RIGHT_FD_READ = 1 << 1
RIGHT_FD_WRITE = 1 << 6


def open_call(dirfd: int, path_at: int, path_len: int, oflags: int, rights: int) -> str:
    """``path_open`` storing the new fd at 64; leaves the errno on the stack."""
    return (
        f"(call $path_open (i32.const {dirfd}) (i32.const 0) (i32.const {path_at})"
        f" (i32.const {path_len}) (i32.const {oflags}) (i64.const {rights}) (i64.const 0)"
        " (i32.const 0) (i32.const 64))"
    )


def input_dir(tmp_path: Path, files: dict[str, bytes], name: str = "in") -> Path:
    root = tmp_path / name
    root.mkdir()
    for fname, content in files.items():
        (root / fname).write_bytes(content)
    return root


@pytest.mark.anyio
async def test_input_volume_is_readable_but_not_writable(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    # fd 3 is the input preopen. Read a.txt to stdout, then try to create new.txt
    # and exit with path_open's errno.
    body = f"""
        (drop {open_call(3, 1024, 5, 0, RIGHT_FD_READ)})
        (i32.store (i32.const 16) (i32.const 2048))
        (i32.store (i32.const 20) (i32.const 100))
        (drop (call $fd_read (i32.load (i32.const 64)) (i32.const 16) (i32.const 1) (i32.const 24)))
        (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 24)))
        (call $proc_exit {open_call(3, 1040, 7, O_CREAT, RIGHT_FD_WRITE)})"""
    wat = module(PATH_OPEN, FD_READ, PROC_EXIT, body=body, data={1024: b"a.txt", 1040: b"new.txt"})
    spec = JobSpec.wasm(wat, inputs=[InputSpec(StorageSpec.inline("unused"), "/inputs")])
    host = input_dir(tmp_path, {"a.txt": b"input data"})
    ctx = make_ctx(tmp_path, spec, volumes=(PreparedVolume(spec=spec.inputs[0], host_path=host),))
    result = await executor.run(ctx)
    assert read(ctx, "stdout") == b"input data"
    assert result.exit_code != 0  # the create failed inside the module (an errno)
    assert not (host / "new.txt").exists()


@pytest.mark.anyio
async def test_single_file_input_appears_at_its_target(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    # A file volume at /data/input.csv: its parent /data is preopened (fd 3).
    body = f"""
        (drop {open_call(3, 1024, 9, 0, RIGHT_FD_READ)})
        (i32.store (i32.const 16) (i32.const 2048))
        (i32.store (i32.const 20) (i32.const 100))
        (drop (call $fd_read (i32.load (i32.const 64)) (i32.const 16) (i32.const 1) (i32.const 24)))
        (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 24)))"""
    wat = module(PATH_OPEN, FD_READ, body=body, data={1024: b"input.csv"})
    spec = JobSpec.wasm(wat, inputs=[InputSpec(StorageSpec.inline("x"), "/data/input.csv")])
    host = tmp_path / "blob"
    host.write_bytes(b"a,b\n1,2\n")
    ctx = make_ctx(tmp_path, spec, volumes=(PreparedVolume(spec=spec.inputs[0], host_path=host),))
    await executor.run(ctx)
    assert read(ctx, "stdout") == b"a,b\n1,2\n"


@pytest.mark.anyio
async def test_outputs_land_under_their_names(executor: WasmExecutor, tmp_path: Path) -> None:
    # Two outputs: fd 3 is /outputs/first, fd 4 is /outputs/second.
    def write_file(dirfd: int, text_at: int) -> str:
        return f"""
        (drop {open_call(dirfd, 1024, 10, O_CREAT, RIGHT_FD_WRITE)})
        (call $write (i32.load (i32.const 64)) (i32.const {text_at}) (i32.const 5))"""

    wat = module(
        PATH_OPEN,
        body=write_file(3, 1040) + write_file(4, 1048),
        data={1024: b"result.txt", 1040: b"one\n\0\0\0\0two\n"},
    )
    spec = JobSpec.wasm(
        wat,
        outputs=[OutputSpec("first", "/outputs/first"), OutputSpec("second", "/outputs/second")],
    )
    ctx = make_ctx(tmp_path, spec)
    assert (await executor.run(ctx)).exit_code == 0
    assert (ctx.outputs["first"] / "result.txt").read_bytes() == b"one\n\0"
    assert (ctx.outputs["second"] / "result.txt").read_bytes() == b"two\n\0"


VOLUME_IMPORTS = (
    '(import "bacalhau" "volume_open" (func $volume_open (param i32 i32) (result i32)))',
    '(import "bacalhau" "volume_size" (func $volume_size (param i32) (result i64)))',
    '(import "bacalhau" "volume_read" (func $volume_read (param i32 i64 i32 i32) (result i32)))',
)


def volume_reader_module(target: bytes) -> str:
    """Open ``target`` through the bacalhau imports; print the size (8 bytes LE) then the
    bytes read 4 at a time from offset 2 to stdout; exit with -errno on failure."""
    body = f"""(local $h i32) (local $off i64) (local $n i32)
        (local.set $h (call $volume_open (i32.const 1024) (i32.const {len(target)})))
        (if (i32.lt_s (local.get $h) (i32.const 0))
          (then (call $proc_exit (i32.sub (i32.const 0) (local.get $h)))))
        (i64.store (i32.const 64) (call $volume_size (local.get $h)))
        (call $write (i32.const 1) (i32.const 64) (i32.const 8))
        (local.set $off (i64.const 2))
        (block $done (loop $l
          (local.set $n (call $volume_read (local.get $h) (local.get $off) (i32.const 2048)
                                           (i32.const 4)))
          (if (i32.lt_s (local.get $n) (i32.const 0))
            (then (call $proc_exit (i32.sub (i32.const 0) (local.get $n)))))
          (br_if $done (i32.eqz (local.get $n)))
          (call $write (i32.const 1) (i32.const 2048) (local.get $n))
          (local.set $off (i64.add (local.get $off) (i64.extend_i32_u (local.get $n))))
          (br $l)))"""
    return module(*VOLUME_IMPORTS, PROC_EXIT, body=body, data={1024: target})


@pytest.mark.anyio
async def test_library_volume_is_streamed_through_the_bacalhau_import(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    content = b"streamed without a file"
    calls: list[tuple[int, int]] = []

    def reader(offset: int, size: int) -> bytes:
        calls.append((offset, size))
        return content[offset : offset + size]

    spec = JobSpec.wasm(
        volume_reader_module(b"/data/blob"),
        inputs=[InputSpec(StorageSpec.inline("x"), "/data/blob")],
    )
    volume = PreparedVolume(spec=spec.inputs[0], read=reader, size=len(content))
    ctx = make_ctx(tmp_path, spec, volumes=(volume,))
    assert (await executor.run(ctx)).exit_code == 0
    out = read(ctx, "stdout")
    assert struct.unpack("<q", out[:8])[0] == len(content)
    assert out[8:] == content[2:]
    assert calls[0] == (2, 4)


@pytest.mark.anyio
async def test_posix_file_volume_is_also_readable_through_the_import(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    host = tmp_path / "blob"
    host.write_bytes(b"0123456789")
    spec = JobSpec.wasm(
        volume_reader_module(b"/data/blob"),
        inputs=[InputSpec(StorageSpec.inline("x"), "/data/blob")],
    )
    ctx = make_ctx(tmp_path, spec, volumes=(PreparedVolume(spec=spec.inputs[0], host_path=host),))
    await executor.run(ctx)
    assert read(ctx, "stdout")[8:] == b"23456789"


@pytest.mark.anyio
async def test_import_reports_missing_volume_as_enoent(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(volume_reader_module(b"/nope")))
    assert (await executor.run(ctx)).exit_code == 44  # ENOENT


@pytest.mark.anyio
async def test_library_read_failure_fails_the_execution(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    def reader(offset: int, size: int) -> bytes:
        raise StorageError("block QmXYZ not found on any peer")

    spec = JobSpec.wasm(
        volume_reader_module(b"/data/blob"),
        inputs=[InputSpec(StorageSpec.inline("x"), "/data/blob")],
    )
    ctx = make_ctx(
        tmp_path, spec, volumes=(PreparedVolume(spec=spec.inputs[0], read=reader, size=100),)
    )
    with pytest.raises(ExecutorError, match=r"reading input volume /data/blob failed.*QmXYZ"):
        await executor.run(ctx)


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_infinite_loop_ends_at_the_timeout(executor: WasmExecutor, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(LOOP_FOREVER, timeout=0.3))
    with pytest.raises(ExecutorError, match=r"did not finish within the job timeout of 0\.3 s"):
        await executor.run(ctx)


@pytest.mark.anyio
async def test_event_loop_keeps_running_while_a_module_runs(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    ticks = 0

    async def count() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    ctx = make_ctx(tmp_path, JobSpec.wasm(LOOP_FOREVER, timeout=0.3))
    async with anyio.create_task_group() as tg:
        tg.start_soon(count)
        with pytest.raises(ExecutorError):
            await executor.run(ctx)
        tg.cancel_scope.cancel()
    assert ticks > 0


@pytest.mark.anyio
async def test_cancellation_stops_the_module(executor: WasmExecutor, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(LOOP_FOREVER, timeout=3600))
    with anyio.move_on_after(0.2) as scope:
        await executor.run(ctx)
    assert scope.cancelled_caught
    # run() returns only once the worker thread is done: nothing is left running.
    assert executor._limiter is not None
    assert executor._limiter.borrowed_tokens == 0


GROW_UNTIL_REFUSED = module(
    PROC_EXIT,
    body="""
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable""",
)


@pytest.mark.anyio
async def test_growing_memory_past_the_limit_fails_cleanly(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    spec = JobSpec.wasm(GROW_UNTIL_REFUSED, resources=Resources(memory=4 * 1024 * 1024))
    with pytest.raises(ExecutorError, match=r"ran out of memory at the job's limit of 4194304"):
        await executor.run(make_ctx(tmp_path, spec))


@pytest.mark.anyio
async def test_refused_growth_is_visible_to_the_module(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    # A module that handles the refusal exits normally with its own code.
    wat = module(
        PROC_EXIT,
        body="""(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        (call $proc_exit (memory.size))""",
    )
    spec = JobSpec.wasm(wat, resources=Resources(memory=2 * 1024 * 1024))
    assert (await executor.run(make_ctx(tmp_path, spec))).exit_code == 32  # 2 MiB in pages


@pytest.mark.anyio
async def test_module_needing_more_memory_than_the_limit_fails_cleanly(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    wat = '(module (memory (export "memory") 100) (func (export "_start")))'  # 6.25 MiB
    spec = JobSpec.wasm(wat, resources=Resources(memory=1024 * 1024))
    with pytest.raises(ExecutorError, match=r"more memory .* limit of 1048576"):
        await executor.run(make_ctx(tmp_path, spec))


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_trap_fails_with_its_message_and_the_executor_keeps_working(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    wat = module(
        body="(call $write (i32.const 2) (i32.const 1024) (i32.const 12))"
        "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
        data={1024: b"about to die"},
    )
    ctx = make_ctx(tmp_path, JobSpec.wasm(wat), name="trap")
    with pytest.raises(ExecutorError, match=r"trapped: .*divide by zero.*about to die"):
        await executor.run(ctx)
    assert read(ctx, "stderr") == b"about to die"
    ctx = make_ctx(tmp_path, JobSpec.wasm(HELLO), name="after")
    assert (await executor.run(ctx)).exit_code == 3


@pytest.mark.anyio
async def test_missing_entry_point_names_the_exports(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, JobSpec.wasm(HELLO, entry_point="main"))
    with pytest.raises(ExecutorError, match=r"no function 'main'.*_start"):
        await executor.run(ctx)


@pytest.mark.anyio
async def test_unknown_import_is_named(executor: WasmExecutor, tmp_path: Path) -> None:
    wat = '(module (import "env" "socket" (func)) (func (export "_start")))'
    with pytest.raises(ExecutorError, match=r"imports env::socket"):
        await executor.run(make_ctx(tmp_path, JobSpec.wasm(wat)))


@pytest.mark.anyio
async def test_invalid_module_fails_to_compile(executor: WasmExecutor, tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="could not be compiled"):
        await executor.run(make_ctx(tmp_path, JobSpec.wasm(b"\x00asm\x01\x00\x00\x00garbage")))


def test_validate_refuses_bad_params(executor: WasmExecutor) -> None:
    executor.validate(JobSpec.wasm(HELLO))
    inline = {"type": "inline", "data": b"x"}
    for bad_args in ("x", [1], ["nul\0"]):
        params = {"module": inline, "args": bad_args}
        with pytest.raises(ValidationError, match=r"engine.params.args"):
            executor.validate(JobSpec(engine=EngineSpec("wasm", params)))
    with pytest.raises(ValidationError, match=r"engine.params.module.type"):
        executor.validate(JobSpec(engine=EngineSpec("wasm", {"module": {}})))
    with pytest.raises(ValidationError, match=r"engine.params.entry_point"):
        executor.validate(JobSpec(engine=EngineSpec("wasm", {"module": inline, "entry_point": ""})))
    with pytest.raises(ValidationError, match="unknown wasm parameter"):
        executor.validate(JobSpec(engine=EngineSpec("wasm", {"module": inline, "image": "x"})))
    cid_job = JobSpec.wasm("QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB")
    with pytest.raises(ValidationError, match="cannot fetch a wasm module"):
        executor.validate(cid_job)
    assert WasmParams.from_spec(cid_job).module.type == "ipfs"


# --- module sources and caching -------------------------------------------------------------------


@pytest.mark.anyio
async def test_module_loader_fetches_once_per_cid(tmp_path: Path) -> None:
    fetched: list[str] = []

    async def loader(source: StorageSpec) -> bytes:
        assert source.cid is not None
        fetched.append(source.cid)
        return HELLO.encode()

    executor = WasmExecutor(module_loader=loader)
    cid = "QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB"
    for name in ("one", "two"):
        ctx = make_ctx(tmp_path, JobSpec.wasm(cid), name=name)
        assert (await executor.run(ctx)).exit_code == 3
    assert fetched == [cid]
    assert executor.cached_modules == 1


@pytest.mark.anyio
async def test_same_bytes_compile_once(executor: WasmExecutor, tmp_path: Path) -> None:
    first = await executor.load_module(StorageSpec.inline(HELLO))
    again = await executor.load_module(StorageSpec.inline(HELLO))
    assert first is again


@pytest.mark.anyio
async def test_missing_module_fails_with_the_reason(tmp_path: Path) -> None:
    async def loader(source: StorageSpec) -> bytes:
        raise StorageError("no provider has it")

    executor = WasmExecutor(module_loader=loader)
    ctx = make_ctx(tmp_path, JobSpec.wasm("QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB"))
    with pytest.raises(ExecutorError, match=r"could not fetch the wasm module Qm.*no provider"):
        await executor.run(ctx)


@pytest.mark.anyio
async def test_module_by_cid_from_the_block_store(tmp_path: Path) -> None:
    from bacalhau.storage.ipfs.blockstore import BlockStore
    from bacalhau.storage.ipfs.importer import add_bytes

    store = BlockStore(tmp_path / "blocks")
    wasm_bytes = b"\x00asm\x01\x00\x00\x00" + bytes.fromhex(
        "01040160000003020100070a01065f737461727400000a040102000b"
    )
    cid = await add_bytes(store, wasm_bytes, chunk_size=16)  # a multi-block DAG
    executor = WasmExecutor(blocks=store)
    ctx = make_ctx(tmp_path, JobSpec.wasm(cid))
    assert (await executor.run(ctx)).exit_code == 0


# --- determinism ----------------------------------------------------------------------------------

CLOCKS_AND_RANDOM = module(
    wasi("clock_time_get", "i32 i64 i32"),
    wasi("clock_res_get", "i32 i32"),
    wasi("random_get", "i32 i32"),
    wasi("poll_oneoff", "i32 i32 i32 i32"),
    PATH_OPEN,
    body=f"""
    ;; realtime, monotonic, a 1 s relative sleep via poll_oneoff, monotonic again,
    ;; resolution and 32 random bytes: 72 bytes of results at 256.
    (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 256)))
    (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 264)))
    (i64.store (i32.const 512) (i64.const 7))          ;; userdata
    (i32.store8 (i32.const 520) (i32.const 0))         ;; tag: clock
    (i32.store (i32.const 528) (i32.const 1))          ;; clock id: monotonic
    (i64.store (i32.const 536) (i64.const 1000000000)) ;; timeout 1 s, relative
    (drop (call $poll_oneoff (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 640)))
    (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 272)))
    (drop (call $clock_res_get (i32.const 0) (i32.const 280)))
    (drop (call $random_get (i32.const 288) (i32.const 32)))
    (call $write (i32.const 1) (i32.const 256) (i32.const 64))
    (drop {open_call(3, 1024, 8, O_CREAT, RIGHT_FD_WRITE)})
    (call $write (i32.load (i32.const 64)) (i32.const 288) (i32.const 32))""",
    data={1024: b"rand.bin"},
)


@pytest.mark.anyio
async def test_two_runs_of_a_job_give_identical_results_folders(tmp_path: Path) -> None:
    spec = JobSpec.wasm(CLOCKS_AND_RANDOM, outputs=[OutputSpec("out", "/out")])
    one = make_ctx(tmp_path, spec, name="node-a")
    two = make_ctx(tmp_path, spec, name="node-b")
    await WasmExecutor().run(one)
    await WasmExecutor().run(two)
    assert tree(one.results_dir) == tree(two.results_dir)
    out = read(one, "stdout")
    realtime, mono1, mono2, resolution = struct.unpack("<QQQQ", out[:32])
    assert 1_700_000_000 * 10**9 <= realtime < (1_700_000_000 + 366 * 86400) * 10**9
    assert mono2 - mono1 >= 1_000_000_000  # the sleep moved the virtual clock, not real time
    assert resolution == 1000
    assert (one.outputs["out"] / "rand.bin").read_bytes() == out[32:64]


@pytest.mark.anyio
async def test_clock_and_random_depend_on_the_job_id(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    spec = JobSpec.wasm(CLOCKS_AND_RANDOM, outputs=[OutputSpec("out", "/out")])
    one = make_ctx(tmp_path, spec, job_id="job-1", name="a")
    two = make_ctx(tmp_path, spec, job_id="job-2", name="b")
    await executor.run(one)
    await executor.run(two)
    assert read(one, "stdout")[:8] != read(two, "stdout")[:8]
    assert read(one, "stdout")[32:] != read(two, "stdout")[32:]


LIST_AND_STAT = module(
    wasi("fd_readdir", "i32 i32 i32 i64 i32"),
    wasi("path_filestat_get", "i32 i32 i32 i32 i32"),
    wasi("fd_filestat_get", "i32 i32"),
    body="""
    ;; readdir of the input preopen (fd 3), stat of b.txt by path and of the dir by fd.
    (drop (call $fd_readdir (i32.const 3) (i32.const 4096) (i32.const 2048) (i64.const 0)
                            (i32.const 64)))
    (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 64)))
    (drop (call $path_filestat_get (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 5)
                                   (i32.const 128)))
    (call $write (i32.const 1) (i32.const 128) (i32.const 64))
    (drop (call $fd_filestat_get (i32.const 3) (i32.const 192)))
    (call $write (i32.const 1) (i32.const 192) (i32.const 64))""",
    data={1024: b"b.txt"},
)


@pytest.mark.anyio
async def test_directory_order_inodes_and_times_do_not_depend_on_the_host(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    spec = JobSpec.wasm(LIST_AND_STAT, inputs=[InputSpec(StorageSpec.inline("x"), "/in")])
    first = input_dir(tmp_path, {"c.txt": b"3", "a.txt": b"1", "b.txt": b"22"}, name="host-1")
    second = input_dir(tmp_path, {"b.txt": b"22", "c.txt": b"3", "a.txt": b"1"}, name="host-2")
    for index, path in enumerate(sorted(second.iterdir())):
        os.utime(path, (1_000_000 + index, 2_000_000 + index))
    outs = []
    for host in (first, second):
        ctx = make_ctx(
            tmp_path,
            spec,
            volumes=(PreparedVolume(spec=spec.inputs[0], host_path=host),),
            name=f"run-{host.name}",
        )
        await executor.run(ctx)
        outs.append(read(ctx, "stdout"))
    assert outs[0] == outs[1]
    listing = outs[0][:-128]
    names, pos = [], 0
    while pos < len(listing):
        _next, _ino, namlen, _type = struct.unpack_from("<QQIB", listing, pos)
        names.append(listing[pos + 24 : pos + 24 + namlen])
        pos += 24 + namlen
    assert names == [b".", b"..", b"a.txt", b"b.txt", b"c.txt"]
    stat = struct.unpack("<QQB7xQQQQQ", outs[0][-128:-64])
    assert stat[4] == 2  # size of b.txt


def test_deterministic_sources_are_pure_functions_of_the_job() -> None:
    from bacalhau.executor.wasm_host import Determinism

    a, b = Determinism(job_id="job"), Determinism(job_id="job")
    assert a.random(10) + a.random(50) == b.random(60)
    assert a.now(0) == b.now(0)
    assert [a.inode(99), a.inode(5), a.inode(99)] == [1, 2, 1]
    assert Determinism(job_id="other").random(32) != Determinism(job_id="job").random(32)


@pytest.mark.anyio
async def test_concurrent_runs_do_not_share_deterministic_state(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    spec = JobSpec.wasm(CLOCKS_AND_RANDOM, outputs=[OutputSpec("out", "/out")])
    alone = {}
    for job in ("job-a", "job-b"):
        ctx = make_ctx(tmp_path, spec, job_id=job, name=f"alone-{job}")
        await executor.run(ctx)
        alone[job] = read(ctx, "stdout")
    together: dict[str, bytes] = {}

    async def run(job: str, index: int) -> None:
        ctx = make_ctx(tmp_path, spec, job_id=job, name=f"together-{index}")
        await executor.run(ctx)
        together[f"{job}/{index}"] = read(ctx, "stdout")

    async with anyio.create_task_group() as tg:
        for index in range(6):
            tg.start_soon(run, ("job-a", "job-b")[index % 2], index)
    assert alone["job-a"] != alone["job-b"]
    for key, out in together.items():
        assert out == alone[key.split("/")[0]]


@pytest.mark.anyio
async def test_stdout_falls_back_to_the_callback_where_fifos_cannot_be_made(
    tmp_path: Path, executor: WasmExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    def refuse(path: object, mode: int = 0o666) -> None:
        made.append(str(path))
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "mkfifo", refuse)
    ctx = make_ctx(tmp_path, JobSpec.wasm(HELLO))
    result = await executor.run(ctx)
    assert made  # the pipe was tried, refused, and the callback used instead
    assert result.exit_code == 3
    assert read(ctx, "stdout") == b"hello\n"
    assert read(ctx, "stderr") == b"oops\n"


@pytest.mark.anyio
async def test_stdout_and_stderr_keep_their_order_in_the_live_output(
    tmp_path: Path, executor: WasmExecutor
) -> None:
    lines = b"".join(b"out %d\n" % i for i in range(5))
    body = "".join(
        f"(call $write (i32.const 1) (i32.const {1024 + 6 * i}) (i32.const 6))"
        "(call $write (i32.const 2) (i32.const 2048) (i32.const 4))"
        for i in range(5)
    )
    spec = JobSpec.wasm(module(body=body, data={1024: lines, 2048: b"err\n"}))
    got: list[tuple[str, bytes]] = []
    ctx = attrs.evolve(make_ctx(tmp_path, spec), output=lambda s, d: got.append((s, d)))
    result = await executor.run(ctx)
    assert result.exit_code == 0
    joined: list[tuple[str, bytes]] = []
    for stream, data in got:  # stdout comes in pieces as the pipe is read: join runs
        if joined and joined[-1][0] == stream:
            joined[-1] = (stream, joined[-1][1] + data)
        else:
            joined.append((stream, data))
    assert joined == [
        item for i in range(5) for item in (("stdout", b"out %d\n" % i), ("stderr", b"err\n"))
    ]
    assert read(ctx, "stdout") == lines
