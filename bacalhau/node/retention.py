"""Disk bounded by what is live: the node's block store under a byte budget, published
results pinned for a retention period, and leftover execution folders removed; and the
job records' retention, which compacts the state store after each run.

One collector runs on a timer beside the job-record retention of
:func:`collect_records`; each run does bounded work (at most ``batch`` pins, blocks and
folders; ``gc_batch`` records and :data:`~bacalhau.node.store.COMPACT_PAGES` pages) on
worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from ..errors import ValidationError

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "DiskReport",
    "DiskRetention",
    "collect_disk",
    "collect_records",
    "record_pause",
    "run_disk_retention",
    "run_record_retention",
]

log = logging.getLogger("bacalhau.retention")

GiB = 1 << 30


@attrs.frozen(kw_only=True)
class DiskRetention:
    """How much disk a node keeps, and for how long.

    Args:
        block_budget: bytes the block store may hold; above it, unpinned blocks (cached
            inputs, fetched data, results whose pin expired) are removed least recently
            used first. None: no budget.
        pin_retention: seconds the ``ipfs`` publisher pins the results it publishes;
            after that they are ordinary cached blocks, evicted under the budget. None:
            pinned until unpinned by hand.
        execution_retention: seconds after its last change an execution folder no
            execution uses is removed (folders normally go when their job ends; this
            clears what a failed removal or a lost execution left).
        block_grace: blocks read within this many seconds are never evicted (in use).
        interval: seconds between runs.
        batch: most pins, blocks and folders removed per run.
    """

    block_budget: int | None = 10 * GiB
    pin_retention: float | None = 30 * 86400.0
    execution_retention: float = 3600.0
    block_grace: float = 600.0
    interval: float = 60.0
    batch: int = 10_000

    def __attrs_post_init__(self) -> None:
        for name in ("block_budget", "pin_retention"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValidationError("must be positive (or None: no limit)", field=name)
        for name in ("execution_retention", "block_grace", "interval"):
            if getattr(self, name) < 0:
                raise ValidationError("must not be negative", field=name)
        if self.batch < 1:
            raise ValidationError("must be at least 1", field="batch")


@attrs.frozen(kw_only=True)
class DiskReport:
    """What one run removed."""

    pins_expired: int = 0
    blocks_evicted: int = 0
    bytes_evicted: int = 0
    folders_removed: int = 0


def configure_publishers(node: Node, config: DiskRetention) -> None:
    """Give the node's publishers that pin (``ipfs``) the results pin retention."""
    for publisher in node.plugins.publishers.values():
        if hasattr(publisher, "pin_retention"):
            publisher.pin_retention = config.pin_retention
            setattr(publisher, "clock", node.clock.now)  # noqa: B010 (only pinning ones have it)


async def collect_disk(node: Node, config: DiskRetention) -> DiskReport:
    """One bounded run: expire pins, evict over the budget, remove stale folders."""
    now = node.clock.now()
    data: Any = node.plugins.data
    store = getattr(data, "blockstore", None)
    expired = evicted = freed = 0
    if store is not None:
        expired = await anyio.to_thread.run_sync(lambda: store.expire_pins(now, limit=config.batch))
        if config.block_budget is not None:
            budget = config.block_budget
            evicted, freed = await anyio.to_thread.run_sync(
                lambda: store.evict(budget, grace=config.block_grace, limit=config.batch)
            )
    folders = await node.runner.sweep_stale(
        older_than=now - config.execution_retention, keep=node.driver.results_in_flight()
    )
    report = DiskReport(
        pins_expired=expired, blocks_evicted=evicted, bytes_evicted=freed, folders_removed=folders
    )
    if expired or evicted or folders:
        log.info(
            "disk retention: %d pins expired, %d blocks (%d bytes) evicted, %d folders removed",
            expired,
            evicted,
            freed,
            folders,
        )
    return report


async def run_disk_retention(node: Node, config: DiskRetention) -> None:
    """Run :func:`collect_disk` every ``config.interval`` until cancelled."""
    while True:
        try:
            await collect_disk(node, config)
        except (OSError, ValueError) as exc:  # a bad file must not stop retention for good
            log.warning("disk retention run failed: %r", exc)
        await anyio.sleep(config.interval)


async def collect_records(node: Node) -> int:
    """Expire at most ``node.gc_batch`` finished jobs' records past ``node.job_retention``
    (they leave tombstones), then give the pages freed back to the disk and truncate the
    store's write-ahead log (:meth:`~bacalhau.node.store.StateStore.compact`, a bounded
    step per run). Returns how many records were removed."""
    store, retention = node.store, node.job_retention
    if store is None or retention is None:
        return 0
    await store.flush()
    now = node.clock.now()
    removed = await anyio.to_thread.run_sync(
        lambda: store.expire(
            before=now - retention, keep_tombstones=now - retention, limit=node.gc_batch, now=now
        )
    )
    if removed:
        node.stats["jobs_expired"] += removed
        log.info("%s: retention removed %d finished jobs", node.node_id[-8:], removed)
    node.stats["store_pages_freed"] += await anyio.to_thread.run_sync(store.compact)
    return removed


CATCH_UP = 1.0
"""Seconds between record-retention runs while each removes a full batch."""


def record_pause(removed: int, *, batch: int, interval: float) -> float:
    """Seconds until the next record-retention run: ``interval``, or :data:`CATCH_UP`
    after a run that removed a full ``batch`` (more are due: a node finishing jobs faster
    than ``batch`` per ``interval`` would otherwise fall further behind every run)."""
    return min(CATCH_UP, interval) if removed >= batch else interval


async def run_record_retention(node: Node) -> None:
    """Run :func:`collect_records` every ``node.gc_interval`` (sooner while it is behind,
    :func:`record_pause`) until cancelled."""
    while True:
        removed = await collect_records(node)
        await anyio.sleep(record_pause(removed, batch=node.gc_batch, interval=node.gc_interval))
