"""Live output of executions: a bounded line buffer per execution that any number of
followers read at their own pace.

An executor writes raw bytes (``write(stream, data)``), from any thread, as the job
produces them; the buffer cuts them into lines and keeps the newest ones, up to
``max_bytes``. Writing never waits for a reader: a follower holds only a cursor (the
sequence number of the next line it wants), and a follower that falls so far behind that
its lines were evicted is told how many it missed (:attr:`LogBatch.skipped`) and carries
on from the oldest line still kept. A follower that joins late reads what is still kept,
so output written before anyone followed is not lost unless it was more than the bound.

Waking readers from a writer thread costs at most one scheduled callback at a time,
however many lines are written: the writer only schedules a wake-up when a reader waits
and none is pending.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import operator
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, NamedTuple

import anyio
import attrs
import sniffio

__all__ = [
    "MAX_BUFFER_BYTES",
    "MAX_LINE_BYTES",
    "LogBatch",
    "LogBuffer",
    "LogHub",
    "LogLine",
    "LogStream",
]

LogStream = Literal["stdout", "stderr"]
STREAMS: tuple[LogStream, ...] = ("stdout", "stderr")

MAX_LINE_BYTES = 16 * 1024
"""A longer line is cut into pieces of this size (each piece is a line of its own)."""
MAX_BUFFER_BYTES = 1024 * 1024
"""Output kept per execution for late and slow followers (both streams together)."""
LINE_OVERHEAD = 64
"""Bytes counted per kept line beyond its text (so a flood of empty lines is bounded too)."""
_TEXT = operator.itemgetter(2)
_OVERHEADS = itertools.repeat(LINE_OVERHEAD)


class LogLine(NamedTuple):
    """One line of an execution's output (without its newline).

    ``seq`` numbers the lines of one execution from 0 across both streams, in the order
    the buffer received them. ``partial`` is True for a piece of an over-long line or
    an unterminated last line. (A named tuple rather than an attrs value: a job may
    print millions of lines, and each costs one of these on the job's own thread.)
    """

    seq: int
    stream: LogStream
    text: str
    time: float
    partial: bool = False


@attrs.frozen(kw_only=True)
class LogBatch:
    """What one read returned.

    Attributes:
        lines: the lines from the cursor on (at most the read's limit).
        next: the cursor for the next read.
        skipped: lines between the asked cursor and ``lines[0]`` that were evicted
            (the follower was too slow or joined too late); 0 when nothing was lost.
        closed: the execution has ended and ``next`` is past its last line.
    """

    lines: tuple[LogLine, ...]
    next: int
    skipped: int = 0
    closed: bool = False


class _Waker:
    """Runs a callback on the event loop that created it, from any thread, without
    waiting (asyncio's ``call_soon_threadsafe`` or trio's ``run_sync_soon``)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        library = sniffio.current_async_library()
        self._soon: Callable[[Callable[[], None]], Any]
        if library == "trio":  # pragma: no cover - the suite runs on asyncio
            import trio

            self._soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            import asyncio

            self._soon = asyncio.get_running_loop().call_soon_threadsafe

    def call(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
            self._soon(fn)


class LogBuffer:
    """The live output of one execution. Create it inside the event loop; write to it
    from anywhere; read and wait on it from the event loop.

    Args:
        max_bytes: output kept (oldest lines evicted first).
        max_line: longest line kept whole.
        clock: stamps each line.
    """

    def __init__(
        self,
        *,
        execution_id: str = "",
        max_bytes: int = MAX_BUFFER_BYTES,
        max_line: int = MAX_LINE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.execution_id = execution_id
        self.max_bytes = max_bytes
        self.max_line = max_line
        self.clock = clock
        self._lock = threading.Lock()
        self._lines: deque[LogLine] = deque()
        self._size = 0
        self._next = 0
        self._partial: dict[LogStream, bytes] = {"stdout": b"", "stderr": b""}
        self._closed = False
        self._event: anyio.Event | None = None
        self._want = 0
        """(with ``_event``) The lowest line number a waiting reader waits for."""
        self._wake_pending = False
        self._waker = _Waker()
        self.written = 0
        """Bytes written in total (kept or not)."""
        self.evicted = 0
        """Lines dropped from the front to stay within ``max_bytes``."""

    def __repr__(self) -> str:
        return f"LogBuffer({self.execution_id!r}, lines={self._next}, closed={self._closed})"

    # --- writing (any thread) -------------------------------------------------------------

    def write(self, stream: LogStream, data: bytes) -> None:
        """Add ``data`` written by the job on ``stream``. Never blocks on readers.

        Writes after :meth:`close` are ignored.
        """
        if not data:
            return
        now = self.clock()
        with self._lock:
            if self._closed:
                return
            self.written += len(data)
            partial = self._partial[stream]
            pieces = (partial + data if partial else data).split(b"\n")
            rest = pieces.pop()
            limit = self.max_line
            for piece in pieces:
                if len(piece) > limit:
                    self._add_cut(stream, piece, now, partial=False)
                else:
                    self._add(stream, piece, now, False)
            while len(rest) > self.max_line:
                self._add(stream, rest[: self.max_line], now, True)
                rest = rest[self.max_line :]
            self._partial[stream] = rest
            self._wake()

    def close(self) -> None:
        """The execution has ended: keep any unterminated last lines and wake readers."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return
            for stream in STREAMS:
                if self._partial[stream]:
                    self._add(stream, self._partial[stream], now, True)
                    self._partial[stream] = b""
            self._closed = True
            self._wake()

    def _add_cut(self, stream: LogStream, piece: bytes, now: float, *, partial: bool) -> None:
        while len(piece) > self.max_line:
            self._add(stream, piece[: self.max_line], now, True)
            piece = piece[self.max_line :]
        self._add(stream, piece, now, partial)

    def _add(self, stream: LogStream, piece: bytes, now: float, partial: bool) -> None:
        if piece[-1:] == b"\r":
            piece = piece[:-1]
        text = piece.decode("utf-8", "replace")
        self._lines.append(LogLine(self._next, stream, text, now, partial))
        self._next += 1
        self._size += len(text) + LINE_OVERHEAD  # characters: close enough to bytes
        if self._size <= self.max_bytes:
            return
        while self._size > self.max_bytes and len(self._lines) > 1:
            old = self._lines.popleft()
            self._size -= len(old.text) + LINE_OVERHEAD
            self.evicted += 1

    def _wake(self) -> None:
        """(lock held) Schedule one wake-up of the waiting readers, if any wait for a line
        that now exists (or the buffer closed): a reader waiting for the thousandth line
        from now costs the writer one comparison a write until then."""
        if (
            self._event is not None
            and not self._wake_pending
            and (self._next > self._want or self._closed)
        ):
            self._wake_pending = True
            self._waker.call(self._fire)

    def _fire(self) -> None:
        with self._lock:
            self._wake_pending = False
            event, self._event = self._event, None
        if event is not None:
            event.set()

    # --- reading (the event loop) ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def next_seq(self) -> int:
        """The sequence number the next line will get."""
        return self._next

    def tail_cursor(self, n: int) -> int:
        """The cursor that reads the last ``n`` lines kept (fewer if fewer are kept)."""
        with self._lock:
            first = self._lines[0].seq if self._lines else self._next
            return max(first, self._next - max(0, n))

    def read(self, cursor: int, *, limit: int = 1000, max_bytes: int = 256 * 1024) -> LogBatch:
        """The lines from ``cursor`` on, at most ``limit`` lines and about ``max_bytes``."""
        with self._lock:
            first = self._lines[0].seq if self._lines else self._next
            skipped = 0
            if cursor < first:
                skipped, cursor = first - cursor, first
            cursor = min(cursor, self._next)
            start = cursor - first
            out = tuple(itertools.islice(self._lines, start, start + max(1, limit)))
            last = self._next
            closed = self._closed
        # The running size of the lines read, summed in C (no Python step per line: this
        # runs once per read of thousands of lines, on the event loop); keep the lines
        # that fit within max_bytes, at least one.
        sizes = list(itertools.accumulate(map(operator.add, map(len, map(_TEXT, out)), _OVERHEADS)))
        if sizes and sizes[-1] > max_bytes:
            out = out[: max(1, bisect.bisect_right(sizes, max_bytes))]
        nxt = cursor + len(out)
        return LogBatch(lines=out, next=nxt, skipped=skipped, closed=closed and nxt >= last)

    async def wait(self, cursor: int) -> None:
        """Return once a line at or after ``cursor`` exists or the buffer is closed."""
        while True:
            with self._lock:
                if self._closed or self._next > cursor:
                    return
                if self._event is None:
                    self._event = anyio.Event()
                    self._want = cursor
                else:  # several readers: wake for the nearest line any of them wants
                    self._want = min(self._want, cursor)
                event = self._event
            await event.wait()

    async def follow(self, *, cursor: int = 0, limit: int = 1000) -> AsyncIterator[LogBatch]:
        """Batches from ``cursor`` on as they are written, until the buffer is closed
        and read to its end. Empty batches are not yielded."""
        while True:
            batch = self.read(cursor, limit=limit)
            if batch.lines or batch.skipped or batch.closed:
                yield batch
            if batch.closed:
                return
            cursor = batch.next
            await self.wait(cursor)


@attrs.define(eq=False)
class LogHub:
    """The live output buffers of one node's executions, by job id.

    At most ``keep`` buffers of ended executions are kept (the oldest ended ones are
    dropped first); running executions always keep theirs.
    """

    keep: int = 32
    max_bytes: int = MAX_BUFFER_BYTES
    _buffers: OrderedDict[str, LogBuffer] = attrs.Factory(OrderedDict)
    _opened: anyio.Event | None = None

    def open(self, job_id: str, execution_id: str = "") -> LogBuffer:
        """A fresh buffer for the job's execution on this node (ending any earlier one)."""
        old = self._buffers.pop(job_id, None)
        if old is not None:
            old.close()
        buffer = LogBuffer(execution_id=execution_id or job_id, max_bytes=self.max_bytes)
        self._buffers[job_id] = buffer
        self._trim()
        event, self._opened = self._opened, None
        if event is not None:
            event.set()
        return buffer

    def get(self, job_id: str) -> LogBuffer | None:
        return self._buffers.get(job_id)

    def __len__(self) -> int:
        return len(self._buffers)

    async def wait_opened(self) -> None:
        """Return the next time any buffer is opened."""
        if self._opened is None:
            self._opened = anyio.Event()
        await self._opened.wait()

    def _trim(self) -> None:
        ended = [k for k, b in self._buffers.items() if b.closed]
        excess = len(self._buffers) - self.keep
        for key in ended[: max(0, excess)]:
            del self._buffers[key]
