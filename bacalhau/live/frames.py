"""Live output in columns: what one read of one execution's output gave, with no Python
step per line anywhere between the compute node's buffer and a follower's terminal.

* :class:`LogColumns` - the node's own form of one read (the texts as one tuple, the
  streams and partial flags as one byte a line, the times as 8 bytes a line), built from
  a buffer read or a peer's reply and turned into either public format.
* :class:`LogFrame` - one frame of ``GET /api/v1/jobs/{id}/logs/stream?format=batch``
  (one JSON object a line): the lines' texts joined by ``\\n`` in one string, the
  streams and partial flags as one character a line, the times as base64 of
  little-endian float64s. :meth:`LogFrame.parse` checks every field of a frame from the
  network (C-level passes over the columns); :meth:`LogFrame.pieces` gives what to
  write to stdout and stderr, one piece per run of lines of one stream.

Schema of a frame (every field present)::

    {"node_id": str,        # the execution's node
     "first": int,          # sequence number of the first line (then first+1, ...)
     "count": int,          # number of lines (0: a note only)
     "text": str,           # the lines' texts joined by "\\n" ("" when count is 0)
     "streams": str,        # count characters: "0" stdout, "1" stderr
     "partial": str,        # count characters: "1" a piece of a longer line or an
                            #   unterminated last line (print it without a newline)
     "times": str,          # base64 of count little-endian float64 (seconds since epoch)
     "skipped": int,        # lines evicted before this reader read them (before these)
     "end": bool,           # the execution's output is complete (after these)
     "detail": str}         # why, when an execution ended without live output
"""

from __future__ import annotations

import array
import base64
import binascii
import math
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from ..errors import DecodeError
from .logs import STREAMS, LogColumns

if TYPE_CHECKING:
    from .node import LogRecord

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_FRAME_LINES",
    "LogColumns",
    "LogFrame",
]

MAX_FRAME_BYTES = 8 * 1024 * 1024
"""Longest frame a reader accepts (a node's frames are under 3 MiB: a read returns at most
about 448 KiB of text, and JSON escapes a control character in 6 bytes)."""
MAX_FRAME_LINES = 100_000
"""Most lines a reader accepts in one frame (a node sends at most 10,000)."""
MAX_DETAIL = 4096
MAX_NODE_ID = 200
_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_RUNS = re.compile(r"0+|1+")
_KINDS = {str: "a string", int: "an integer", bool: "a boolean"}


def encode_frame(
    *,
    node_id: str,
    first: int = 0,
    count: int = 0,
    text: str = "",
    streams: str = "",
    partial: str = "",
    times: str = "",
    skipped: int = 0,
    end: bool = False,
    detail: str = "",
) -> bytes:
    """One ``format=batch`` frame with its newline."""
    frame = {
        "node_id": node_id,
        "first": first,
        "count": count,
        "text": text,
        "streams": streams,
        "partial": partial,
        "times": times,
        "skipped": skipped,
        "end": end,
        "detail": detail,
    }
    return orjson.dumps(frame) + b"\n"


@attrs.frozen(kw_only=True)
class LogFrame:
    """One frame of ``GET /api/v1/jobs/{id}/logs/stream?format=batch``: one read of one
    execution's output in columns. ``text`` holds the ``count`` lines joined by newlines,
    ``streams`` and ``partial`` one character (0 or 1) a line, ``times`` base64 of
    little-endian float64s; the lines are numbered from ``first``.

    Attributes:
        node_id: the execution's node.
        first: the first line's sequence number.
        count: the number of lines (0: a note only).
        text: the lines' texts joined by ``\\n``.
        streams: one character a line, ``0`` stdout or ``1`` stderr.
        partial: one character a line, ``1`` for a piece of a longer line or an
            unterminated last line.
        times: base64 of ``count`` little-endian float64 (when each line was written).
        skipped: lines evicted before this reader read them (they came before these).
        end: the execution's output is complete.
        detail: why, when an execution ended without live output.
    """

    node_id: str
    first: int = 0
    count: int = 0
    text: str = ""
    streams: str = ""
    partial: str = ""
    times: str = ""
    skipped: int = 0
    end: bool = False
    detail: str = ""

    @classmethod
    def parse(cls, raw: str | bytes) -> LogFrame:
        """One frame from the network, checked field by field without a Python step per
        line (untrusted: the sizes, types and the columns' lengths and alphabets).

        Raises:
            DecodeError: not such a frame (naming the field).
        """
        if len(raw) > MAX_FRAME_BYTES:
            raise DecodeError(f"log frame: longer than {MAX_FRAME_BYTES} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"log frame: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DecodeError("log frame: must be a JSON object")
        node_id = _field(data, "node_id", str)
        if len(node_id) > MAX_NODE_ID:
            raise DecodeError(f"log frame: node_id must be at most {MAX_NODE_ID} characters")
        first, count, skipped = (_count(data, k) for k in ("first", "count", "skipped"))
        if count > MAX_FRAME_LINES:
            raise DecodeError(f"log frame: count must be at most {MAX_FRAME_LINES}")
        text, streams = _field(data, "text", str), _field(data, "streams", str)
        partial, times = _field(data, "partial", str), _field(data, "times", str)
        end, detail = _field(data, "end", bool), _field(data, "detail", str)
        if len(detail) > MAX_DETAIL:
            raise DecodeError(f"log frame: detail must be at most {MAX_DETAIL} characters")
        if text.count("\n") != max(0, count - 1) or (count == 0 and text):
            raise DecodeError("log frame: text must hold count lines joined by newlines")
        for name, column in (("streams", streams), ("partial", partial)):
            if len(column) != count or column.strip("01"):
                raise DecodeError(f"log frame: {name} must be one character (0 or 1) a line")
        if len(times) != 4 * ((8 * count + 2) // 3):
            raise DecodeError("log frame: times must be base64 of one float64 a line")
        _timestamps(times, "log frame")
        return cls(
            node_id=node_id,
            first=first,
            count=count,
            text=text,
            streams=streams,
            partial=partial,
            times=times,
            skipped=skipped,
            end=end,
            detail=detail,
        )

    def records(self) -> list[LogRecord]:
        """The frame as :class:`~bacalhau.live.node.LogRecord` values, one a line (a
        ``skipped`` note first, an ``end`` note last)."""
        from .node import LogRecord

        node_id = self.node_id
        out = [LogRecord(node_id=node_id, skipped=self.skipped)] if self.skipped else []
        if self.count:
            rows = zip(
                range(self.first, self.first + self.count),
                map(STREAMS.__getitem__, map(int, self.streams)),
                self.lines(),
                self.timestamps(),
                map("1".__eq__, self.partial),
                strict=True,
            )
            out.extend(
                LogRecord(node_id=node_id, seq=seq, stream=stream, text=text, time=t, partial=p)
                for seq, stream, text, t, p in rows
            )
        if self.end:
            out.append(LogRecord(node_id=node_id, end=True, detail=self.detail))
        return out

    def lines(self) -> list[str]:
        """The lines' texts."""
        return self.text.split("\n") if self.count else []

    def timestamps(self) -> array.array[float]:
        """When each line was written (seconds since the epoch)."""
        return _timestamps(self.times, "log frame")

    def pieces(self, stream: str | None = None) -> Iterator[tuple[str, str]]:
        """``(stream, text)`` to write, in order, for printing the frame's lines as the job
        wrote them: one piece per run of lines of one stream (newlines included, none
        after a partial line); only ``stream``'s when given. Python steps per run and
        per partial line, none per line."""
        if not self.count:
            return
        if "1" not in self.partial and (self.streams.count("1") in (0, self.count)):
            name = STREAMS[self.streams[0] == "1"]
            if stream is None or stream == name:
                yield name, self.text + "\n"
            return
        lines = self.text.split("\n")
        for run in _RUNS.finditer(self.streams):
            name = STREAMS[run.group()[0] == "1"]
            if stream is not None and stream != name:
                continue
            start, stop = run.span()
            flags = self.partial[start:stop]
            at = flags.find("1")
            while at >= 0:
                if at:
                    yield name, "\n".join(lines[start : start + at]) + "\n"
                yield name, lines[start + at]
                start, flags = start + at + 1, flags[at + 1 :]
                at = flags.find("1")
            if start < stop:
                yield name, "\n".join(lines[start:stop]) + "\n"


def _timestamps(times: str, where: str) -> array.array[float]:
    try:
        raw = base64.b64decode(times, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{where}: times must be base64") from None
    if len(raw) % 8:
        raise DecodeError(f"{where}: times must be base64 of one float64 a line")
    stamps = array.array("d", raw)
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        stamps.byteswap()
    if not all(map(math.isfinite, stamps)):
        raise DecodeError(f"{where}: times must be finite")
    return stamps


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    if key not in data:
        raise DecodeError(f"log frame: {key} is missing")
    value = data[key]
    if type(value) is not kind:
        raise DecodeError(f"log frame: {key} must be {_KINDS[kind]}")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value: int = _field(data, key, int)
    if value < 0:
        raise DecodeError(f"log frame: {key} must be a non-negative integer")
    return value
