"""The node's IPFS-compatible data layer: Kubo-compatible CIDs, a block store,
block exchange between nodes, CAR files, and the ``ipfs`` storage provider.

See ``docs/content-addressing.md``.
"""

from __future__ import annotations

from .blockstore import BlockStore, blockstore_path
from .car import export_car, import_car
from .exchange import BlockService
from .exporter import Entry, cat, export_to_path, ls, open_reader, read_all, resolve
from .importer import DEFAULT_CHUNK_SIZE, MAX_LINKS, add_bytes, add_path
from .provider import IpfsStorage

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_LINKS",
    "BlockService",
    "BlockStore",
    "Entry",
    "IpfsStorage",
    "add_bytes",
    "add_path",
    "blockstore_path",
    "cat",
    "export_car",
    "export_to_path",
    "import_car",
    "ls",
    "open_reader",
    "read_all",
    "resolve",
]
