"""The block store (atomic writes, pins, gc), CAR files and the ``bacalhau data`` CLI."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import anyio
import pytest

from bacalhau.cid import cid_str, make_cid, to_cid
from bacalhau.cli.data import main as data_main
from bacalhau.errors import BlockNotFound, CorruptBlock, DecodeError
from bacalhau.storage.ipfs import BlockStore, add_bytes, add_path, export_car, import_car
from bacalhau.storage.ipfs.car import encode_header, iter_car, write_car


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks")


# --- block store -----------------------------------------------------------------------


def test_put_get_has_delete(store: BlockStore) -> None:
    block = b"some block"
    cid = make_cid(block, codec=0x55, version=1)
    assert not store.has(cid)
    with pytest.raises(BlockNotFound):
        store.get(cid)
    store.put(cid_str(cid), block)
    assert store.has(cid)
    assert store.get(cid) == block
    assert store.size(cid) == len(block)
    assert store.stat() == (1, len(block))
    assert store.delete(cid)
    assert not store.delete(cid)
    with pytest.raises(CorruptBlock):
        store.put(cid, b"other bytes")
    assert not store.has(cid)


def test_cidv0_and_cidv1_of_one_block_share_a_file(store: BlockStore) -> None:
    block = b"\x0a\x02\x08\x01"
    v0 = make_cid(block)
    v1 = make_cid(block, version=1)
    store.put(v0, block)
    assert store.has(v1)
    assert store.stat()[0] == 1


def test_writes_are_atomic_and_leave_no_partial_files(store: BlockStore) -> None:
    block = os.urandom(100_000)
    cid = make_cid(block, codec=0x55, version=1)

    class Boom(Exception):
        pass

    class Exploding:
        def __len__(self) -> int:
            raise Boom

    with pytest.raises((Boom, TypeError)):
        store.put_parts(cid, (block[:10], Exploding()))  # type: ignore[arg-type]
    assert not store.has(cid)
    assert os.listdir(store.path / "tmp") == []
    # many threads writing the same and different blocks at once
    blocks = [os.urandom(50_000) for _ in range(8)]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for data in blocks:
                store.put(make_cid(data, codec=0x55, version=1), data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for data in blocks:
        assert store.get_verified(make_cid(data, codec=0x55, version=1)) == data
    assert os.listdir(store.path / "tmp") == []


def test_put_many_writes_past_a_leftover_temporary_file(store: BlockStore) -> None:
    """A crashed process of the same pid may have left the temporary name the next
    write would take: the write still lands, the leftover is untouched, and a batch
    stores each of its blocks once."""
    prefix = f"put-{os.getpid()}-{threading.get_ident()}-"
    for n in range(4):  # the next few counter values of this store
        (store.path / "tmp" / f"{prefix}{n}").write_bytes(b"leftover")
    blocks = [os.urandom(1000 + i) for i in range(3)]
    cids = [make_cid(b, codec=0x55, version=1) for b in blocks]
    batch = [(c, (b[:10], b[10:])) for c, b in zip(cids, blocks, strict=True)]
    assert store.put_many(batch + batch[:1]) == 3
    assert store.put_many(batch) == 0
    for cid, data in zip(cids, blocks, strict=True):
        assert store.get_verified(cid) == data
    left = sorted(os.listdir(store.path / "tmp"))
    assert left == sorted(f"{prefix}{n}" for n in range(4))


@pytest.mark.anyio
async def test_gc_keeps_pinned_dags_and_removes_the_rest(store: BlockStore) -> None:
    kept = await add_bytes(store, os.urandom(600_000), pin=True)
    direct = await add_bytes(store, os.urandom(600_000))
    gone = await add_bytes(store, os.urandom(600_000))
    store.pin(direct, recursive=False)
    kept_blocks = list(store.walk(kept))
    assert len(kept_blocks) == 4
    assert store.pins() == {kept: "recursive", direct: "direct"}
    removed = store.gc()
    assert removed == 3 + 4  # direct's three leaves, all four blocks of gone
    assert store.has_dag(kept)
    assert store.has(direct)
    assert not store.has_dag(direct)
    assert not store.has(gone)
    assert store.unpin(kept)
    assert not store.unpin(kept)
    assert store.gc() == 4
    with pytest.raises(BlockNotFound, match="cannot pin"):
        store.pin(gone)


@pytest.mark.anyio
async def test_missing_names_exactly_the_blocks_a_fetch_still_needs(store: BlockStore) -> None:
    root = await add_bytes(store, os.urandom(1_000_000))
    blocks = list(store.walk(root))
    assert len(blocks) == 5  # a root and four 256 KiB leaves
    assert store.missing(root) == []
    store.delete(blocks[2])
    store.delete(blocks[4])
    assert store.missing(root) == [blocks[2], blocks[4]]  # in DAG order
    assert store.missing(root, limit=1) == [blocks[2]]
    assert not store.has_dag(root)
    store.delete(root)
    assert store.missing(root) == [to_cid(root)]  # nothing below an absent block is known


@pytest.mark.anyio
async def test_gc_waits_for_an_import_in_progress(store: BlockStore, tmp_path: Path) -> None:
    """An import holds the gc guard from its first block to its pin."""
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3_000_000))
    results: dict[str, int] = {}
    guard = store.guard()
    guard.__enter__()  # as add_path does while it writes
    worker = threading.Thread(target=lambda: results.update(removed=store.gc()))
    worker.start()
    cid = await add_path(store, path)  # takes its own shared guard alongside ours
    worker.join(timeout=0.2)
    assert worker.is_alive(), "gc must wait while an import holds the guard"
    store.pin(cid)
    guard.__exit__(None, None, None)
    await anyio.to_thread.run_sync(worker.join)
    assert results == {"removed": 0}
    assert store.has_dag(cid)


@pytest.mark.anyio
async def test_corrupt_block_on_disk_is_found_and_removed(store: BlockStore) -> None:
    cid = to_cid(await add_bytes(store, b"precious"))
    path = store._file(cid)[0]
    path.write_bytes(b"flipped")
    with pytest.raises(CorruptBlock, match="removed"):
        store.get_verified(cid)
    assert not store.has(cid)


# --- CAR -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_car_round_trip_between_stores(tmp_path: Path, store: BlockStore) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(1_000_000))
    (src / "sub" / "small").write_bytes(b"x")
    cid = await add_path(store, src)
    car = tmp_path / "out.car"
    count = await export_car(store, cid, car)
    assert count == len(list(store.walk(cid)))
    other = BlockStore(tmp_path / "other")
    assert await import_car(other, car) == [cid]
    assert other.is_pinned(cid)
    assert sorted(other.walk(cid)) == sorted(store.walk(cid))
    roots, first = await anyio.to_thread.run_sync(first_section, car)
    assert roots == [to_cid(cid)]
    assert first[0] == to_cid(cid), "depth-first from the root, as `ipfs dag export` writes"


def first_section(car: Path) -> tuple[list[bytes], tuple[bytes, bytes]]:
    with open(car, "rb") as fh:
        roots, blocks = iter_car(fh)
        return roots, next(blocks)


def test_car_header_is_canonical_dag_cbor() -> None:
    root = to_cid("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    header = encode_header([root])
    assert header.startswith(b"\xa2\x65roots\x81\xd8\x2a\x58\x23\x00" + root)
    assert header.endswith(b"\x67version\x01")


@pytest.mark.anyio
async def test_car_import_refuses_corrupt_and_malformed_files(
    tmp_path: Path, store: BlockStore
) -> None:
    cid = await add_bytes(store, os.urandom(300_000))
    buf = io.BytesIO()
    write_car(store, [cid], buf)
    good = buf.getvalue()
    bad = tmp_path / "bad.car"
    bad.write_bytes(good[:-5] + b"XXXXX")
    other = BlockStore(tmp_path / "other")
    with pytest.raises(CorruptBlock):
        await import_car(other, bad)
    assert not other.is_pinned(cid)
    truncated = tmp_path / "short.car"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        await import_car(other, truncated)
    garbage = tmp_path / "garbage.car"
    garbage.write_bytes(b"\x05hello")
    with pytest.raises(DecodeError):
        await import_car(other, garbage)


@pytest.mark.anyio
async def test_carv2_payload_is_read(tmp_path: Path, store: BlockStore) -> None:
    cid = await add_bytes(store, b"inside a v2 car")
    buf = io.BytesIO()
    write_car(store, [cid], buf)
    v1 = buf.getvalue()
    pragma = bytes.fromhex("0aa16776657273696f6e02")
    offset = len(pragma) + 40
    header = bytes(16) + offset.to_bytes(8, "little") + len(v1).to_bytes(8, "little") + bytes(8)
    path = tmp_path / "v2.car"
    path.write_bytes(pragma + header + v1)
    other = BlockStore(tmp_path / "other")
    assert await import_car(other, path) == [cid]


# --- CLI -------------------------------------------------------------------------------


def test_cli_add_only_hash_needs_no_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello world\n")
    monkeypatch.setenv("BACALHAU_DIR", str(tmp_path / "node"))
    assert data_main(["data", "add", "--only-hash", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert data_main(["data", "add", "-n", "--cid-version", "1", str(f)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    )
    assert not (tmp_path / "node").exists(), "--only-hash stores nothing"


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dd = ["--data-dir", str(tmp_path / "node")]
    src = tmp_path / "d2"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a\n")
    (src / "sub" / "b.txt").write_bytes(b"b\n")
    assert data_main(["data", "add", str(src), *dd]) == 1
    assert "use -r" in capsys.readouterr().err
    assert data_main(["data", "add", "-r", str(src), *dd]) == 0
    lines = capsys.readouterr().out.splitlines()
    root = lines[-1]
    assert root == "QmU6gJLzou116aQFoUzRmvEkdnoDgECia5C5vAM2ac1nRM"
    assert f"added {root} d2" in lines
    assert data_main(["data", "ls", root, *dd]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing == [
        "Qmbvkmk9LFsGneteXk3G7YLqtLVME566ho6ibaQZZVHaC9 2 a.txt",
        "QmdE4kAU2TxLFfde4Ti2QW5VxGWD5ku9JxGSf3Lzb7dVpr - sub/",
    ]
    assert data_main(["data", "get", root, "-o", str(tmp_path / "got"), *dd]) == 0
    assert (tmp_path / "got" / "sub" / "b.txt").read_bytes() == b"b\n"
    capsys.readouterr()
    car = tmp_path / "d2.car"
    assert data_main(["data", "export", root, "--car", str(car), *dd]) == 0
    dd2 = ["--data-dir", str(tmp_path / "node2")]
    assert data_main(["data", "import", str(car), *dd2]) == 0
    assert capsys.readouterr().out.strip().endswith(f"pinned root {root}")
    assert data_main(["data", "pin", *dd2]) == 0
    assert capsys.readouterr().out.strip() == f"{root} recursive"
    assert data_main(["data", "unpin", root, *dd2]) == 0
    assert data_main(["data", "gc", *dd2]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "removed 4 blocks"
    assert data_main(["data", "cat", root, *dd2]) == 1
    assert "not in the local store" in capsys.readouterr().err
    assert data_main(["data", "unpin", root, *dd2]) == 1
    assert "is not pinned" in capsys.readouterr().err
    assert data_main(["data", "gc", "--api", "http://127.0.0.1:1234", *dd2]) == 1
    assert "omit --api" in capsys.readouterr().err


def test_cli_cat_writes_bytes(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    dd = ["--data-dir", str(tmp_path / "node")]
    f = tmp_path / "blob"
    data = os.urandom(700_000)
    f.write_bytes(data)
    assert data_main(["data", "add", "-Q", str(f), *dd]) == 0
    root = capfdbinary.readouterr().out.decode().strip()
    assert data_main(["data", "cat", root, *dd]) == 0
    assert capfdbinary.readouterr().out == data
