"""``format=batch`` of the live log stream: frames in columns, from a buffer or a peer's
reply, parsed back field by field, refused when malformed, and printed a run at a time."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bacalhau.api.client import _split_lines
from bacalhau.cli.watch import print_frame, print_record
from bacalhau.errors import DecodeError
from bacalhau.live import LogBuffer, LogChunkLive
from bacalhau.live.codec import decode_columns, encode_reply, note
from bacalhau.live.frames import MAX_FRAME_BYTES, MAX_FRAME_LINES, LogColumns, LogFrame
from bacalhau.live.logs import MAX_LINE_BYTES
from bacalhau.wire import pack, unpack

pytestmark = pytest.mark.anyio


def mixed_buffer() -> LogBuffer:
    """Both streams interleaved, a cut over-long line, non-ASCII, control characters,
    empty lines and an unterminated last line on each stream."""
    buf = LogBuffer(clock=iter(float(i) + 0.25 for i in range(1000)).__next__)
    buf.write("stdout", "héllo\n\nwörld\n".encode())
    buf.write("stderr", b"err 1\r\nerr 2\n")
    buf.write("stdout", b"x" * (MAX_LINE_BYTES + 5) + b"\n")
    buf.write("stdout", b'tab\there "quoted" \\ \x01\n')
    buf.write("stderr", b"half an err")
    buf.write("stdout", b"last, no newline")
    buf.close()
    return buf


async def test_a_frame_round_trips_every_line_and_field() -> None:
    batch = mixed_buffer().read(0)
    raw = LogColumns.from_batch(batch).frame("node-1")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    frame = LogFrame.parse(raw)
    assert (frame.node_id, frame.first, frame.count, frame.end) == ("node-1", 0, 10, True)
    got = [(r.seq, r.stream, r.text, r.time, r.partial) for r in frame.records() if not r.end]
    assert got == [tuple(line) for line in batch.lines]
    # The same records as the default NDJSON format gives.
    ndjson = LogChunkLive.parse(LogColumns.from_batch(batch).ndjson("node-1")).records()
    assert frame.records() == ndjson
    assert frame.lines()[5:7] == ["x" * MAX_LINE_BYTES, "x" * 5]


async def test_a_peers_reply_becomes_the_same_frame_without_rows() -> None:
    batch = mixed_buffer().read(2, limit=5)
    local = LogColumns.from_batch(batch)
    relayed = decode_columns(encode_reply(batch))
    assert relayed == local
    assert relayed.frame("n") == local.frame("n")
    assert relayed.ndjson("n") == local.ndjson("n")
    assert relayed.batch().lines == batch.lines


async def test_notes_and_skipped_lines_travel_in_frames() -> None:
    buf = LogBuffer(max_bytes=200)
    for i in range(20):
        buf.write("stdout", f"line {i}\n".encode())
    frame = LogFrame.parse(LogColumns.from_batch(buf.read(0)).frame("n"))
    assert frame.skipped > 0 and frame.first == frame.skipped
    assert frame.lines()[-1] == "line 19"
    end = LogFrame.parse(note("n", detail="no live output kept", batch=True))
    assert (end.count, end.end, end.detail, end.lines()) == (0, True, "no live output kept", [])
    assert [r.end for r in end.records()] == [True]


def printed(frame: LogFrame, stream: str | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    print_frame(frame, stream=stream, out=out, err=err)
    return out.getvalue(), err.getvalue()


async def test_a_frame_prints_exactly_what_printing_each_line_prints() -> None:
    frame = LogFrame.parse(LogColumns.from_batch(mixed_buffer().read(0)).frame("abcdefgh"))
    out, err = io.StringIO(), io.StringIO()
    for record in frame.records():
        print_record(record, out=out, err=err)
    assert printed(frame) == (out.getvalue(), err.getvalue())
    assert printed(frame)[0].startswith("héllo\n\nwörld\nxxx")
    assert printed(frame)[0].endswith('tab\there "quoted" \\ \x01\nlast, no newline')
    assert printed(frame)[1] == "err 1\nerr 2\nhalf an err"
    assert printed(frame, "stderr") == ("", "err 1\nerr 2\nhalf an err")
    assert printed(frame, "stdout")[1] == ""
    # One stream and no partial line: the frame's text is written in one piece.
    buf = LogBuffer()
    buf.write("stdout", b"a\nb\nc\n")
    one = LogFrame.parse(LogColumns.from_batch(buf.read(0)).frame("n"))
    assert list(one.pieces()) == [("stdout", "a\nb\nc\n")]


def good_frame() -> dict[str, Any]:
    buf = LogBuffer()
    buf.write("stdout", b"a\nb\n")
    buf.write("stderr", b"c\n")
    data: dict[str, Any] = json.loads(LogColumns.from_batch(buf.read(0)).frame("n1"))
    return data


def b64(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("node_id", 7, "node_id must be a string"),
        ("node_id", "n" * 201, "node_id must be at most 200"),
        ("first", -1, "first must be a non-negative integer"),
        ("first", True, "first must be an integer"),
        ("first", 1.0, "first must be an integer"),
        ("count", 2, "text must hold count lines"),
        ("count", MAX_FRAME_LINES + 1, "count must be at most"),
        ("text", "a\nb", "text must hold count lines"),
        ("text", "a\nb\nc\nd", "text must hold count lines"),
        ("text", ["a", "b", "c"], "text must be a string"),
        ("streams", "001", None),  # the control: another valid column
        ("streams", "0021", "streams must be one character"),
        ("streams", "02", "streams must be one character"),
        ("streams", "0a1", "streams must be one character"),
        ("partial", "00", "partial must be one character"),
        ("partial", [0, 0, 0], "partial must be a string"),
        ("times", b64(1.0, math.nan, 2.0), "times must be finite"),
        ("times", b64(1.0, -math.inf, 2.0), "times must be finite"),
        ("times", b64(1.0, 2.0), "times must be base64 of one float64 a line"),
        ("times", "!" * 32, "times must be base64"),
        ("times", [1.0, 2.0, 3.0], "times must be a string"),
        ("skipped", -1, "skipped must be a non-negative integer"),
        ("skipped", "0", "skipped must be an integer"),
        ("end", 1, "end must be a boolean"),
        ("detail", None, "detail must be a string"),
        ("detail", "d" * 4097, "detail must be at most"),
    ],
)
async def test_a_malformed_frame_is_refused_naming_the_field(
    field: str, value: Any, why: str | None
) -> None:
    data = good_frame()
    assert LogFrame.parse(json.dumps(data)).count == 3  # the untouched frame is fine
    data[field] = value
    if why is None:
        assert LogFrame.parse(json.dumps(data)).count == 3
        return
    with pytest.raises(DecodeError, match=why):
        LogFrame.parse(json.dumps(data))
    del data[field]
    with pytest.raises(DecodeError, match=f"{field} is missing"):
        LogFrame.parse(json.dumps(data))


async def test_what_is_not_a_frame_is_refused() -> None:
    for raw, why in [
        (b"not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "node_id is missing"),
        (b" " * (MAX_FRAME_BYTES + 1), "longer than"),
    ]:
        with pytest.raises(DecodeError, match=why):
            LogFrame.parse(raw)


async def test_a_peers_reply_with_a_newline_in_a_text_is_refused() -> None:
    buf = LogBuffer()
    buf.write("stdout", b"a\nb\n")
    data = json.loads(json.dumps({"found": True, "first": 0, "texts": ["a", "b\nc"]}))
    data |= {"streams": b"\0\0", "times": struct.pack("<2d", 1, 2), "partial": b"\0\0"}
    data |= {"next": 2, "skipped": 0, "closed": False}
    with pytest.raises(DecodeError, match="text must not hold a newline"):
        decode_columns(pack(data))
    data["texts"] = ["a", "bc"]
    assert decode_columns(pack(data)) is not None


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_the_client_splits_frames_across_reads_and_bounds_their_size() -> None:
    got = [x async for x in _split_lines(chunks(b"ab", b"c\nd", b"", b"e\n\nf"), 10)]
    assert got == [b"abc", b"de", b"", b"f"]
    assert [x async for x in _split_lines(chunks(b"0123456789\n"), 10)] == [b"0123456789"]
    for parts in [(b"0123", b"4567", b"890"), (b"01234567890\nx",), (b"ok\n", b"01234567890")]:
        with pytest.raises(DecodeError, match="longer than 10 bytes"):
            _ = [x async for x in _split_lines(chunks(*parts), 10)]


class ReferenceBuffer:
    """The buffer's rules a line at a time (cut at newlines, over-long lines cut into
    partial pieces, one trailing \\r dropped, bad UTF-8 replaced, oldest lines evicted
    beyond max_bytes but at least one kept): what the columnar buffer must equal."""

    def __init__(self, max_bytes: int, max_line: int) -> None:
        self.max_bytes, self.max_line = max_bytes, max_line
        self.lines: list[tuple[int, str, str, bool]] = []
        self.rest = {"stdout": b"", "stderr": b""}
        self.next = self.size = 0

    def add(self, stream: str, piece: bytes, partial: bool) -> None:
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        text = piece.decode("utf-8", "replace")
        self.lines.append((self.next, stream, text, partial))
        self.next += 1
        self.size += len(text) + 64
        while self.size > self.max_bytes and len(self.lines) > 1:
            self.size -= len(self.lines.pop(0)[2]) + 64

    def write(self, stream: str, data: bytes) -> None:
        pieces = (self.rest[stream] + data).split(b"\n")
        rest = pieces.pop()
        for piece in pieces:
            while len(piece) > self.max_line:
                self.add(stream, piece[: self.max_line], True)
                piece = piece[self.max_line :]
            self.add(stream, piece, False)
        while len(rest) > self.max_line:
            self.add(stream, rest[: self.max_line], True)
            rest = rest[self.max_line :]
        self.rest[stream] = rest

    def close(self) -> None:
        for stream in ("stdout", "stderr"):
            if self.rest[stream]:
                self.add(stream, self.rest[stream], True)


@pytest.mark.parametrize("seed", range(12))
async def test_the_columnar_buffer_keeps_exactly_the_lines_of_the_line_rules(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    max_bytes, max_line = rnd.choice([300, 2000, 50_000]), rnd.choice([5, 40, 1000])
    buf, ref = (
        LogBuffer(max_bytes=max_bytes, max_line=max_line),
        ReferenceBuffer(max_bytes, max_line),
    )
    alphabet = [
        b"a",
        b"bc",
        b"\n",
        b"\n",
        b"\r",
        b"\r\n",
        "é".encode(),
        b"\xff",
        b"\xe2\x82",
        b" " * 30,
    ]
    for _ in range(rnd.randint(1, 300)):
        stream = rnd.choice(["stdout", "stderr"])
        data = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        buf.write(stream, data)  # type: ignore[arg-type]
        ref.write(stream, data)
        if rnd.random() < 0.1:
            cursor = rnd.randint(0, ref.next)
            got = buf.read(cursor, limit=10**6, max_bytes=10**9)
            want = [x for x in ref.lines if x[0] >= cursor]
            assert [(x.seq, x.stream, x.text, x.partial) for x in got.lines] == want
    buf.close()
    ref.close()
    got = buf.read(0, limit=10**6, max_bytes=10**9)
    assert [(x.seq, x.stream, x.text, x.partial) for x in got.lines] == ref.lines
    assert got.skipped == (ref.lines[0][0] if ref.lines else ref.next)
    assert buf.evicted == got.skipped and got.closed and buf.next_seq == ref.next
    # Reads in small pieces, bounded in bytes, give the same lines in order.
    cursor, pieces = 0, list[tuple[int, str, str, bool]]()
    for _ in range(10_000):
        part = buf.read(cursor, limit=rnd.randint(1, 50), max_bytes=rnd.randint(1, 3000))
        pieces.extend((x.seq, x.stream, x.text, x.partial) for x in part.lines)
        cursor = part.next
        if part.closed:
            break
    assert pieces == ref.lines


@pytest.mark.parametrize("seed", range(3))
async def test_the_buffer_stays_exact_after_dropping_evicted_lines(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    buf, ref = LogBuffer(max_bytes=3000), ReferenceBuffer(3000, MAX_LINE_BYTES)
    written = 0
    while written < 30_000:  # far more lines than kept: the columns are compacted
        lines = rnd.choice([1, 1, 2, 7, 300])
        data = b"".join(b"%d %s\n" % (written + i, b"y" * rnd.randint(0, 20)) for i in range(lines))
        buf.write("stdout", data)
        ref.write("stdout", data)
        written += lines
        if rnd.random() < 0.05:
            got = buf.read(buf.tail_cursor(rnd.randint(1, 100)), limit=10**6, max_bytes=10**9)
            want = ref.lines[-len(got.lines) :]
            assert [(x.seq, x.stream, x.text, x.partial) for x in got.lines] == want
            assert len(got.lines) == min(len(ref.lines), len(got.lines))
    assert buf._base > 0  # evicted lines were dropped from the columns
    got = buf.read(0, limit=10**6, max_bytes=10**9)
    assert [(x.seq, x.stream, x.text, x.partial) for x in got.lines] == ref.lines
    assert got.skipped == ref.lines[0][0] == buf.evicted
    # A read bounded in bytes right at the first kept line still takes as much as fits.
    bounded = buf.read_columns(got.skipped, limit=1000, max_bytes=1000)
    sizes = [len(t) + 64 for _, _, t, _ in ref.lines]
    fits = max(1, next((i for i in range(len(sizes)) if sum(sizes[: i + 1]) > 1000), len(sizes)))
    assert len(bounded.texts) == fits > 1


async def test_a_reply_carries_the_texts_joined_when_asked_and_an_array_otherwise() -> None:
    columns = mixed_buffer().read_columns(0)
    joined, listed = encode_reply(columns, joined=True), encode_reply(columns)
    assert "texts" not in unpack(joined) and unpack(joined)["count"] == 10
    assert "text" not in unpack(listed) and len(unpack(listed)["texts"]) == 10
    assert decode_columns(joined) == decode_columns(listed) == columns
    empty = LogBuffer()
    empty.close()
    none = empty.read_columns(0)
    assert decode_columns(encode_reply(none, joined=True)) == none
    assert none.count == 0 and none.texts == []


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("text", ["a", "b", "c"], "text must be a string"),
        ("text", "a\nb", "text must hold count lines"),
        ("text", "a\nb\nc\nd", "text must hold count lines"),
        ("count", 2, "text must hold count lines"),
        ("count", -1, "count must be a non-negative integer"),
        ("count", "3", "count must be a non-negative integer"),
    ],
)
async def test_a_malformed_joined_reply_is_refused(field: str, value: Any, why: str) -> None:
    buf = LogBuffer()
    buf.write("stdout", b"a\nb\n")
    buf.write("stderr", b"c\n")
    data = unpack(encode_reply(buf.read_columns(0), joined=True))
    assert decode_columns(pack(data)) is not None
    data[field] = value
    with pytest.raises(DecodeError, match=why):
        decode_columns(pack(data))
    if field == "count":
        del data[field]
        with pytest.raises(DecodeError, match="count is missing"):
            decode_columns(pack(data))
