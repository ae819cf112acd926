"""HAMT-sharded UnixFS directories, as Kubo builds them for large directories.

Kubo keeps a directory as one plain ``Directory`` node while its estimated size
(the sum over its links of name bytes plus CID bytes) is below 256 KiB; from
there on it stores a hash array mapped trie of ``HAMTShard`` nodes:

* each name is hashed with murmur3-x64-64 (``h1`` of murmur3 x64 128, seed 0);
  each level of the trie consumes one byte of it, most significant first, so a
  shard has 256 slots (``fanout``);
* a slot holding one entry is a link named ``%02X`` + entry name; a slot holding
  several becomes a sub-shard, a link named ``%02X``;
* a shard's UnixFS data is ``Type=HAMTShard, Data=bitfield, hashType=0x22,
  fanout=256`` where the bitfield marks used slots (big-endian, leading zero
  bytes dropped), and its links are in slot order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...errors import StorageError
from .dagpb import PBLink, PBNode, encode_node
from .unixfs import DataType, UnixFSData, encode_unixfs

__all__ = ["FANOUT", "SHARDING_THRESHOLD", "build_shards", "murmur3_64", "needs_sharding"]

FANOUT = 256
HASH_MURMUR3_X64_64 = 0x22
SHARDING_THRESHOLD = 256 * 1024
"""Kubo's ``HAMTShardingSize``: directories whose links estimate reaches this are sharded."""

_M = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64 128 of ``data``: ``(h1, h2)``."""
    h1 = h2 = seed
    n = len(data) // 16
    for i in range(n):
        k1 = int.from_bytes(data[16 * i : 16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8 : 16 * i + 16], "little")
        k1 = (_rotl((k1 * _C1) & _M, 31) * _C2) & _M
        h1 ^= k1
        h1 = (((_rotl(h1, 27) + h2) & _M) * 5 + 0x52DCE729) & _M
        k2 = (_rotl((k2 * _C2) & _M, 33) * _C1) & _M
        h2 ^= k2
        h2 = (((_rotl(h2, 31) + h1) & _M) * 5 + 0x38495AB5) & _M
    tail = data[16 * n :]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= (_rotl((k2 * _C2) & _M, 33) * _C1) & _M
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= (_rotl((k1 * _C1) & _M, 31) * _C2) & _M
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    return h1, h2


def murmur3_64(data: bytes) -> bytes:
    """The HAMT's hash of a name: ``h1`` of murmur3 x64 128, big-endian; the trie
    consumes it one byte per level, most significant first."""
    return murmur3_x64_128(data)[0].to_bytes(8, "big")


def needs_sharding(
    entries: Sequence[tuple[str, bytes]], threshold: int = SHARDING_THRESHOLD
) -> bool:
    """Kubo's ``links`` size estimate (name bytes + CID bytes, summed over the links)
    reaches ``threshold`` (Kubo shards at exactly 256 KiB too)."""
    size = sum(len(name.encode("utf-8", "surrogateescape")) + len(cid) for name, cid in entries)
    return size >= threshold


def build_shards(
    entries: Sequence[tuple[str, bytes, int]], make_cid: Callable[[bytes], bytes]
) -> tuple[list[tuple[bytes, bytes]], bytes, int]:
    """Build the shard nodes for ``entries`` ``(name, cid, tsize)``.

    Args:
        make_cid: ``(block) -> cid`` for shard nodes (dag-pb, the import's CID version).

    Returns:
        (every shard block as ``(cid, bytes)``, the root shard's CID, its tsize).

    Raises:
        StorageError: two names share all 64 hash bits (Kubo refuses these too).
    """
    blocks: list[tuple[bytes, bytes]] = []
    hashed = [(murmur3_64(n.encode("utf-8", "surrogateescape")), n, c, t) for n, c, t in entries]

    def shard(items: list[tuple[bytes, str, bytes, int]], depth: int) -> tuple[bytes, int]:
        if depth >= 8:
            raise StorageError("directory entries collide across all 64 hash bits")
        slots: dict[int, list[tuple[bytes, str, bytes, int]]] = {}
        for item in items:
            slots.setdefault(item[0][depth], []).append(item)
        links = []
        bitfield = 0
        for slot in sorted(slots):
            bitfield |= 1 << slot
            group = slots[slot]
            if len(group) == 1:
                _, name, cid, tsize = group[0]
                links.append(PBLink(cid, f"{slot:02X}{name}", tsize))
            else:
                cid, tsize = shard(group, depth + 1)
                links.append(PBLink(cid, f"{slot:02X}", tsize))
        field = bitfield.to_bytes(FANOUT // 8, "big").lstrip(b"\0")
        data = UnixFSData(
            DataType.HAMT_SHARD, data=field, hash_type=HASH_MURMUR3_X64_64, fanout=FANOUT
        )
        block = encode_node(PBNode(tuple(links), encode_unixfs(data)))
        cid = make_cid(block)
        blocks.append((cid, block))
        return cid, len(block) + sum(link.tsize or 0 for link in links)

    root, tsize = shard(hashed, 0)
    return blocks, root, tsize
