"""The compute side's state machine: hear jobs, bid, run, propose, publish.

Pure, like the requester's: :meth:`ComputeState.handle` takes an event and the
time and returns commands. Whether to bid is decided outside (the bid strategy
chain may call hooks), and comes back as ``BidDecided``. Every decision about a
job must come from that job's requester, who is the signer of its
``JobCreated``; anything else claiming that role is dropped as forged.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Container

import attrs
import msgpack

from ..convert import to_data
from ..errors import IllegalTransition
from ..models import JobSpec, StorageRef
from .commands import (
    CancelExecution,
    CancelTimers,
    Command,
    DiscardResults,
    Dropped,
    EvaluateBid,
    PublishResults,
    RunExecution,
    Send,
    SetTimer,
)
from .events import (
    BidDecided,
    Event,
    ExecutionDone,
    ExecutionErrored,
    MessageReceived,
    PublishDone,
    PublishErrored,
    TimerFired,
)
from .messages import (
    REQUESTER_MESSAGES,
    BidAccepted,
    BidDeclined,
    BidPlaced,
    BidRejected,
    ExecutionFailed,
    JobCreated,
    ResultsAccepted,
    ResultsProposed,
    ResultsPublished,
    ResultsRejected,
)
from .timers import ComputeTimer, TimerKey

__all__ = ["COMPUTE_TRANSITIONS", "ComputeJob", "ComputeJobState", "ComputeState"]


class ComputeJobState(enum.StrEnum):
    EVALUATING = "evaluating"
    BID = "bid"
    DECLINED = "declined"
    REJECTED = "rejected"
    RUNNING = "running"
    PROPOSED = "proposed"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    ENDED = "ended"


C = ComputeJobState
COMPUTE_TRANSITIONS: frozenset[tuple[ComputeJobState, ComputeJobState]] = frozenset(
    {
        (C.EVALUATING, C.BID),
        (C.EVALUATING, C.DECLINED),
        (C.EVALUATING, C.FAILED),  # an internal error
        (C.BID, C.FAILED),  # an internal error
        (C.BID, C.RUNNING),
        (C.BID, C.REJECTED),
        (C.REJECTED, C.RUNNING),  # accepted later, as a replacement
        (C.RUNNING, C.PROPOSED),
        (C.RUNNING, C.FAILED),
        (C.RUNNING, C.REJECTED),
        (C.PROPOSED, C.PUBLISHING),
        (C.PROPOSED, C.REJECTED),
        (C.PROPOSED, C.FAILED),  # the node restarted and lost its results
        (C.PUBLISHING, C.PUBLISHED),
        (C.PUBLISHING, C.FAILED),
        *((s, C.ENDED) for s in C if s is not C.ENDED),
    }
)

BID_HOLD = 60.0
"""Seconds a bid holds its room on this node while the requester has not answered."""

FORGET_AFTER = 600.0
"""Seconds an ended job's tombstone is kept (duplicates of its messages are dropped)."""
MAX_HEARD = 1024
"""Most jobs kept that this node merely heard of (not bid on); the oldest are forgotten."""
MAX_HEARD_BYTES = 64 * 1024 * 1024
"""Most bytes of job specs kept for jobs merely heard of."""


WEIGHTS_KEPT = 64
"""Spec objects whose :func:`spec_weight` a compute side remembers."""


def spec_weight(spec: JobSpec) -> int:
    """About how many bytes a heard job's record holds (its spec, as it travels)."""
    return 512 + len(msgpack.packb(to_data(spec), use_bin_type=True))


@attrs.define(kw_only=True)
class ComputeJob:
    job_id: str
    spec: JobSpec
    requester_id: str
    seal_key: bytes
    state: ComputeJobState = C.EVALUATING
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    reason: str = ""
    proposal: bytes = b""
    ref: StorageRef | None = None
    commitment: bytes = b""


class ComputeState:
    """Every job this node has heard of, from the compute side."""

    def __init__(
        self,
        node_id: str,
        *,
        max_heard: int = MAX_HEARD,
        max_heard_bytes: int = MAX_HEARD_BYTES,
        heard_ttl: float = FORGET_AFTER,
        tombstone_ttl: float = FORGET_AFTER,
    ) -> None:
        self.node_id = node_id
        self.jobs: dict[str, ComputeJob] = {}
        self.max_heard, self.max_heard_bytes, self.heard_ttl = max_heard, max_heard_bytes, heard_ttl
        self.tombstone_ttl = tombstone_ttl
        """Seconds an ended job's record is kept (duplicates of its messages are dropped)."""
        self.heard: OrderedDict[str, int] = OrderedDict()
        """Jobs merely heard of (evaluating or declined), oldest first, with their size."""
        self.heard_bytes = 0
        self.evicted = 0
        self._weights: OrderedDict[int, tuple[JobSpec, int]] = OrderedDict()

    def keeps(self, job: ComputeJob) -> bool:
        """Whether ``job`` is worth keeping across a restart: jobs this node bid on are;
        jobs it merely heard of are not (a restarted requester announces them again)."""
        return job.job_id not in self.heard

    def _forget_heard(self, job_id: str) -> None:
        weight = self.heard.pop(job_id, None)
        if weight is not None:
            self.heard_bytes -= weight

    def _weigh(self, spec: JobSpec) -> int:
        """:func:`spec_weight`, once per spec object of the last few (the nodes of one
        process share a job's spec object, and a requester's jobs often share one)."""
        known = self._weights.get(id(spec))
        if known is not None and known[0] is spec:
            return known[1]
        weight = spec_weight(spec)
        self._weights[id(spec)] = (spec, weight)  # holds the spec: its id stays its own
        if len(self._weights) > WEIGHTS_KEPT:
            self._weights.popitem(last=False)
        return weight

    def _hear(self, msg: JobCreated, sender: str, now: float) -> list[Command]:
        """Keep a heard job within the bounds, evicting the oldest heard ones."""
        weight = self._weigh(msg.spec)
        out: list[Command] = []
        while self.heard and (
            len(self.heard) >= self.max_heard or self.heard_bytes + weight > self.max_heard_bytes
        ):
            old_id = next(iter(self.heard))
            self._forget_heard(old_id)
            self.jobs.pop(old_id, None)
            self.evicted += 1
            out.append(CancelTimers(job_id=old_id, side="compute"))
            out.append(Dropped(reason=f"forgot job {old_id}, only heard of: too many heard jobs"))
        self.jobs[msg.job_id] = ComputeJob(
            job_id=msg.job_id, spec=msg.spec, requester_id=sender, seal_key=msg.seal_key
        )
        self.heard[msg.job_id] = weight
        self.heard_bytes += weight
        out.append(SetTimer(TimerKey(msg.job_id, ComputeTimer.FORGET), now + self.heard_ttl))
        out.append(EvaluateBid(job_id=msg.job_id, spec=msg.spec, requester_id=sender))
        return out

    def move(self, job: ComputeJob, to: ComputeJobState) -> None:
        if (job.state, to) not in COMPUTE_TRANSITIONS:
            raise IllegalTransition("compute", job.state, to)
        job.state = to

    def handle(self, event: Event, now: float) -> list[Command]:
        """Feed one event; return what to do. Never raises on untrusted input."""
        if isinstance(event, MessageReceived):
            return self._message(event.sender, event.message, now)
        if isinstance(event, TimerFired):
            job_id = event.key.job_id
            job = self.jobs.get(job_id)
            merely_heard = job_id in self.heard
            if (
                event.key.name is ComputeTimer.FORGET
                and job is not None
                and (job.state is C.ENDED or merely_heard)
            ):
                del self.jobs[job_id]
                self._forget_heard(job_id)
            elif event.key.name is ComputeTimer.BID_HOLD and job is not None and job.state is C.BID:
                # The requester never answered: stop holding room for it. It may still
                # accept us later (REJECTED -> RUNNING), then we run if there is room.
                self.move(job, C.REJECTED)
                job.reason = "no answer to our bid"
            return []
        job = self.jobs.get(getattr(event, "job_id", ""))
        if job is None:
            return []
        out: list[Command] = []
        if isinstance(event, BidDecided) and job.state is C.EVALUATING:
            if event.bid:
                self._forget_heard(job.job_id)  # bid on: full state from now on
                self.move(job, C.BID)
                out.append(Send(job.requester_id, BidPlaced(job.job_id)))
                out.append(SetTimer(TimerKey(job.job_id, ComputeTimer.BID_HOLD), now + BID_HOLD))
            else:
                self.move(job, C.DECLINED)
                job.reason = event.reason
                out.append(
                    Send(
                        job.requester_id,
                        BidDeclined(job_id=job.job_id, reason=event.reason, busy=event.busy),
                    )
                )
                if event.busy:  # forget it: a busy node may be asked again, and take it then
                    del self.jobs[job.job_id]
                    self._forget_heard(job.job_id)
        elif isinstance(event, ExecutionDone):
            if job.state is C.RUNNING:
                self.move(job, C.PROPOSED)
                job.exit_code, job.stdout, job.stderr = event.exit_code, event.stdout, event.stderr
                job.proposal, job.commitment = event.proposal, event.commitment
                out.append(
                    Send(
                        job.requester_id,
                        ResultsProposed(
                            job_id=job.job_id, proposal=event.proposal, commitment=event.commitment
                        ),
                    )
                )
            else:
                out.append(DiscardResults(job.job_id))
        elif isinstance(event, ExecutionErrored) and job.state is C.RUNNING:
            self.move(job, C.FAILED)
            job.reason = event.reason
            out.append(Send(job.requester_id, ExecutionFailed(job.job_id, event.reason)))
        elif isinstance(event, PublishDone) and job.state is C.PUBLISHING:
            self.move(job, C.PUBLISHED)
            job.ref = event.ref
            out.append(
                Send(
                    job.requester_id,
                    ResultsPublished(
                        job_id=job.job_id,
                        ref=event.ref,
                        exit_code=job.exit_code,
                        stdout=job.stdout,
                        stderr=job.stderr,
                    ),
                )
            )
        elif isinstance(event, PublishErrored) and job.state is C.PUBLISHING:
            self.move(job, C.FAILED)
            job.reason = f"publishing failed: {event.reason}"
            out.append(
                Send(
                    job.requester_id,
                    ExecutionFailed(job.job_id, f"publishing failed: {event.reason}"),
                )
            )
        return out

    def _repeat(self, job: ComputeJob) -> list[Command]:
        """The requester announced a job again (it restarted): repeat our last word."""
        to, job_id = job.requester_id, job.job_id
        repeat: dict[ComputeJobState, Command] = {
            C.BID: Send(to, BidPlaced(job_id)),
            C.DECLINED: Send(to, BidDeclined(job_id=job_id, reason=job.reason)),
            C.PROPOSED: Send(
                to, ResultsProposed(job_id=job_id, proposal=job.proposal, commitment=job.commitment)
            ),
            C.FAILED: Send(to, ExecutionFailed(job_id, job.reason)),
        }
        if job.state is C.PUBLISHED and job.ref is not None:
            return [
                Send(
                    to,
                    ResultsPublished(
                        job_id=job_id,
                        ref=job.ref,
                        exit_code=job.exit_code,
                        stdout=job.stdout,
                        stderr=job.stderr,
                    ),
                )
            ]
        return [repeat[job.state]] if job.state in repeat else []

    def recover(
        self, now: float = 0.0, *, results_kept: Container[str] = frozenset()
    ) -> list[Command]:
        """After a restart: say at once what became of each execution in flight.

        Args:
            now: the time (ended jobs' tombstones are forgotten ``tombstone_ttl`` from it).
            results_kept: jobs whose results folder survived the restart. A proposed
                job among them proposes again (a requester that accepted it repeats its
                acceptance), a publishing one publishes; any other execution in flight
                died with the node and is reported failed, so the requester retries it.
        """
        out: list[Command] = []
        for job in self.jobs.values():
            kept = job.job_id in results_kept
            if job.state is C.PUBLISHING and kept:
                out.append(PublishResults(job.job_id, job.spec))
            elif job.state is C.PROPOSED and kept:
                out.append(
                    Send(
                        job.requester_id,
                        ResultsProposed(
                            job_id=job.job_id, proposal=job.proposal, commitment=job.commitment
                        ),
                    )
                )
            elif job.state in (C.RUNNING, C.PROPOSED, C.PUBLISHING):
                self.move(job, C.FAILED)
                job.reason = "node restarted"
                out.append(Send(job.requester_id, ExecutionFailed(job.job_id, job.reason)))
                out.append(DiscardResults(job.job_id))
            elif job.state is C.EVALUATING:
                out.append(
                    EvaluateBid(job_id=job.job_id, spec=job.spec, requester_id=job.requester_id)
                )
            elif job.state is C.BID:
                # An acceptance may have arrived before the crash without being saved:
                # bid again; a requester that accepted us repeats its acceptance.
                out.append(Send(job.requester_id, BidPlaced(job.job_id)))
            elif job.state is C.ENDED:
                out.append(
                    SetTimer(TimerKey(job.job_id, ComputeTimer.FORGET), now + self.tombstone_ttl)
                )
        return out

    def internal_error(self, job_id: str, error: str) -> list[Command]:
        """This machine raised while handling an event of ``job_id`` (a bug): fail the
        job with the error recorded and tell its requester, so nothing waits on it."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        job.reason = f"internal error: {error}"[:1000]
        state = job.state
        if (state, C.FAILED) not in COMPUTE_TRANSITIONS:
            return []  # already over: the record keeps the error
        self.move(job, C.FAILED)
        out: list[Command] = []
        if state is C.RUNNING:
            out.append(CancelExecution(job_id))
        elif state is C.PROPOSED:
            out.append(DiscardResults(job_id))
        out.append(Send(job.requester_id, ExecutionFailed(job_id, job.reason)))
        return out

    def _message(self, sender: str, msg: object, now: float) -> list[Command]:
        if isinstance(msg, JobCreated):
            known = self.jobs.get(msg.job_id)
            if known is not None:
                if sender == known.requester_id:
                    return [
                        *self._repeat(known),
                        Dropped(reason=f"JobCreated again for {msg.job_id}"),
                    ]
                return [
                    Dropped(
                        reason=f"JobCreated for {msg.job_id} from another node",
                        sender=sender,
                        forged=True,
                    )
                ]
            return self._hear(msg, sender, now)
        if not isinstance(msg, REQUESTER_MESSAGES):
            return []  # a compute node's message: the requester side handles it
        kind = type(msg).__name__
        job_id: str = msg.job_id
        target = getattr(msg, "node_id", self.node_id)
        job = self.jobs.get(job_id)
        if job is None or target != self.node_id:
            return []
        if sender != job.requester_id:
            return [
                Dropped(
                    reason=(
                        f"forged {kind} for {job_id}: signed by {sender}, not the job's requester"
                    ),
                    sender=sender,
                    forged=True,
                )
            ]
        out: list[Command] = []
        state = job.state
        if isinstance(msg, BidAccepted):
            if state in (C.BID, C.REJECTED):
                self.move(job, C.RUNNING)
                out.append(
                    RunExecution(
                        job_id=job.job_id,
                        spec=job.spec,
                        requester_id=job.requester_id,
                        seal_key=job.seal_key,
                    )
                )
            else:
                out.append(
                    Dropped(reason=f"BidAccepted for {job_id} in state {state}", sender=sender)
                )
        elif isinstance(msg, BidRejected | ResultsRejected):
            if state in (C.BID, C.RUNNING, C.PROPOSED):
                self.move(job, C.REJECTED)
                if state is C.RUNNING:
                    out.append(CancelExecution(job_id))
                elif state is C.PROPOSED:
                    out.append(DiscardResults(job_id))
        elif isinstance(msg, ResultsAccepted):
            if state is C.PROPOSED:
                self.move(job, C.PUBLISHING)
                out.append(PublishResults(job_id, job.spec))
            else:
                out.append(
                    Dropped(reason=f"ResultsAccepted for {job_id} in state {state}", sender=sender)
                )
        else:  # JobCompleted / JobFailure / JobCancelled
            if state is C.ENDED:
                return []
            if state is C.RUNNING:
                out.append(CancelExecution(job_id))
            elif state is C.PROPOSED:
                out.append(DiscardResults(job_id))
            if state is not C.PUBLISHING:  # let a publish in flight finish and report
                self.move(job, C.ENDED)
                # a tombstone repeats nothing: keep no outputs (a node holds one per ended
                # job for the tombstone_ttl, in memory and in its store)
                job.stdout = job.stderr = ""
                job.proposal = job.commitment = b""
                out.append(CancelTimers(job_id=job_id, side="compute"))
                out.append(
                    SetTimer(TimerKey(job_id, ComputeTimer.FORGET), now + self.tombstone_ttl)
                )
        return out
