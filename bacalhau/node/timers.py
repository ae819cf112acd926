"""One task, one heap: the node's timers (thousands of jobs need not mean thousands of tasks)."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

import anyio

__all__ = ["TimerQueue"]

Key = tuple[str, str, str]


class TimerQueue:
    """``set(key, at)`` replaces any timer with the same key; ``cancel`` forgets by job."""

    def __init__(self, *, fire: Callable[[Key], None], clock: Callable[[], float] = time.time):
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []
        self._live: dict[Key, int] = {}
        self._by_job: dict[str, set[Key]] = {}
        self._seq = itertools.count()
        self._wake = anyio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, key: Key, at: float) -> None:
        seq = next(self._seq)
        self._live[key] = seq
        self._by_job.setdefault(key[0], set()).add(key)
        heapq.heappush(self._heap, (at, seq, key))
        if self._heap[0][1] == seq:
            self._wake.set()

    def cancel(self, job_id: str, name: str | None = None, node: str | None = None) -> None:
        keys = self._by_job.get(job_id)
        if not keys:
            return
        for key in [
            k for k in keys if (name is None or k[1] == name) and (node is None or k[2] == node)
        ]:
            keys.discard(key)
            self._live.pop(key, None)
        if not keys:
            del self._by_job[job_id]

    async def run(self) -> None:
        while True:
            while self._heap and self._heap[0][1] != self._live.get(self._heap[0][2]):
                heapq.heappop(self._heap)  # cancelled or replaced
            if not self._heap:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            at, _, key = self._heap[0]
            delay = at - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            heapq.heappop(self._heap)
            del self._live[key]
            jobs = self._by_job.get(key[0])
            if jobs is not None:
                jobs.discard(key)
                if not jobs:
                    del self._by_job[key[0]]
            self._fire(key)
