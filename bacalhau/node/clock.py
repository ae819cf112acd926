"""The node's clock, injectable: wall time in production, virtual time in tests.

The state machines never read a clock; the driver passes them ``now`` from a
:class:`Clock`, and the timer queue waits on it. With a :class:`VirtualClock`
a test moves time by hand (``clock.advance(600)``) and every timer due by then
fires at once, so a ten-minute protocol deadline takes no time at all.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """What the node needs of time."""

    def now(self) -> float:
        """Seconds since the epoch (or any fixed origin shared by a test's nodes)."""
        ...

    def wake_at(self, at: float) -> anyio.CancelScope:
        """A cancel scope that is cancelled once ``now() >= at``."""
        ...


class SystemClock:
    """Wall-clock time (``time.time``)."""

    def now(self) -> float:
        return time.time()

    def wake_at(self, at: float) -> anyio.CancelScope:
        return anyio.move_on_after(max(0.0, at - time.time()))


class VirtualClock:
    """Time that moves only when told to (:meth:`advance`, :meth:`set`).

    Args:
        start: the first reading; default: the wall clock's now, so envelopes signed
            on virtual time pass the peers' message-age check.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._waiting: list[tuple[float, int, anyio.CancelScope]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wake_at(self, at: float) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if at <= self._now:
            scope.cancel()
        else:
            heapq.heappush(self._waiting, (at, next(self._seq), scope))
        return scope

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake everything due."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        """Move time forward to ``now`` and wake everything due."""
        if now < self._now:
            raise ValueError("time does not go backwards")
        self._now = now
        while self._waiting and self._waiting[0][0] <= now:
            heapq.heappop(self._waiting)[2].cancel()
