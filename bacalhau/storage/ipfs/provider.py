"""The ``ipfs`` storage provider: present a CID (or a path inside it) to an executor.

POSIX mode (:meth:`IpfsStorage.prepare`) fetches the DAG's missing blocks from
peers and materialises it as read-only files while they arrive, for Docker
mounts and WASM preopens. Library mode (:meth:`IpfsStorage.open_reader`) gives a thread-safe
random-access reader over one file, for executors that read through calls.
Which one a job gets is decided per executor (``Executor.storage_mode``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread

from ...errors import BlockNotFound, StorageError
from ...limits import DEFAULT_DAG_LIMITS, DagLimits
from ...models import StorageSpec
from ..base import Reader, StorageProvider
from .blockstore import BlockStore
from .exporter import LocalBlocks, as_source, decode_block, export_to_path, open_reader, resolve
from .unixfs import DataType

__all__ = ["IpfsStorage"]


class IpfsStorage(StorageProvider):
    """Inputs of type ``ipfs`` from the node's block service.

    Args:
        blocks: the node's BlockService (or a BlockStore, for local-only use).
        max_size: refuse inputs larger than this many bytes (None: no limit).
        limits: entries, depth, total size and HAMT fan-out one input may expand to.

    Symbolic links in an input are refused (the execution fails naming the link):
    a job sees only the bytes of its inputs, never a path that leads elsewhere.
    """

    type = "ipfs"

    def __init__(
        self,
        blocks: Any,
        *,
        max_size: int | None = None,
        limits: DagLimits = DEFAULT_DAG_LIMITS,
    ) -> None:
        self.blocks = blocks
        self.store: BlockStore = blocks if isinstance(blocks, BlockStore) else blocks.store
        self.max_size = max_size
        self.limits = limits

    def _cid(self, spec: StorageSpec) -> str:
        if spec.type != "ipfs" or not spec.cid:
            raise StorageError(f"the ipfs provider cannot read a {spec.type!r} source")
        return spec.cid

    async def has_locally(self, spec: StorageSpec) -> bool:
        """True if every block of the (sub-)DAG the spec names is in the local store."""
        try:
            target = await resolve(
                LocalBlocks(self.store), self._cid(spec), spec.path, limits=self.limits
            )
        except BlockNotFound:
            return False
        return await anyio.to_thread.run_sync(self.store.has_dag, target)

    async def has_nearby(self, spec: StorageSpec) -> bool:
        """True if the DAG is here, or a peer announced it and its record is still live."""
        if await self.has_locally(spec):
            return True
        if isinstance(self.blocks, BlockStore):
            return False
        live = set(self.blocks.records.providers(self._cid(spec)))
        return bool(live & self.blocks.services.peers())

    async def _target(self, spec: StorageSpec) -> bytes:
        return await resolve(self.blocks, self._cid(spec), spec.path, limits=self.limits)

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        """Materialise the CID (or ``spec.path`` inside it) read-only at ``dest``.

        Raises:
            StorageError: blocks unavailable (``BlockNotFound``), corrupt beyond
                repair, unsafe names, or larger than ``max_size``.
        """
        guard = self.store.guard()
        await anyio.to_thread.run_sync(guard.__enter__)
        try:
            target = await self._target(spec)
            await anyio.to_thread.run_sync(lambda: dest.parent.mkdir(parents=True, exist_ok=True))
            if not isinstance(self.blocks, BlockStore):
                # files are written while their blocks arrive (every provider at once)
                return await self.blocks.export(  # type: ignore[no-any-return]
                    target,
                    dest,
                    read_only=True,
                    max_size=self.max_size,
                    limits=self.limits,
                    symlinks="refuse",
                )
            return await export_to_path(
                self.store,
                target,
                dest,
                read_only=True,
                max_size=self.max_size,
                limits=self.limits,
                symlinks="refuse",
            )
        finally:
            guard.__exit__(None, None, None)

    async def open_reader(self, spec: StorageSpec) -> tuple[Reader, int] | None:
        """A reader over the file the spec names, or None if it names a directory."""
        target = await self._target(spec)
        block = (await as_source(self.blocks).get_many([target]))[0]
        root = decode_block(target, block)
        if root.kind not in (DataType.FILE, DataType.RAW):
            return None
        if self.max_size is not None and root.size > self.max_size:
            raise StorageError(
                f"{spec.cid} is {root.size} bytes; this node's limit is {self.max_size}"
            )
        return await open_reader(self.blocks, target, limits=self.limits)
