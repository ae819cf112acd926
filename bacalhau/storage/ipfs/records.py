"""Provider records: which peers said they hold which DAGs, bounded and expiring.

A node that fetched, pinned or published a DAG announces its root to its peers;
each peer keeps a record ``(root multihash, peer) -> expiry``. Requesters look
here first (no broadcast "who has" round when live records exist) and spread a
fetch over every live provider. Records are bounded in roots (least recently
announced dropped first) and in providers per root, and every record expires
``ttl`` seconds after its announcement; an announcement never sets its own
lifetime (a peer's word is untrusted), it only refreshes the record.

Pure bookkeeping with an injectable clock (no I/O), so expiry is tested without
waiting.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import attrs

from ...cid import AnyCid, split_cid, to_cid

__all__ = ["DEFAULT_PROVIDER_TTL", "ProviderRecords"]

DEFAULT_PROVIDER_TTL = 3600.0
"""Seconds a provider record lives after its last announcement."""


@attrs.define(kw_only=True)
class ProviderRecords:
    """Who provides what, keyed by multihash (a CIDv0 and a CIDv1 share records).

    Args:
        ttl: seconds a record lives after the announcement that (re)made it.
        max_roots: most roots remembered (the least recently announced go first).
        max_per_root: most providers remembered for one root (the stalest go first).
        clock: monotonic seconds (injectable for tests).
    """

    ttl: float = attrs.field(default=DEFAULT_PROVIDER_TTL, kw_only=True)
    max_roots: int = attrs.field(default=4096, kw_only=True)
    max_per_root: int = attrs.field(default=32, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.monotonic, kw_only=True)
    _records: collections.OrderedDict[bytes, dict[str, float]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def __attrs_post_init__(self) -> None:
        if self.ttl <= 0 or self.max_roots < 1 or self.max_per_root < 1:
            raise ValueError("ttl, max_roots and max_per_root must be positive")

    @staticmethod
    def _key(cid: AnyCid) -> bytes:
        return split_cid(to_cid(cid))[2]

    def add(self, cid: AnyCid, peer: str) -> None:
        """Record (or refresh) that ``peer`` provides ``cid``."""
        key = self._key(cid)
        now = self.clock()
        peers = self._records.pop(key, {})
        peers.pop(peer, None)
        peers[peer] = now + self.ttl
        while len(peers) > self.max_per_root:
            del peers[min(peers, key=peers.__getitem__)]
        self._records[key] = peers
        while len(self._records) > self.max_roots:
            self._records.popitem(last=False)

    def providers(self, cid: AnyCid) -> list[str]:
        """Peers with a live record for ``cid``, most recently announced first."""
        key = self._key(cid)
        peers = self._records.get(key)
        if not peers:
            return []
        now = self.clock()
        for peer in [p for p, expiry in peers.items() if expiry <= now]:
            del peers[peer]
        if not peers:
            del self._records[key]
            return []
        return sorted(peers, key=peers.__getitem__, reverse=True)

    def forget(self, cid: AnyCid, peer: str) -> None:
        """Drop ``peer``'s record for ``cid`` (it said it no longer has it)."""
        peers = self._records.get(self._key(cid))
        if peers is not None:
            peers.pop(peer, None)

    def expire(self) -> int:
        """Drop every expired record; return how many were dropped."""
        now = self.clock()
        dropped = 0
        for key in list(self._records):
            peers = self._records[key]
            for peer in [p for p, expiry in peers.items() if expiry <= now]:
                del peers[peer]
                dropped += 1
            if not peers:
                del self._records[key]
        return dropped

    def __len__(self) -> int:
        """Number of (root, provider) records held, expired ones included until pruned."""
        return sum(len(p) for p in self._records.values())
