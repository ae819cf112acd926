"""The live log buffer and the event hub: lines, bounds, slow and late readers."""

from __future__ import annotations

import json
import math
import struct
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from bacalhau.errors import DecodeError
from bacalhau.live import EventHub, LogBuffer, LogChunkLive, LogHub
from bacalhau.live.codec import decode_reply, encode_batch, encode_reply
from bacalhau.live.logs import MAX_LINE_BYTES
from bacalhau.live.node import READ_LINES, REPLY_BYTES
from bacalhau.models import JobEvent
from bacalhau.wire import MAX_EVENT_FRAME, pack, unpack

pytestmark = pytest.mark.anyio


async def test_lines_are_cut_per_stream_and_keep_their_order() -> None:
    buf = LogBuffer()
    buf.write("stdout", b"one\ntw")
    buf.write("stderr", b"err\r\n")
    buf.write("stdout", b"o\nthree")
    batch = buf.read(0)
    assert [(x.stream, x.text) for x in batch.lines] == [
        ("stdout", "one"),
        ("stderr", "err"),
        ("stdout", "two"),
    ]
    assert [x.seq for x in batch.lines] == [0, 1, 2]
    assert not batch.closed
    buf.close()
    rest = buf.read(batch.next)
    assert [(x.text, x.partial) for x in rest.lines] == [("three", True)]
    assert rest.closed
    buf.write("stdout", b"after close\n")
    assert buf.read(rest.next).lines == ()


async def test_over_long_lines_are_cut_and_bad_utf8_is_replaced() -> None:
    buf = LogBuffer(max_line=4)
    buf.write("stdout", b"abcdefghij\n\xff\xfe\n")
    texts = [(x.text, x.partial) for x in buf.read(0).lines]
    assert texts == [("abcd", True), ("efgh", True), ("ij", False), ("\ufffd\ufffd", False)]


async def test_the_buffer_is_bounded_and_a_late_reader_is_told_what_it_missed() -> None:
    buf = LogBuffer(max_bytes=10 * 70)  # about ten short lines
    for i in range(1000):
        buf.write("stdout", f"line {i}\n".encode())
    batch = buf.read(0)
    assert batch.skipped > 900
    assert batch.skipped + len(batch.lines) == 1000
    assert batch.lines[-1].text == "line 999"
    assert batch.lines[0].seq == batch.skipped
    assert buf.evicted == batch.skipped
    tail = buf.read(buf.tail_cursor(3))
    assert [x.text for x in tail.lines] == ["line 997", "line 998", "line 999"]
    assert tail.skipped == 0


async def test_read_limits_and_cursor_past_the_end() -> None:
    buf = LogBuffer()
    for i in range(10):
        buf.write("stdout", f"{i}\n".encode())
    first = buf.read(0, limit=4)
    assert [x.text for x in first.lines] == ["0", "1", "2", "3"]
    assert first.next == 4
    assert buf.read(99).lines == ()
    assert buf.read(99).next == 10


async def test_a_reader_waiting_is_woken_by_a_writer_thread() -> None:
    buf = LogBuffer()
    got: list[str] = []

    async def follower() -> None:
        async for batch in buf.follow():
            got.extend(x.text for x in batch.lines)

    def writer() -> None:
        for i in range(2000):
            buf.write("stdout", f"{i}\n".encode())
        buf.close()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            await anyio.to_thread.run_sync(writer)
    assert got == [str(i) for i in range(2000)]


async def test_a_reader_that_never_reads_does_not_hold_up_the_writer() -> None:
    buf = LogBuffer(max_bytes=4096)
    cursor = buf.next_seq  # a follower that registered, then stopped reading
    done = threading.Event()

    def writer() -> None:
        for i in range(50_000):
            buf.write("stdout", f"line {i}\n".encode())
        done.set()

    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(writer)
    assert done.is_set()
    late = buf.read(cursor)
    assert late.skipped > 49_000
    assert late.lines[-1].text == "line 49999"


async def test_the_hub_keeps_running_buffers_and_the_newest_ended_ones() -> None:
    hub = LogHub(keep=2)
    a = hub.open("a")
    b = hub.open("b")
    a.close()
    b.close()
    c = hub.open("c")  # three buffers, two ended: the oldest ended one goes
    assert hub.get("a") is None
    assert hub.get("b") is b
    assert hub.get("c") is c
    again = hub.open("b")  # a re-run replaces (and ends) the earlier buffer
    assert hub.get("b") is again
    assert b.closed


async def test_the_event_hub_publishes_history_once_and_peer_changes() -> None:
    hub = EventHub(keep=4, clock=lambda: 1.0)
    history = [JobEvent(time=1.0, kind="created"), JobEvent(time=2.0, kind="bid", node_id="n1")]
    hub.job_changed("j1", history, "bidding")
    hub.job_changed("j1", history, "bidding")  # nothing new
    history.append(JobEvent(time=3.0, kind="bid_accepted", node_id="n1"))
    hub.job_changed("j1", history, "running")
    hub.peers_now({"n1"})  # the first look only records
    hub.peers_now({"n1", "n2"})
    hub.peers_now({"n2"})
    events = hub.read(0).events
    assert [(e.kind, e.node_id, e.state) for e in events] == [
        ("bid", "n1", "bidding"),
        ("bid_accepted", "n1", "running"),
        ("NodeJoined", "n2", None),
        ("NodeLeft", "n1", None),
    ]
    assert hub.read(0).skipped == 1  # keep=4: "created" was dropped
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_event_followers_wake_on_publish() -> None:
    hub = EventHub()
    seen: list[str] = []

    async def follower() -> None:
        async for batch in hub.follow(cursor=0):
            seen.extend(e.kind for e in batch.events)
            if len(seen) >= 3:
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            for kind in ("a", "b", "c"):
                await anyio.lowlevel.checkpoint()
                hub.publish(kind)
    assert seen == ["a", "b", "c"]


async def test_a_read_is_also_bounded_in_bytes() -> None:
    buf = LogBuffer()
    for _ in range(8):
        buf.write("stdout", b"x" * 1000 + b"\n")
    batch = buf.read(0, limit=100, max_bytes=2500)
    assert len(batch.lines) == 2  # halved until within the bound
    assert batch.next == 2
    assert not batch.closed
    buf.close()
    rest = buf.read(2)
    assert len(rest.lines) == 6
    assert rest.closed


async def test_a_read_relayed_from_a_peer_keeps_every_line_and_field() -> None:
    buf = LogBuffer(execution_id="j/n")
    buf.write("stdout", "héllo\n".encode())
    buf.write("stderr", b"oops\n")
    buf.write("stdout", b"no newline")
    buf.close()
    batch = buf.read(0)
    relayed = decode_reply(encode_reply(batch))
    assert relayed is not None
    assert [tuple(line) for line in relayed.lines] == [tuple(line) for line in batch.lines]
    assert (relayed.next, relayed.skipped, relayed.closed) == (3, 0, True)
    # What the API writes is the same JSON, from a local read or a relayed one.
    local, remote = encode_batch("n1", batch), encode_batch("n1", relayed)
    assert local == remote
    assert local.endswith(b"\n")
    data = json.loads(local)
    assert data["lines"] == [list(line) for line in batch.lines]
    assert (data["node_id"], data["end"], data["skipped"]) == ("n1", True, 0)
    assert data["lines"][0][2] == "héllo"
    assert data["lines"][2][4] is True  # the unterminated last line is partial


def _good_reply() -> dict[str, Any]:
    buf = LogBuffer()
    buf.write("stdout", b"a\nb\n")
    buf.write("stderr", b"c\n")
    data: dict[str, Any] = unpack(encode_reply(buf.read(0)))
    return data


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("texts", ["a", b"b", "c"], "texts must be an array of strings"),
        ("texts", "abc", "texts must be an array of strings"),
        ("times", struct.pack("<3d", 1.0, math.nan, 2.0), "times must be finite"),
        ("times", struct.pack("<3d", 1.0, math.inf, 2.0), "times must be finite"),
        ("times", struct.pack("<2d", 1.0, 2.0), "one 8-byte float per line"),
        ("streams", b"\x00\x02\x01", "streams must be one byte"),
        ("streams", b"\x00\x01", "streams must be one byte"),
        ("partial", [False, False, True], "partial must be one byte"),
        ("next", 7, "next must be first \\+ the number of lines"),
        ("first", -1, "first must be a non-negative integer"),
        ("skipped", "0", "skipped must be a non-negative integer"),
        ("closed", 1, "closed must be a boolean"),
        ("texts", None, "texts must be an array"),
    ],
)
async def test_a_malformed_reply_from_a_peer_is_refused(field: str, value: Any, why: str) -> None:
    data = _good_reply()
    assert decode_reply(pack(data)) is not None  # the untouched reply is fine
    data[field] = value
    with pytest.raises(DecodeError, match=why):
        decode_reply(pack(data))
    del data[field]
    with pytest.raises(DecodeError, match=f"{field} is missing"):
        decode_reply(pack(data))


async def test_a_reply_that_is_not_a_batch_is_refused_or_means_not_found() -> None:
    with pytest.raises(DecodeError, match="must be a map"):
        decode_reply(pack([1, 2]))
    assert decode_reply(pack({"found": False, "reason": "no output yet"})) is None
    empty = LogBuffer()
    empty.close()
    batch = decode_reply(encode_reply(empty.read(0)))
    assert batch is not None
    assert (batch.lines, batch.next, batch.closed) == ((), 0, True)


async def test_the_largest_read_still_fits_a_peers_reply() -> None:
    buf = LogBuffer()
    wide = "\U0001f600".encode() * (MAX_LINE_BYTES // 4)  # 4 bytes a character
    for _ in range(300):
        buf.write("stdout", wide + b"\n")
    batch = buf.read(buf.tail_cursor(300), limit=READ_LINES, max_bytes=REPLY_BYTES)
    assert len(batch.lines) > 50
    raw = encode_reply(batch)
    assert len(raw) < MAX_EVENT_FRAME
    relayed = decode_reply(raw)
    assert relayed is not None and len(relayed.lines) == len(batch.lines)


async def test_a_reader_waiting_for_a_batch_is_woken_once_it_is_there() -> None:
    buf = LogBuffer()
    wakes: list[int] = []
    schedule = buf._waker.call

    def counted(fn: Callable[[], None]) -> None:
        wakes.append(buf.next_seq)
        schedule(fn)

    buf._waker.call = counted  # type: ignore[method-assign]
    started = anyio.Event()
    woke_at: list[int] = []

    async def reader() -> None:
        started.set()
        await buf.wait(99)  # the 100th line
        woke_at.append(buf.next_seq)

    def writer() -> None:
        for i in range(150):
            buf.write("stdout", f"{i}\n".encode())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await started.wait()
            await anyio.to_thread.run_sync(writer)
    assert woke_at and woke_at[0] >= 100
    assert wakes == [100]  # one wake-up, when the 100th line came; none before


async def test_a_client_parses_a_chunk_and_refuses_a_malformed_one() -> None:
    buf = LogBuffer()
    buf.write("stdout", b"one\ntwo\n")
    buf.write("stderr", b"three")
    buf.close()
    chunk = LogChunkLive.parse(encode_batch("n1", buf.read(0)))
    assert chunk.node_id == "n1"
    assert chunk.end
    assert [(r.stream, r.text, r.partial) for r in chunk.records() if not r.end] == [
        ("stdout", "one", False),
        ("stdout", "two", False),
        ("stderr", "three", True),
    ]
    good = {"node_id": "n", "lines": [[0, "stdout", "x", 1.5, False]], "skipped": 0, "end": False}
    assert LogChunkLive.parse(json.dumps(good)).lines == ((0, "stdout", "x", 1.5, False),)
    bad: list[tuple[object, str]] = [
        ("not json", "not JSON"),
        ([1], "must be an object"),
        ({**good, "node_id": 7}, "node_id"),
        ({**good, "skipped": -1}, "skipped"),
        ({**good, "end": "yes"}, "end must be a boolean"),
        ({**good, "lines": [[0, "stdin", "x", 1.5, False]]}, "lines must be"),
        ({**good, "lines": [[0, "stdout", None, 1.5, False]]}, "lines must be"),
        ({**good, "lines": [[0, "stdout", "x", "1.5", False]]}, "lines must be"),
        ({**good, "lines": [[0, "stdout", "x", 1.5]]}, "lines must be"),
        ({**good, "lines": {"0": 1}}, "lines must be"),
    ]
    for value, why in bad:
        text = value if isinstance(value, str) else json.dumps(value)
        with pytest.raises(DecodeError, match=why):
            LogChunkLive.parse(text)
