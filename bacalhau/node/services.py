"""What a node offers to its plugins (executors, storage, publishers, verifiers).

Plugin factories receive a :class:`NodeServices` when they are built, never the
Node itself: its id, data dir and keys, its data services (block store and
exchange), and its peers. A test can hand them any object with these attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..transport.services import PeerServices, ProtocolHandler

if TYPE_CHECKING:
    from ..identity import Identity
    from ..storage.base import DataServices

__all__ = ["NodeServices", "ProtocolHandler"]


class NodeServices(PeerServices, Protocol):
    """The node, as its plugins see it."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def identity(self) -> Identity:
        """The node's keys (signing, and the X25519 key that opens sealed proposals)."""
        ...

    @property
    def data(self) -> DataServices | None:
        """Content-addressed data (None when the block store is not installed)."""
        ...
