"""Streaming export: write a DAG's files while its blocks are still arriving.

:func:`export_streaming` runs a whole-DAG fetch (every provider, full windows) and
the exporter side by side. The exporter reads through :class:`ArrivingBlocks`, a
block source that takes each block from the local store as soon as the fetch has
stored it, so the first bytes of a file are on disk while the rest is on the way
and the total time is about the longer of the two, not their sum. Blocks the fetch
stored are read back without hashing them again (they were verified on receipt),
also when the exporter reads them after the fetch has ended; blocks that were
already local are verified as they are read (a block corrupt on disk is removed and
fetched again). If the fetch fails the source falls back to fetching what it needs
itself, so the caller sees the same errors as a plain fetch
(:class:`~bacalhau.errors.BlockNotFound`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs

from ...cid import AnyCid, to_cid
from ...errors import BlockNotFound, CorruptBlock
from ...limits import DEFAULT_DAG_LIMITS, DagLimits
from ._util import unwrap_group
from .exporter import SymlinkPolicy, export_to_path

if TYPE_CHECKING:
    from .exchange import BlockService

__all__ = ["ArrivingBlocks", "export_streaming"]


@attrs.define(kw_only=True)
class ArrivingBlocks:
    """A block source over a :class:`BlockService` whose DAG fetch is running.

    ``get_many`` waits for blocks the fetch has not stored yet; once the fetch has
    ended (done or failed) it asks the service, which fetches what is still missing.
    """

    service: BlockService
    fetching: bool = True
    fetched: set[bytes] = attrs.Factory(set)
    """CIDs the fetch stored and the exporter has not read yet (verified on receipt)."""
    waited: int = 0
    """How many times a read had to wait for blocks to arrive (for tests and stats)."""

    async def get(self, cid: AnyCid) -> bytes:
        return (await self.get_many([to_cid(cid)]))[0]

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        store = self.service.store

        fetched = self.fetched

        def read() -> list[bytes | None]:
            out: list[bytes | None] = []
            for cid in cids:
                try:
                    if cid in fetched:  # this fetch verified it as it stored it
                        out.append(store.get(cid))
                    else:  # already local: check it (a corrupt one is removed)
                        out.append(store.get_verified(cid))
                except (BlockNotFound, CorruptBlock):
                    out.append(None)
            return out

        def present() -> list[bytes | None] | None:
            if not all(store.has(c) for c in cids):
                return None  # (a cheap check first: no reading what is read again)
            return read()

        while self.fetching:
            arrived = self.service.arrival()
            got = await anyio.to_thread.run_sync(present)  # one hop: present, then read
            if got is not None and all(b is not None for b in got):
                fetched.difference_update(cids)  # (read once, typically: forget them)
                return [b for b in got if b is not None]
            self.waited += 1
            await arrived.wait()
        # the fetch has ended: what is here is read as above, what is missing (or was
        # corrupt) the service fetches, verifying it on receipt
        got = await anyio.to_thread.run_sync(read)
        lacking = [c for c, b in zip(cids, got, strict=True) if b is None]
        if lacking:
            more = iter(await self.service.get_many(lacking))
            got = [next(more) if b is None else b for b in got]
        fetched.difference_update(cids)
        return [b for b in got if b is not None]


async def export_streaming(
    service: BlockService,
    cid: AnyCid,
    dest: Path,
    *,
    read_only: bool = False,
    max_size: int | None = None,
    limits: DagLimits = DEFAULT_DAG_LIMITS,
    symlinks: SymlinkPolicy = "contain",
) -> Path:
    """Fetch the DAG under ``cid`` from peers and write it to ``dest`` as it arrives.

    Same contract as :func:`~bacalhau.storage.ipfs.export_to_path`.

    Raises:
        StorageError: ``dest`` exists, a name is unsafe, the DAG is inconsistent,
            or ``max_size`` would be exceeded.
        BlockNotFound: a block could not be had.
    """
    raw = to_cid(cid)
    source = ArrivingBlocks(service=service)
    # the fetch runs ahead of the exporter, so it gets its own bound: the data the
    # export may write plus room for the DAG's own nodes (about 0.1% of it)
    cap = limits.max_size if max_size is None else min(max_size, limits.max_size)
    fetch_bound = cap + cap // 64 + (1 << 20)

    async def fetch() -> None:
        try:
            await service.fetch_dag(raw, max_bytes=fetch_bound, stored=source.fetched)
        except (BlockNotFound, CorruptBlock):
            pass  # the exporter's own reads report what is missing
        finally:
            source.fetching = False
            service.signal_arrival()  # wake readers waiting for blocks

    with unwrap_group():
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            try:
                await export_to_path(
                    source,
                    raw,
                    dest,
                    read_only=read_only,
                    max_size=max_size,
                    limits=limits,
                    symlinks=symlinks,
                )
            except BaseException:
                tg.cancel_scope.cancel()
                raise
    return Path(dest)
