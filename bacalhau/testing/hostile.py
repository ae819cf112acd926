"""Hostile DAGs, for attacking a node's data layer in tests.

Each builder writes a small DAG into a :class:`~bacalhau.storage.ipfs.blockstore.BlockStore`
and returns its root CID (a string). None of them is valid data a user would make; they are
what an attacker would hand a node as a job input, to ``get`` or to ``ls``:

- :func:`symlink_dir`: a folder holding a symbolic link (``ln -s / evil/root``).
- :func:`shared_dir_bomb`: each folder links its child twice, ``levels`` deep:
  ``2**levels`` files from a few hundred bytes of blocks.
- :func:`deep_dirs`: folders nested ``depth`` deep (one block each).
- :func:`hamt_bomb`: a HAMT whose shards link the same sub-shard in every slot.
- :func:`hamt_with_fanout`: a HAMT claiming a fan-out of ``fanout``.
- :func:`deep_file`: a file whose DAG is a chain ``depth`` levels deep.
"""

from __future__ import annotations

from ..cid import cid_str, make_cid
from ..storage.ipfs.blockstore import BlockStore
from ..storage.ipfs.dagpb import PBLink, PBNode, encode_node
from ..storage.ipfs.unixfs import DataType, UnixFSData, encode_unixfs

__all__ = [
    "deep_dirs",
    "deep_file",
    "hamt_bomb",
    "hamt_with_fanout",
    "shared_dir_bomb",
    "symlink_dir",
]


def _put(store: BlockStore, links: list[PBLink], data: UnixFSData) -> bytes:
    block = encode_node(PBNode(tuple(links), encode_unixfs(data)))
    cid = make_cid(block)
    store.put(cid, block)
    return cid


def _file(store: BlockStore, content: bytes) -> bytes:
    return _put(store, [], UnixFSData(DataType.FILE, data=content, filesize=len(content)))


def _dir(store: BlockStore, entries: list[tuple[str, bytes]]) -> bytes:
    links = [PBLink(cid, name, 1) for name, cid in sorted(entries)]
    return _put(store, links, UnixFSData(DataType.DIRECTORY))


def symlink_dir(store: BlockStore, target: str = "/", *, name: str = "root") -> str:
    """A folder with ``hello.txt`` and a symlink ``name`` pointing at ``target``."""
    link = _put(store, [], UnixFSData(DataType.SYMLINK, data=target.encode()))
    hello = _file(store, b"hello\n")
    return cid_str(_dir(store, [("hello.txt", hello), (name, link)]))


def shared_dir_bomb(store: BlockStore, levels: int) -> str:
    """``2**levels`` files, each folder linking its one child folder twice (``a`` and ``b``)."""
    current = _file(store, b"x")
    for _ in range(levels):
        current = _dir(store, [("a", current), ("b", current)])
    return cid_str(current)


def deep_dirs(store: BlockStore, depth: int) -> str:
    """Folders nested ``depth`` deep, a file at the bottom."""
    current = _file(store, b"bottom\n")
    for _ in range(depth):
        current = _dir(store, [("d", current)])
    return cid_str(current)


def _shard(store: BlockStore, links: list[PBLink], fanout: int) -> bytes:
    data = UnixFSData(DataType.HAMT_SHARD, data=b"\xff", hash_type=0x22, fanout=fanout)
    return _put(store, links, data)


def hamt_bomb(store: BlockStore, *, fanout: int = 256, levels: int = 3) -> str:
    """A HAMT whose every slot at every level links one shared sub-shard;
    ``fanout**levels`` entries listed from ``levels + 2`` blocks."""
    width = len(f"{fanout - 1:X}")
    leaf = _file(store, b"x")
    current = _shard(
        store, [PBLink(leaf, f"{slot:0{width}X}f{slot}", 1) for slot in range(fanout)], fanout
    )
    for _ in range(levels - 1):
        current = _shard(
            store, [PBLink(current, f"{slot:0{width}X}", 1) for slot in range(fanout)], fanout
        )
    return cid_str(current)


def hamt_with_fanout(store: BlockStore, fanout: int) -> str:
    """A one-shard HAMT claiming fan-out ``fanout``, with one entry."""
    width = len(f"{max(fanout, 2) - 1:X}")
    leaf = _file(store, b"x")
    data = UnixFSData(DataType.HAMT_SHARD, data=b"\x01", hash_type=0x22, fanout=fanout)
    return cid_str(_put(store, [PBLink(leaf, f"{0:0{width}X}name", 1)], data))


def deep_file(store: BlockStore, depth: int) -> str:
    """A one-byte file whose DAG is a chain ``depth`` internal nodes deep."""
    current = _file(store, b"x")
    for _ in range(depth):
        current = _put(
            store,
            [PBLink(current, "", 1)],
            UnixFSData(DataType.FILE, filesize=1, blocksizes=(1,)),
        )
    return cid_str(current)
