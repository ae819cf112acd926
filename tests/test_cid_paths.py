"""The CID module's quick paths (CIDv1 with a one-byte codec and sha2-256) give
exactly what the general parser gives."""

from __future__ import annotations

import hashlib

import hypothesis.strategies as st
from hypothesis import given
from multiformats import CID

from bacalhau.cid import DAG_PB, RAW, block_digest_ok, decode_varint, make_cid, split_cid


def _general(cid: bytes) -> tuple[int, int, bytes]:
    """split_cid's general path, spelled out (varints all the way)."""
    version, pos = decode_varint(cid, 0)
    codec, pos = decode_varint(cid, pos)
    mh = cid[pos:]
    _, p2 = decode_varint(mh, 0)
    length, p3 = decode_varint(mh, p2)
    assert len(mh) - p3 == length
    return version, codec, mh


@given(codec=st.integers(0, 0x7F), digest=st.binary(min_size=32, max_size=32))
def test_the_quick_split_agrees_with_the_general_one(codec: int, digest: bytes) -> None:
    cid = bytes((1, codec, 0x12, 0x20)) + digest
    assert split_cid(cid) == _general(cid)


@given(codec=st.sampled_from([RAW, DAG_PB, 0x71, 0x0129]), data=st.binary(max_size=64))
def test_split_cid_agrees_with_multiformats(codec: int, data: bytes) -> None:
    cid = make_cid(data, codec=codec, version=1)
    decoded = CID.decode(cid)
    assert (decoded.version, decoded.codec.code, bytes(decoded.digest)) == split_cid(cid)


@given(data=st.binary(max_size=2000), flip=st.integers(0, 1999))
def test_block_digest_ok_checks_every_byte(data: bytes, flip: int) -> None:
    for codec, version in ((RAW, 1), (DAG_PB, 1), (DAG_PB, 0)):
        cid = make_cid(data, codec=codec, version=version)
        assert block_digest_ok(cid, data)
        assert block_digest_ok(cid, memoryview(data))
        if data:
            bad = bytearray(data)
            bad[flip % len(data)] ^= 1
            assert not block_digest_ok(cid, bytes(bad))
        assert not block_digest_ok(cid, data + b"x")


def test_a_two_byte_codec_takes_the_general_path() -> None:
    digest = hashlib.sha256(b"x").digest()
    cid = b"\x01\x80\x01\x12\x20" + digest  # codec 0x80 is a two-byte varint
    assert split_cid(cid) == (1, 0x80, b"\x12\x20" + digest)
    assert block_digest_ok(cid, b"x")
