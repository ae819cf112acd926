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

The other side is :class:`Reprovider`: the roots this node itself provides and
when each must be announced again, so that its peers' records of it are
refreshed before they lapse (every ``interval``, half the default record
lifetime), bounded in roots and in roots per round. It takes ``now`` as an
argument and does no I/O; the block service's loop does the announcing.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable

import attrs

from ...cid import AnyCid, split_cid, to_cid

__all__ = ["DEFAULT_PROVIDER_TTL", "DEFAULT_REPROVIDE_INTERVAL", "ProviderRecords", "Reprovider"]

DEFAULT_PROVIDER_TTL = 3600.0
"""Seconds a provider record lives after its last announcement."""
DEFAULT_REPROVIDE_INTERVAL = DEFAULT_PROVIDER_TTL / 2
"""Seconds between two announcements of one root this node provides: half a
record's default lifetime, so one lost announcement does not let a record lapse."""


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


@attrs.define
class Reprovider:
    """The roots this node provides, and when each is next due to be announced.

    Args:
        interval: seconds from one announcement of a root to the next.
        max_roots: most roots kept; providing one more forgets the one provided
            longest ago.
        batch: most roots handed out by one :meth:`due` (one announcement round).
    """

    interval: float = attrs.field(default=DEFAULT_REPROVIDE_INTERVAL, kw_only=True)
    max_roots: int = attrs.field(default=4096, kw_only=True)
    batch: int = attrs.field(default=16, kw_only=True)
    _due: collections.OrderedDict[bytes, float] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def __attrs_post_init__(self) -> None:
        if self.interval <= 0 or self.max_roots < 1 or self.batch < 1:
            raise ValueError("interval, max_roots and batch must be positive")

    def provided(self, cid: AnyCid, now: float) -> None:
        """``cid`` was announced at ``now``: due again ``interval`` later."""
        raw = to_cid(cid)
        self._due.pop(raw, None)
        self._due[raw] = now + self.interval
        while len(self._due) > self.max_roots:
            self._due.popitem(last=False)

    def roots(self, limit: int) -> list[bytes]:
        """At most ``limit`` roots this node provides, the most recently provided first."""
        return list(itertools.islice(reversed(self._due), limit))

    def drop(self, cid: AnyCid) -> None:
        """Stop announcing ``cid`` (this node no longer holds it)."""
        self._due.pop(to_cid(cid), None)

    def due(self, now: float) -> list[bytes]:
        """Up to ``batch`` roots due at ``now``, the most overdue first. They stay due
        until :meth:`provided` (announced) or :meth:`drop` is called for them."""
        ready = [(at, cid) for cid, at in self._due.items() if at <= now]
        ready.sort()
        return [cid for _, cid in ready[: self.batch]]

    def next_at(self) -> float | None:
        """When the next root falls due; None when none is provided."""
        return min(self._due.values(), default=None)

    def __contains__(self, cid: object) -> bool:
        return to_cid(cid) in self._due

    def __len__(self) -> int:
        return len(self._due)
