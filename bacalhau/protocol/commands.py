"""What a node must do: the outputs of the sans-IO state machines.

The driver (``bacalhau.node.driver``) carries each command out and feeds the
outcome back as an event.
"""

from __future__ import annotations

from typing import Literal

import attrs

from ..models import JobSpec
from .messages import Message
from .timers import TimerKey, TimerName

__all__ = [
    "Broadcast",
    "CancelExecution",
    "CancelTimers",
    "Command",
    "DiscardResults",
    "Dropped",
    "EvaluateBid",
    "FraudFound",
    "JobChanged",
    "PublishResults",
    "RecheckJob",
    "ReputationChanged",
    "ReviewBid",
    "RunExecution",
    "Send",
    "SetTimer",
]


@attrs.frozen
class Broadcast:
    """Sign ``message`` and send it to every node (this one included)."""

    message: Message


@attrs.frozen
class Send:
    """Sign ``message`` and send it to node ``to`` (which may be this node)."""

    to: str
    message: Message


@attrs.frozen
class SetTimer:
    """Fire ``TimerFired(key)`` at time ``at`` (replaces a timer with the same key)."""

    key: TimerKey
    at: float


@attrs.frozen(kw_only=True)
class CancelTimers:
    """Forget every timer of ``job_id`` (or only ``name`` / ``node`` ones when given) that
    belongs to ``side`` (``"requester"``: :class:`RequesterTimer` names, ``"compute"``:
    :class:`ComputeTimer` ones; None: both). A node is often both the requester and a
    compute node of one job: each side cancels only its own timers."""

    job_id: str
    name: TimerName | None = None
    node: str | None = None
    side: Literal["requester", "compute"] | None = None


@attrs.frozen(kw_only=True)
class EvaluateBid:
    """Compute: run the bid strategy chain on the job; answer with ``BidDecided``."""

    job_id: str
    spec: JobSpec
    requester_id: str


@attrs.frozen(kw_only=True)
class ReviewBid:
    """Requester: run the bid acceptance hooks on a bid; answer with ``BidReviewed``."""

    job_id: str
    node_id: str
    spec: JobSpec


@attrs.frozen(kw_only=True)
class RunExecution:
    """Compute: run the job; answer with ``ExecutionDone`` or ``ExecutionErrored``."""

    job_id: str
    spec: JobSpec
    requester_id: str
    seal_key: bytes


@attrs.frozen
class CancelExecution:
    """Compute: stop running ``job_id`` (if it runs) and delete its results."""

    job_id: str


@attrs.frozen
class PublishResults:
    """Compute: publish the accepted results; answer with ``PublishDone``/``PublishErrored``."""

    job_id: str
    spec: JobSpec


@attrs.frozen
class DiscardResults:
    """Compute: delete the job's unpublished results folder."""

    job_id: str


@attrs.frozen
class JobChanged:
    """Requester: the job's record changed (new history, maybe terminal); wake its watchers."""

    job_id: str
    terminal: bool = False


@attrs.frozen(kw_only=True)
class Dropped:
    """An input was refused (forged role, duplicate, unknown job, ...): log and count it."""

    reason: str
    sender: str | None = None
    forged: bool = False


@attrs.frozen(kw_only=True)
class FraudFound:
    """Requester: an audit caught ``cheater`` (``witnesses`` re-ran the job and agreed on
    other results). The node builds, signs and gossips a fraud proof
    (:mod:`bacalhau.verifier.fraud`)."""

    job_id: str
    cheater: str
    witnesses: tuple[str, ...]


@attrs.frozen
class RecheckJob:
    """Requester: re-run ``spec`` here (same job id) to settle an audit in which the
    worker and the auditor disagree; answer with ``RecheckDone`` (a digest, or why not)."""

    job_id: str
    spec: JobSpec


@attrs.frozen
class ReputationChanged:
    """Requester: ``node_id``'s record changed outside any job of this node (a fraud
    proof was judged): save it."""

    node_id: str
    outcome: str


Command = (
    Broadcast
    | Send
    | SetTimer
    | CancelTimers
    | EvaluateBid
    | ReviewBid
    | RunExecution
    | CancelExecution
    | PublishResults
    | DiscardResults
    | JobChanged
    | Dropped
    | FraudFound
    | RecheckJob
    | ReputationChanged
)
