"""Large directories: Kubo's HAMT sharding, byte-exact, and reading shards back.

Expected CIDs: Kubo (``ipfs add -r``, offline) for CIDv0, the Kubo-compatible JS
importer for CIDv1. The directories hold ``file-00000.txt`` ... with their index
and a newline, plus one ``x...x`` file, sized around Kubo's 256 KiB threshold
(name bytes + CID bytes summed over the links).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bacalhau.storage.ipfs import BlockStore, add_path, export_to_path, ls, read_all, resolve
from bacalhau.storage.ipfs.hamt import murmur3_x64_128, needs_sharding


def test_murmur3_vectors() -> None:
    assert murmur3_x64_128(b"") == (0, 0)
    assert murmur3_x64_128(b"hello") == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
    assert murmur3_x64_128(b"file-00001") == (0xD504DC743E69F0DE, 0x16147742804B44FA)
    assert murmur3_x64_128(b"a" * 33) == (0xE02EC376F433D4BD, 0xAEE356BB9DDE9F01)


def make_dir(root: Path, files: int, extra_name_len: int | None) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"file-{i:05d}.txt").write_bytes(f"{i}\n".encode())
    if extra_name_len:
        (root / ("x" * extra_name_len)).write_bytes(b"extra\n")
    return root


def test_threshold_is_inclusive() -> None:
    cid = b"\x12\x20" + bytes(32)
    assert not needs_sharding([("a" * (262144 - 35), cid)])
    assert needs_sharding([("a" * (262144 - 34), cid)])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("files", "extra", "v0", "v1"),
    [
        # 5460 * (14 + 34) + (29 + 34) = 262143 bytes: one below, a plain directory
        (5460, 29, "QmUGc2LiXe6ZMWbtoWcgmTYkcDM7VBWKAFcu7aGu8WgRdK", None),
        # exactly 262144: Kubo shards
        (5460, 30, "QmUDzew698NZuH6dWACRfwj6iweHTbcwEUaSxJcQ1UCfoq", None),
        (
            5460,
            31,
            "QmXcqxm4QCsY4n2yM7SKZTA32eaekHDr7pbpLaHsX7uGjT",
            "bafybeifkvm6gtly7zthn2dz4c7mfesjwnzjlluc2tlxhzbblnwdj4zgmpu",
        ),
        pytest.param(
            7000,
            None,
            "Qma4LAhgpsWijCcH7nTvrHhtnvAKxdSV14YCsMThuZT5gp",
            "bafybeie23npc6lh6o2dkb5v4staifx2lcexqqwxibep3kixhodlw3ae364",
            marks=pytest.mark.slow,
        ),
    ],
)
async def test_large_directory_vectors(
    tmp_path: Path, files: int, extra: int | None, v0: str, v1: str | None
) -> None:
    top = make_dir(tmp_path / "d", files, extra)
    assert await add_path(None, top) == v0
    if v1 is not None:
        assert await add_path(None, top, cid_version=1) == v1


@pytest.mark.anyio
@pytest.mark.parametrize("version", [0, 1])
async def test_sharded_directory_round_trip(tmp_path: Path, version: int) -> None:
    """A low threshold shards a 600-entry directory (several levels of shards)."""
    top = make_dir(tmp_path / "d", 600, 31)
    store = BlockStore(tmp_path / "blocks")
    cid = await add_path(store, top, cid_version=version, shard_threshold=1000)
    assert cid != await add_path(None, top, cid_version=version), "sharded differs from flat"
    entries = await ls(store, cid)
    assert len(entries) == 601
    assert {e.name for e in entries} == {p.name for p in top.iterdir()}
    inner = await resolve(store, cid, "file-00424.txt")
    assert await read_all(store, inner) == b"424\n"
    out = tmp_path / "out"
    await export_to_path(store, cid, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in top.iterdir())
    assert (out / ("x" * 31)).read_bytes() == b"extra\n"
    assert await add_path(None, out, cid_version=version, shard_threshold=1000) == cid
