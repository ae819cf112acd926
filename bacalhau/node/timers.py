"""One task, one heap: the node's timers (thousands of jobs need not mean thousands of tasks)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Literal

import anyio

from ..protocol.timers import ComputeTimer, RequesterTimer, TimerKey, TimerName
from .clock import Clock, SystemClock

__all__ = ["TimerQueue"]


class TimerQueue:
    """``set(key, at)`` replaces any timer with the same key; ``cancel`` forgets by job.

    Due timers are handed to ``fire`` one at a time, from the queue's own task, in
    the order of their due times.
    """

    def __init__(self, *, fire: Callable[[TimerKey], None], clock: Clock | None = None) -> None:
        self._fire = fire
        self._clock = clock or SystemClock()
        self._heap: list[tuple[float, int, TimerKey]] = []
        self._live: dict[TimerKey, int] = {}
        self._by_job: dict[str, set[TimerKey]] = {}
        self._seq = itertools.count()
        self._wake = anyio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def pending(self) -> list[TimerKey]:
        """The timers set and not yet fired or cancelled."""
        return list(self._live)

    def set(self, key: TimerKey, at: float) -> None:
        seq = next(self._seq)
        self._live[key] = seq
        self._by_job.setdefault(key.job_id, set()).add(key)
        heapq.heappush(self._heap, (at, seq, key))
        if self._heap[0][1] == seq:
            self._wake.set()

    def cancel(
        self,
        job_id: str,
        name: TimerName | None = None,
        node: str | None = None,
        side: Literal["requester", "compute"] | None = None,
    ) -> None:
        """Forget ``job_id``'s timers (only ``name`` / ``node`` / ``side`` ones when
        given; see :class:`~bacalhau.protocol.commands.CancelTimers`)."""
        keys = self._by_job.get(job_id)
        if not keys:
            return
        kind = {None: None, "requester": RequesterTimer, "compute": ComputeTimer}[side]
        for key in [
            k
            for k in keys
            if (name is None or k.name == name)
            and (node is None or k.node == node)
            and (kind is None or isinstance(k.name, kind))
        ]:
            keys.discard(key)
            self._live.pop(key, None)
        if not keys:
            del self._by_job[job_id]
        if len(self._heap) > 2 * len(self._live) + 1024:
            # cancelled entries wait in the heap until their due time (a job's deadline
            # can be many minutes away): drop them once they outnumber the live ones
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    async def run(self) -> None:
        while True:
            while self._heap and self._heap[0][1] != self._live.get(self._heap[0][2]):
                heapq.heappop(self._heap)  # cancelled or replaced
            if not self._heap:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            at, _, key = self._heap[0]
            if self._clock.now() < at:
                with self._clock.wake_at(at):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            heapq.heappop(self._heap)
            del self._live[key]
            jobs = self._by_job.get(key.job_id)
            if jobs is not None:
                jobs.discard(key)
                if not jobs:
                    del self._by_job[key.job_id]
            self._fire(key)
