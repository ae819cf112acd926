"""dag-pb: the protobuf codec of UnixFS blocks, byte-exact with go-codec-dagpb.

Schema (https://ipld.io/specs/codecs/dag-pb/spec/)::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

The canonical form writes ``Links`` before ``Data`` (field order 2 then 1), and
a link's fields in order Hash, Name, Tsize. Kubo always writes ``Name`` (empty
for file chunks) and ``Tsize``. The decoder is strict, as the spec asks: it
refuses unknown fields, wrong wire types, out-of-order or repeated fields, links
without a hash, and trailing bytes, so each block has exactly one meaning.
"""

from __future__ import annotations

import attrs

from ...cid import decode_varint, encode_varint, split_cid
from ...errors import DecodeError

__all__ = ["PBLink", "PBNode", "decode_node", "encode_link", "encode_node"]


@attrs.frozen
class PBLink:
    """A link: ``hash`` is a binary CID; ``tsize`` the cumulative size of the child's DAG."""

    hash: bytes
    name: str | None = ""
    tsize: int | None = None


@attrs.frozen
class PBNode:
    """A dag-pb node: links (in order) and optional data bytes."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def encode_link(link: PBLink) -> bytes:
    """The PBLink message bytes (without the enclosing field tag)."""
    out = bytearray()
    out += b"\x0a" + encode_varint(len(link.hash)) + link.hash
    if link.name is not None:
        name = link.name.encode("utf-8")
        out += b"\x12" + encode_varint(len(name)) + name
    if link.tsize is not None:
        out += b"\x18" + encode_varint(link.tsize)
    return bytes(out)


def encode_node(node: PBNode) -> bytes:
    """Canonical dag-pb bytes of ``node``."""
    out = bytearray()
    for link in node.links:
        body = encode_link(link)
        out += b"\x12" + encode_varint(len(body)) + body
    if node.data is not None:
        out += b"\x0a" + encode_varint(len(node.data)) + node.data
    return bytes(out)


def _field(data: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    key, pos = decode_varint(data, pos)
    return key >> 3, key & 7, pos


def _bytes_field(data: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    length, pos = decode_varint(data, pos)
    end = pos + length
    if end > len(data):
        raise ValueError("length-delimited field runs past the end of the block")
    return bytes(data[pos:end]), end


def _decode_link(data: bytes) -> PBLink:
    pos = 0
    last = 0
    cid: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < len(data):
        number, wire, pos = _field(data, pos)
        if number <= last:
            raise ValueError("PBLink fields out of order or repeated")
        last = number
        if number == 1 and wire == 2:
            cid, pos = _bytes_field(data, pos)
            split_cid(cid)
        elif number == 2 and wire == 2:
            raw, pos = _bytes_field(data, pos)
            name = raw.decode("utf-8")
        elif number == 3 and wire == 0:
            tsize, pos = decode_varint(data, pos)
        else:
            raise ValueError(f"unexpected PBLink field {number} (wire type {wire})")
    if cid is None:
        raise ValueError("PBLink without Hash")
    return PBLink(cid, name, tsize)


def decode_node(block: bytes | memoryview) -> PBNode:
    """Decode a dag-pb block strictly.

    Raises:
        DecodeError: the bytes are not canonical dag-pb.
    """
    try:
        pos = 0
        links: list[PBLink] = []
        data: bytes | None = None
        end = len(block)
        while pos < end:
            number, wire, pos = _field(block, pos)
            if wire != 2:
                raise ValueError(f"unexpected wire type {wire} for field {number}")
            raw, pos = _bytes_field(block, pos)
            if number == 2:
                if data is not None:
                    raise ValueError("Links after Data")
                links.append(_decode_link(raw))
            elif number == 1:
                if data is not None:
                    raise ValueError("Data repeated")
                data = raw
            else:
                raise ValueError(f"unexpected PBNode field {number}")
        return PBNode(tuple(links), data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a dag-pb block: {exc}") from None
