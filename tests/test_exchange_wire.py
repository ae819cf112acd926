"""The want reply read without copies gives what msgpack gives, or steps aside."""

from __future__ import annotations

import os
from pathlib import Path

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import given, settings

from bacalhau.cid import RAW, make_cid
from bacalhau.errors import DecodeError
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.exchange import BlockService
from bacalhau.storage.ipfs.exchange_wire import pack_want_reply, parse_want_reply
from bacalhau.transport.services import ProtocolHandler


@pytest.mark.parametrize("count", [0, 1, 15, 16, 40])
@pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536, 300_000])
def test_our_layout_parses_to_what_msgpack_decodes(count: int, size: int) -> None:
    blocks = [(os.urandom(34), os.urandom(size)) for _ in range(count)]
    missing = [os.urandom(36) for _ in range(count % 17)]
    reply = pack_want_reply(blocks, missing)
    parsed = parse_want_reply(reply, max_items=256)
    assert parsed is not None
    got, got_missing = parsed
    assert [(c, bytes(v)) for c, v in got] == blocks
    assert all(isinstance(v, memoryview) and v.obj is reply for _, v in got)  # no copies
    assert got_missing == missing
    decoded = msgpack.unpackb(reply)
    assert decoded == {"blocks": [list(b) for b in blocks], "missing": missing}


@pytest.mark.parametrize(
    "value",
    [
        {"missing": [], "blocks": []},  # keys in another order
        {"blocks": [[b"c", "text"]], "missing": []},  # a str where bytes belong
        {"blocks": [[b"c", b"d", b"e"]], "missing": []},
        {"error": "no"},
        [True],
        {"blocks": [], "missing": [], "extra": 1},
    ],
)
def test_other_layouts_are_left_to_msgpack(value: object) -> None:
    assert parse_want_reply(msgpack.packb(value, use_bin_type=True), max_items=256) is None


def test_too_many_items_and_trailing_bytes_are_left_to_msgpack() -> None:
    reply = pack_want_reply([(b"c%d" % i, b"x") for i in range(20)], [])
    assert parse_want_reply(reply, max_items=19) is None
    assert parse_want_reply(reply + b"\x00", max_items=256) is None
    assert parse_want_reply(reply[:-1], max_items=256) is None


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=200), cut=st.integers(0, 400))
def test_hostile_bytes_never_escape_as_an_exception(noise: bytes, cut: int) -> None:
    reply = pack_want_reply([(b"cid", b"block-bytes" * 10)], [b"gone"])
    for candidate in (noise, reply[:cut] + noise, b"\x82\xa6blocks" + noise):
        parsed = parse_want_reply(candidate, max_items=256)
        if parsed is not None:  # only the exact layout parses, and then msgpack agrees
            decoded = msgpack.unpackb(candidate)
            assert [[c, bytes(v)] for c, v in parsed[0]] == decoded["blocks"]
            assert parsed[1] == decoded["missing"]


class NoPeers:
    node_id = "alone"

    def peers(self) -> frozenset[str]:
        return frozenset()

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float = 10.0
    ) -> bytes:
        raise AssertionError("no requests here")

    def register_protocol(self, protocol: str, handler: ProtocolHandler) -> None:
        pass


@pytest.mark.parametrize(
    "reply",
    [
        {"blocks": [[[1], b"x"]], "missing": []},  # an unhashable CID
        {"blocks": [[b"not asked for", b"x"]], "missing": []},
        {"blocks": "nope", "missing": []},
    ],
)
def test_a_malformed_reply_is_a_decode_error(tmp_path: Path, reply: object) -> None:
    service = BlockService(BlockStore(tmp_path / "s"), NoPeers())
    cid = make_cid(b"x", codec=RAW, version=1)
    with pytest.raises(DecodeError):
        service._absorb(msgpack.packb(reply, use_bin_type=True), [cid], False)
