"""The root CIDs a node holds, announced (bounded) so requesters rank it for data locality.

A requester prefers nodes that hold a job's input CIDs (:func:`bacalhau.protocol.nodes.rank`).
A node cannot announce every block it stores, so it announces the roots it most recently
added, pinned at start, fetched or published: at most :data:`HELD_ROOTS` of them, newest
first. Roots it fetched or published come from the block service's reprovider, which
already tracks what this node provides to its peers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from ..cid import cid_str

if TYPE_CHECKING:
    from ..storage.base import DataServices

__all__ = ["HELD_ROOTS", "Holdings"]

HELD_ROOTS = 256
"""Most root CIDs one announcement carries (the node table refuses more)."""


class Holdings:
    """Recently held root CIDs, newest last, at most :data:`HELD_ROOTS`."""

    def __init__(self, limit: int = HELD_ROOTS) -> None:
        self.limit = limit
        self._roots: OrderedDict[str, None] = OrderedDict()

    def add(self, cid: str) -> None:
        self._roots.pop(cid, None)
        self._roots[cid] = None
        while len(self._roots) > self.limit:
            self._roots.popitem(last=False)

    def seed(self, data: DataServices | None) -> None:
        """At start: the roots pinned in the block store (blocking: one folder scan)."""
        if data is not None:
            for cid in list(data.blockstore.pins())[-self.limit :]:
                self.add(cid)

    def announced(self, data: DataServices | None) -> tuple[str, ...]:
        """What to announce: the newest roots, provided ones (fetched, published) first."""
        out: dict[str, None] = {}
        if data is not None:
            for raw in data.blocks.reprovider.roots(self.limit):
                out[cid_str(raw)] = None
        for cid in reversed(self._roots):
            if len(out) >= self.limit:
                break
            out.setdefault(cid, None)
        return tuple(out)[: self.limit]
