"""The gossip transport's address book: where peers listen, and how dialing them went.

Addresses come from mDNS, from peer exchange and from the peers themselves
(the address a connected peer is seen from, with the port it listens on). The
book is bounded (the least recently refreshed address goes first), and an
address that keeps failing backs off exponentially and is finally forgotten.
Static ``--peer`` addresses are not kept here: the transport redials those
forever on its own.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Container, Iterator
from typing import Any

import attrs

from ..errors import ValidationError, WireError
from ..identity import public_key_from_node_id

__all__ = ["AddressBook", "Known", "parse_peer_entry", "parse_peers_message"]


@attrs.define(kw_only=True)
class Known:
    """An address where a peer (id known) listens, and how dialing it went."""

    node_id: str
    host: str
    port: int
    source: str
    failures: int = 0
    next_try: float = 0.0


def parse_peer_entry(item: Any) -> tuple[str, str, int] | None:
    """A peer-exchange entry ``[node id, host, port]``, checked; None if malformed."""
    if not (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and len(item[0]) < 80
        and isinstance(item[1], str)
        and 0 < len(item[1]) <= 255
        and type(item[2]) is int
        and 0 < item[2] < 65536
    ):
        return None
    try:
        public_key_from_node_id(item[0])
    except ValidationError:
        return None
    return item[0], item[1], item[2]


def parse_peers_message(msg: list[Any], pex_max: int) -> tuple[list[tuple[str, str, int]], bool]:
    """A ``[PEERS, [entry, ...], complete]`` message: its well-formed entries (the
    malformed ones are skipped) and whether the list is complete.

    Raises:
        WireError: the message itself is malformed (or lists over ``pex_max`` entries).
    """
    if not (
        len(msg) == 3
        and isinstance(msg[1], list)
        and len(msg[1]) <= pex_max
        and isinstance(msg[2], bool)
    ):
        raise WireError("malformed PEERS")
    entries = [entry for item in msg[1] if (entry := parse_peer_entry(item)) is not None]
    return entries, msg[2]


@attrs.define(kw_only=True)
class AddressBook:
    """Bounded map of node id -> :class:`Known` address.

    Args:
        own_id: this node's id (never recorded).
        maxsize: most addresses kept.
        backoff_min, backoff_max: the delay after a failed dial doubles from
            ``backoff_min`` up to ``backoff_max`` (times a random 0.5-1).
        max_failures: failed dials in a row after which an address is forgotten.
    """

    own_id: str
    maxsize: int = 1024
    backoff_min: float = 0.25
    backoff_max: float = 30.0
    max_failures: int = 6
    rng: random.Random = attrs.Factory(random.Random)
    _entries: OrderedDict[str, Known] = attrs.Factory(OrderedDict)

    def remember(self, node_id: str, host: str, port: int, *, source: str, reset: bool) -> None:
        """Add or refresh an address.

        ``reset`` (a first-hand address: the peer itself, or mDNS) replaces
        what is known and clears the failure count; a second-hand one (peer
        exchange) never overrides a first-hand one.
        """
        if node_id == self.own_id:
            return
        known = self._entries.get(node_id)
        if known is None:
            known = self._entries[node_id] = Known(
                node_id=node_id, host=host, port=port, source=source
            )
        elif reset or known.source != "peer":
            known.host, known.port, known.source = host, port, source
        if reset:
            known.failures, known.next_try = 0, 0.0
        self._entries.move_to_end(node_id)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def get(self, node_id: str) -> Known | None:
        return self._entries.get(node_id)

    def forget(self, node_id: str) -> None:
        self._entries.pop(node_id, None)

    def ready(self, now: float, busy: Container[str], room: int) -> list[Known]:
        """Up to ``room`` addresses, in random order, whose backoff is over and
        whose node is not ``busy`` (connected or being dialed)."""
        if room <= 0:
            return []
        ready = [k for k in self._entries.values() if k.node_id not in busy and k.next_try <= now]
        self.rng.shuffle(ready)
        return ready[:room]

    def disconnected(self, node_id: str, now: float) -> None:
        """A connection to ``node_id`` ended: it may be redialed after ``backoff_min``."""
        known = self._entries.get(node_id)
        if known is not None:
            known.next_try = now + self.backoff_min

    def failed(self, known: Known, now: float) -> bool:
        """A dial of ``known`` failed: back off, or forget it; True if forgotten."""
        if self._entries.get(known.node_id) is not known:
            return False
        known.failures += 1
        if known.failures >= self.max_failures:
            del self._entries[known.node_id]
            return True
        delay = min(self.backoff_max, self.backoff_min * 2**known.failures)
        known.next_try = now + delay * self.rng.uniform(0.5, 1.0)
        return False

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def __iter__(self) -> Iterator[Known]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
