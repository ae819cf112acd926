"""UnixFS v1: the ``Data`` message inside dag-pb nodes, byte-exact with Kubo.

Schema (https://specs.ipfs.tech/unixfs/)::

    message Data {
      enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
      required DataType Type = 1;  optional bytes Data = 2;  optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4;  optional uint64 hashType = 5;  optional uint64 fanout = 6;
      optional uint32 mode = 7;  optional UnixTime mtime = 8;
    }

Kubo (proto2, gogo) writes fields in number order and ``blocksizes`` unpacked
(one ``0x20`` tag per entry). A file leaf is ``Type=File, Data=chunk,
filesize=len(chunk)``; an empty file ``Type=File, filesize=0``; an inner file
node ``Type=File, filesize=sum, blocksizes=[...]``; a directory ``Type=Directory``.
"""

from __future__ import annotations

import enum
import functools

import attrs

from ...cid import decode_varint, encode_varint
from ...errors import DecodeError

__all__ = [
    "DataType",
    "UnixFSData",
    "decode_unixfs",
    "encode_unixfs",
    "file_leaf_parts",
]


class DataType(enum.IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@attrs.frozen
class UnixFSData:
    """A decoded UnixFS ``Data`` message."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None


def encode_unixfs(value: UnixFSData) -> bytes:
    """Encode like go-unixfs: fields in number order, blocksizes unpacked."""
    out = bytearray(b"\x08" + encode_varint(int(value.type)))
    if value.data is not None:
        out += b"\x12" + encode_varint(len(value.data)) + value.data
    if value.filesize is not None:
        out += b"\x18" + encode_varint(value.filesize)
    for size in value.blocksizes:
        out += b"\x20" + encode_varint(size)
    if value.hash_type is not None:
        out += b"\x28" + encode_varint(value.hash_type)
    if value.fanout is not None:
        out += b"\x30" + encode_varint(value.fanout)
    if value.mode is not None:
        out += b"\x38" + encode_varint(value.mode)
    if value.mtime is not None:
        seconds, nanos = value.mtime
        body = b"\x08" + encode_varint(seconds & 0xFFFFFFFFFFFFFFFF)
        if nanos is not None:
            body += b"\x15" + nanos.to_bytes(4, "little")
        out += b"\x42" + encode_varint(len(body)) + body
    return bytes(out)


@functools.lru_cache(maxsize=64)
def file_leaf_parts(chunk_len: int) -> tuple[bytes, bytes]:
    """``(head, tail)`` such that ``head + chunk + tail`` is the dag-pb leaf block of
    a non-empty chunk (PBNode{Data: UnixFS{File, chunk, filesize}}).

    Lets the importer hash and write a leaf without copying the chunk. Cached: a
    file's chunks all have one length but the last.
    """
    size = encode_varint(chunk_len)
    inner_head = b"\x08\x02\x12" + size
    tail = b"\x18" + size
    inner_len = len(inner_head) + chunk_len + len(tail)
    return b"\x0a" + encode_varint(inner_len) + inner_head, tail


def _skip(data: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return decode_varint(data, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        length, pos = decode_varint(data, pos)
        return pos + length
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire}")


def _decode_mtime(data: bytes) -> tuple[int, int | None]:
    pos = 0
    seconds = 0
    nanos: int | None = None
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 1 and wire == 0:
            raw, pos = decode_varint(data, pos)
            seconds = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif number == 2 and wire == 5:
            nanos = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            pos = _skip(data, pos, wire)
    return seconds, nanos


def decode_unixfs(data: bytes) -> UnixFSData:
    """Decode a UnixFS ``Data`` message (any field order, packed or unpacked blocksizes).

    Raises:
        DecodeError: malformed, or without a known ``Type``.
    """
    try:
        pos = 0
        fields: dict[str, object] = {}
        blocksizes: list[int] = []
        type_: int | None = None
        while pos < len(data):
            key, pos = decode_varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 1 and wire == 0:
                type_, pos = decode_varint(data, pos)
            elif number == 2 and wire == 2:
                length, pos = decode_varint(data, pos)
                fields["data"] = data[pos : pos + length]
                pos += length
            elif number in (3, 5, 6, 7) and wire == 0:
                value, pos = decode_varint(data, pos)
                name = {3: "filesize", 5: "hash_type", 6: "fanout", 7: "mode"}[number]
                fields[name] = value
            elif number == 4 and wire == 0:
                value, pos = decode_varint(data, pos)
                blocksizes.append(value)
            elif number == 4 and wire == 2:
                length, pos = decode_varint(data, pos)
                end = pos + length
                while pos < end:
                    value, pos = decode_varint(data, pos)
                    blocksizes.append(value)
            elif number == 8 and wire == 2:
                length, pos = decode_varint(data, pos)
                fields["mtime"] = _decode_mtime(data[pos : pos + length])
                pos += length
            else:
                pos = _skip(data, pos, wire)
            if pos > len(data):
                raise ValueError("field runs past the end of the message")
        if type_ is None:
            raise ValueError("UnixFS Data without Type")
        try:
            kind = DataType(type_)
        except ValueError:
            raise ValueError(f"unknown UnixFS type {type_}") from None
        return UnixFSData(kind, blocksizes=tuple(blocksizes), **fields)  # type: ignore[arg-type]
    except ValueError as exc:
        raise DecodeError(f"not a UnixFS node: {exc}") from None
