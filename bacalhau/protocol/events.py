"""What happens to a node: the inputs of the sans-IO state machines."""

from __future__ import annotations

import attrs

from ..commitment import Commitment
from ..models import JobSpec, StorageRef
from .messages import Message
from .timers import TimerKey

__all__ = [
    "BidDecided",
    "BidReviewed",
    "CancelJob",
    "Event",
    "ExecutionDone",
    "ExecutionErrored",
    "MessageReceived",
    "ProofJudged",
    "ProposalOpened",
    "PublishDone",
    "PublishErrored",
    "RecheckDone",
    "SubmitJob",
    "TimerFired",
]


@attrs.frozen(kw_only=True)
class SubmitJob:
    """A client submitted a job to this node (it becomes the job's requester)."""

    job_id: str
    spec: JobSpec
    peers: int = -1
    """How many other nodes this node knows (-1: unknown); 0 skips the bid window."""


@attrs.frozen
class CancelJob:
    job_id: str
    reason: str = "cancelled by the user"


@attrs.frozen
class MessageReceived:
    """A signed message from ``sender`` (signature already checked)."""

    sender: str
    message: Message


@attrs.frozen(kw_only=True)
class ProposalOpened:
    """The driver opened ``node_id``'s proposal: ``digest`` (None for verifiers that do not
    compare) or ``error`` when it was not valid (copied, replayed, wrongly sealed)."""

    job_id: str
    node_id: str
    digest: bytes | None
    error: str | None = None
    commitment: Commitment | None = None
    """What the node committed to publish (None: no commitment to bind it)."""


@attrs.frozen
class TimerFired:
    """A timer set with ``SetTimer(key, at)`` is due."""

    key: TimerKey


@attrs.frozen(kw_only=True)
class BidDecided:
    """The bid strategy chain decided for ``job_id``."""

    job_id: str
    bid: bool
    reason: str = ""
    busy: bool = False
    """No for now only: the node has no room (the requester queues the job)."""


@attrs.frozen(kw_only=True)
class BidReviewed:
    """Requester: the bid acceptance hooks reviewed ``node_id``'s bid."""

    job_id: str
    node_id: str
    ok: bool
    reason: str = ""


@attrs.frozen(kw_only=True)
class ExecutionDone:
    """The job ran; its results folder waits on this node. ``proposal`` is for the requester."""

    job_id: str
    proposal: bytes
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    commitment: bytes = b""
    """The sealed :class:`~bacalhau.verifier.commitment.Commitment` for the requester."""


@attrs.frozen
class ExecutionErrored:
    job_id: str
    reason: str


@attrs.frozen
class PublishDone:
    job_id: str
    ref: StorageRef


@attrs.frozen
class PublishErrored:
    job_id: str
    reason: str


@attrs.frozen(kw_only=True)
class RecheckDone:
    """Requester: this node re-ran ``job_id`` for its audit (``RecheckJob``): the canonical
    results ``digest``, or None and ``error`` saying why it could not."""

    job_id: str
    digest: bytes | None
    error: str = ""


PROOF_VERDICTS = ("fraud", "false", "refused", "inconclusive", "unchecked")
"""What checking a fraud proof can find (:class:`ProofJudged`)."""


@attrs.frozen(kw_only=True)
class ProofJudged:
    """The node's fraud desk checked a fraud proof ``sender`` sent about ``cheater`` (the
    node it accuses) in ``job_id``: ``verdict`` is one of :data:`PROOF_VERDICTS`
    (``fraud``: the re-run matched the witnesses; ``false``: it matched the accused;
    ``refused``: forged or proving nothing; ``inconclusive`` / ``unchecked``: no verdict).
    The requester's machine decides what that does to reputation."""

    job_id: str
    sender: str
    cheater: str
    verdict: str
    proof_id: str = ""


Event = (
    SubmitJob
    | CancelJob
    | MessageReceived
    | ProposalOpened
    | TimerFired
    | BidDecided
    | BidReviewed
    | ExecutionDone
    | ExecutionErrored
    | PublishDone
    | PublishErrored
    | RecheckDone
    | ProofJudged
)
