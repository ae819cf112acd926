"""How live output travels: a compute node's reply to a remote log read (msgpack, over
the transport) and the NDJSON chunk an API client reads.

A job may print a million lines and each one is carried by the event loop the job's own
output thread also needs, so nothing here takes a Python step per line: the reply is
columnar (the texts as one array, the streams, times and partial flags packed into one
byte string each, the sequence numbers implied by the first one), a peer's reply is
checked with C-level passes over those columns, and the JSON is written by orjson in one
call. What a requester relays to its clients is fully checked first: every text a
string, every time finite, every stream ``stdout`` or ``stderr``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, cast

import orjson

from ..errors import DecodeError
from ..wire import pack, unpack
from .logs import STREAMS, LogBatch, LogLine

__all__ = ["decode_reply", "encode_batch", "encode_reply", "note"]

_STREAM_CODE = {name: i for i, name in enumerate(STREAMS)}
_FLAGS = bytes(range(len(STREAMS)))
"""The only bytes allowed in the streams and partial columns (0 and 1)."""
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_batch(node_id: str, batch: LogBatch) -> bytes:
    """One NDJSON line (a :class:`~bacalhau.live.node.LogChunkLive`) for one read.

    Raises:
        TypeError: a line holds something JSON cannot carry.
    """
    # orjson writes plain tuples as arrays but not named tuples: LogLine -> tuple is a
    # C-level copy (a plain tuple from a peer's reply is returned as it is).
    lines = list(map(tuple, batch.lines))
    chunk = {
        "node_id": node_id,
        "lines": lines,
        "skipped": batch.skipped,
        "end": batch.closed,
        "detail": "",
    }
    return orjson.dumps(chunk) + b"\n"


def note(node_id: str, *, end: bool = True, detail: str = "") -> str:
    """An NDJSON line with no output: the end of an execution's, and why."""
    return (
        _dumps({"node_id": node_id, "lines": [], "skipped": 0, "end": end, "detail": detail}) + "\n"
    )


def encode_reply(batch: LogBatch) -> bytes:
    """A compute node's answer to one remote read (``found``: there is output)."""
    lines = batch.lines
    count = len(lines)
    if count:
        seqs, streams, texts, times, partials = zip(*lines, strict=True)
        first = seqs[0]
    else:
        first, streams, texts, times, partials = batch.next, (), (), (), ()
    return pack(
        {
            "found": True,
            "first": first,
            "texts": texts,
            "streams": bytes(map(_STREAM_CODE.__getitem__, streams)),
            "times": struct.pack(f"<{count}d", *times),
            "partial": bytes(partials),
            "next": batch.next,
            "skipped": batch.skipped,
            "closed": batch.closed,
        }
    )


def decode_reply(raw: bytes) -> LogBatch | None:
    """A peer's answer to a remote read, checked field by field; None when the peer has
    no output of that job for us (yet).

    Raises:
        DecodeError: the reply is malformed (naming the field).
    """
    data = unpack(raw, use_list=False)
    if not isinstance(data, dict):
        raise DecodeError("log reply must be a map")
    if not data.get("found"):
        return None
    try:
        first, texts = _int(data, "first"), data["texts"]
        streams, times, partial = data["streams"], data["times"], data["partial"]
        nxt, skipped, closed = _int(data, "next"), _int(data, "skipped"), data["closed"]
    except KeyError as exc:
        raise DecodeError(f"log reply: {exc.args[0]} is missing") from None
    if not isinstance(texts, tuple) or not set(map(type, texts)) <= {str}:
        raise DecodeError("log reply: texts must be an array of strings")
    count = len(texts)
    if nxt != first + count:
        raise DecodeError("log reply: next must be first + the number of lines")
    for name, column in (("streams", streams), ("partial", partial)):
        if type(column) is not bytes or len(column) != count or column.translate(None, _FLAGS):
            raise DecodeError(f"log reply: {name} must be one byte (0 or 1) per line")
    if type(times) is not bytes or len(times) != 8 * count:
        raise DecodeError("log reply: times must be one 8-byte float per line")
    stamps = struct.unpack(f"<{count}d", times)
    if not all(map(math.isfinite, stamps)):
        raise DecodeError("log reply: times must be finite")
    if type(closed) is not bool:
        raise DecodeError("log reply: closed must be a boolean")
    rows = zip(
        range(first, nxt),
        map(STREAMS.__getitem__, streams),
        texts,
        stamps,
        map(bool, partial),
        strict=True,
    )
    return LogBatch(
        lines=cast(tuple[LogLine, ...], tuple(rows)), next=nxt, skipped=skipped, closed=closed
    )


def _int(data: dict[Any, Any], key: str) -> int:
    value = data[key]
    if type(value) is not int or value < 0:
        raise DecodeError(f"log reply: {key} must be a non-negative integer")
    return value
