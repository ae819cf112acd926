"""A full or read-only disk under a durable node: clear errors, nothing corrupted.

These tests mount a small tmpfs (root only; skipped with the reason elsewhere).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bacalhau import JobSpec, Network
from bacalhau.node.store import StateStore, StoreError

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


async def test_full_disk(small_disk: Path) -> None:
    async with Network.in_memory(1, durable=True, data_dir=small_disk) as net:
        node = net.nodes[0]
        kept = await node.run_job(JobSpec.noop(stdout="before"), timeout=10)
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * 4096 * 4)
        with pytest.raises(StoreError, match=r"disk is full|disk I/O error"):
            for _ in range(3000):
                await node.submit(JobSpec.noop(stdout="x" * 4000, delay=60, timeout=120))
        assert node.describe(kept.job_id).ok
        for job in list(node.requester.jobs):
            if not node.describe(job).state.terminal:
                await node.cancel(job)
        db = node.data_dir / "state.db"
    remount(small_disk, "size=64m")
    store = StateStore(db)
    saved = store.get_job(kept.job_id)  # finished jobs are read on demand, not loaded
    assert saved is not None and saved.state.terminal
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_read_only_disk(small_disk: Path) -> None:
    async with Network.in_memory(1, durable=True, data_dir=small_disk) as net:
        node = net.nodes[0]
        kept = await node.run_job(JobSpec.noop(stdout="before"), timeout=10)
        identity, data_dir = node.identity, node.data_dir
    remount(small_disk, "ro")
    try:
        from bacalhau import Node
        from bacalhau.transport.memory import MemoryHub

        node = Node(
            transport=MemoryHub().transport(identity.node_id), identity=identity, data_dir=data_dir
        )
        with pytest.raises(StoreError, match=r"(?i)read-only|readonly"):
            async with node:
                pass
    finally:
        remount(small_disk, "rw")
    store = StateStore(data_dir / "state.db")
    saved = store.get_job(kept.job_id)  # finished jobs are read on demand, not loaded
    assert saved is not None and saved.state.terminal
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
