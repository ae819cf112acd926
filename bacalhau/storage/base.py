"""The StorageProvider interface: present one input source to one executor.

A provider handles one :attr:`StorageSpec.type` (``ipfs``, ``url``, ``inline``,
or a plugin's). It can always materialise a source as read-only files at a
host path (POSIX mode); a provider that can also stream bytes without writing
files implements :meth:`open_reader` (library mode).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from ..models import StorageSpec

if TYPE_CHECKING:
    from .ipfs.blockstore import BlockStore
    from .ipfs.exchange import BlockService

__all__ = ["DataServices", "Reader", "StorageProvider"]

Reader = Callable[[int, int], bytes]
"""``read(offset, size) -> bytes``: thread-safe random access to one file's bytes."""


class DataServices(Protocol):
    """A node's content-addressed data: what the node, its API and executors are handed."""

    @property
    def blockstore(self) -> BlockStore:
        """The local blocks only."""
        ...

    @property
    def blocks(self) -> BlockService:
        """The local blocks plus fetching of missing ones from peers."""
        ...

    def start(self) -> None:
        """Begin serving blocks to peers."""
        ...

    async def add(self, data: bytes | str | Path, *, cid_version: int = 0) -> str:
        """Store bytes, a file or a directory, pinned; return the CID."""
        ...

    async def get(self, cid: str, dest: Path) -> Path:
        """Write the content at ``cid`` to ``dest``."""
        ...

    async def cat(self, cid: str, *, max_size: int = 64 * 1024 * 1024) -> bytes:
        """The bytes of the file at ``cid`` (or ``CID/path``)."""
        ...


class StorageProvider(abc.ABC):
    type: ClassVar[str]

    async def has_locally(self, spec: StorageSpec) -> bool:
        """True if the data is on this node without fetching (data locality)."""
        return True

    async def has_nearby(self, spec: StorageSpec) -> bool:
        """True if the data is here or a peer is known to hold it (a provider record),
        so fetching it needs no search (``nearby`` data locality)."""
        return await self.has_locally(spec)

    @abc.abstractmethod
    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        """Materialise ``spec`` at ``dest`` (a file or directory), read-only; return it.

        Raises:
            StorageError: the data could not be had, with the reason.
        """

    async def open_reader(self, spec: StorageSpec) -> tuple[Reader, int] | None:
        """Library mode: a reader for a single-file source and its size, or None
        when this provider cannot stream (the runner then uses :meth:`prepare`)."""
        return None
