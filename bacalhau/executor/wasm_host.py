"""Host side of the WASM executor: deterministic WASI shims, the ``bacalhau`` import
module and the epoch watchdog hook.

Everything here runs on the executor's worker thread, inside one wasmtime
``Store``; nothing here awaits. The shims are defined in the ``Linker`` in front
of wasmtime's own WASI preview 1 (``allow_shadowing``), because wasmtime-py's
``WasiConfig`` cannot replace WASI's clocks or random source.

What a module observes through these shims depends only on the job (its id,
its inputs and its spec), never on the node or the wall clock:

- ``clock_time_get``: a virtual clock. Realtime starts at a job-derived instant
  in the year after 2023-11-14 (unix 1_700_000_000), monotonic at 1 s; each read
  advances every clock by 1 us, so busy-wait loops still make progress.
- ``clock_res_get``: 1 us for every clock.
- ``random_get``: SHA-256 in counter mode over a seed derived from the job id.
- ``poll_oneoff``: never blocks. Clock subscriptions complete at once and move
  the virtual clock to the earliest deadline (``sleep`` takes no real time);
  when any fd subscription is present, every fd subscription is reported ready
  (``nbytes`` 0) and clock subscriptions are not reported.
- ``fd_filestat_get`` / ``path_filestat_get``: ``dev`` 1, ``nlink`` 1,
  directories have size 0, every timestamp is the virtual clock's start, and
  inode numbers are renumbered 1, 2, 3, ... in the order the module first sees
  them (stable across nodes, consistent between ``stat`` and ``readdir``).
- ``fd_readdir``: entries sorted by name (``.`` and ``..`` first), cookies are
  positions in that order, inode numbers renumbered as above.

The ``bacalhau`` import module (see ``docs/wasm.md``) lets a module read a
single-file input volume by its target path without any file being present::

    volume_open(path_ptr: i32, path_len: i32) -> i32    handle >= 0, or -errno
    volume_size(handle: i32) -> i64                     size in bytes, or -errno
    volume_read(handle: i32, offset: i64, buf_ptr: i32, buf_len: i32) -> i32
                                                        bytes read (0 at end), or -errno

Errors are negated WASI errno values: ``ENOENT`` (44) no volume at that path,
``EISDIR`` (31) the volume is a directory, ``EBADF`` (8) bad handle, ``EFAULT``
(21) the buffer is outside memory, ``EINVAL`` (28) negative offset, ``EIO`` (29)
the node could not read the data (the execution then fails on the node's side).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import wasmtime
from wasmtime import _ffi as ffi

from ..storage.base import Reader

__all__ = [
    "BACALHAU_IMPORT_MODULE",
    "Determinism",
    "HostVolume",
    "Interrupt",
    "adapter_module",
    "install_epoch_callback",
    "install_host_functions",
]

BACALHAU_IMPORT_MODULE = "bacalhau"
WASI = "wasi_snapshot_preview1"

_MASK32 = 0xFFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF

# WASI preview 1 errno values.
ESUCCESS = 0
EBADF = 8
EFAULT = 21
EINVAL = 28
EIO = 29
EISDIR = 31
ENOBUFS = 42
ENOENT = 44

CLOCK_STEP_NS = 1_000
"""How far every virtual clock moves on each read."""

_REALTIME_BASE_S = 1_700_000_000
_YEAR_S = 365 * 86_400
_MONOTONIC_BASE_NS = 1_000_000_000

_DIRENT = struct.Struct("<QQIB3x")  # d_next, d_ino, d_namlen, d_type (24 bytes)
_FILESTAT = struct.Struct("<QQB7xQQQQQ")  # dev, ino, filetype, nlink, size, atim, mtim, ctim
_FILETYPE_DIRECTORY = 3
_SUBSCRIPTION_SIZE = 48
_EVENT_SIZE = 32


class _Fault(Exception):
    """A guest pointer is outside the module's memory (becomes EFAULT)."""


@attrs.define(kw_only=True)
class Determinism:
    """The job-derived sources a module sees instead of the host's clock and entropy.

    Two instances built from the same ``job_id`` produce the same sequence of
    clock readings, random bytes and inode numbers for the same sequence of calls.
    """

    job_id: str
    seed: bytes = attrs.field(init=False)
    realtime_base_ns: int = attrs.field(init=False)
    elapsed_ns: int = 0
    _counter: int = 0
    _pool: bytes = b""
    _inodes: dict[int, int] = attrs.Factory(dict)
    listings: dict[int, list[tuple[bytes, int, int]]] = attrs.Factory(dict)
    """Sorted directory listings by fd, so ``fd_readdir`` cookies stay valid between calls."""

    def __attrs_post_init__(self) -> None:
        self.seed = hashlib.sha256(b"bacalhau-wasm/v1\x00" + self.job_id.encode()).digest()
        offset_s = int.from_bytes(self.seed[:8], "big") % _YEAR_S
        self.realtime_base_ns = (_REALTIME_BASE_S + offset_s) * 1_000_000_000

    def now(self, clock_id: int) -> int | None:
        """The current reading of WASI clock ``clock_id`` in ns, or None if unknown."""
        if clock_id == 0:
            return self.realtime_base_ns + self.elapsed_ns
        if clock_id == 1:
            return _MONOTONIC_BASE_NS + self.elapsed_ns
        if clock_id in (2, 3):
            return self.elapsed_ns
        return None

    def random(self, size: int) -> bytes:
        """The next ``size`` bytes of the job's random stream."""
        out = bytearray(self._pool)
        while len(out) < size:
            block = self.seed + self._counter.to_bytes(8, "big")
            out += hashlib.sha256(block).digest()
            self._counter += 1
        self._pool = bytes(out[size:])
        return bytes(out[:size])

    def inode(self, host_inode: int) -> int:
        """A stable, small inode number for a host inode, in order of first sight."""
        return self._inodes.setdefault(host_inode, len(self._inodes) + 1)

    @property
    def file_time_ns(self) -> int:
        """Every file timestamp the module sees: the virtual clock's start."""
        return self.realtime_base_ns


@attrs.define
class Interrupt:
    """Tells a running module to stop; read by the epoch callback on the worker thread.

    ``deadline`` is a ``time.monotonic()`` value (or None for no timeout). Set
    ``reason`` (from any thread) to stop the module at its next epoch check.
    """

    deadline: float | None = None
    reason: str | None = None
    timed_out: bool = False

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def check(self) -> str | None:
        """The reason to stop now, or None to keep running."""
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            self.reason = "timeout"
        return self.reason


_EpochCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_UPDATE_DEADLINE_CONTINUE = 0


def install_epoch_callback(store: wasmtime.Store, interrupt: Interrupt) -> Callable[..., int]:
    """Check ``interrupt`` each time the engine's epoch moves past the store's deadline.

    The store's deadline is one tick ahead of the current epoch, so every
    ``Engine.increment_epoch`` (driven by the executor's watchdog task) runs the
    check once. When ``interrupt`` says stop, the module traps with a
    ``bacalhau: stopped (<reason>)`` error.

    Returns:
        The ctypes callback; the caller must keep it alive as long as the store.
    """

    def callback(_ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
        reason = interrupt.check()
        if reason is not None:
            error = ffi.wasmtime_error_new(f"bacalhau: stopped ({reason})".encode())
            return int(ctypes.cast(error, ctypes.c_void_p).value or 0)
        delta[0] = 1
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    c_callback = _EpochCallback(callback)
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), c_callback, None, _Finalizer())
    store.set_epoch_deadline(1)
    return c_callback


@attrs.define(kw_only=True)
class HostVolume:
    """One input volume as the ``bacalhau`` import module serves it.

    Either ``reader`` (library mode) or ``host_path`` (a POSIX file or
    directory) is set. ``failure`` records the first read error, which fails
    the execution on the node's side.
    """

    target: str
    size: int | None = None
    reader: Reader | None = None
    host_path: Path | None = None
    failure: str | None = None
    _fd: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.reader is None and self.host_path is not None and self.host_path.is_dir()

    def total_size(self) -> int:
        if self.size is not None:
            return self.size
        if self.host_path is not None:
            self.size = self.host_path.stat().st_size
            return self.size
        raise OSError("volume has no size")

    def read(self, offset: int, size: int) -> bytes:
        if self.reader is not None:
            return self.reader(offset, size)
        if self.host_path is None:
            raise OSError("volume has neither a reader nor a host path")
        if self._fd is None:
            self._fd = os.open(self.host_path, os.O_RDONLY)
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Guest:
    """Bounds-checked access to the calling module's exported memory."""

    def __init__(self, caller: wasmtime.Caller) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise _Fault("module exports no memory")
        self.caller = caller
        self.memory = memory
        self.size = memory.data_len(caller)

    def _check(self, ptr: int, n: int) -> None:
        if ptr < 0 or n < 0 or ptr + n > self.size:
            raise _Fault(f"{n} bytes at {ptr} are outside memory")

    def read(self, ptr: int, n: int) -> bytes:
        self._check(ptr, n)
        return bytes(self.memory.read(self.caller, ptr, ptr + n)) if n else b""

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        if data:
            self.memory.write(self.caller, data, ptr)

    def u32(self, ptr: int) -> int:
        return int(struct.unpack("<I", self.read(ptr, 4))[0])

    def put_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<I", value & _MASK32))

    def put_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<Q", value & _MASK64))


def _i32() -> wasmtime.ValType:
    return wasmtime.ValType.i32()


def _i64() -> wasmtime.ValType:
    return wasmtime.ValType.i64()


def _errno_guard(fn: Callable[..., int]) -> Callable[..., int]:
    """Host functions must never raise: wasmtime-py keeps the pending Python
    exception in a process-wide global, which concurrent runs would share."""

    def wrapper(*args: Any) -> int:
        try:
            return fn(*args)
        except _Fault:
            return EFAULT
        except Exception:
            return EIO

    return wrapper


_ADAPTER_WAT = """
(module
  (import "main" "memory" (memory 0))
  (import "wasi_snapshot_preview1" "fd_filestat_get"
    (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get"
    (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_filestat_get") (param i32 i32) (result i32)
    local.get 0 local.get 1 call $fd_filestat_get)
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $path_filestat_get)
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $fd_readdir))
"""
"""Re-exports the module's own memory next to wasmtime's original WASI functions.

wasmtime's WASI functions read and write the memory exported by the instance
that calls them. A host function cannot call them directly (it has no calling
instance), so the shims call them through this adapter, instantiated in the
same store (sharing the WASI state, hence the fd table) once the module's
memory exists."""


def adapter_module(engine: wasmtime.Engine) -> wasmtime.Module:
    """Compile the adapter for ``engine``; once per engine, for :func:`install_host_functions`."""
    return wasmtime.Module(engine, _ADAPTER_WAT)


@attrs.define
class _Originals:
    """wasmtime's own WASI functions, reached through the adapter instance."""

    engine: wasmtime.Engine
    adapter: wasmtime.Module
    _exports: dict[str, wasmtime.Func] | None = None

    def call(self, caller: wasmtime.Caller, name: str, *args: int) -> int:
        if self._exports is None:
            memory = caller.get("memory")
            if not isinstance(memory, wasmtime.Memory):
                raise _Fault("module exports no memory")
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            linker.define(caller, "main", "memory", memory)
            instance = linker.instantiate(caller, self.adapter)
            exports = instance.exports(caller)
            found: dict[str, wasmtime.Func] = {}
            for export in ("fd_filestat_get", "path_filestat_get", "fd_readdir"):
                func = exports.get(export)
                assert isinstance(func, wasmtime.Func)
                found[export] = func
            self._exports = found
        return int(self._exports[name](caller, *args))


@attrs.define
class _Shims:
    """The deterministic WASI functions for one store."""

    det: Determinism
    originals: _Originals

    def clock_res_get(self, caller: wasmtime.Caller, clock_id: int, out: int) -> int:
        if self.det.now(clock_id) is None:
            return EINVAL
        _Guest(caller).put_u64(out & _MASK32, CLOCK_STEP_NS)
        return ESUCCESS

    def clock_time_get(
        self, caller: wasmtime.Caller, clock_id: int, _precision: int, out: int
    ) -> int:
        reading = self.det.now(clock_id)
        if reading is None:
            return EINVAL
        _Guest(caller).put_u64(out & _MASK32, reading)
        self.det.elapsed_ns += CLOCK_STEP_NS
        return ESUCCESS

    def random_get(self, caller: wasmtime.Caller, buf: int, size: int) -> int:
        size = size & _MASK32
        if size:
            _Guest(caller).write(buf & _MASK32, self.det.random(size))
        return ESUCCESS

    def poll_oneoff(
        self, caller: wasmtime.Caller, subs: int, events: int, nsubs: int, nevents: int
    ) -> int:
        guest = _Guest(caller)
        subs, events, nsubs = subs & _MASK32, events & _MASK32, nsubs & _MASK32
        if nsubs == 0:
            return EINVAL
        raw = guest.read(subs, nsubs * _SUBSCRIPTION_SIZE)
        clocks: list[tuple[int, int]] = []  # (userdata, delta ns)
        fds: list[tuple[int, int]] = []  # (userdata, event type)
        for i in range(nsubs):
            sub = raw[i * _SUBSCRIPTION_SIZE : (i + 1) * _SUBSCRIPTION_SIZE]
            userdata, tag = struct.unpack_from("<QB", sub, 0)
            if tag == 0:
                clock_id, timeout, _precision, flags = struct.unpack_from("<I4xQQH", sub, 16)
                now = self.det.now(clock_id)
                if now is None:
                    return EINVAL
                delta = max(0, timeout - now) if flags & 1 else timeout
                clocks.append((userdata, delta))
            elif tag in (1, 2):
                fds.append((userdata, tag))
            else:
                return EINVAL
        out = bytearray()
        if fds:
            for userdata, kind in fds:
                out += struct.pack("<QHBxxxxxQH6x", userdata, 0, kind, 0, 0)
        else:
            soonest = min(delta for _, delta in clocks)
            self.det.elapsed_ns += soonest
            for userdata, delta in clocks:
                if delta == soonest:
                    out += struct.pack("<QHBxxxxxQH6x", userdata, 0, 0, 0, 0)
        guest.write(events, bytes(out))
        guest.put_u32(nevents & _MASK32, len(out) // _EVENT_SIZE)
        return ESUCCESS

    def _patch_filestat(self, guest: _Guest, buf: int) -> None:
        _dev, ino, ftype, _nlink, size, _a, _m, _c = _FILESTAT.unpack(
            guest.read(buf, _FILESTAT.size)
        )
        when = self.det.file_time_ns
        size = 0 if ftype == _FILETYPE_DIRECTORY else size
        guest.write(buf, _FILESTAT.pack(1, self.det.inode(ino), ftype, 1, size, when, when, when))

    def fd_filestat_get(self, caller: wasmtime.Caller, fd: int, buf: int) -> int:
        errno = self.originals.call(caller, "fd_filestat_get", fd, buf)
        if errno == ESUCCESS:
            self._patch_filestat(_Guest(caller), buf & _MASK32)
        return errno

    def path_filestat_get(
        self, caller: wasmtime.Caller, fd: int, flags: int, path: int, path_len: int, buf: int
    ) -> int:
        errno = self.originals.call(caller, "path_filestat_get", fd, flags, path, path_len, buf)
        if errno == ESUCCESS:
            self._patch_filestat(_Guest(caller), buf & _MASK32)
        return errno

    def _list_dir(
        self, caller: wasmtime.Caller, fd: int, buf: int, buf_len: int, used_ptr: int
    ) -> list[tuple[bytes, int, int]] | int:
        """Read the whole directory through the original ``fd_readdir``, using the
        guest's own buffer as scratch space."""
        entries: list[tuple[bytes, int, int]] = []
        cookie = 0
        while True:
            errno = self.originals.call(caller, "fd_readdir", fd, buf, buf_len, cookie, used_ptr)
            if errno != ESUCCESS:
                return errno
            guest = _Guest(caller)
            used = min(guest.u32(used_ptr), buf_len)
            data = guest.read(buf, used)
            pos, progressed = 0, False
            while pos + _DIRENT.size <= used:
                d_next, d_ino, namlen, d_type = _DIRENT.unpack_from(data, pos)
                end = pos + _DIRENT.size + namlen
                if end > used:
                    break
                entries.append((data[pos + _DIRENT.size : end], d_ino, d_type))
                cookie, pos, progressed = d_next, end, True
            if used < buf_len:
                return entries
            if not progressed:
                return ENOBUFS

    def fd_readdir(
        self, caller: wasmtime.Caller, fd: int, buf: int, buf_len: int, cookie: int, used: int
    ) -> int:
        buf, buf_len, used = buf & _MASK32, buf_len & _MASK32, used & _MASK32
        cookie &= _MASK64
        listing = self.det.listings.get(fd) if cookie else None
        if listing is None:
            found = self._list_dir(caller, fd, buf, buf_len, used)
            if isinstance(found, int):
                return found
            listing = sorted(found, key=lambda e: (e[0] not in (b".", b".."), e[0]))
            self.det.listings[fd] = listing
        out = bytearray()
        for index in range(min(cookie, len(listing)), len(listing)):
            if len(out) >= buf_len:
                break
            name, ino, d_type = listing[index]
            out += _DIRENT.pack(index + 1, self.det.inode(ino), len(name), d_type) + name
        guest = _Guest(caller)
        filled = min(len(out), buf_len)
        # Zero the rest so no scratch bytes (host inode numbers) stay behind.
        guest.write(buf, bytes(out[:filled]) + bytes(buf_len - filled))
        guest.put_u32(used, filled)
        return ESUCCESS


@attrs.define
class _VolumeImports:
    """The ``bacalhau`` import module for one store."""

    volumes: list[HostVolume]
    interrupt: Interrupt

    def _fail(self, volume: HostVolume, exc: BaseException) -> int:
        if volume.failure is None:
            volume.failure = f"reading input volume {volume.target} failed: {exc}"
        self.interrupt.stop(volume.failure)
        return -EIO

    def volume_open(self, caller: wasmtime.Caller, path: int, path_len: int) -> int:
        try:
            raw = _Guest(caller).read(path & _MASK32, path_len & _MASK32)
        except _Fault:
            return -EFAULT
        wanted = raw.decode("utf-8", "replace").rstrip("/") or "/"
        for handle, volume in enumerate(self.volumes):
            if volume.target.rstrip("/") == wanted:
                return -EISDIR if volume.is_dir else handle
        return -ENOENT

    def volume_size(self, _caller: wasmtime.Caller, handle: int) -> int:
        if not 0 <= handle < len(self.volumes) or self.volumes[handle].is_dir:
            return -EBADF
        volume = self.volumes[handle]
        try:
            return volume.total_size()
        except Exception as exc:
            return self._fail(volume, exc)

    def volume_read(
        self, caller: wasmtime.Caller, handle: int, offset: int, buf: int, buf_len: int
    ) -> int:
        if not 0 <= handle < len(self.volumes) or self.volumes[handle].is_dir:
            return -EBADF
        if offset < 0:
            return -EINVAL
        volume = self.volumes[handle]
        buf, buf_len = buf & _MASK32, buf_len & _MASK32
        guest = _Guest(caller)
        if buf + buf_len > guest.size:
            return -EFAULT
        try:
            size = volume.total_size()
            want = max(0, min(buf_len, size - offset))
            data = volume.read(offset, want) if want else b""
        except Exception as exc:
            return self._fail(volume, exc)
        guest.write(buf, data[:want])
        return min(len(data), want)


def _guarded_volume_fn(fn: Callable[..., int]) -> Callable[..., int]:
    def wrapper(*args: Any) -> int:
        try:
            return fn(*args)
        except _Fault:
            return -EFAULT
        except Exception:
            return -EIO

    return wrapper


def install_host_functions(
    linker: wasmtime.Linker,
    engine: wasmtime.Engine,
    adapter: wasmtime.Module,
    *,
    det: Determinism,
    volumes: list[HostVolume],
    interrupt: Interrupt,
) -> None:
    """Define WASI (with the deterministic shims in front) and ``bacalhau`` in ``linker``.

    ``linker`` must be fresh and belong to ``engine``; ``adapter`` comes from
    :func:`adapter_module`. The functions keep per-run state (``det``), so use
    the linker for one store only; that store must have its ``WasiConfig``.
    """
    linker.define_wasi()
    shims = _Shims(det=det, originals=_Originals(engine=engine, adapter=adapter))
    i32, i64 = _i32(), _i64()
    wasi: dict[str, tuple[list[wasmtime.ValType], Callable[..., int]]] = {
        "clock_res_get": ([i32, i32], shims.clock_res_get),
        "clock_time_get": ([i32, i64, i32], shims.clock_time_get),
        "random_get": ([i32, i32], shims.random_get),
        "poll_oneoff": ([i32, i32, i32, i32], shims.poll_oneoff),
        "fd_filestat_get": ([i32, i32], shims.fd_filestat_get),
        "path_filestat_get": ([i32, i32, i32, i32, i32], shims.path_filestat_get),
        "fd_readdir": ([i32, i32, i32, i64, i32], shims.fd_readdir),
    }
    linker.allow_shadowing = True
    for name, (params, fn) in wasi.items():
        func_type = wasmtime.FuncType(params, [i32])
        linker.define_func(WASI, name, func_type, _errno_guard(fn), access_caller=True)
    imports = _VolumeImports(volumes=volumes, interrupt=interrupt)
    host: dict[str, tuple[list[wasmtime.ValType], wasmtime.ValType, Callable[..., int]]] = {
        "volume_open": ([i32, i32], i32, imports.volume_open),
        "volume_size": ([i32], i64, imports.volume_size),
        "volume_read": ([i32, i64, i32, i32], i32, imports.volume_read),
    }
    for name, (params, result, fn) in host.items():
        func_type = wasmtime.FuncType(params, [result])
        linker.define_func(
            BACALHAU_IMPORT_MODULE, name, func_type, _guarded_volume_fn(fn), access_caller=True
        )
    linker.allow_shadowing = False
