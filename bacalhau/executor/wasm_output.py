"""A WASI module's stdout through a pipe that wasmtime writes itself.

wasmtime hands a ``stdout_custom`` callback each write through its async runtime's
threads and back into Python, which costs tens of microseconds a write and the
interpreter's lock every time: a module printing a line per write ran some 20 times
slower than one writing to a file, and anything else holding the lock (the node's event
loop serving a log follower) stalled it. So stdout goes to a FIFO: wasmtime writes it
with plain system calls, and :meth:`PipedStdout.run` (on a worker thread of the
executor's task group) hands what arrives to the capture in big pieces.

stderr stays a callback; before each stderr write is captured, :meth:`PipedStdout.take`
takes what stdout wrote so far, so the two streams keep the order the module wrote them
in. The FIFO lives in the execution's work folder, which the module cannot see; it is
opened without following links and checked to be the FIFO made here, and wasmtime is
given :attr:`PipedStdout.target` (``/proc/self/fd/N`` of our own write end on Linux), so
swapping the name for a symlink can neither feed a host file into the job's stdout nor
send the job's stdout onto a host file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["PipedStdout", "available"]

PIPE_BYTES = 1 << 20
"""The pipe's buffer (Linux lets an unprivileged process ask for up to 1 MiB): how much
a module may write while the reader is held up before its writes wait."""
READ_BYTES = 1 << 20


def available() -> bool:
    """Whether this platform has FIFOs (else the executor keeps the callback)."""
    return hasattr(os, "mkfifo")


class PipedStdout:
    """One execution's stdout FIFO: :meth:`open` it, give wasmtime :attr:`path`, run
    :meth:`run` on a worker thread, and :meth:`stop` then :meth:`close` when the module
    is done. ``sink`` gets the bytes (set it before the module starts)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "wasm-stdout"
        self.sink: Callable[[bytes], None] | None = None
        self._lock = threading.Lock()
        self._fd = -1
        self._keep = -1
        self._wake: tuple[int, int] = (-1, -1)
        self._stopping = False

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # left by an earlier run of the job
            self.path.unlink()
        os.mkfifo(self.path, 0o600)
        flags = os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(self.path, os.O_RDONLY | flags)
        # Our own write end keeps the FIFO from reading as ended before wasmtime opens
        # it (and after it closes it): the reader stops on stop(), never on an EOF.
        self._keep = os.open(self.path, os.O_WRONLY | flags)
        read, write = os.fstat(self._fd), os.fstat(self._keep)
        if not stat.S_ISFIFO(read.st_mode) or (read.st_dev, read.st_ino) != (
            write.st_dev,
            write.st_ino,
        ):
            raise OSError(f"{self.path.name} was replaced while it was opened")
        with contextlib.suppress(OSError, AttributeError):  # Linux only; best effort
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._wake = os.pipe()

    @property
    def target(self) -> str:
        """What the writer (wasmtime) opens: the FIFO itself through our own write end
        where ``/proc`` shows it (a later swap of :attr:`path` changes nothing), else
        :attr:`path`. Call after :meth:`open`."""
        proc = f"/proc/self/fd/{self._keep}"
        return proc if self._keep >= 0 and os.path.exists(proc) else str(self.path)

    def take(self) -> None:
        """Hand the sink everything written so far (any thread; never waits for more)."""
        with self._lock:
            while True:
                try:
                    data = os.read(self._fd, READ_BYTES)
                except BlockingIOError:
                    return
                if not data:
                    return
                if self.sink is not None:
                    self.sink(data)

    def run(self) -> None:
        """Read as the module writes, until :meth:`stop` (blocks: a worker thread)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        while not self._stopping:
            poller.poll()
            self.take()
        self.take()

    def stop(self) -> None:
        """End :meth:`run` after a last read (call once the module has finished)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake[1], b"x")

    def close(self) -> None:
        for fd in (self._fd, self._keep, *self._wake):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._keep = -1
        self._wake = (-1, -1)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
