"""Compile a WASM module in a child process, within a job's time and memory.

Compiling is the one step of a WASM job that runs no guest code, yet a 28 MB module
can make Cranelift take seconds and gigabytes. So the executor compiles each module
it has not cached, and that is larger than :data:`INPROCESS_COMPILE_BYTES`, in a
child process (``python -I -c`` with only ``wasmtime`` imported): the child reads the
module from stdin, limits its own address space to what it uses at that point plus
the job's memory (``RLIMIT_AS``, at least :data:`COMPILE_MEMORY_FLOOR`), compiles
with the executor's engine flags and writes the serialized module to stdout. The
parent kills it at the job's deadline or on cancellation, and deserializes the
result into its own engine. Smaller modules compile on a worker thread: their cost
is bounded by their size (well under a second and 100 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import anyio
import wasmtime

from ..errors import ExecutorError

__all__ = [
    "COMPILE_MEMORY_FLOOR",
    "ENGINE_FLAGS",
    "INPROCESS_COMPILE_BYTES",
    "compile_isolated",
    "engine_config",
]

COMPILE_MEMORY_FLOOR = 64 * 1024 * 1024
"""Compilation gets the job's memory, but never less than this (a compiler needs some)."""

INPROCESS_COMPILE_BYTES = 256 * 1024
"""Modules up to this size compile on a worker thread of the node itself."""

ENGINE_FLAGS: tuple[tuple[str, bool], ...] = (
    ("cranelift_nan_canonicalization", True),
    ("wasm_relaxed_simd_deterministic", True),
    ("wasm_threads", False),
    ("epoch_interruption", True),
)
"""The wasmtime ``Config`` every WASM execution (and compilation) uses."""


def engine_config() -> wasmtime.Config:
    """The wasmtime configuration every WASM execution uses.

    NaN canonicalisation and deterministic relaxed SIMD make floating point
    bit-identical across CPUs; threads (shared memory) are off; epoch
    interruption lets the watchdog stop a running module.
    """
    config = wasmtime.Config()
    for name, value in ENGINE_FLAGS:
        setattr(config, name, value)
    return config


_CHILD = r"""
import json, resource, sys, wasmtime
flags, budget = json.loads(sys.argv[1]), int(sys.argv[2])
data = sys.stdin.buffer.read()
config = wasmtime.Config()
for name, value in flags:
    setattr(config, name, value)
engine = wasmtime.Engine(config)
try:
    with open("/proc/self/status", "rb") as fh:
        used = next(int(l.split()[1]) * 1024 for l in fh if l.startswith(b"VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + budget, used + budget))
except (OSError, StopIteration, ValueError):
    pass
try:
    if data.startswith(b"\0asm"):
        module = wasmtime.Module(engine, data)
    else:
        module = wasmtime.Module(engine, data.decode("utf-8"))
    blob = module.serialize()
except MemoryError:
    sys.exit(3)
except UnicodeDecodeError:
    sys.stdout.buffer.write(b"EN")
    sys.exit(0)
except Exception as exc:
    sys.stdout.buffer.write(b"ER" + str(exc).encode())
    sys.exit(0)
sys.stdout.buffer.write(b"OK" + blob)
sys.stdout.buffer.flush()
import os
os._exit(0)
"""


async def compile_isolated(
    engine: wasmtime.Engine,
    data: bytes,
    *,
    timeout: float,
    memory: int,
    describe: Callable[[str], str] = str,
) -> wasmtime.Module:
    """Compile ``data`` (binary or WAT) in a child process bounded by ``timeout`` seconds
    and ``memory`` bytes; return the module for ``engine``.

    Args:
        describe: turns the compiler's error text into the reason shown.

    Raises:
        ExecutorError: the module is not valid, or compiling needed more time or memory.
    """
    budget = max(memory, COMPILE_MEMORY_FLOOR)
    command = [sys.executable, "-I", "-c", _CHILD, json.dumps(ENGINE_FLAGS), str(budget)]
    with anyio.move_on_after(timeout) as scope:
        done = await anyio.run_process(command, input=data, check=False, stderr=subprocess.PIPE)
    if scope.cancelled_caught:
        raise ExecutorError(
            f"compiling the wasm module did not finish within the job's timeout of {timeout:g} s"
        )
    out = done.stdout
    if done.returncode == 0 and out.startswith(b"OK"):
        try:
            return wasmtime.Module.deserialize(engine, out[2:])
        except wasmtime.WasmtimeError as exc:
            raise ExecutorError(f"the compiled wasm module could not be loaded: {exc}") from exc
    if done.returncode == 0 and out.startswith(b"EN"):
        raise ExecutorError(
            "the wasm module is neither WebAssembly binary (no \\0asm header) nor WAT text"
        )
    if done.returncode == 0 and out.startswith(b"ER"):
        reason = describe(out[2:].decode("utf-8", "replace"))
        raise ExecutorError(f"the wasm module could not be compiled: {reason}")
    raise ExecutorError(
        f"compiling the wasm module needed more than the job's memory of {budget} bytes "
        f"(resources.memory, at least {COMPILE_MEMORY_FLOOR}) and was stopped"
    )
