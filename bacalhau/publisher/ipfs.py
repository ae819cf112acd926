"""The ``ipfs`` publisher: results into the node's block store, pinned and announced."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PublishError, StorageError
from ..models import StorageRef
from ..storage.ipfs.blockstore import BlockStore
from ..storage.ipfs.importer import add_path
from .base import Publisher

__all__ = ["IpfsPublisher"]

log = logging.getLogger(__name__)


class IpfsPublisher(Publisher):
    """Adds a results folder as a UnixFS directory (CIDv0 by default), pins it and
    tells the node's peers it is here, so anyone on the network can fetch it by CID.

    Args:
        blocks: the node's BlockService (announces to peers) or a BlockStore.
        cid_version: 0 (``Qm...``, Kubo's default) or 1.
        pin_retention: published results are pinned this many seconds, then left to
            the block store's eviction (None: pinned until unpinned).
    """

    name = "ipfs"

    def __init__(
        self, blocks: Any, *, cid_version: int = 0, pin_retention: float | None = None
    ) -> None:
        self.blocks = blocks
        self.store: BlockStore = blocks if isinstance(blocks, BlockStore) else blocks.store
        self.cid_version = cid_version
        self.pin_retention = pin_retention
        """Seconds published results stay pinned (None: until unpinned by hand); the
        node sets it from ``serve --pin-retention``."""
        self.clock: Callable[[], float] = time.time

    async def predict(self, results_dir: Path) -> str | None:
        """The CID :meth:`publish` will return for ``results_dir`` (computed, not stored)."""
        try:
            return await add_path(None, results_dir, cid_version=self.cid_version, hidden=True)
        except (StorageError, OSError) as exc:
            raise PublishError(f"could not compute the CID of the results: {exc}") from exc

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        """Add, pin and announce ``results_dir``; hidden files are included, symlinks kept
        as symlinks (never followed).

        Raises:
            PublishError: the folder could not be read or stored.
        """
        try:
            retention = self.pin_retention
            cid = await add_path(
                self.store,
                results_dir,
                cid_version=self.cid_version,
                hidden=True,
                pin=True,
                pin_expires=None if retention is None else self.clock() + retention,
            )
        except (StorageError, OSError) as exc:
            raise PublishError(f"could not add results of {execution_id} to IPFS: {exc}") from exc
        if not isinstance(self.blocks, BlockStore):
            heard = await self.blocks.announce(cid)
            log.debug("published %s for %s; %d peer(s) heard", cid, execution_id, heard)
        return StorageRef(type="ipfs", cid=cid)
