"""FrameReader.read_directly: bytes waiting in the socket are taken from it without a
stream receive, in order with what the stream already holds, and errors and EOF are
reported as the stream reports them."""

from __future__ import annotations

import fcntl
import io
import random
import struct
import termios
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from bacalhau.transport import gossip_frames
from bacalhau.transport.errors import ConnectionClosed
from bacalhau.transport.gossip_frames import PING, PUBLISH, REPLY, REQUEST, FrameReader, encode

pytestmark = pytest.mark.anyio

BIG = random.Random(22).randbytes(300_000)
MESSAGES: list[list[Any]] = [
    [PING],
    [REPLY, 7, BIG],
    [PUBLISH, BIG[:5000], True],
    *([REPLY, i, bytes([i]) * 3000] for i in range(40)),
    [REPLY, 99, BIG[::-1]],
]
WIRE = b"".join(encode(m) for m in MESSAGES)
SMALL: list[list[Any]] = [  # fits a fresh socket's receive buffer whole
    [PING],
    [REPLY, 7, BIG[:20_000]],
    *([REPLY, i, bytes([i]) * 1000] for i in range(20)),
    [PUBLISH, BIG[:5000], False],
]
SMALL_WIRE = b"".join(encode(m) for m in SMALL)


class Counting:
    """An anyio socket stream whose ``receive`` calls are counted."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.receives = 0
        self._protocol = getattr(stream, "_protocol", None)

    def extra(self, attribute: Any, default: Any = None) -> Any:
        return self.stream.extra(attribute, default)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self.receives += 1
        return await self.stream.receive(max_bytes)


async def _pair() -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listeners:
        (listener,) = listeners.listeners
        assert isinstance(listener, anyio.abc.SocketListener)
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
    # one receive first, as the handshake does: the stream reads the socket only while
    # a receive waits from then on, so what is sent next stays queued in the socket
    await client.send(b"!")
    assert await server.receive() == b"!"
    return client, server


async def _waiting(stream: anyio.abc.SocketStream, nbytes: int) -> None:
    """Until ``nbytes`` are queued in the receiving socket (bounded)."""
    fd = stream.extra(SocketAttribute.raw_socket).fileno()
    for _ in range(1000):
        queued = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        if queued >= nbytes:
            return
        await anyio.sleep(0.005)
    raise AssertionError(f"only {queued} of {nbytes} bytes arrived")


async def test_waiting_frames_are_read_without_a_stream_receive() -> None:
    client, server = await _pair()
    async with client, server:
        await client.send(SMALL_WIRE)
        await _waiting(server, len(SMALL_WIRE))
        stream = Counting(server)
        reader = FrameReader(stream)  # type: ignore[arg-type]
        assert reader.read_directly()
        ticks = 0

        async def other_task() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            for message in SMALL:
                assert await reader.read_message(max_size=1 << 20) == message
            ran = ticks
            tg.cancel_scope.cancel()
        assert stream.receives == 0  # every byte was waiting: taken from the socket
        assert reader.buffered == 0
        assert ran >= 1  # yet other tasks ran while they were read


async def test_bytes_the_stream_holds_come_first() -> None:
    client, server = await _pair()
    async with client, server:
        half = len(SMALL_WIRE) // 2
        await client.send(b"xyz" + SMALL_WIRE[:half])
        await _waiting(server, 3 + half)
        # the stream reads what is there, hands out 3 bytes and keeps the rest queued;
        # the second half then waits in the socket, behind it
        assert await server.receive(3) == b"xyz"
        await client.send(SMALL_WIRE[half:])
        await _waiting(server, len(SMALL_WIRE) - half)
        stream = Counting(server)
        reader = FrameReader(stream)  # type: ignore[arg-type]
        assert reader.read_directly()
        for message in SMALL:  # in order: the queued rest first, then the socket
            assert await reader.read_message(max_size=1 << 20) == message
        assert stream.receives >= 1


async def test_frames_trickling_in_and_eof() -> None:
    client, server = await _pair()
    async with server:
        reader = FrameReader(server)
        assert reader.read_directly()

        async def send() -> None:
            async with client:
                for i in range(0, len(WIRE), 70_000):
                    await client.send(WIRE[i : i + 70_000])
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            for message in MESSAGES:
                assert await reader.read_message(max_size=1 << 20) == message
        with pytest.raises(ConnectionClosed, match="closed by peer"):
            await reader.read_message(max_size=1 << 20)


async def test_a_frame_cut_short_is_reported_as_before() -> None:
    client, server = await _pair()
    async with server:
        reader = FrameReader(server)
        assert reader.read_directly()
        async with client:
            await client.send(WIRE[:150_000])
        with pytest.raises(ConnectionClosed, match="mid-frame"):
            for _ in MESSAGES:
                await reader.read_message(max_size=1 << 20)


async def test_not_for_streams_without_a_socket() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    async with send, receive:
        assert not FrameReader(receive).read_directly()  # type: ignore[arg-type]


class RecordingBytesIO(io.BytesIO):
    """io.BytesIO that remembers every instance and what getvalue gave."""

    made: ClassVar[list[RecordingBytesIO]] = []

    def __init__(self) -> None:
        super().__init__()
        self.made.append(self)
        self.value: bytes | None = None

    def getvalue(self) -> bytes:
        self.value = super().getvalue()
        return self.value


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[RecordingBytesIO]:
    made: list[RecordingBytesIO] = []
    monkeypatch.setattr(RecordingBytesIO, "made", made)
    monkeypatch.setattr(gossip_frames, "BytesIO", RecordingBytesIO)
    return made


async def test_a_large_reply_is_read_into_its_payload_without_a_copy(
    recording: list[RecordingBytesIO],
) -> None:
    client, server = await _pair()
    payload = random.Random(5).randbytes(gossip_frames.PAYLOAD_MIN + 70_000)
    async with server:
        reader = FrameReader(server)
        assert reader.read_directly()
        async with anyio.create_task_group() as tg, client:
            tg.start_soon(client.send, encode([REPLY, 2**40, payload]) + encode([PING]))
            message = await reader.read_message(max_size=1 << 20)
            assert await reader.read_message(max_size=1 << 20) == [PING]
    assert message == [REPLY, 2**40, payload]
    assert len(recording) == 1 and message[2] is recording[0].value  # the buffer itself


async def test_an_announced_frame_is_not_allocated_before_its_bytes_come(
    recording: list[RecordingBytesIO],
) -> None:
    client, server = await _pair()
    wire = encode([REPLY, 1, bytes(3 * 1024 * 1024)])
    async with server:
        reader = FrameReader(server)
        assert reader.read_directly()
        async with client:
            await client.send(wire[:100_000])  # then nothing more: it closes
        with pytest.raises(ConnectionClosed, match=r"mid-frame \(100000 of"):
            await reader.read_message(max_size=4 * 1024 * 1024)
    assert recording == []  # no 3 MiB buffer for 100 kB sent


async def test_a_payload_cut_short_says_how_much_arrived(
    recording: list[RecordingBytesIO],
) -> None:
    client, server = await _pair()
    wire = encode([REQUEST, 3, bytes(600_000)])
    async with server:
        reader = FrameReader(server)
        assert reader.read_directly()
        async with client:
            await client.send(wire[:500_000])
        with pytest.raises(ConnectionClosed, match=rf"mid-frame \(500000 of {len(wire)} bytes"):
            await reader.read_message(max_size=1 << 20)
    assert len(recording) == 1  # read in place, until the peer closed
