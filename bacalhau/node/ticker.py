"""One task for the periodic work of many nodes in one process.

A node alone runs its periodic chores (publishing peers joining and leaving every
second, asking its engines whether they answer every few seconds) in tasks of its
own. A thousand nodes in one process (``Network.in_memory(1000)``) would so wake a
thousand tasks a second, and every few seconds start a thousand checks at once:
the latency of the jobs running meanwhile grows with the network. A
:class:`Ticker` shared by the nodes of a :class:`~bacalhau.network.Network` runs the
chores of all of them from one task instead, one after another, each on its own
period. Chores come due on a grid (:data:`GRID`), so the ticker wakes a few times a
second for all the chores due together, not once per chore (a thousand nodes' chores
fall due at a thousand different moments a second otherwise), and lets other tasks
run between chores every :data:`SLICE` seconds of them, not after every one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .clock import Clock, SystemClock

__all__ = ["Chore", "Ticker", "run_every"]

log = logging.getLogger("bacalhau.ticker")

Chore = Callable[[], Awaitable[None] | None]
"""A periodic piece of work: a plain function, or one returning an awaitable."""
GRID = 0.05
"""Seconds: a chore whose period spans this comes due on a multiple of it (its due time
moved back to the grid, so it runs up to this much early, never late)."""
SLICE = 0.0005
"""Seconds of chores run in a row before other tasks get a turn."""


def _on_grid(at: float, period: float) -> float:
    """``at``, moved back to the grid when ``period`` spans it (a due time already on
    the grid, give or take rounding, stays where it is)."""
    if period < GRID:
        return at
    return math.floor(at / GRID + 1e-3) * GRID


@attrs.define(eq=False, kw_only=True)
class Ticker:
    """Runs registered chores every ``period`` seconds each, from one task.

    A chore first runs one period after it is added. A chore that raises is logged
    and keeps its place (one node's bug never stops the others' chores); a slow one
    delays the chores due after it, never runs twice at once.

    Args:
        clock: whose time the periods are measured on (a node uses a shared ticker
            only if it runs on the same clock).
    """

    clock: Clock = attrs.Factory(SystemClock)
    _heap: list[tuple[float, int]] = attrs.Factory(list)
    _chores: dict[int, tuple[float, Chore]] = attrs.Factory(dict)
    _seq: itertools.count[int] = attrs.Factory(itertools.count)
    _wake: anyio.Event = attrs.Factory(anyio.Event)
    running: bool = False

    def __len__(self) -> int:
        return len(self._chores)

    def add(self, period: float, chore: Chore) -> int:
        """Run ``chore`` every ``period`` seconds from now on; returns its handle."""
        if not period > 0:
            raise ValueError(f"a chore's period must be positive, got {period!r}")
        handle = next(self._seq)
        self._chores[handle] = (period, chore)
        heapq.heappush(self._heap, (_on_grid(self.clock.now() + period, period), handle))
        if self._heap[0][1] == handle:
            self._wake.set()
        return handle

    def remove(self, handle: int) -> None:
        """Stop running the chore (its heap entry is dropped when it comes due)."""
        self._chores.pop(handle, None)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run due chores until cancelled."""
        self.running = True
        task_status.started()
        try:
            turn = time.perf_counter()
            while True:
                while self._heap and self._heap[0][1] not in self._chores:
                    heapq.heappop(self._heap)  # removed
                if not self._heap:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    turn = time.perf_counter()
                    continue
                at, handle = self._heap[0]
                if self.clock.now() < at:
                    with self.clock.wake_at(at):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    turn = time.perf_counter()
                    continue
                heapq.heappop(self._heap)
                period, chore = self._chores[handle]
                await _call(chore)
                if handle in self._chores:  # not removed while it ran
                    due = at + period
                    now = self.clock.now()
                    due = due if due > now else _on_grid(now + period, period)
                    heapq.heappush(self._heap, (due, handle))
                if time.perf_counter() - turn >= SLICE:
                    await anyio.lowlevel.checkpoint()
                    turn = time.perf_counter()
        finally:
            self.running = False

    def shared_with(self, clock: Clock) -> bool:
        """Whether a node on ``clock`` can leave its chores to this ticker (both run on
        the wall clock, or on the very same clock)."""
        return clock is self.clock or (
            type(clock) is SystemClock and type(self.clock) is SystemClock
        )


async def _call(chore: Chore) -> None:
    try:
        pending = chore()
        if pending is not None:
            await pending
    except Exception:
        log.exception("a periodic chore failed (it runs again next period)")


async def run_every(period: float, chore: Chore, *, clock: Clock | None = None) -> None:
    """A node's own loop for one chore: every ``period`` seconds (on ``clock``; None:
    real time) until cancelled. A chore that raises is logged and runs again."""
    while True:
        if clock is None:
            await anyio.sleep(period)
        else:
            with clock.wake_at(clock.now() + period):
                await anyio.sleep_forever()
        await _call(chore)
