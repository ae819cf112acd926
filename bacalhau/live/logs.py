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

The lines are kept in columns (a list of texts, a byte a line for the stream and the
partial flag, an array of times and one of running sizes): a write of many lines is
decoded, split and appended in a few C-level calls, eviction is a binary search, and a
read (:meth:`LogBuffer.read_columns`) is slices of the columns, so neither the job's
output thread nor a follower takes a Python step per line.
"""

from __future__ import annotations

import array
import base64
import bisect
import contextlib
import functools
import itertools
import operator
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, NamedTuple

import anyio
import attrs
import orjson
import sniffio

__all__ = [
    "MAX_BUFFER_BYTES",
    "MAX_LINE_BYTES",
    "LogBatch",
    "LogBuffer",
    "LogColumns",
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
_STREAM, _TEXT, _TIME, _PARTIAL = (operator.itemgetter(i) for i in (1, 2, 3, 4))
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


@attrs.frozen(kw_only=True)
class LogColumns:
    """One read of one execution's output, in columns (checked when it came from a peer).

    Attributes:
        first: the first line's sequence number.
        count: the number of lines.
        text: the lines' texts joined by ``\\n`` (no text holds one; "" for no line).
        streams: one byte a line, 0 stdout or 1 stderr.
        times: one little-endian float64 a line (finite).
        partial: one byte a line, 1 for a partial line.
        next: the cursor for the next read (``first + count``).
        skipped: lines evicted before the reader read them.
        closed: the execution ended and ``next`` is past its last line.
    """

    first: int
    count: int
    text: str
    streams: bytes
    times: bytes
    partial: bytes
    next: int
    skipped: int = 0
    closed: bool = False

    @classmethod
    def from_batch(cls, batch: LogBatch) -> LogColumns:
        """A buffer's read in columns (C-level passes over its lines)."""
        lines = batch.lines
        count = len(lines)
        first = lines[0].seq if count else batch.next
        streams = map(_STREAM_CODE.__getitem__, map(_STREAM, lines))
        times = tuple(map(_TIME, lines))
        partials = map(_PARTIAL, lines)
        return cls(
            first=first,
            count=count,
            text="\n".join(map(_TEXT, lines)),
            streams=bytes(streams),
            times=struct.pack(f"<{count}d", *times),
            partial=bytes(partials),
            next=batch.next,
            skipped=batch.skipped,
            closed=batch.closed,
        )

    @property
    def texts(self) -> list[str]:
        """The lines' texts."""
        return self.text.split("\n") if self.count else []

    def _rows(self) -> Iterator[tuple[int, str, str, float, bool]]:
        """``(seq, stream, text, time, partial)`` a line, built by C-level iterators."""
        return zip(
            range(self.first, self.next),
            map(STREAMS.__getitem__, self.streams),
            self.texts,
            struct.unpack(f"<{self.count}d", self.times),
            map(bool, self.partial),
            strict=True,
        )

    def batch(self) -> LogBatch:
        """The same read as a :class:`~bacalhau.live.logs.LogBatch` of lines."""
        lines = tuple(map(_LINE, self._rows()))  # a C-level call a line
        return LogBatch(lines=lines, next=self.next, skipped=self.skipped, closed=self.closed)

    def ndjson(self, node_id: str) -> bytes:
        """One line of the default NDJSON format (a ``LogChunkLive``): a Python step a line."""
        rows = self._rows()
        chunk = {
            "node_id": node_id,
            "lines": list(rows),
            "skipped": self.skipped,
            "end": self.closed,
            "detail": "",
        }
        return orjson.dumps(chunk) + b"\n"

    def frame(self, node_id: str) -> bytes:
        """One frame of ``format=batch`` (a :class:`~bacalhau.live.frames.LogFrame`
        line), in C-level calls."""
        from .frames import _DIGITS, encode_frame

        return encode_frame(
            node_id=node_id,
            first=self.first,
            count=self.count,
            text=self.text,
            streams=self.streams.translate(_DIGITS).decode("ascii"),
            partial=self.partial.translate(_DIGITS).decode("ascii"),
            times=base64.b64encode(self.times).decode("ascii"),
            skipped=self.skipped,
            end=self.closed,
        )


_LINE = functools.partial(tuple.__new__, LogLine)
_STREAM_CODE = {name: i for i, name in enumerate(STREAMS)}
_STREAM_BYTE = {name: bytes((i,)) for i, name in enumerate(STREAMS)}
_LITTLE = sys.byteorder == "little"


def _swapped(times: array.array[float]) -> bytes:  # pragma: no cover - big-endian hosts
    times.byteswap()
    return times.tobytes()


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

    The kept lines are stored in columns (texts, stream codes, times, partial flags and
    the running size), so a write of many lines and a read of thousands each take a
    few C-level calls, not a Python step per line.

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
        # Line ``self._base + i`` is at index ``i`` of each column; lines before
        # ``self._head`` are evicted (dropped from the columns now and then, in one go).
        self._texts: list[str] = []
        self._streams = bytearray()
        self._times = array.array("d")
        self._partials = bytearray()
        self._ends = array.array("q")
        """Running size (characters + LINE_OVERHEAD a line) through each line."""
        self._base = 0
        self._head = 0
        self._origin = 0
        """The running size before the first line still in the columns."""
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

    @property
    def _next(self) -> int:
        return self._base + len(self._texts)

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
            joined = partial + data if partial else data
            cut = joined.rfind(b"\n")
            if cut >= 0:
                complete, rest = joined[:cut], joined[cut + 1 :]
                limit = self.max_line
                if b"\r" in complete or (
                    len(complete) > limit and max(map(len, complete.split(b"\n"))) > limit
                ):
                    for piece in complete.split(b"\n"):  # rare: a line to cut or a \r to drop
                        self._add_cut(stream, piece, now, partial=False)
                else:  # decoded in one call: "\n" is never part of a UTF-8 sequence
                    self._extend(stream, complete.decode("utf-8", "replace").split("\n"), now)
            else:
                rest = joined
            while len(rest) > self.max_line:
                self._add(stream, rest[: self.max_line], now, True)
                rest = rest[self.max_line :]
            self._partial[stream] = rest
            self._trim()
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
            self._trim()
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
        self._extend(stream, [piece.decode("utf-8", "replace")], now, partial=partial)

    def _extend(
        self, stream: LogStream, texts: list[str], now: float, *, partial: bool = False
    ) -> None:
        """(lock held) Append lines of one stream and time, in C-level calls."""
        ends = self._ends
        total = ends[-1] if ends else 0
        if len(texts) == 1:  # a job writing a line at a time: plain appends
            text = texts[0]
            self._texts.append(text)
            self._streams.append(_STREAM_CODE[stream])
            self._times.append(now)
            self._partials.append(partial)
            ends.append(total + len(text) + LINE_OVERHEAD)
            return
        count = len(texts)
        self._texts += texts
        self._streams += _STREAM_BYTE[stream] * count
        self._times += array.array("d", (now,)) * count
        self._partials += (b"\1" if partial else b"\0") * count
        sizes = map(operator.add, map(len, texts), _OVERHEADS)
        ends += array.array("q", itertools.accumulate(sizes, initial=total))[1:]

    def _trim(self) -> None:
        """(lock held) Evict the oldest lines beyond ``max_bytes`` (keeping at least one),
        and now and then drop the evicted ones from the columns."""
        ends, head = self._ends, self._head
        if not ends:
            return
        before = ends[head - 1] if head else self._origin
        if ends[-1] - before > self.max_bytes:
            # The first line to keep: the earliest whose kept size fits.
            keep = bisect.bisect_left(ends, ends[-1] - self.max_bytes, head, len(ends)) + 1
            keep = min(keep, len(ends) - 1)
            self.evicted += keep - head
            self._head = head = keep
        if head > 4096 and head * 2 > len(ends):
            del self._texts[:head], self._streams[:head], self._times[:head]
            self._origin = ends[head - 1]
            del self._partials[:head], self._ends[:head]
            self._base += head
            self._head = 0

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
            first = self._base + self._head
            return max(first, self._next - max(0, n))

    def read_columns(
        self, cursor: int, *, limit: int = 1000, max_bytes: int = 256 * 1024
    ) -> LogColumns:
        """The lines from ``cursor`` on, at most ``limit`` lines and about ``max_bytes``
        (at least one line), in columns: slices of the buffer's own, no step a line."""
        with self._lock:
            base, ends = self._base, self._ends
            first = base + self._head
            skipped = 0
            if cursor < first:
                skipped, cursor = first - cursor, first
            last = self._next
            cursor = min(cursor, last)
            start = cursor - base
            stop = min(last - base, start + max(1, limit))
            if stop > start + 1:
                before = ends[start - 1] if start else self._origin
                fits = bisect.bisect_right(ends, before + max_bytes, start, stop)
                stop = max(start + 1, fits)
            times = self._times[start:stop]
            return LogColumns(
                first=cursor,
                count=stop - start,
                text="\n".join(self._texts[start:stop]),
                streams=bytes(self._streams[start:stop]),
                times=times.tobytes() if _LITTLE else _swapped(times),
                partial=bytes(self._partials[start:stop]),
                next=base + stop,
                skipped=skipped,
                closed=self._closed and base + stop >= last,
            )

    def read(self, cursor: int, *, limit: int = 1000, max_bytes: int = 256 * 1024) -> LogBatch:
        """The lines from ``cursor`` on, at most ``limit`` lines and about ``max_bytes``,
        as :class:`LogLine` values (:meth:`read_columns` takes no step a line)."""
        return self.read_columns(cursor, limit=limit, max_bytes=max_bytes).batch()

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
        excess = len(self._buffers) - self.keep
        if excess <= 0:
            return
        ended = []
        for key, buffer in self._buffers.items():  # oldest first; stop once enough ended
            if buffer.closed:
                ended.append(key)
                if len(ended) == excess:
                    break
        for key in ended:
            del self._buffers[key]
