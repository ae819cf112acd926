"""The live event stream of one node: every job's history lines as they happen, and
peers joining and leaving, numbered in one sequence.

The hub keeps the newest ``keep`` events so a follower that connects (or reconnects)
late can catch up from a cursor; a follower too slow to keep up is told how many
events it missed (:attr:`EventBatch.skipped`), and publishing never waits for it.
Everything here runs on the node's event loop.
"""

from __future__ import annotations

import time as _time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import anyio
import attrs

from ..models import JobEvent

__all__ = ["EventBatch", "EventHub", "NodeEvent"]

NODE_JOINED = "NodeJoined"
NODE_LEFT = "NodeLeft"


@attrs.frozen(kw_only=True)
class NodeEvent:
    """One line of a node's event stream.

    Attributes:
        seq: position in this node's stream (from 0, without gaps).
        time: unix seconds.
        kind: a job event's kind (``JobCreated``, ``BidPlaced``, ``BidAccepted``,
            ``ResultsPublished``, ``JobCompleted``, ...) or ``NodeJoined``/``NodeLeft``.
        job_id: the job, for job events.
        node_id: the node the event is about (the bidder, the peer that joined, ...).
        detail: words for a person.
        state: the job's state right after the event, for job events.
    """

    seq: int
    time: float
    kind: str
    job_id: str | None = None
    node_id: str | None = None
    detail: str = ""
    state: str | None = None


@attrs.frozen(kw_only=True)
class EventBatch:
    events: tuple[NodeEvent, ...]
    next: int
    skipped: int = 0


@attrs.define(eq=False)
class EventHub:
    """A node's recent events, for any number of followers.

    Args:
        keep: events kept for late followers (oldest dropped first).
        clock: stamps node events (job events carry their own time).
    """

    keep: int = 10_000
    clock: Callable[[], float] = _time.time
    _events: deque[NodeEvent] = attrs.Factory(deque)
    _next: int = 0
    _seen: dict[str, int] = attrs.Factory(dict)
    _peers: frozenset[str] | None = None
    _event: anyio.Event | None = None

    @property
    def next_seq(self) -> int:
        return self._next

    # --- publishing -----------------------------------------------------------------------

    def publish(
        self,
        kind: str,
        *,
        job_id: str | None = None,
        node_id: str | None = None,
        detail: str = "",
        state: str | None = None,
        time: float | None = None,
    ) -> NodeEvent:
        event = NodeEvent(
            seq=self._next,
            time=self.clock() if time is None else time,
            kind=kind,
            job_id=job_id,
            node_id=node_id,
            detail=detail,
            state=state,
        )
        self._next += 1
        self._events.append(event)
        while len(self._events) > self.keep:
            self._events.popleft()
        wake, self._event = self._event, None
        if wake is not None:
            wake.set()
        return event

    def job_changed(self, job_id: str, history: Sequence[JobEvent], state: str) -> None:
        """Publish the lines of ``history`` not published yet (call on every change)."""
        seen = self._seen.get(job_id, 0)
        if len(history) < seen:  # a job recovered from disk: start again
            seen = 0
        for event in history[seen:]:
            self.publish(
                event.kind,
                job_id=job_id,
                node_id=event.node_id,
                detail=event.detail,
                state=state,
                time=event.time,
            )
        self._seen[job_id] = len(history)

    def forget_job(self, job_id: str) -> None:
        """Stop counting ``job_id``'s published lines (its record left memory)."""
        self._seen.pop(job_id, None)

    def tracked_jobs(self) -> int:
        """How many jobs' published-line counts are kept (one per job not forgotten)."""
        return len(self._seen)

    def peers_seen(self, peers: Iterable[str]) -> None:
        """Record ``peers`` as the nodes there now, publishing nothing (the next
        :meth:`peers_now` publishes what changed since)."""
        self._peers = frozenset(peers)

    def peers_now(self, peers: Iterable[str]) -> None:
        """Publish which nodes joined and which left since the last call (the first call
        only records the nodes it is given)."""
        now = frozenset(peers)  # the same set when given a frozenset
        before, self._peers = self._peers, now
        if before is None or now is before:  # nothing changed (costs nothing to see)
            return
        for node_id in sorted(now - before):
            self.publish(NODE_JOINED, node_id=node_id, detail="joined")
        for node_id in sorted(before - now):
            self.publish(NODE_LEFT, node_id=node_id, detail="left")

    # --- reading --------------------------------------------------------------------------

    def tail_cursor(self, n: int) -> int:
        first = self._events[0].seq if self._events else self._next
        return max(first, self._next - max(0, n))

    def read(self, cursor: int, *, limit: int = 1000) -> EventBatch:
        first = self._events[0].seq if self._events else self._next
        skipped = 0
        if cursor < first:
            skipped, cursor = first - cursor, first
        cursor = min(cursor, self._next)
        start = cursor - first
        out = tuple(self._events[i] for i in range(start, min(len(self._events), start + limit)))
        return EventBatch(events=out, next=cursor + len(out), skipped=skipped)

    async def wait(self, cursor: int) -> None:
        """Return once an event at or after ``cursor`` exists."""
        while self._next <= cursor:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

    async def follow(self, *, cursor: int = 0, limit: int = 1000) -> AsyncIterator[EventBatch]:
        """Batches from ``cursor`` on, forever (cancel to stop)."""
        while True:
            batch = self.read(cursor, limit=limit)
            if batch.events or batch.skipped:
                yield batch
            cursor = batch.next
            await self.wait(cursor)
