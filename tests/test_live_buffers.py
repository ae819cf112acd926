"""The live log buffer and the event hub: lines, bounds, slow and late readers."""

from __future__ import annotations

import threading

import anyio
import pytest

from bacalhau.live import EventHub, LogBuffer, LogHub
from bacalhau.models import JobEvent

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
    history = [JobEvent(1.0, "created"), JobEvent(2.0, "bid", "n1")]
    hub.job_changed("j1", history, "bidding")
    hub.job_changed("j1", history, "bidding")  # nothing new
    history.append(JobEvent(3.0, "bid_accepted", "n1"))
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
