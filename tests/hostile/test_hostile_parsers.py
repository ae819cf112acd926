"""Hostile bytes against the hand-written parsers that landed with the copy-saving work.

Each parser here reads bytes from a peer, a server or a job: gossip frames (header in
front of the payload), the block exchange's want reply, the push CAR parser behind
``Client.download``, and the live-log codec (a peer's columnar reply and the NDJSON a
client reads). The contract in every case: the same answer as the plain msgpack/JSON
path or a clear :class:`~bacalhau.errors.DecodeError`, never another exception.
Hypothesis runs derandomized, so every run tries the same inputs.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

import anyio
import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import example, given, settings

from bacalhau.cid import RAW, make_cid
from bacalhau.errors import CorruptBlock, DecodeError, StorageError, WireError
from bacalhau.live.codec import decode_reply
from bacalhau.live.node import LogChunkLive
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.car_stream import CarParser, export_car_stream
from bacalhau.storage.ipfs.exchange_wire import pack_want_reply, parse_want_reply
from bacalhau.transport import gossip_frames as gf

FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- gossip frames: the by-hand path must agree with msgpack on near-miss headers ---

_ARG_TAGS = [
    b"",
    b"\x05",
    b"\xcc\x07",
    b"\xcd\x00\x07",
    b"\xce\x00\x00\x00\x07",
    b"\xcf" + bytes(8),
]


@st.composite
def _near_fast_frames(draw: st.DrawFn) -> bytes:
    """Frames shaped like [PUBLISH|REQUEST|REPLY, arg, bin] whose lengths may lie."""
    kind: int = draw(st.sampled_from([gf.PUBLISH, gf.REQUEST, gf.REPLY, gf.PING, 0x7F]))
    arg: bytes = draw(st.sampled_from(_ARG_TAGS)) if kind != gf.PUBLISH else b""
    width: int = draw(st.sampled_from([1, 2, 4]))
    payload: bytes = draw(st.binary(min_size=gf.FAST_MIN, max_size=gf.FAST_MIN + 64))
    claimed: int = len(payload) + draw(st.integers(-3, 3))
    claimed = max(0, min(claimed, 2 ** (8 * width) - 1))
    tag = {1: b"\xc4", 2: b"\xc5", 4: b"\xc6"}[width]
    tail: bytes = draw(st.sampled_from([b"", b"\xc3", b"\xc2", b"\x00", b"\xc3\xc3"]))
    return bytes((0x93, kind)) + arg + tag + claimed.to_bytes(width, "big") + payload + tail


@FAST
@given(frame=_near_fast_frames(), cuts=st.lists(st.integers(1, 4000), max_size=4))
def test_near_miss_fast_frames_decode_as_msgpack_does(frame: bytes, cuts: list[int]) -> None:
    try:
        expected: Any = gf.decode(frame)
    except DecodeError:
        expected = DecodeError
    points = sorted({c for c in cuts if c < len(frame)})
    bounds = [0, *points, len(frame)]
    parts = [memoryview(frame[a:b]) for a, b in itertools.pairwise(bounds)]
    try:
        got: Any = gf.decode_parts(parts)
    except DecodeError:
        got = DecodeError
    assert got == expected


class _Chunks:
    """A byte stream that hands out fixed chunks, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ((2**32 - 1).to_bytes(4, "big"), "exceeds"),  # length prefix far over the limit
        ((1025).to_bytes(4, "big") + b"x" * 2000, "exceeds"),  # one byte over, data present
        ((100).to_bytes(4, "big") + b"x" * 10, "mid-frame"),  # prefix larger than the data
        (b"\x00\x00", "mid-frame"),  # truncated prefix
    ],
)
def test_frame_reader_refuses_lying_prefixes(data: bytes, error: str) -> None:
    async def main() -> None:
        reader = gf.FrameReader(_Chunks([data]))  # type: ignore[arg-type]
        with pytest.raises(WireError, match=error):
            await reader.read_message(max_size=1024)

    anyio.run(main)


def test_frame_reader_refuses_nested_msgpack_as_decode_error() -> None:
    body = b"\x91" * 5000 + b"\x01"  # 5,000 nested arrays: past msgpack's stack limit

    async def main() -> None:
        reader = gf.FrameReader(_Chunks([len(body).to_bytes(4, "big") + body]))  # type: ignore[arg-type]
        with pytest.raises(DecodeError):
            await reader.read_message(max_size=1 << 20)

    anyio.run(main)


# --- want replies: lying counts and lengths ---


@pytest.mark.parametrize(
    "reply",
    [
        b"\x82\xa6blocks\xdc\xff\xff",  # 65,535 blocks announced, none there
        b"\x82\xa6blocks\x91\x92\xc6\xff\xff\xff\xff",  # a CID longer than the reply
        b"\x82\xa6blocks\x91\x92\xc4\x01c\xc5\x00\x10xx",  # a block longer than the reply
        b"\x82\xa6blocks\x90\xa7missing\xdc\x00\x05",  # missing count larger than the data
        b"\x82\xa6blocks\x90\xa7missing",  # no missing array
    ],
)
def test_want_reply_with_lying_lengths_steps_aside(reply: bytes) -> None:
    assert parse_want_reply(reply, max_items=10_000) is None
    with pytest.raises((ValueError, msgpack.ExtraData, msgpack.FormatError)):
        msgpack.unpackb(reply)


@FAST
@given(
    blocks=st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=300)), max_size=5),
    flip=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_want_reply_with_one_byte_changed_agrees_with_msgpack(
    blocks: list[tuple[bytes, bytes]], flip: int, value: int
) -> None:
    reply = bytearray(pack_want_reply(blocks, [b"gone"]))
    reply[flip % len(reply)] = value
    parsed = parse_want_reply(bytes(reply), max_items=256)
    if parsed is None:
        return
    decoded = msgpack.unpackb(bytes(reply))
    assert decoded == {
        "blocks": [[c, bytes(v)] for c, v in parsed[0]],
        "missing": parsed[1],
    }


# --- the push CAR parser ---


def _header(roots: list[bytes]) -> bytes:
    # dag-cbor {"roots": [cid...], "version": 1}
    body = b"\xa2\x65roots" + bytes((0x80 | len(roots),))
    for root in roots:
        raw = b"\x00" + root
        body += b"\xd8\x2a" + b"\x58" + bytes((len(raw),)) + raw
    body += b"\x67version\x01"
    return _uvarint(len(body)) + body


def _section(cid: bytes, block: bytes) -> bytes:
    return _uvarint(len(cid) + len(block)) + cid + block


BLOCK = b"hello, hostile world"
CID = make_cid(BLOCK, codec=RAW, version=1)
GOOD_CAR = _header([CID]) + _section(CID, BLOCK)


def _feed_all(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    parser = CarParser()
    out: list[tuple[bytes, bytes]] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    parser.close()
    return out


def test_car_parser_reads_the_good_archive() -> None:
    assert _feed_all([GOOD_CAR]) == [(CID, BLOCK)]
    assert _feed_all([GOOD_CAR[i : i + 1] for i in range(len(GOOD_CAR))]) == [(CID, BLOCK)]


@pytest.mark.parametrize(
    ("car", "error"),
    [
        (b"", "before its header"),
        (_uvarint(2 * 1024 * 1024) + b"\xa0", "oversized header"),  # header length > limit
        (b"\x00", "missing or oversized header"),  # zero-length header
        (b"\xff" * 11, "too long"),  # an 11-byte varint
        (_header([CID]) + _uvarint(9 * 1024 * 1024), "limit"),  # section length over limit
        (_header([CID]) + _uvarint(100) + CID + BLOCK, "truncated"),  # longer than the data
        (_header([CID]) + _uvarint(3) + b"\x01\x55\x12", "valid CID"),  # CID cut short
        (_header([CID]) + _section(b"\x01\x55\x12\x01\x00", b""), "valid CID"),  # 1-byte sha256
        (_header([CID]) + _uvarint(0), "limit"),  # an empty section
        (b"\x0a\xa1\x67version\x02", "CARv2"),  # the CARv2 pragma: a file format
        (_uvarint(3) + b"\x81" * 3, "not a CAR header"),  # nested, truncated
        (_uvarint(20) + b"\x81" * 20, "not a CAR header"),  # nested too deep
    ],
)
def test_car_parser_refuses_malformed_streams(car: bytes, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        _feed_all([car])


@FAST
@given(noise=st.binary(max_size=300), cut=st.integers(0, 200), step=st.integers(1, 64))
@example(noise=b"\xff" * 5, cut=len(GOOD_CAR), step=1)
def test_car_parser_raises_only_decode_errors_and_ignores_chunking(
    noise: bytes, cut: int, step: int
) -> None:
    for stream in (noise, GOOD_CAR[:cut] + noise, _header([CID]) + noise):
        try:
            whole: Any = _feed_all([stream])
        except DecodeError:
            whole = DecodeError
        try:
            pieces: Any = _feed_all([stream[i : i + step] for i in range(0, len(stream), step)])
        except DecodeError:
            pieces = DecodeError
        assert whole == pieces


async def _chunks(*chunks: bytes) -> Any:
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
async def test_a_cid_that_does_not_match_its_block_is_refused(tmp_path: Path) -> None:
    liar = _header([CID]) + _section(CID, b"other bytes")
    with pytest.raises(CorruptBlock):
        await export_car_stream(
            _chunks(liar), CID, tmp_path / "out", scratch=BlockStore(tmp_path / "s")
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.anyio
async def test_an_archive_without_the_asked_block_is_refused(tmp_path: Path) -> None:
    other = make_cid(b"other", codec=RAW, version=1)
    with pytest.raises((StorageError, DecodeError)):
        await export_car_stream(
            _chunks(_header([other]) + _section(other, b"other")),
            CID,
            tmp_path / "out",
            scratch=BlockStore(tmp_path / "s"),
        )


# --- live logs: a peer's columnar reply and the NDJSON a client reads ---


def _reply(**over: Any) -> bytes:
    data: dict[str, Any] = {
        "found": True,
        "first": 0,
        "texts": ["a", "b"],
        "streams": b"\x00\x01",
        "times": struct.pack("<2d", 1.0, 2.0),
        "partial": b"\x00\x00",
        "next": 2,
        "skipped": 0,
        "closed": False,
    }
    data.update(over)
    raw: bytes = msgpack.packb(data, use_bin_type=True)
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        _reply(texts=["a", 1]),
        _reply(streams=b"\x00\x02"),
        _reply(streams="\x00\x01"),
        _reply(partial=b"\x00"),
        _reply(times=struct.pack("<2d", 1.0, float("nan"))),
        _reply(times=b"\x00" * 15),
        _reply(next=3),
        _reply(first=-1, next=1),
        _reply(closed=1),
        _reply(texts={"a": 1}),
        _reply(skipped=[1]),
        msgpack.packb({"found": True}),
        msgpack.packb([1, 2]),
        b"\x91" * 5000,
        b"\xc1",
    ],
)
def test_log_reply_from_a_peer_is_checked(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_reply(raw)


_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["stdout", "stderr", "x"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["node_id", "lines", "end"]), st.integers(0, 3), max_size=2),
)


@pytest.mark.parametrize(
    "row",
    [
        [1, [], "t", 1.0, False],  # an unhashable stream name
        [1, {}, "t", 1.0, False],
        [1, "stdout", "t", 1.0, 0],
        [1, "stdout", "t", "1", False],
        [True, "stdout", "t", 1.0, False],
    ],
)
def test_log_line_with_wrong_types_is_a_decode_error(row: list[Any]) -> None:
    line = json.dumps({"node_id": "n", "lines": [row]})
    with pytest.raises(DecodeError, match="lines"):
        LogChunkLive.parse(line)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(value=_JSON, row=st.lists(_JSON, min_size=5, max_size=5))
def test_any_json_log_line_parses_or_is_a_decode_error(value: Any, row: list[Any]) -> None:
    for doc in (value, {"node_id": "n", "lines": [row]}, {"node_id": "n", "lines": value}):
        try:
            LogChunkLive.parse(json.dumps(doc))
        except DecodeError:
            pass
    with pytest.raises(DecodeError):
        LogChunkLive.parse(b"\xff\xfe not json")


# --- names in a streamed DAG (Client.download): '..', '/', links ---


def _dir_node(entries: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    from bacalhau.cid import DAG_PB
    from bacalhau.storage.ipfs.dagpb import PBLink, PBNode, encode_node
    from bacalhau.storage.ipfs.unixfs import DataType, UnixFSData, encode_unixfs

    links = tuple(PBLink(hash=cid, name=name, tsize=1) for name, cid in sorted(entries))
    block = encode_node(
        PBNode(links=links, data=encode_unixfs(UnixFSData(type=DataType.DIRECTORY)))
    )
    return make_cid(block, codec=DAG_PB, version=1), block


def _symlink_node(target: str) -> tuple[bytes, bytes]:
    from bacalhau.cid import DAG_PB
    from bacalhau.storage.ipfs.dagpb import PBNode, encode_node
    from bacalhau.storage.ipfs.unixfs import DataType, UnixFSData, encode_unixfs

    data = encode_unixfs(UnixFSData(type=DataType.SYMLINK, data=target.encode()))
    block = encode_node(PBNode(data=data))
    return make_cid(block, codec=DAG_PB, version=1), block


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["..", "../escape", "a/../../escape", "/abs", ".", "", "a\x00b"])
async def test_a_streamed_dag_cannot_name_a_path_outside_dest(tmp_path: Path, name: str) -> None:
    leaf = b"attacker bytes"
    leaf_cid = make_cid(leaf, codec=RAW, version=1)
    root, block = _dir_node([(name, leaf_cid)])
    car = _header([root]) + _section(root, block) + _section(leaf_cid, leaf)
    dest = tmp_path / "box" / "out"
    dest.parent.mkdir()
    with pytest.raises((StorageError, DecodeError)):
        await export_car_stream(_chunks(car), root, dest, scratch=BlockStore(tmp_path / "s"))
    box = tmp_path / "box"  # the scratch store (tmp_path / "s") holds the block itself
    written = [p for p in box.rglob("*") if p.is_file() and p.read_bytes() == leaf]
    assert [p for p in written if dest not in p.parents] == []


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["/etc/passwd", "../../../etc", "../outside"])
async def test_a_streamed_symlink_cannot_point_outside_dest(tmp_path: Path, target: str) -> None:
    link_cid, link_block = _symlink_node(target)
    root, block = _dir_node([("evil", link_cid)])
    car = _header([root]) + _section(root, block) + _section(link_cid, link_block)
    dest = tmp_path / "out"
    try:
        await export_car_stream(_chunks(car), root, dest, scratch=BlockStore(tmp_path / "s"))
    except (StorageError, DecodeError):
        return  # refused: fine
    evil = dest / "evil"
    if evil.is_symlink():  # kept: it must not resolve outside dest
        assert dest.resolve() in (evil.resolve()).parents or evil.resolve() == dest.resolve()
