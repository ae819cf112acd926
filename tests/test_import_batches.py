"""How the importer splits a file into worker-thread calls: when only hashing, few
large batches (a thread hand-off costs more than the hashing of a few MiB), yet
enough for every worker; storing keeps its 4 MiB batches (their buffer is memory)."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from bacalhau.storage.ipfs import add_path, importer
from bacalhau.storage.ipfs.blockstore import BlockStore

MIB = 1024 * 1024


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Chunks per worker-thread call, by the call's offset in the file (the calls run
    on several threads at once, so the order they start in is not the file's)."""
    counts: dict[int, int] = {}
    read_leaves = importer._Importer._read_leaves

    def counted(self: importer._Importer, job: tuple[int, int, int, int]) -> list[object]:
        counts[job[1]] = job[2]
        return read_leaves(self, job)  # type: ignore[return-value]

    monkeypatch.setattr(importer._Importer, "_read_leaves", counted)
    return counts


def test_only_hashing_takes_few_large_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(random.Random(7).randbytes(40 * MIB + 123))
    stored_cid = anyio.run(add_path, BlockStore(tmp_path / "store"), path)
    counts = _counting(monkeypatch)
    assert anyio.run(add_path, None, path) == stored_cid  # the same CID either way
    chunks = -(-(40 * MIB + 123) // (256 * 1024))
    assert sum(counts.values()) == chunks
    # 161 chunks over 2+ workers: about a quarter each, not 16 (4 MiB) per call
    assert 2 * importer._WORKERS <= len(counts) <= 2 * importer._WORKERS + 1
    assert max(counts.values()) > 4 * MIB // (256 * 1024)


def test_storing_keeps_batches_of_4_mib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(random.Random(8).randbytes(10 * MIB))
    counts = _counting(monkeypatch)
    anyio.run(add_path, BlockStore(tmp_path / "store"), path)
    assert [counts[offset] for offset in sorted(counts)] == [16, 16, 8]  # 4 MiB each
    assert sorted(counts) == [0, 4 * MIB, 8 * MIB]
