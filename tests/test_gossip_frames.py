"""The gossip frame codec: the by-hand paths write and read exactly what msgpack does."""

from __future__ import annotations

import collections
import itertools
import random
import socket
from typing import Any

import anyio
import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import given, settings

from bacalhau.errors import DecodeError, TransportError, WireError
from bacalhau.transport.base import join_reply, reply_pieces
from bacalhau.transport.errors import ConnectionClosed
from bacalhau.transport.gossip_conn import IOV_MAX, _write_now
from bacalhau.transport.gossip_frames import (
    FAST_MIN,
    HEADER,
    PING,
    PUBLISH,
    REPLY,
    REQUEST,
    FrameReader,
    decode,
    decode_parts,
    encode,
    encode_bin_message,
    encode_reply,
)

IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
SIZES = [0, 1, 255, 256, 2047, 2048, 65535, 65536, 300_000]


def split(data: bytes, rng: random.Random, pieces: int) -> list[memoryview]:
    cuts = sorted(rng.sample(range(1, len(data)), min(pieces, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    return [memoryview(data)[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("req_id", IDS)
@pytest.mark.parametrize("kind", [REQUEST, REPLY])
def test_request_and_reply_frames_equal_msgpack(kind: int, req_id: int, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    frame = encode([kind, req_id, payload])
    assert b"".join(encode_bin_message(kind, req_id, payload)) == frame
    parts = split(frame[HEADER:], random.Random(req_id), 5)
    assert decode_parts(parts) == [kind, req_id, payload]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("first_hop", [True, False])
def test_publish_frames_equal_msgpack(first_hop: bool, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    frame = encode([PUBLISH, payload, first_hop])
    assert b"".join(encode_bin_message(PUBLISH, first_hop, payload)) == frame
    assert decode_parts(split(frame[HEADER:], random.Random(size), 7)) == [
        PUBLISH,
        payload,
        first_hop,
    ]


def test_no_by_hand_encoding_for_other_shapes() -> None:
    with pytest.raises(ValueError, match="no by-hand encoding"):
        encode_bin_message(PING, 1, b"")
    with pytest.raises(ValueError, match="no by-hand encoding"):
        encode_bin_message(REPLY, -1, b"")
    with pytest.raises(ValueError, match="no by-hand encoding"):
        encode_bin_message(PUBLISH, 3, b"")


BIG = b"x" * FAST_MIN


@pytest.mark.parametrize(
    "message",
    [
        [REPLY, -5, BIG],  # a negative id: msgpack's path
        [REPLY, 1, BIG, 7],  # four items
        [REPLY, 1, "text" * 600],  # a str payload
        [PUBLISH, BIG, 1],  # the flag is not a bool
        [PUBLISH, BIG],  # no flag
        [REQUEST, 2**63, BIG],
        [PING, BIG],
    ],
)
def test_other_shapes_decode_as_msgpack_does(message: list[object]) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    assert decode_parts(split(body, random.Random(1), 4)) == decode(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\x93\x09\x01\xc6\x00\x00\x10\x00" + BIG,  # bin header says 4096, 2048 follow
        b"\x93\x09\x01\xc5\x08\x00" + BIG + b"trailing",  # bytes after the last item
        b"\x93\x01\xc5\x08\x00" + BIG + b"\xc3\xc3",  # two flags
        b"\x93\x0e\x01\xc5\x08\x00" + BIG,  # unknown message type 14
        b"\x93\x09\xcd\x01",  # cut inside the request id
        b"\x93\x09\x01\xc4" + BIG,  # a bin header of 0x78 bytes, then more
    ],
)
def test_malformed_frames_are_refused_on_every_path(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(body)
    with pytest.raises(DecodeError):
        decode_parts(split(body, random.Random(2), 3))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(min_size=1, max_size=4000), seed=st.integers(0, 2**32))
def test_any_bytes_decode_the_same_by_parts(body: bytes, seed: int) -> None:
    # hostile bytes: either both paths refuse them or both give the same message
    if len(body) >= 3:  # steer half the inputs to the shapes that take the by-hand path
        body = bytes((0x93, (REQUEST, REPLY, PUBLISH)[seed % 3])) + body[2:]
    try:
        expected: object = decode(body)
    except DecodeError:
        expected = DecodeError
    parts = split(body, random.Random(seed), 3) if len(body) > 1 else [memoryview(body)]
    try:
        got: object = decode_parts(parts)
    except DecodeError:
        got = DecodeError
    assert got == expected


class Trickle(anyio.abc.ByteReceiveStream):
    """Delivers fixed chunks, then end of stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = collections.deque(chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize("chunk", [1, 3, 4096, 1 << 20])
async def test_the_reader_cuts_frames_out_of_any_chunking(chunk: int) -> None:
    big = random.Random(9).randbytes(200_000 if chunk > 3 else 9_000)
    messages: list[list[Any]] = [
        [PING],
        [REPLY, 300, big],
        [PUBLISH, big[:5000], True],
        [REQUEST, 1, b"q"],
    ]
    wire = b"".join(encode(m) for m in messages)
    reader = FrameReader(Trickle([wire[i : i + chunk] for i in range(0, len(wire), chunk)]))
    for message in messages:
        assert await reader.read_message(max_size=1 << 20) == message
    assert reader.buffered == 0 and reader.partial_since is None
    with pytest.raises(ConnectionClosed, match="closed by peer"):
        await reader.read(max_size=100)


@pytest.mark.anyio
async def test_an_oversized_frame_is_refused_before_its_body_is_read() -> None:
    stream = Trickle([(10**6).to_bytes(4, "big"), b"x" * 1000])
    reader = FrameReader(stream)
    with pytest.raises(WireError, match="exceeds the 4096-byte limit"):
        await reader.read(max_size=4096)
    assert list(stream.chunks) == [b"x" * 1000]  # nothing of the body was asked for


@pytest.mark.anyio
async def test_a_frame_cut_short_says_how_much_arrived() -> None:
    wire = encode([REPLY, 1, b"y" * 5000])
    reader = FrameReader(Trickle([wire[:3000]]))
    with pytest.raises(ConnectionClosed, match="mid-frame"):
        await reader.read_message(max_size=1 << 20)
    assert reader.partial_since is not None
    assert reader.check(reader.partial_since + 10, 5.0) is not None


@given(
    req_id=st.integers(0, 2**64 - 1),
    pieces=st.lists(st.binary(max_size=300), max_size=8),
)
def test_a_reply_in_pieces_encodes_as_msgpack_does(req_id: int, pieces: list[bytes]) -> None:
    parts, size = reply_pieces(pieces)
    frame = b"".join(encode_reply(req_id, parts, size))
    assert frame == encode([REPLY, req_id, b"".join(pieces)])
    assert decode_parts([memoryview(frame[HEADER:])]) == [REPLY, req_id, b"".join(pieces)]


def test_reply_pieces_are_checked() -> None:
    assert join_reply([b"a", bytearray(b"b"), memoryview(b"c")]) == b"abc"
    words = memoryview(bytearray(8)).cast("I")
    assert reply_pieces([words]) == ([memoryview(bytes(8))], 8)
    for bad in ("text", [b"a", "b"], [memoryview(bytes(8))[::2]], [b"x" * (4 * 1024 * 1024 + 1)]):
        with pytest.raises(TransportError):
            reply_pieces(bad)  # type: ignore[arg-type]


def test_write_now_writes_what_the_socket_takes_and_returns_the_rest() -> None:
    rng = random.Random(7)
    pieces: list[bytes | bytearray | memoryview] = [
        rng.randbytes(rng.choice((0, 1, 100, 5_000, 70_000))) for _ in range(IOV_MAX + 200)
    ]
    want = b"".join(pieces)
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        a.setblocking(False)
        got = bytearray()
        left = list(pieces)
        partial = 0
        for _ in range(100_000):  # bounded: each round drains the receiving side
            left = _write_now(a.fileno(), left)
            if not left:
                break
            partial += 1
            while True:
                try:
                    got += b.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
        b.settimeout(5)
        while len(got) < len(want):
            got += b.recv(1 << 20)
    assert bytes(got) == want
    assert partial > 0, "the socket's buffer must have filled at least once"
