"""Limits of the gossip transport against hostile connections: handshake slots and scores.

* :class:`HandshakeSlots` bounds connections still in their handshake, in all and
  per remote address. Past a bound the *oldest* pending handshake (of that address
  first) is cancelled to make room, so idle sockets held open by an attacker
  cannot lock out a peer that actually speaks the protocol: it takes one round
  trip, they take the whole handshake timeout.
* :func:`should_cut` scores a peer by the broadcasts it sent that the node found
  invalid (bad signatures, malformed or refused messages): a peer whose invalid
  frames pass ``max_invalid`` and outnumber its valid ones is cut off.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import anyio
import attrs

__all__ = ["HandshakeSlots", "LogBudget", "Slot", "should_cut"]


@attrs.define(eq=False, kw_only=True)
class Slot:
    """One pending handshake; cancelling ``scope`` ends it."""

    address: str
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    evicted: bool = False


@attrs.define(eq=False, kw_only=True)
class HandshakeSlots:
    """Pending incoming handshakes, oldest first, bounded in all and per address."""

    max_total: int = 64
    max_per_address: int = 16
    evicted: int = 0
    _slots: OrderedDict[Slot, None] = attrs.Factory(OrderedDict)

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, address: str) -> Slot:
        """A slot for a new connection from ``address``, evicting older ones if needed."""
        slot = Slot(address=address)
        same = [s for s in self._slots if s.address == address]
        while len(same) >= self.max_per_address:
            self._evict(same.pop(0))
        while len(self._slots) >= self.max_total:
            self._evict(next(iter(self._slots)))
        self._slots[slot] = None
        return slot

    def close(self, slot: Slot) -> None:
        self._slots.pop(slot, None)

    def _evict(self, slot: Slot) -> None:
        self._slots.pop(slot, None)
        slot.evicted = True
        slot.scope.cancel()
        self.evicted += 1


def should_cut(*, invalid: int, valid: int, max_invalid: int) -> bool:
    """A peer that sent more than ``max_invalid`` invalid broadcasts, and more invalid
    than valid ones, is cut off (an honest relay forwards only what it found valid)."""
    return invalid > max_invalid and invalid > valid


@attrs.define(eq=False, kw_only=True)
class LogBudget:
    """At most ``burst`` log lines per ``period`` seconds; the rest are counted."""

    burst: int = 5
    period: float = 10.0
    suppressed: int = 0
    _window: float = 0.0
    _used: int = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window >= self.period:
            self._window, self._used = now, 0
        self._used += 1
        if self._used > self.burst:
            self.suppressed += 1
            return False
        return True
