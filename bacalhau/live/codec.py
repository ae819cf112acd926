"""How live output travels: a compute node's reply to a remote log read (msgpack, over
the transport) and the NDJSON chunk an API client reads.

A job may print a million lines and each one is carried by the event loop the job's own
output thread also needs, so nothing here takes a Python step per line: the reply is
columnar (the texts as one string joined by newlines with their count, when the reader
asks with ``joined``, else as one array; the streams, times and partial flags packed
into one byte string each; the sequence numbers implied by the first one), a peer's
reply is checked with C-level passes over those columns, and the JSON is written by
orjson in one call. What a requester relays to its clients is fully checked first: the
texts a string with as many newlines as lines, every time finite, every stream
``stdout`` or ``stderr``.
"""

from __future__ import annotations

import array
import json
import math
import sys
from typing import Any

from ..errors import DecodeError
from ..wire import pack, unpack
from .frames import encode_frame
from .logs import STREAMS, LogBatch, LogColumns

__all__ = ["decode_columns", "decode_reply", "encode_batch", "encode_reply", "note"]

_FLAGS = bytes(range(len(STREAMS)))
"""The only bytes allowed in the streams and partial columns (0 and 1)."""
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_batch(node_id: str, batch: LogBatch) -> bytes:
    """One NDJSON line (a :class:`~bacalhau.live.node.LogChunkLive`) for one read.

    Raises:
        TypeError: a line holds something JSON cannot carry.
    """
    return LogColumns.from_batch(batch).ndjson(node_id)


def note(node_id: str, *, end: bool = True, detail: str = "", batch: bool = False) -> bytes:
    """A line with no output (NDJSON, or a ``format=batch`` frame): the end of an
    execution's output, and why."""
    if batch:
        return encode_frame(node_id=node_id, end=end, detail=detail)
    line = {"node_id": node_id, "lines": [], "skipped": 0, "end": end, "detail": detail}
    return (_dumps(line) + "\n").encode()


def encode_reply(batch: LogBatch | LogColumns, *, joined: bool = False) -> bytes:
    """A compute node's answer to one remote read (``found``: there is output): the
    texts as an array, or with ``joined`` (asked for by the reader) as one string with
    their ``count`` (no string a line to pack or unpack)."""
    columns = LogColumns.from_batch(batch) if isinstance(batch, LogBatch) else batch
    reply: dict[str, Any] = {
        "found": True,
        "first": columns.first,
        "streams": columns.streams,
        "times": columns.times,
        "partial": columns.partial,
        "next": columns.next,
        "skipped": columns.skipped,
        "closed": columns.closed,
    }
    if joined:
        reply["text"], reply["count"] = columns.text, columns.count
    else:
        reply["texts"] = columns.texts
    return pack(reply)


def decode_reply(raw: bytes) -> LogBatch | None:
    """A peer's answer to a remote read as a batch of lines (see :func:`decode_columns`).

    Raises:
        DecodeError: the reply is malformed (naming the field).
    """
    columns = decode_columns(raw)
    return None if columns is None else columns.batch()


def decode_columns(raw: bytes) -> LogColumns | None:
    """A peer's answer to a remote read, checked field by field in C-level passes over
    its columns (no Python step a line); None when the peer has no output of that job
    for us (yet).

    Raises:
        DecodeError: the reply is malformed (naming the field).
    """
    data = unpack(raw, use_list=False)
    if not isinstance(data, dict):
        raise DecodeError("log reply must be a map")
    if not data.get("found"):
        return None
    try:
        first = _int(data, "first")
        streams, times, partial = data["streams"], data["times"], data["partial"]
        nxt, skipped, closed = _int(data, "next"), _int(data, "skipped"), data["closed"]
        if "text" in data:  # joined: one string and the number of lines
            text, count = data["text"], _int(data, "count")
            if type(text) is not str:
                raise DecodeError("log reply: text must be a string")
            if text.count("\n") != max(0, count - 1) or (count == 0 and text):
                raise DecodeError("log reply: text must hold count lines joined by newlines")
        else:
            text, count = _texts(data["texts"])
    except KeyError as exc:
        raise DecodeError(f"log reply: {exc.args[0]} is missing") from None
    if nxt != first + count:
        raise DecodeError("log reply: next must be first + the number of lines")
    for name, column in (("streams", streams), ("partial", partial)):
        if type(column) is not bytes or len(column) != count or column.translate(None, _FLAGS):
            raise DecodeError(f"log reply: {name} must be one byte (0 or 1) per line")
    if type(times) is not bytes or len(times) != 8 * count:
        raise DecodeError("log reply: times must be one 8-byte float per line")
    stamps = array.array("d", times)
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        stamps.byteswap()
    if not all(map(math.isfinite, stamps)):
        raise DecodeError("log reply: times must be finite")
    if type(closed) is not bool:
        raise DecodeError("log reply: closed must be a boolean")
    return LogColumns(
        first=first,
        count=count,
        text=text,
        streams=streams,
        times=times,
        partial=partial,
        next=nxt,
        skipped=skipped,
        closed=closed,
    )


def _texts(texts: Any) -> tuple[str, int]:
    """An array of texts (no newline in any) as one joined string and its length."""
    if not isinstance(texts, tuple) or not set(map(type, texts)) <= {str}:
        raise DecodeError("log reply: texts must be an array of strings")
    count = len(texts)
    text = "\n".join(texts)
    if count and text.count("\n") != count - 1:
        raise DecodeError("log reply: a text must not hold a newline")
    return text, count


def _int(data: dict[Any, Any], key: str) -> int:
    value = data[key]
    if type(value) is not int or value < 0:
        raise DecodeError(f"log reply: {key} must be a non-negative integer")
    return value
