"""Hostile DAGs against the exporter: links, bombs, deep trees, HAMT tricks.

Every DAG here is a few hundred bytes of blocks; each test asserts the expansion stops
with a StorageError naming the limit, and that nothing was written outside ``dest``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bacalhau.errors import StorageError, ValidationError
from bacalhau.limits import DagLimits
from bacalhau.models import StorageSpec
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.car import import_car, write_car
from bacalhau.storage.ipfs.exporter import export_to_path, ls, open_reader, read_all, resolve
from bacalhau.storage.ipfs.provider import IpfsStorage
from bacalhau.testing import hostile

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks")


async def test_input_symlink_is_refused_naming_it(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.symlink_dir(store, "/")
    with pytest.raises(StorageError, match=r"root is a symbolic link \(to '/'\)"):
        await IpfsStorage(store).prepare(StorageSpec.ipfs(cid), tmp_path / "in" / "0")


async def test_get_keeps_inner_links_and_refuses_outward(store: BlockStore, tmp_path: Path) -> None:
    inner = hostile.symlink_dir(store, "hello.txt", name="alias")
    await export_to_path(store, inner, tmp_path / "ok")
    assert os.readlink(tmp_path / "ok" / "alias") == "hello.txt"
    for target in ("/", "/etc/passwd", "../..", "sub/../../x"):
        cid = hostile.symlink_dir(store, target)
        dest = tmp_path / f"out-{abs(hash(target))}"
        with pytest.raises(StorageError, match="pointing outside"):
            await export_to_path(store, cid, dest)
        assert not (dest / "root").exists() and not (dest / "root").is_symlink()


async def test_link_chain_that_leaves_is_caught_after_the_walk(
    store: BlockStore, tmp_path: Path
) -> None:
    from bacalhau.storage.ipfs.unixfs import DataType, UnixFSData
    from bacalhau.testing.hostile import _dir, _put

    # sub/up -> "..": inside; then "esc" -> "sub/up/../.." leaves only through the link.
    up = _put(store, [], UnixFSData(DataType.SYMLINK, data=b".."))
    sub = _dir(store, [("up", up)])
    esc = _put(store, [], UnixFSData(DataType.SYMLINK, data=b"sub/up/sub/up/.."))
    root = _dir(store, [("sub", sub), ("esc", esc)])
    from bacalhau.cid import cid_str

    with pytest.raises(StorageError, match="outside"):
        await export_to_path(store, cid_str(root), tmp_path / "chain")
    assert not (tmp_path / "chain" / "esc").is_symlink()


async def test_shared_folder_bomb_stops_at_the_entry_limit(
    store: BlockStore, tmp_path: Path
) -> None:
    cid = hostile.shared_dir_bomb(store, 14)  # 16,384 files from ~1 KB of blocks
    limits = DagLimits(max_entries=200)
    with pytest.raises(StorageError, match="more than 200 entries"):
        await export_to_path(store, cid, tmp_path / "bomb", limits=limits)
    written = sum(len(files) + len(dirs) for _, dirs, files in os.walk(tmp_path / "bomb"))
    assert written <= 200
    with pytest.raises(StorageError, match="entries"):
        await IpfsStorage(store, limits=limits).prepare(StorageSpec.ipfs(cid), tmp_path / "in")


async def test_deep_folders_stop_at_the_depth_limit(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.deep_dirs(store, 200)
    with pytest.raises(StorageError, match="deeper than 128 levels"):
        await export_to_path(store, cid, tmp_path / "deep")
    with pytest.raises(StorageError, match="deeper than 5"):
        await resolve(store, cid, "d/d/d/d/d/d/d", limits=DagLimits(max_depth=5))


async def test_deep_file_dag_stops_at_the_depth_limit(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.deep_file(store, 300)
    with pytest.raises(StorageError, match="deeper than"):
        await read_all(store, cid)
    with pytest.raises(StorageError, match="deeper than"):
        await export_to_path(store, cid, tmp_path / "f")
    with pytest.raises(StorageError, match="deeper than"):
        await open_reader(store, cid)


async def test_total_size_limit(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.shared_dir_bomb(store, 6)  # 64 one-byte files
    with pytest.raises(StorageError, match="more than 10 bytes"):
        await export_to_path(store, cid, tmp_path / "s", limits=DagLimits(max_size=10))


async def test_hamt_bomb_ls_stops_quickly(store: BlockStore) -> None:
    cid = hostile.hamt_bomb(store, fanout=256, levels=4)  # 2**32 entries claimed
    with pytest.raises(StorageError, match="more than 2000 entries"):
        await ls(store, cid, limits=DagLimits(max_entries=2000))


@pytest.mark.parametrize("fanout", [3, 0, 4096, 1 << 40])
async def test_hamt_fanout_out_of_bounds(store: BlockStore, fanout: int) -> None:
    cid = hostile.hamt_with_fanout(store, fanout)
    with pytest.raises(StorageError, match="fan-out"):
        await ls(store, cid)


async def test_sane_hamt_and_folders_still_work(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.hamt_with_fanout(store, 256)
    assert [e.name for e in await ls(store, cid)] == ["name"]
    small = hostile.shared_dir_bomb(store, 3)
    await export_to_path(store, small, tmp_path / "small")
    assert (tmp_path / "small" / "a" / "b" / "a").read_bytes() == b"x"


async def test_car_import_limits(store: BlockStore, tmp_path: Path) -> None:
    cid = hostile.shared_dir_bomb(store, 10)
    car = tmp_path / "bomb.car"
    with car.open("wb") as fh:
        write_car(store, [cid], fh)
    other = BlockStore(tmp_path / "other")
    with pytest.raises(StorageError, match="more than 5 blocks"):
        await import_car(other, car, max_blocks=5)
    assert await import_car(other, car) == [cid]
    with pytest.raises(StorageError, match="entries"):
        await export_to_path(other, cid, tmp_path / "x", limits=DagLimits(max_entries=100))


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ValidationError, match="max_entries"):
        DagLimits(max_entries=0)
