"""The requester's state machine: custodian of the jobs submitted to this node.

Pure: :meth:`RequesterState.handle` takes an event and the time and returns commands.
It never awaits, sleeps, reads a clock or touches a socket; all randomness comes from
the ``rng`` it is given. Transitions are data (:data:`JOB_TRANSITIONS`,
:data:`EXECUTION_TRANSITIONS`); an illegal move is a bug and raises
:class:`~bacalhau.errors.IllegalTransition`. Untrusted input that does not fit the
job's state (a duplicate, a late or forged message) is never an illegal move: it
becomes a :class:`Dropped` command, or a polite rejection.

The lifecycle of one job:

1. ``SubmitJob`` -> offer ``JobCreated`` to the best-ranked nodes this requester knows
   from their announcements (:mod:`bacalhau.protocol.scheduling`), or broadcast it
   (``offers="broadcast"``, or too few nodes known). A job no node can take now waits
   ``queued`` until capacity frees up or ``spec.queue_timeout`` passes; a busy node's
   decline is never a failure.
2. ``BidPlaced`` -> once ``deal.min_bids`` bids are in (and, for targeted offers, every
   asked node has answered), accept ``deal.concurrency`` of them at random and reject
   the rest (late bids too). Broadcast with ``min_bids`` 0 accepts bids as they come.
3. An accepted node that fails, or stays silent past ``spec.timeout`` plus a grace,
   is replaced by another bidder while ``spec.retries`` allows.
4. Once no accepted execution is still running, proposals are grouped by digest;
   the largest group wins if it has at least ``max(confidence, 1)`` members and is
   not tied. Winners are told to publish; the rest are rejected.
5. When every winner has published, the job completes; if none could, it is retried.
"""

from __future__ import annotations

import random
from collections import Counter

from ..errors import IllegalTransition, ValidationError
from ..models import (
    ExecutionResult,
    ExecutionState,
    JobEvent,
    JobResult,
    JobState,
)
from . import audit
from .commands import (
    Broadcast,
    CancelTimers,
    Command,
    Dropped,
    JobChanged,
    ReviewBid,
    Send,
    SetTimer,
)
from .events import (
    BidReviewed,
    CancelJob,
    Event,
    MessageReceived,
    ProposalOpened,
    SubmitJob,
    TimerFired,
)
from .messages import (
    BidAccepted,
    BidDeclined,
    BidPlaced,
    BidRejected,
    ExecutionFailed,
    JobCancelled,
    JobCompleted,
    JobCreated,
    JobFailure,
    NodeAnnounced,
    ResultsAccepted,
    ResultsPublished,
    ResultsRejected,
)
from .nodes import LABELS_DIFFER
from .requester_config import RequesterConfig
from .requester_jobs import (
    _LIVE,
    EXECUTION_TRANSITIONS,
    JOB_TRANSITIONS,
    Execution,
    RequesterJob,
    _max_bids,
)
from .scheduling import Scheduling
from .timers import JobAction, RequesterTimer, TimerKey

__all__ = [
    "EXECUTION_TRANSITIONS",
    "JOB_TRANSITIONS",
    "RequesterConfig",
    "RequesterJob",
    "RequesterState",
]

S, X = JobState, ExecutionState


class RequesterState(Scheduling):
    """All jobs this node is requester of. Drive it with :meth:`handle`."""

    def __init__(
        self,
        node_id: str,
        seal_key: bytes,
        *,
        config: RequesterConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.seal_key = seal_key
        self.config = config or RequesterConfig()
        self.rng = rng or random.Random()
        self.jobs: dict[str, RequesterJob] = {}
        self.reputation: dict[str, Counter[str]] = {}
        """Per node: how many of its executions were ``accepted``, ``rejected`` or ``failed``."""
        self._init_scheduling()

    def score(self, node_id: str) -> float:
        """A node's record: accepted results count for it; rejected ones far more against."""
        r = self.reputation.get(node_id)
        if not r:
            return 0.0
        return r["accepted"] - 4 * r["rejected"] - r["failed"]

    def _count(self, node_id: str, outcome: str) -> None:
        self.reputation.setdefault(node_id, Counter())[outcome] += 1

    # --- queries --------------------------------------------------------------------------

    def result(self, job_id: str) -> JobResult:
        """The job as it stands (terminal or not)."""
        return self.result_of(self.jobs[job_id])

    def result_of(self, job: RequesterJob) -> JobResult:
        """The public view of a job record (held here, or read back from a store)."""
        return JobResult(
            job_id=job.job_id,
            state=job.state,
            reason=job.shown_reason,
            spec=job.spec,
            requester_id=self.node_id,
            executions=tuple(
                ExecutionResult(
                    node_id=e.node_id,
                    state=e.state,
                    exit_code=e.exit_code,
                    stdout=e.stdout,
                    stderr=e.stderr,
                    published=e.published,
                    reason=e.reason,
                    verified=e.verified,
                )
                for e in job.executions.values()
                if e.accepted
            ),
            events=tuple(job.history),
        )

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
        """Feed one event; return what to do. Never raises on untrusted input."""
        if isinstance(event, SubmitJob):
            return self._submit(event, now)
        if isinstance(event, audit.EVENTS):  # an audit's own re-run; a fraud proof judged
            return audit.handle(self, event, now)
        out: list[Command] = []
        if isinstance(event, MessageReceived) and isinstance(event.message, NodeAnnounced):
            try:
                self._announced(event.sender, event.message, now, out)
            except ValidationError as exc:
                out.append(Dropped(reason=f"bad announcement: {exc}", sender=event.sender))
            return out
        if isinstance(event, TimerFired) and event.key.job_id == "":
            if event.key.name is RequesterTimer.REQUEUE:
                self._requeue_timer(now, out)
            return out
        job_id = getattr(event, "job_id", None)
        if isinstance(event, MessageReceived):
            job_id = event.message.job_id
        elif isinstance(event, TimerFired):
            job_id = event.key.job_id
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            if isinstance(event, MessageReceived) and isinstance(
                event.message, BidPlaced | BidDeclined | ExecutionFailed | ResultsPublished
            ):
                return [
                    Dropped(
                        reason=f"{type(event.message).__name__} for unknown job {job_id}",
                        sender=event.sender,
                    )
                ]
            return []
        if isinstance(event, CancelJob):
            if job.state in _LIVE:
                self._finish(job, JobAction.CANCEL, event.reason, now, out)
        elif isinstance(event, TimerFired):
            self._timer(job, event.key, now, out)
        elif isinstance(event, ProposalOpened):
            self._proposal(job, event, now, out)
        elif isinstance(event, BidReviewed):
            ex = job.executions.get(event.node_id)
            if ex is not None and ex.state is X.BID and not ex.reviewed:
                ex.reviewed = True
                if not event.ok:
                    self.move_execution(ex, X.BID_REJECTED)
                    ex.reason = f"bid refused: {event.reason}"
                    out.append(
                        Send(
                            ex.node_id,
                            BidRejected(job_id=job.job_id, node_id=ex.node_id, reason=ex.reason),
                        )
                    )
                    self._note(job, now, "bid_rejected", ex.node_id, ex.reason, out)
                self._progress(job, now, out)
        elif isinstance(event, MessageReceived):
            self._message(job, event.sender, event.message, now, out)
        return out

    def recover(self, now: float) -> list[Command]:
        """After a restart (jobs reloaded from the store): re-announce every live job so
        compute nodes repeat what they told us, and restart its deadlines from ``now``."""
        out: list[Command] = []
        for job in self.jobs.values():
            if job.state not in _LIVE:
                continue
            job_id = job.job_id
            out.append(
                SetTimer(TimerKey(job_id, RequesterTimer.JOB), now + self._deadline(job.spec))
            )
            out.append(
                SetTimer(TimerKey(job_id, RequesterTimer.QUEUE), now + job.spec.queue_timeout)
            )
            if job.state is S.QUEUED and not job.executions:
                self.queue[job_id] = None
                self._arm(now, out)
                continue
            job.broadcast = True
            out.append(
                Broadcast(
                    JobCreated(
                        job_id=job_id,
                        spec=job.spec,
                        seal_key=self.seal_key,
                        created_at=job.created_at,
                    )
                )
            )
            if job.state in (S.QUEUED, S.BIDDING, S.RUNNING):
                job.bidding_closed = False
                out.append(
                    SetTimer(TimerKey(job_id, RequesterTimer.BIDS), now + self.config.bid_timeout)
                )
            for ex in job.in_state(X.ACCEPTED):
                out.append(
                    SetTimer(
                        TimerKey(job_id, RequesterTimer.EXECUTION, ex.node_id),
                        now + job.spec.timeout + self.config.execution_grace,
                    )
                )
            if job.state is S.PUBLISHING:
                out.append(
                    SetTimer(
                        TimerKey(job_id, RequesterTimer.PUBLISH), now + self.config.publish_timeout
                    )
                )
            self._note(
                job,
                now,
                "recovered",
                self.node_id,
                "requester restarted; asking nodes to repeat their state",
                out,
            )
        return out

    def internal_error(self, job_id: str, error: str, now: float) -> list[Command]:
        """This machine raised while handling an event of ``job_id`` (a bug): fail the
        job with the error recorded, so its watchers and compute nodes hear the end."""
        job = self.jobs.get(job_id)
        if job is None or job.state not in _LIVE:
            return []
        reason = f"internal error: {error}"[:1000]
        out: list[Command] = []
        try:
            self._finish(job, JobAction.FAIL, reason, now, out)
        except IllegalTransition:  # the record itself is inconsistent: end it plainly
            job.state, job.reason = S.FAILED, reason
            out = [
                CancelTimers(job_id=job_id, side="requester"),
                Broadcast(JobFailure(job_id, reason)),
            ]
            self._note(job, now, job.state.value, self.node_id, reason, out)
        return out

    # --- transitions ----------------------------------------------------------------------

    def move(self, job: RequesterJob, action: JobAction) -> None:
        """Apply ``action`` to the job's state by :data:`JOB_TRANSITIONS`."""
        nxt = JOB_TRANSITIONS.get((job.state, action))
        if nxt is None:
            raise IllegalTransition("job", job.state, action)
        job.state = nxt

    @staticmethod
    def move_execution(execution: Execution, to: ExecutionState) -> None:
        if (execution.state, to) not in EXECUTION_TRANSITIONS:
            raise IllegalTransition("execution", execution.state, to)
        execution.state = to

    def _note(
        self,
        job: RequesterJob,
        now: float,
        kind: str,
        node: str | None,
        detail: str,
        out: list[Command],
    ) -> None:
        job.history.append(JobEvent(time=now, kind=kind, node_id=node, detail=detail))
        out.append(JobChanged(job.job_id, terminal=job.state not in _LIVE))

    # --- handlers -------------------------------------------------------------------------

    def _submit(self, event: SubmitJob, now: float) -> list[Command]:
        if event.job_id in self.jobs:
            return [Dropped(reason=f"job {event.job_id} was already submitted")]
        job = RequesterJob(job_id=event.job_id, spec=event.spec, created_at=now)
        job.peers = event.peers
        self.jobs[job.job_id] = job
        if event.spec.deal.min_bids == 0 and self.config.bid_window > 0 and event.peers != 0:
            job.window_open = True
        out: list[Command] = [
            SetTimer(TimerKey(job.job_id, RequesterTimer.JOB), now + self._deadline(event.spec)),
            SetTimer(TimerKey(job.job_id, RequesterTimer.QUEUE), now + event.spec.queue_timeout),
        ]
        deal = event.spec.deal
        self._note(
            job,
            now,
            "created",
            self.node_id,
            f"concurrency={deal.concurrency} confidence={deal.confidence} "
            f"min_bids={deal.min_bids} verifier={event.spec.verifier}"
            + (" target=all" if event.spec.target == "all" else ""),
            out,
        )
        self._schedule(job, now, out)
        self._progress(job, now, out)
        return out

    def _message(
        self, job: RequesterJob, sender: str, msg: object, now: float, out: list[Command]
    ) -> None:
        ex = job.executions.get(sender)
        if isinstance(msg, BidPlaced):
            if ex is not None:
                if ex.state is X.ACCEPTED:  # it may have missed our answer: repeat it
                    out.append(Send(sender, BidAccepted(job.job_id, sender)))
                out.append(Dropped(reason=f"duplicate bid on {job.job_id}", sender=sender))
                return
            if job.state not in _LIVE:  # too late: not part of the job's history
                out.append(
                    Send(
                        sender,
                        BidRejected(job_id=job.job_id, node_id=sender, reason=f"job {job.state}"),
                    )
                )
                return
            if audit.is_cheater(self, sender):  # caught by an audit or a fraud proof
                out.append(
                    Send(
                        sender,
                        BidRejected(job_id=job.job_id, node_id=sender, reason="fraud on record"),
                    )
                )
                return
            if len(job.executions) >= _max_bids(job.spec):  # node ids cost nothing to make
                out.append(Dropped(reason=f"bid on {job.job_id} past the bid limit", sender=sender))
                return
            if not job.broadcast and sender not in job.asked:
                out.append(
                    Send(
                        sender, BidRejected(job_id=job.job_id, node_id=sender, reason="not offered")
                    )
                )
                return
            if sender in job.asked:
                job.asked[sender] = True
                self.nodes.answered(sender, bid=True, busy=False, now=now)
            job.executions[sender] = Execution(node_id=sender, reviewed=not self.config.bid_review)
            self._note(job, now, "bid", sender, "", out)
            if self.config.bid_review:
                out.append(ReviewBid(job_id=job.job_id, node_id=sender, spec=job.spec))
            else:
                self._progress(job, now, out)
        elif isinstance(msg, BidDeclined):
            if ex is None and job.state in _LIVE:
                self._declined(job, sender, msg, _max_bids(job.spec), now, out)
        elif isinstance(msg, ExecutionFailed):
            if ex is None or ex.state not in (X.ACCEPTED, X.PROPOSED, X.RESULTS_ACCEPTED):
                out.append(
                    Dropped(
                        reason=f"ExecutionFailed from a node not running {job.job_id}",
                        sender=sender,
                    )
                )
                return
            publishing = ex.state is X.RESULTS_ACCEPTED
            self.move_execution(ex, X.FAILED)
            self._count(sender, "failed")
            ex.reason = msg.reason[:1000]
            out.append(CancelTimers(job_id=job.job_id, name=RequesterTimer.EXECUTION, node=sender))
            self._note(job, now, "execution_failed", sender, ex.reason, out)
            if publishing:
                self._check_published(job, now, out)
            else:
                self._schedule(job, now, out)
                self._progress(job, now, out)
            self._freed(sender, now, out)
        elif isinstance(msg, ResultsPublished):
            if ex is None or ex.state is not X.RESULTS_ACCEPTED:
                out.append(
                    Dropped(
                        reason=f"ResultsPublished from a node not accepted on {job.job_id}",
                        sender=sender,
                    )
                )
                return
            differs = (
                ex.commitment.mismatch(
                    ref=msg.ref, exit_code=msg.exit_code, stdout=msg.stdout, stderr=msg.stderr
                )
                if ex.commitment is not None
                else None
            )
            if differs is not None:  # published other than it committed to: refuse it
                self.move_execution(ex, X.FAILED)
                self._count(sender, "rejected")
                ex.reason = f"publication refused: differs from its commitment ({differs})"
                out.append(
                    CancelTimers(job_id=job.job_id, name=RequesterTimer.EXECUTION, node=sender)
                )
                out.append(
                    Send(
                        sender, ResultsRejected(job_id=job.job_id, node_id=sender, reason=ex.reason)
                    )
                )
                self._note(job, now, "publication_refused", sender, ex.reason, out)
                self._check_published(job, now, out)
                self._freed(sender, now, out)
                return
            self.move_execution(ex, X.PUBLISHED)
            ex.published, ex.exit_code = msg.ref, msg.exit_code
            ex.stdout, ex.stderr = msg.stdout, msg.stderr
            ex.verified = ex.commitment is not None
            self._note(job, now, "published", sender, str(msg.ref), out)
            self._check_published(job, now, out)
            self._freed(sender, now, out)

    def _proposal(
        self, job: RequesterJob, event: ProposalOpened, now: float, out: list[Command]
    ) -> None:
        ex = job.executions.get(event.node_id)
        if (
            ex is not None
            and event.error is None
            and ex.digest == event.digest
            and ex.state in (X.PROPOSED, X.RESULTS_ACCEPTED)
        ):
            if ex.state is X.RESULTS_ACCEPTED:  # it may have missed our answer: repeat it
                out.append(Send(ex.node_id, ResultsAccepted(job.job_id, ex.node_id)))
            out.append(Dropped(reason=f"duplicate proposal for {job.job_id}", sender=event.node_id))
            return
        if ex is None or ex.state is not X.ACCEPTED or job.state is not S.RUNNING:
            state = ex.state if ex else "not accepted"
            out.append(
                Send(
                    event.node_id,
                    ResultsRejected(
                        job_id=job.job_id,
                        node_id=event.node_id,
                        reason=f"proposal not expected (execution {state}, job {job.state})",
                    ),
                )
            )
            out.append(
                Dropped(reason=f"unexpected proposal for {job.job_id}", sender=event.node_id)
            )
            return
        out.append(
            CancelTimers(job_id=job.job_id, name=RequesterTimer.EXECUTION, node=event.node_id)
        )
        if event.error is not None:
            self.move_execution(ex, X.RESULTS_REJECTED)
            self._count(ex.node_id, "rejected")
            ex.reason = f"invalid proposal: {event.error}"
            out.append(
                Send(
                    ex.node_id,
                    ResultsRejected(job_id=job.job_id, node_id=ex.node_id, reason=ex.reason),
                )
            )
            self._note(job, now, "results_rejected", ex.node_id, ex.reason, out)
        else:
            self.move_execution(ex, X.PROPOSED)
            ex.digest, ex.commitment = event.digest, event.commitment
            self._note(job, now, "proposed", ex.node_id, "", out)
        self._progress(job, now, out)

    def _timer(self, job: RequesterJob, key: TimerKey, now: float, out: list[Command]) -> None:
        name, node = key.name, key.node
        if job.state not in _LIVE:
            return
        if name is RequesterTimer.JOB:
            self._finish(
                job,
                JobAction.FAIL,
                f"job did not finish within {self._deadline(job.spec):g}s",
                now,
                out,
            )
        elif name is RequesterTimer.QUEUE:
            self._queue_timeout(job, now, out)
        elif name is RequesterTimer.WINDOW:
            job.window_open = False
            self._progress(job, now, out)
        elif name is RequesterTimer.BIDS:
            self._bids_closed(job, now, out)
        elif name is RequesterTimer.EXECUTION:
            ex = job.executions.get(node)
            if ex is not None and ex.state is X.ACCEPTED:
                self.move_execution(ex, X.LOST)
                self._count(node, "failed")
                ex.reason = (
                    f"no result within {job.spec.timeout + self.config.execution_grace:g}s"
                    "; replaced"
                )
                out.append(
                    Send(node, BidRejected(job_id=job.job_id, node_id=node, reason=ex.reason))
                )
                self._note(job, now, "execution_lost", node, ex.reason, out)
                self._schedule(job, now, out)
                self._progress(job, now, out)
                self._freed(node, now, out)
        elif name is RequesterTimer.PUBLISH and job.state is S.PUBLISHING:
            for ex in job.in_state(X.RESULTS_ACCEPTED):
                self.move_execution(ex, X.FAILED)
                ex.reason = f"did not publish within {self.config.publish_timeout:g}s"
                self._note(job, now, "execution_failed", ex.node_id, ex.reason, out)
            self._check_published(job, now, out)

    # --- the heart: what next -------------------------------------------------------------

    def _progress(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        """Accept bids, reject leftovers, or decide, as the job's record allows."""
        if job.state not in (S.QUEUED, S.BIDDING, S.RUNNING):
            return
        if job.spec.target == "all":
            self._progress_all(job, now, out)
            return
        deal = job.spec.deal
        needed = deal.concurrency - job.count(X.ACCEPTED, X.PROPOSED)
        reviewed = sum(1 for e in job.executions.values() if e.reviewed)
        only_own_bids = all(e.node_id == self.node_id for e in job.executions.values())
        pending = not job.broadcast and not all(job.asked.values())
        waiting_for_min_bids = job.state in (S.QUEUED, S.BIDDING) and (
            reviewed < deal.min_bids
            or (job.window_open and only_own_bids)
            or pending
            or reviewed == 0
        )
        if needed > 0 and job.acceptances_left > 0 and not waiting_for_min_bids:
            fresh = [e for e in job.in_state(X.BID) if e.reviewed]
            pool = fresh
            if not fresh and job.acceptances:  # replacements come from passed-over bidders
                pool = [e for e in job.in_state(X.BID_REJECTED) if e.reason == "not selected"]
            take = min(needed, job.acceptances_left, len(pool))
            for ex in self._choose(pool, take):
                self._accept(job, ex, now, out)
            needed -= take
        if needed <= 0 or job.acceptances_left <= 0:
            for ex in job.in_state(X.BID):
                self.move_execution(ex, X.BID_REJECTED)
                ex.reason = "not selected"
                out.append(
                    Send(
                        ex.node_id,
                        BidRejected(job_id=job.job_id, node_id=ex.node_id, reason=ex.reason),
                    )
                )
                self._note(job, now, "bid_rejected", ex.node_id, ex.reason, out)
                self.nodes.released(ex.node_id)
        if job.count(X.ACCEPTED):
            return  # still running somewhere
        if needed > 0 and job.acceptances_left > 0 and not job.bidding_closed:
            return  # more bids may come (offers out, queued, or the bid window open)
        if job.count(X.PROPOSED):
            self._decide(job, now, out)
        elif job.acceptances or job.bidding_closed:
            reasons = "; ".join(
                f"{e.node_id[-8:]}: {e.reason}"
                for e in job.executions.values()
                if e.accepted and e.reason
            )
            self._finish(
                job,
                JobAction.FAIL,
                "no execution produced results" + (f" ({reasons})" if reasons else ""),
                now,
                out,
            )

    def _choose(self, pool: list[Execution], take: int) -> list[Execution]:
        if take <= 0:
            return []
        if self.config.selection == "reputation":
            ranked = sorted(pool, key=lambda e: (-self.score(e.node_id), self.rng.random()))
            return ranked[:take]
        return self.rng.sample(pool, take)

    def _accept(self, job: RequesterJob, ex: Execution, now: float, out: list[Command]) -> None:
        self.move_execution(ex, X.ACCEPTED)
        ex.accepted, ex.reason = True, ""
        job.acceptances += 1
        if job.state in (S.QUEUED, S.BIDDING):
            self.move(job, JobAction.ACCEPT)
            self.queue.pop(job.job_id, None)
        deadline = now + job.spec.timeout + self.config.execution_grace
        out.append(Send(ex.node_id, BidAccepted(job.job_id, ex.node_id)))
        out.append(SetTimer(TimerKey(job.job_id, RequesterTimer.EXECUTION, ex.node_id), deadline))
        self._note(job, now, "bid_accepted", ex.node_id, "", out)

    def _decide(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        if job.spec.verifier == audit.AUDIT:
            audit.decide(self, job, now, out)
            return
        self.move(job, JobAction.VERIFY)
        proposals = job.in_state(X.PROPOSED)
        if job.spec.target == "all":
            self._accept_all_results(job, now, out)
            return
        need = max(job.spec.deal.confidence, 1)
        sizes = Counter(_agreement(e) for e in proposals)
        ranked = sizes.most_common()
        best_digest, best = ranked[0]
        tied = len(ranked) > 1 and ranked[1][1] == best
        if best < need or tied:
            if tied:
                why = f"results disagree: {len(ranked)} different results, no majority"
            else:
                why = (
                    f"only {best} agreeing result{'s' if best != 1 else ''} "
                    f"of {len(proposals)}; confidence needs {need}"
                )
            for ex in proposals:
                self._reject_results(job, ex, f"job failed: {why}", now, out, blame=False)
            self._finish(job, JobAction.FAIL, why, now, out)
            return
        for ex in proposals:
            if _agreement(ex) == best_digest:
                self.move_execution(ex, X.RESULTS_ACCEPTED)
                self._count(ex.node_id, "accepted")
                out.append(Send(ex.node_id, ResultsAccepted(job.job_id, ex.node_id)))
                self._note(job, now, "results_accepted", ex.node_id, "", out)
            else:
                self._reject_results(job, ex, "results differ from the agreeing majority", now, out)
        self.move(job, JobAction.PUBLISH)
        out.append(
            SetTimer(
                TimerKey(job.job_id, RequesterTimer.PUBLISH), now + self.config.publish_timeout
            )
        )

    def _reject_results(
        self,
        job: RequesterJob,
        ex: Execution,
        why: str,
        now: float,
        out: list[Command],
        *,
        blame: bool = True,
    ) -> None:
        self.move_execution(ex, X.RESULTS_REJECTED)
        if blame:
            self._count(ex.node_id, "rejected")
        ex.reason = why
        out.append(
            Send(ex.node_id, ResultsRejected(job_id=job.job_id, node_id=ex.node_id, reason=why))
        )
        self._note(job, now, "results_rejected", ex.node_id, why, out)

    def _check_published(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        if job.state is not S.PUBLISHING or job.count(X.RESULTS_ACCEPTED):
            return
        failed = [e for e in job.executions.values() if e.accepted and e.state is X.FAILED]
        # an ops job's targets are the nodes its selectors match: the others' no is no miss
        declined = {n: r for n, r in job.declined.items() if not r.startswith(LABELS_DIFFER)}
        if job.spec.target == "all" and job.count(X.PUBLISHED) and (failed or declined):
            why = "; ".join(
                f"{n[-8:]}: {r}"
                for n, r in [*((e.node_id, e.reason) for e in failed), *declined.items()]
            )
            self._finish(job, JobAction.FAIL, f"not every target node ran it ({why})", now, out)
        elif job.count(X.PUBLISHED):
            self._finish(job, JobAction.COMPLETE, "", now, out)
        else:
            why = "publishing failed: " + "; ".join(e.reason for e in job.in_state(X.FAILED))
            if not self._retry_publish(job, why, now, out):
                self._finish(job, JobAction.FAIL, why, now, out)

    def _finish(
        self, job: RequesterJob, action: JobAction, reason: str, now: float, out: list[Command]
    ) -> None:
        self.move(job, action)
        job.reason = reason
        self._unqueue(job, now, out)
        if job.state is not S.COMPLETED:
            for ex in job.in_state(X.ACCEPTED, X.PROPOSED, X.RESULTS_ACCEPTED, X.BID):
                self.move_execution(ex, X.BID_REJECTED if ex.state is X.BID else X.CANCELLED)
                self.nodes.released(ex.node_id)
                ex.reason = ex.reason or f"job {job.state}"
        out.append(CancelTimers(job_id=job.job_id, side="requester"))
        message: JobCompleted | JobFailure | JobCancelled
        if job.state is S.COMPLETED:
            message = JobCompleted(job.job_id)
        elif job.state is S.FAILED:
            message = JobFailure(job.job_id, reason)
        else:
            message = JobCancelled(job.job_id, reason)
        if job.broadcast:
            out.append(Broadcast(message))
        else:  # only the nodes that heard of the job
            for node in sorted({*job.asked, *job.executions}):
                out.append(Send(node, message))
        self._note(job, now, job.state.value, self.node_id, reason, out)


def _agreement(ex: Execution) -> object:
    """What agreeing proposals share: the verifier's digest and, when the verifier
    compares results, the whole commitment (the same results make the same one, so a
    node that proposes the agreed digest but commits to publishing other values does
    not agree). Verifiers that do not compare (digest None) all agree."""
    if ex.digest is None:
        return None
    return (ex.digest, ex.commitment)
