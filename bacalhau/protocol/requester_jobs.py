"""The requester's records of its jobs, and the tables of the moves they may make
(:data:`JOB_TRANSITIONS`, :data:`EXECUTION_TRANSITIONS`). Plain data: the state machine
that moves them is :class:`~bacalhau.protocol.requester.RequesterState`."""

from __future__ import annotations

import attrs

from ..commitment import Commitment
from ..models import ExecutionState, JobEvent, JobSpec, JobState, StorageRef
from . import audit
from .timers import JobAction

__all__ = [
    "EXECUTION_TRANSITIONS",
    "JOB_TRANSITIONS",
    "MAX_BIDS",
    "Execution",
    "RequesterJob",
]

S, X = JobState, ExecutionState
MAX_BIDS = 512
"""Most bids (and declines) a job records beyond twice what it can use
(``min_bids`` plus ``concurrency`` plus ``retries``); more are dropped."""


def _max_bids(spec: JobSpec) -> int:
    deal = spec.deal
    return MAX_BIDS + 2 * (deal.min_bids + deal.concurrency + spec.retries)


_LIVE = (S.QUEUED, S.BIDDING, S.RUNNING, S.VERIFYING, S.PUBLISHING)

JOB_TRANSITIONS: dict[tuple[JobState, JobAction], JobState] = {
    (S.QUEUED, JobAction.OFFER): S.BIDDING,
    (S.BIDDING, JobAction.OFFER): S.BIDDING,
    (S.BIDDING, JobAction.QUEUE): S.QUEUED,
    (S.QUEUED, JobAction.QUEUE): S.QUEUED,
    (S.QUEUED, JobAction.ACCEPT): S.RUNNING,  # bids held while waiting for min_bids
    (S.BIDDING, JobAction.ACCEPT): S.RUNNING,
    (S.RUNNING, JobAction.ACCEPT): S.RUNNING,
    (S.RUNNING, JobAction.VERIFY): S.VERIFYING,
    (S.VERIFYING, JobAction.PUBLISH): S.PUBLISHING,
    (S.PUBLISHING, JobAction.COMPLETE): S.COMPLETED,
    (S.PUBLISHING, JobAction.RETRY): S.RUNNING,  # no winner published; retries left
    **{(s, JobAction.FAIL): S.FAILED for s in _LIVE},
    **{(s, JobAction.CANCEL): S.CANCELLED for s in _LIVE},
}
"""(job state, action) -> next job state. Anything else is illegal."""

EXECUTION_TRANSITIONS: frozenset[tuple[ExecutionState, ExecutionState]] = frozenset(
    {
        (X.BID, X.ACCEPTED),
        (X.BID, X.BID_REJECTED),
        (X.BID_REJECTED, X.ACCEPTED),  # a rejected bidder replaces a failed node
        (X.ACCEPTED, X.PROPOSED),
        (X.ACCEPTED, X.FAILED),
        (X.ACCEPTED, X.LOST),
        (X.ACCEPTED, X.RESULTS_REJECTED),  # its proposal was invalid
        (X.ACCEPTED, X.CANCELLED),
        (X.PROPOSED, X.RESULTS_ACCEPTED),
        (X.PROPOSED, X.RESULTS_REJECTED),
        (X.PROPOSED, X.CANCELLED),
        (X.PROPOSED, X.FAILED),  # the node restarted and lost its results
        (X.RESULTS_ACCEPTED, X.PUBLISHED),
        (X.RESULTS_ACCEPTED, X.FAILED),
        (X.RESULTS_ACCEPTED, X.CANCELLED),
    }
)
"""Allowed (from, to) moves of one node's execution, as the requester records it."""


@attrs.define(kw_only=True)
class Execution:
    node_id: str
    state: ExecutionState = X.BID
    accepted: bool = False
    digest: bytes | None = None
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    published: StorageRef | None = None
    reason: str = ""
    reviewed: bool = True
    commitment: Commitment | None = None
    verified: bool = False


@attrs.define(kw_only=True)
class RequesterJob:
    """One job's record. ``history`` is what ``describe`` shows."""

    job_id: str
    spec: JobSpec
    created_at: float
    state: JobState = S.QUEUED
    reason: str = ""
    executions: dict[str, Execution] = attrs.Factory(dict)
    declined: dict[str, str] = attrs.Factory(dict)
    history: list[JobEvent] = attrs.Factory(list)
    acceptances: int = 0
    bidding_closed: bool = False
    window_open: bool = False
    audit: audit.AuditRecord | None = None
    asked: dict[str, bool] = attrs.Factory(dict)
    """Nodes offered the job -> whether they answered."""
    broadcast: bool = False
    targets: list[str] = attrs.Factory(list)
    """``target="all"``: the nodes it must run on."""
    waiting: str = ""
    """Why it is queued (shown in its history once per change)."""
    peers: int = -1
    """How many other nodes the requester could reach when the job came (-1: unknown)."""

    @property
    def shown_reason(self) -> str:
        """The reason a view shows: why the job ended, or while it is queued, why it
        waits (``no node matches region=eu ...``)."""
        return self.reason or (self.waiting if self.state is S.QUEUED else "")

    def count(self, *states: ExecutionState) -> int:
        return sum(1 for e in self.executions.values() if e.state in states)

    def in_state(self, *states: ExecutionState) -> list[Execution]:
        return [e for e in self.executions.values() if e.state in states]

    @property
    def acceptances_left(self) -> int:
        """How many more nodes may be accepted: concurrency plus the retry budget."""
        return self.spec.deal.concurrency + self.spec.retries - self.acceptances
