"""The exporter reads canonical dag-pb leaves as views into their blocks: exactly
what decoding them gives, and any other block still goes through the decoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacalhau.cid import DAG_PB, RAW, make_cid
from bacalhau.storage.ipfs import add_bytes, export_to_path, exporter
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.dagpb import PBNode, encode_node
from bacalhau.storage.ipfs.exporter import IOV_BATCH, _leaf_data, _write_all, decode_block
from bacalhau.storage.ipfs.unixfs import DataType, UnixFSData, encode_unixfs


def _leaf(data: bytes, **extra: object) -> bytes:
    fs = UnixFSData(DataType.FILE, data=data, filesize=len(data), **extra)  # type: ignore[arg-type]
    return encode_node(PBNode((), encode_unixfs(fs)))


@given(data=st.binary(min_size=1, max_size=3000))
def test_a_canonical_leaf_is_read_as_decoding_reads_it(data: bytes) -> None:
    block = _leaf(data)
    cid = make_cid(block, codec=DAG_PB, version=0)
    view = _leaf_data(cid, block, len(data))
    assert view is not None
    assert bytes(view) == decode_block(cid, block).data == data
    assert _leaf_data(cid, block, len(data) + 1) is None  # the parent's size must match
    assert _leaf_data(cid, block + b"\x00", len(data)) is None


def test_other_blocks_are_decoded() -> None:
    data = b"x" * 100
    raw = make_cid(data, codec=RAW, version=1)
    assert _leaf_data(raw, data, 100) is None  # raw leaves are their own data already
    with_mode = _leaf(data, mode=0o644)  # a field the canonical leaf does not have
    cid = make_cid(with_mode, codec=DAG_PB, version=1)
    assert _leaf_data(cid, with_mode, 100) is None
    assert decode_block(cid, with_mode).data == data
    empty = _leaf(b"")
    assert _leaf_data(make_cid(empty, codec=DAG_PB, version=0), empty, 0) is None


@pytest.mark.anyio
async def test_export_of_a_many_leaf_file_is_byte_identical(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # 1.28 MB: several 256 KiB dag-pb leaves
    store = BlockStore(tmp_path / "s")
    cid = await add_bytes(store, payload)
    out = await export_to_path(store, cid, tmp_path / "out")
    assert (await anyio.Path(out).read_bytes()) == payload


class _FakeOs:
    """Stands in for the ``os`` module in the exporter: only ``writev``."""

    def __init__(self, writev: Callable[[int, list[memoryview]], int]) -> None:
        self.writev = writev


@given(
    pieces=st.lists(st.binary(max_size=700), max_size=IOV_BATCH + 20),
    most=st.integers(1, 2000),
)
def test_write_all_writes_every_piece_in_order_through_short_writes(
    pieces: list[bytes], most: int
) -> None:
    """The pieces go out in vectored writes of at most IOV_BATCH buffers, each of which
    may take only part of them (``most`` bytes here)."""
    out = bytearray()
    calls: list[int] = []

    def writev(fd: int, buffers: list[memoryview]) -> int:
        assert fd == 7 and 0 < len(buffers) <= IOV_BATCH
        assert all(len(b) for b in buffers)  # no empty buffer is passed on
        calls.append(len(buffers))
        taken = b"".join(buffers)[:most]
        out.extend(taken)
        return len(taken)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exporter, "os", _FakeOs(writev))
        _write_all(7, pieces)
    assert bytes(out) == b"".join(pieces)
    assert not calls or sum(1 for p in pieces if p) <= sum(calls)
