"""CIDs: parsing at the edges and fast helpers for the data layer (one module for both).

Inside the data layer a CID is its binary form (:class:`bytes`): for CIDv0 the
34-byte sha2-256 multihash, for CIDv1 ``0x01 || codec || multihash``. The
``multiformats`` package parses and validates CIDs at the edges (user input);
it is too slow for the hot path (hundreds of microseconds per CID), so the
common encodings (base58btc CIDv0, base32 CIDv1) are done here by hand.

Every public function that takes a CID accepts a string, binary CID bytes or a
:class:`multiformats.CID`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from multiformats import CID

from .errors import CorruptBlock, StorageError, ValidationError

__all__ = [
    "DAG_PB",
    "IDENTITY",
    "RAW",
    "SHA2_256",
    "AnyCid",
    "block_digest_ok",
    "cid_codec",
    "cid_from_digest",
    "cid_multihash",
    "cid_str",
    "cid_version",
    "decode_varint",
    "encode_varint",
    "identity_data",
    "make_cid",
    "parse_cid",
    "split_cid",
    "to_cid",
    "validate_cid",
    "verify_block",
]

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
IDENTITY = 0x00

AnyCid = Any
"""A CID as ``str``, binary ``bytes`` or ``multiformats.CID``."""

_B58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}

MAX_CID_BYTES = 256
"""Longest binary CID accepted (a sha2-512 CIDv1 is 68 bytes)."""

_HASHERS: dict[int, Callable[[], Any]] = {
    0x12: hashlib.sha256,
    0x13: hashlib.sha512,
    0x16: hashlib.sha3_256,
    0x14: hashlib.sha3_512,
    0xB220: lambda: hashlib.blake2b(digest_size=32),
}


DIGEST_SIZES: dict[int, int] = {0x12: 32, 0x13: 64, 0x16: 32, 0x14: 64, 0xB220: 32}
"""Full digest length of every hash function this node computes: a CID whose multihash is
shorter (truncated) would be "verified" without integrity, so it is refused when parsed."""

MAX_IDENTITY_BYTES = 128
"""Largest inlined (identity-hash) block a CID may carry."""


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as used by protobuf, multiformats and CAR."""
    if value < 0:
        raise ValueError("varint must not be negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode an unsigned varint at ``pos``; return ``(value, next_pos)``.

    Raises:
        ValueError: truncated, longer than 9 bytes, or not minimally encoded.
    """
    value = 0
    shift = 0
    start = pos
    end = len(data)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise ValueError("varint is not minimally encoded")
            return value, pos
        shift += 7
        if shift >= 63:
            raise ValueError("varint too long")


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def _b58decode(text: str) -> bytes:
    n = 0
    raw = text.encode("ascii")
    for c in raw:
        n = n * 58 + _B58_INDEX[c]
    pad = len(raw) - len(raw.lstrip(b"1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def split_cid(cid: bytes) -> tuple[int, int, bytes]:
    """``(version, codec, multihash)`` of a binary CID.

    Raises:
        ValueError: not a well-formed binary CID.
    """
    if len(cid) == 34 and cid[0] == SHA2_256 and cid[1] == 32:
        return 0, DAG_PB, cid
    if len(cid) == 36 and cid[0] == 1 and cid[1] < 0x80 and cid[2] == SHA2_256 and cid[3] == 32:
        return 1, cid[1], cid[2:]  # the usual CIDv1 (one-byte codec, sha2-256), read at once
    version, pos = decode_varint(cid, 0)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    codec, pos = decode_varint(cid, pos)
    mh = cid[pos:]
    code, p2 = decode_varint(mh, 0)
    length, p3 = decode_varint(mh, p2)
    if len(mh) - p3 != length:
        raise ValueError("multihash length does not match its digest")
    expected = DIGEST_SIZES.get(code)
    if expected is not None and length != expected:
        raise ValueError(
            f"a 0x{code:x} multihash has a {expected}-byte digest, this one has {length}"
        )
    if code == IDENTITY and length > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity multihash of {length} bytes (at most {MAX_IDENTITY_BYTES})")
    return 1, codec, mh


def to_cid(cid: AnyCid) -> bytes:
    """Binary form of a CID given as str, bytes or ``multiformats.CID``.

    Raises:
        ValidationError: not a CID.
    """
    if isinstance(cid, bytes):
        raw = cid
    elif isinstance(cid, str):
        raw = _parse_str(cid)
    elif hasattr(cid, "version") and hasattr(cid, "codec"):
        raw = bytes(cid)
    else:
        raise ValidationError(f"not a CID: {cid!r}", field="cid")
    if not 2 <= len(raw) <= MAX_CID_BYTES:
        raise ValidationError(f"not a CID: {len(raw)} bytes", field="cid")
    try:
        split_cid(raw)
    except ValueError as exc:
        raise ValidationError(f"not a CID: {exc}", field="cid") from None
    return raw


def _parse_str(text: str) -> bytes:
    if not 2 <= len(text) <= 512:
        raise ValidationError(f"not a CID: {text!r}", field="cid")
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = _b58decode(text)
            if len(raw) == 34:
                return raw
        elif text[0] == "b" and text[1:].islower():
            body = text[1:].upper()
            return base64.b32decode(body + "=" * (-len(body) % 8))
    except (KeyError, ValueError):
        pass
    return bytes(parse_cid(text))


def cid_str(cid: AnyCid) -> str:
    """The canonical string: base58btc for CIDv0, base32 (``b...``) for CIDv1."""
    raw = cid if isinstance(cid, bytes) else to_cid(cid)
    if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
        return _b58encode(raw)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def cid_version(cid: bytes) -> int:
    return split_cid(cid)[0]


def cid_codec(cid: bytes) -> int:
    return split_cid(cid)[1]


def cid_multihash(cid: bytes) -> bytes:
    return split_cid(cid)[2]


def make_cid(data: bytes, *, codec: int = DAG_PB, version: int = 0) -> bytes:
    """The sha2-256 CID of a block."""
    return cid_from_digest(hashlib.sha256(data).digest(), codec=codec, version=version)


def cid_from_digest(digest: bytes, *, codec: int, version: int) -> bytes:
    """The CID for a sha2-256 ``digest`` of a block with ``codec``."""
    mh = b"\x12\x20" + digest
    if version == 0:
        if codec != DAG_PB:
            raise ValidationError("CIDv0 can only name dag-pb blocks; use cid_version=1")
        return mh
    return b"\x01" + encode_varint(codec) + mh


def block_digest_ok(cid: bytes, data: bytes | memoryview) -> bool:
    """True if ``data`` hashes to ``cid``.

    Raises:
        StorageError: the CID uses a hash function this node cannot compute.
    """
    _, _, mh = split_cid(cid)
    if len(mh) == 34 and mh[0] == SHA2_256 and mh[1] == 32:  # sha2-256, the usual one
        return hashlib.sha256(data).digest() == mh[2:]
    code, pos = decode_varint(mh, 0)
    length, pos = decode_varint(mh, pos)
    digest = mh[pos:]
    if code == IDENTITY:
        return bytes(data) == digest
    factory = _HASHERS.get(code)
    if factory is None:
        raise StorageError(f"block {cid_str(cid)} uses unsupported hash function 0x{code:x}")
    if length != DIGEST_SIZES.get(code):  # never compare a truncated digest
        return False
    hasher = factory()
    hasher.update(data)
    return bool(hasher.digest() == digest)


def verify_block(cid: bytes, data: bytes | memoryview) -> None:
    """Raise :class:`CorruptBlock` unless ``data`` hashes to ``cid``."""
    if not block_digest_ok(cid, data):
        raise CorruptBlock(f"block {cid_str(cid)}: bytes do not match the CID's hash")


def identity_data(cid: bytes) -> bytes | None:
    """The inlined bytes of an identity-hash CID, else None."""
    _, _, mh = split_cid(cid)
    if mh[0] != IDENTITY:
        return None
    length, pos = decode_varint(mh, 1)
    return mh[pos : pos + length]


def parse_cid(text: str, *, field: str = "cid") -> CID:
    """Decode a CIDv0 (``Qm...``) or CIDv1 string, or raise a ValidationError naming ``field``."""
    if not isinstance(text, str) or not 2 <= len(text) <= 512:
        raise ValidationError(f"not a CID: {text!r}", field=field)
    try:
        return CID.decode(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"not a CID: {text!r} ({exc})", field=field) from None


def validate_cid(text: str, *, field: str = "cid") -> None:
    parse_cid(text, field=field)
