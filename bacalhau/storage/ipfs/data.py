"""The node's data services over its block store: add, get and read content by CID.

:class:`IpfsData` is the one implementation of
:class:`~bacalhau.storage.base.DataServices`: the block store, block exchange with
peers (missing blocks are fetched and verified), and the add/get/cat operations a
node, its API and its executors use. It is handed to them explicitly.
"""

from __future__ import annotations

from pathlib import Path

from ...transport.services import PeerServices
from .blockstore import BlockStore
from .exchange import BlockService

__all__ = ["IpfsData"]


class IpfsData:
    """Content-addressed data of one node.

    Args:
        root: the block store's folder.
        peers: how to reach other nodes for missing blocks.
    """

    def __init__(self, root: Path, peers: PeerServices) -> None:
        self.blockstore = BlockStore(root)
        self.blocks = BlockService(self.blockstore, peers)

    def start(self) -> None:
        """Serve this node's blocks to peers (once, when the node starts)."""
        self.blocks.register()

    async def add(self, data: bytes | str | Path, *, cid_version: int = 0) -> str:
        """Store a file, a directory (recursively) or bytes, pinned; return its CID
        (the one ``ipfs add`` prints for the same data)."""
        from .importer import add_bytes, add_path

        if isinstance(data, bytes):
            return await add_bytes(self.blockstore, data, cid_version=cid_version, pin=True)
        return await add_path(self.blockstore, Path(data), cid_version=cid_version, pin=True)

    async def get(self, cid: str, dest: Path) -> Path:
        """Write the file or directory at ``cid`` to ``dest`` (fetched from every provider
        at once when needed, every block verified against its hash; files are written
        while their blocks arrive)."""
        return await self.blocks.export(cid, Path(dest))

    async def cat(self, cid: str, *, max_size: int = 64 * 1024 * 1024) -> bytes:
        """The bytes of the file at ``cid`` (a path inside a directory CID: ``CID/a/b``)."""
        from .exporter import read_all, resolve

        root, _, path = cid.partition("/")
        target = await resolve(self.blocks, root, path) if path else root
        return await read_all(self.blocks, target, max_size=max_size)
