"""Disk bounded by what is live: the block store's budget evicts unpinned blocks least
recently used first (never pinned or in-use ones), pins expire, published results are
pinned for a retention period, and leftover execution folders are removed."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import pytest

from bacalhau import JobSpec, JobState, Network
from bacalhau.cid import RAW, cid_str, make_cid
from bacalhau.errors import ValidationError
from bacalhau.identity import Identity
from bacalhau.node.clock import VirtualClock
from bacalhau.node.node import Node
from bacalhau.node.retention import DiskRetention, collect_disk
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.importer import add_bytes
from bacalhau.transport.memory import MemoryHub

BLOCK = 1000


def raw_block(store: BlockStore, tag: str, *, age: float) -> bytes:
    """A raw block of BLOCK bytes whose file was last changed ``age`` seconds ago."""
    data = tag.encode() * (BLOCK // len(tag))
    cid = make_cid(data, codec=RAW, version=1)
    store.put(cid, data)
    path = store._file(cid)[0]
    then = time.time() - age
    os.utime(path, (then, then))
    return cid


def stored(store: BlockStore, cids: list[bytes]) -> list[bool]:
    return [store.has(c) for c in cids]


def test_eviction_removes_unpinned_blocks_least_recently_used_first(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    a, b, c, d = (raw_block(store, t, age=10_000 - i) for i, t in enumerate("abcd"))
    store.get(b)  # read now: the most recently used, though written long ago
    assert store.stat()[1] == 4 * BLOCK
    removed, freed = store.evict(2 * BLOCK, grace=0)
    assert (removed, freed) == (2, 2 * BLOCK)
    assert stored(store, [a, b, c, d]) == [False, True, False, True], "a and c were oldest"
    assert store.evict(2 * BLOCK, grace=0) == (0, 0), "under budget: nothing to do"
    assert store.evict(0, grace=0, limit=1) == (1, BLOCK), "at most `limit` per run"
    assert stored(store, [b, d]) == [True, False]


def test_eviction_never_removes_pinned_or_recently_used_blocks(tmp_path: Path) -> None:
    import anyio

    store = BlockStore(tmp_path / "blocks")
    payload = os.urandom(600_000)  # three leaves and a root: a DAG under one pin
    root = anyio.run(lambda: add_bytes(store, payload, pin=True))
    dag = list(store.walk(root))
    assert len(dag) == 4
    old = raw_block(store, "o", age=10_000)
    fresh = raw_block(store, "fresh", age=10_000)
    store.get(fresh)  # in use a moment ago
    removed, _ = store.evict(0, grace=600)
    assert removed == 1 and not store.has(old), "only the old unpinned block goes"
    assert store.has(fresh), "a block read within the grace is in use"
    assert all(store.has(c) for c in dag), "every block under a pin stays"
    assert store.evict(0, grace=0)[0] == 1 and not store.has(fresh)
    assert all(store.has(c) for c in dag)


def test_pins_expire_and_the_stronger_of_two_pins_wins(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    x = raw_block(store, "x", age=10_000)
    y = raw_block(store, "y", age=10_000)
    store.pin(x, expires=100.0)
    store.pin(x, expires=50.0)
    assert store.pin_expires(x) == 100.0, "the later expiry is kept"
    store.pin(x)
    assert store.pin_expires(x) is None, "a lasting pin beats an expiring one"
    store.pin(x, expires=10.0)
    assert store.pin_expires(x) is None
    store.pin(y, recursive=False, expires=100.0)
    assert store.pins() == {cid_str(x): "recursive", cid_str(y): "direct"}
    assert store.expire_pins(99.0) == 0
    assert store.evict(0, grace=0) == (0, 0), "both pinned"
    assert store.expire_pins(100.0) == 1
    assert store.pins() == {cid_str(x): "recursive"}
    assert store.evict(0, grace=0) == (1, BLOCK) and not store.has(y)
    (tmp_path / "blocks" / "pins" / "junk").write_text("nonsense")
    assert store.expire_pins(1e12) == 0 and cid_str(x) in store.pins()


@pytest.mark.anyio
async def test_a_node_pins_results_for_a_while_then_evicts_and_sweeps(tmp_path: Path) -> None:
    clock = VirtualClock()
    disk = DiskRetention(
        block_budget=1, pin_retention=3600.0, execution_retention=60.0, interval=1e9
    )
    async with Network.in_memory(1, durable=True, clock=clock, disk=disk) as net:
        node = net.nodes[0]
        result = await node.run_job(
            JobSpec.noop(stdout="kept a while", publisher="ipfs"), timeout=20
        )
        assert result.state is JobState.COMPLETED, result.reason
        (ex,) = result.accepted
        assert ex.published is not None and ex.published.cid is not None
        cid = ex.published.cid
        store = node.plugins.data.blockstore  # type: ignore[union-attr]
        assert store.pin_expires(cid) == pytest.approx(clock.now() + 3600.0, abs=5)

        stale = node.runner.root / "j-left-behind"
        (stale / "results").mkdir(parents=True)
        os.utime(stale, (clock.now() - 120, clock.now() - 120))
        kept = node.runner.root / "j-still-proposed"
        kept.mkdir()
        os.utime(kept, (clock.now() - 120, clock.now() - 120))

        older = clock.now() - 60
        assert await node.runner.sweep_stale(older_than=older, keep={kept.name}) == 1
        assert not stale.exists() and kept.exists(), "results still to publish stay"
        report = await collect_disk(node, attrs_evolve(disk, block_grace=0))
        assert report.pins_expired == 0 and report.blocks_evicted == 0, "results are pinned"
        assert report.folders_removed == 1 and not kept.exists(), "no compute job holds it"

        clock.advance(3601)
        report = await collect_disk(node, attrs_evolve(disk, block_grace=0))
        assert report.pins_expired == 1
        assert report.blocks_evicted >= 1 and not store.has(cid), "then evicted"


def attrs_evolve(config: DiskRetention, *, block_grace: float) -> DiskRetention:
    import attrs

    return attrs.evolve(config, block_grace=block_grace)


def test_serve_disk_options(tmp_path: Path) -> None:
    from bacalhau.cli.serve import add_serve_parser, build_node

    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="bacalhau", exit_on_error=False)
        add_serve_parser(parser.add_subparsers(dest="command"))
        return parser.parse_args(["serve", "--data-dir", str(tmp_path), "--port", "0", *argv])

    assert build_node(parse()).disk == DiskRetention(
        block_budget=10 << 30, pin_retention=30 * 86400.0, execution_retention=3600.0
    ), "10 GiB, 30 days, 1 hour by default"
    node = build_node(
        parse(
            "--disk-budget",
            "500MB",
            "--pin-retention",
            "0.5",
            "--execution-retention",
            "0",
        )
    )
    assert node.disk.block_budget == 500_000_000
    assert node.disk.pin_retention == 43200 and node.disk.execution_retention == 0
    unbounded = build_node(parse("--disk-budget", "0", "--pin-retention", "0")).disk
    assert unbounded.block_budget is None and unbounded.pin_retention is None
    with pytest.raises(ValidationError, match="--disk-budget"):
        build_node(parse("--disk-budget", "lots"))
    with pytest.raises(ValidationError, match="--pin-retention"):
        build_node(parse("--pin-retention", "-1"))
    with pytest.raises(ValidationError, match="block_budget"):
        DiskRetention(block_budget=-5)


def test_serve_max_message_age_bounds_the_replay_window_and_compute_tombstones(
    tmp_path: Path,
) -> None:
    from bacalhau.cli.serve import add_serve_parser, build_node

    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="bacalhau", exit_on_error=False)
        add_serve_parser(parser.add_subparsers(dest="command"))
        return parser.parse_args(["serve", "--data-dir", str(tmp_path), "--port", "0", *argv])

    default = build_node(parse())
    assert default.gate.max_message_age == 600.0
    assert default.compute.tombstone_ttl == default.compute.heard_ttl == 600.0
    short = build_node(parse("--max-message-age", "90"))
    assert short.gate.max_message_age == short.max_message_age == 90.0
    assert short.compute.tombstone_ttl == short.compute.heard_ttl == 90.0
    for bad in ("0", "-5", "nan", "inf"):
        with pytest.raises(ValidationError, match="--max-message-age"):
            build_node(parse("--max-message-age", bad))


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf])
def test_a_node_refuses_a_replay_window_that_is_not_a_positive_finite_time(bad: float) -> None:
    """nan would make every age check pass (any replay admitted), inf the same, and both
    would keep ended jobs' records forever: an embedding program gets a clear error."""
    with pytest.raises(ValidationError, match="max_message_age must be a positive, finite"):
        identity = Identity.generate()
        Node(
            transport=MemoryHub().transport(identity.node_id),
            identity=identity,
            max_message_age=bad,
        )


def test_a_streamed_read_keeps_the_blocks_it_has_yet_to_serve(tmp_path: Path) -> None:
    """A slow reader of a file (``data cat``, a results download) is not cut short by
    eviction however long it takes: the grace period alone would not protect the blocks
    it has not reached yet."""
    import anyio

    from bacalhau.storage.ipfs.exporter import cat

    store = BlockStore(tmp_path / "blocks")
    payload = os.urandom(1_100_000)  # five leaves (256 KiB chunks) and a root, unpinned
    old = raw_block(store, "o", age=10_000)

    async def main() -> list[bool]:
        root = await add_bytes(store, payload, pin=False)
        dag = list(store.walk(root))
        for cid in dag:  # all written long ago, none read: first in line for eviction
            then = time.time() - 5000
            os.utime(store._file(cid)[0], (then, then))
        pieces = cat(store, root)
        got = [await pieces.__anext__()]  # the stream has begun, most blocks unread
        removed = await anyio.to_thread.run_sync(lambda: store.evict(0, grace=0))
        assert removed == (1, BLOCK), "only the block no read uses was evicted"
        assert store.has_dag(root)
        again = await anyio.to_thread.run_sync(lambda: store.gc())
        assert again == 0 and store.has_dag(root), "gc keeps what a read serves too"
        got += [piece async for piece in pieces]
        assert b"".join(got) == payload
        # marked as used during the read: recent now, so kept within the grace period
        assert store.evict(0, grace=600) == (0, 0)
        assert store.evict(0, grace=0)[0] == len(dag), "once the read ended, evictable"
        return [store.has(c) for c in dag]

    assert anyio.run(main) == [False] * 6
    assert not store.has(old)


def test_a_read_lease_is_counted_and_released(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    cid = raw_block(store, "x", age=10_000)
    with store.reading(cid), store.reading(cid):
        assert store.evict(0, grace=0) == (0, 0)
    with store.reading(cid):
        pass
    assert store.evict(0, grace=0) == (1, BLOCK)
