"""What a node offers to its plugins (executors, storage, publishers, block exchange).

Plugins receive a :class:`NodeServices` when they are built, never the Node
itself, so they can be tested against :class:`bacalhau.testing.FakeServices`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..identity import Identity
    from ..storage.ipfs.blockstore import BlockStore
    from ..storage.ipfs.exchange import BlockService

__all__ = ["NodeServices", "ProtocolHandler"]

ProtocolHandler = Callable[[str, bytes], Awaitable[bytes]]
"""(peer id, request payload) -> reply payload."""


class NodeServices(Protocol):
    """The node, as its plugins see it."""

    @property
    def node_id(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def identity(self) -> Identity:
        """The node's keys (signing, and the X25519 key that opens sealed proposals)."""
        ...

    @property
    def blockstore(self) -> BlockStore: ...

    @property
    def blocks(self) -> BlockService:
        """Block store plus fetching of missing blocks from peers."""
        ...

    def peers(self) -> frozenset[str]: ...

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float = 10.0
    ) -> bytes:
        """Send ``payload`` to the ``protocol`` handler of ``peer_id``; return its reply."""
        ...

    def register_protocol(self, protocol: str, handler: ProtocolHandler) -> None:
        """Serve direct requests for ``protocol`` with ``handler``."""
        ...
