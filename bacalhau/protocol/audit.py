"""The ``audit`` verifier's decisions, on the requester's side (pure, like the requester).

The job runs on one node, the *worker*. Its sealed proposal commits to its results
(the verifier digest and the results commitment). Only then, with the job's audit
probability (at least the requester's own, and always for a node's first
``audit_first`` jobs with this requester), the requester draws from its ``rng`` one
*auditor* among the job's other bidders, never the worker, and asks it to run the
job. The worker cannot know in advance whether, or by whom, it will be audited: the
draw happens after its commitment arrived, and passed-over bidders are told "not
selected" exactly as they are without an audit.

- The auditor's proposal agrees with the worker's: the worker's results are accepted
  and it alone publishes them; the auditor is released without blame.
- They disagree: the requester re-runs the job itself (:class:`RecheckJob`, answered
  by :class:`RecheckDone`; ``RequesterConfig.audit_recheck``) and believes its own
  digest: the node whose results it reproduces wins and publishes, the other is
  rejected and recorded as a fraud (``reputation[node]["fraud"]``), and a
  :class:`FraudFound` command tells the node to build, sign and gossip a fraud proof.
  Two colluders cannot outvote an honest node here. Only when the requester cannot
  re-run the job (or its run matches neither) does a third node (drawn at random,
  neither of the two) break the tie: the two that agree win, the odd one out is the
  fraud. A node with a recorded fraud is never chosen again by this requester. Three
  different results fail the job.
- No node left to audit: the worker's results stand, unaudited (the history says so).
  No node left to break a tie: the job fails, blaming no one.

Fraud proofs that other nodes send are checked off the machine (the node's fraud
desk re-runs the job); their verdicts come back as :class:`ProofJudged` events and
:func:`handle` alone turns them into reputation (:class:`ReputationChanged`).

Auditable jobs are those :attr:`~bacalhau.models.JobSpec.rerunnable` (WASM, noop, or
marked deterministic by the submitter); the spec refuses an audit of any other job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ..models import ExecutionState
from ..models import JobState as S
from .commands import (
    Command,
    Dropped,
    FraudFound,
    RecheckJob,
    ReputationChanged,
    Send,
    SetTimer,
)
from .events import ProofJudged, RecheckDone
from .messages import ResultsAccepted, ResultsRejected
from .timers import JobAction, RequesterTimer, TimerKey

if TYPE_CHECKING:
    import random

    from .requester import RequesterState
    from .requester_jobs import Execution, RequesterJob

__all__ = [
    "AUDIT",
    "EVENTS",
    "AuditRecord",
    "decide",
    "handle",
    "is_cheater",
    "pending_rechecks",
    "wants_audit",
]

X = ExecutionState
AUDIT = "audit"
"""The verifier name that asks for audits."""
ASKED = "asked"
EVENTS = (RecheckDone, ProofJudged)
"""The events :func:`handle` takes (the requester routes them here)."""
_PROOF_OUTCOME = {"fraud": "fraud", "false": "false_proof", "refused": "forged_proof"}


@attrs.define(kw_only=True)
class AuditRecord:
    """What the requester decided about one audited job."""

    worker: str = ""
    audited: bool = False
    checkers: list[str] = attrs.Factory(list)
    """Nodes asked to re-run the job (the auditor, then a tie-breaker), in order."""
    outcome: str = ""
    """``""`` until decided; then ``unaudited``, ``matched``, ``fraud`` or ``undecided``."""
    cheater: str = ""
    recheck: str = ""
    """The requester's own re-run: ``""`` not asked, ``asked``, the hex digest it gave,
    or ``cannot: <why>``."""


def wants_audit(
    *, job_p: float, requester_p: float, first_jobs: int, audited_before: int, rng: random.Random
) -> bool:
    """Whether to audit this job: always while the worker has had fewer than
    ``first_jobs`` audits here; otherwise with probability ``max(job_p, requester_p)``.
    The draw uses ``rng`` only (the state machine's), so runs replay exactly."""
    if audited_before < first_jobs:
        return True
    p = max(job_p, requester_p)
    return p > 0 and rng.random() < p


def is_cheater(req: RequesterState, node_id: str) -> bool:
    """A node this requester holds a fraud against (its own audit, or a proof it accepted)."""
    record = req.reputation.get(node_id)
    return bool(record and (record["fraud"] or record["false_proof"] or record["forged_proof"]))


def _agree(a: Execution, b: Execution) -> bool:
    return a.digest == b.digest and a.commitment == b.commitment


def _draw(req: RequesterState, job: RequesterJob, record: AuditRecord) -> Execution | None:
    taken = {record.worker, *record.checkers}
    pool = [
        e
        for e in job.executions.values()
        if e.node_id not in taken
        and not is_cheater(req, e.node_id)
        and e.reviewed
        and (e.state is X.BID or (e.state is X.BID_REJECTED and e.reason == "not selected"))
    ]
    if not pool:
        return None
    return pool[req.rng.randrange(len(pool))]


def _recheck(
    req: RequesterState, job: RequesterJob, record: AuditRecord, now: float, out: list[Command]
) -> bool:
    """Ask one more node to re-run the job; False when none is left."""
    ex = _draw(req, job, record)
    if ex is None:
        return False
    record.checkers.append(ex.node_id)
    req._accept(job, ex, now, out)
    role = "auditor" if len(record.checkers) == 1 else "tie-breaker"
    req._note(job, now, "audit_started", ex.node_id, f"{role} for {record.worker}", out)
    return True


def decide(req: RequesterState, job: RequesterJob, now: float, out: list[Command]) -> None:
    """The requester's decision for an ``audit`` job once nothing is running (in place of
    grouping proposals by majority)."""
    record = job.audit
    proposals = job.in_state(X.PROPOSED)
    if record is None or not record.worker:
        record = job.audit = AuditRecord(worker=proposals[0].node_id)
        seen = req.reputation.get(record.worker)
        record.audited = wants_audit(
            job_p=job.spec.deal.audit,
            requester_p=req.config.audit,
            first_jobs=req.config.audit_first,
            audited_before=seen["audited"] if seen else 0,
            rng=req.rng,
        )
        if record.audited:
            req._count(record.worker, "audited")
            if _recheck(req, job, record, now, out):
                return
            req._note(job, now, "audit_skipped", record.worker, "no other node to audit", out)
        _conclude(req, job, winners=[job.executions[record.worker]], now=now, out=out)
        record.outcome = "matched" if record.audited and len(record.checkers) else "unaudited"
        return
    worker = job.executions[record.worker]
    if worker.state is not X.PROPOSED:  # cannot happen while RUNNING; fail safe
        req._finish(job, JobAction.FAIL, "audit: the worker's results are gone", now, out)
        return
    others = [e for e in proposals if e is not worker]
    others.sort(
        key=lambda e: record.checkers.index(e.node_id) if e.node_id in record.checkers else 9
    )
    if not others:  # every checker failed: try another, else the results stand unaudited
        if _recheck(req, job, record, now, out):
            return
        req._note(job, now, "audit_skipped", record.worker, "no node completed the audit", out)
        record.outcome = "unaudited"
        _conclude(req, job, winners=[worker], now=now, out=out)
        return
    with_worker = [e for e in others if _agree(e, worker)]
    against = [e for e in others if not _agree(e, worker)]
    if not against:
        record.outcome = "matched"
        req._note(job, now, "audit_passed", record.worker, "", out)
        _conclude(req, job, winners=[worker], released=others, now=now, out=out)
        return
    if len(others) == 1:  # one against one: the requester's own run, else a third node
        if _settle_here(req, job, record, worker, others[0], now, out):
            return
        if _recheck(req, job, record, now, out):
            return
        record.outcome = "undecided"
        why = "audit: the auditor's results differ from the worker's and no node is left to decide"
        _fail(req, job, why, now, out)
        return
    if with_worker:  # the worker and one checker agree: the other checker lied
        cheaters, winners = against, [worker]
        released = with_worker
    elif len(against) >= 2 and all(_agree(against[0], e) for e in against[1:]):
        # one publishes (concurrency stays 1): the auditor; the tie-breaker is released
        cheaters, winners, released = [worker], against[:1], against[1:]
    else:
        record.outcome = "undecided"
        _fail(req, job, "audit: three different results, no majority", now, out)
        return
    why = "audit: results differ from those of the nodes that re-ran the job (fraud recorded)"
    _convict(req, job, record, cheaters, winners, released, why, now, out)


def _convict(
    req: RequesterState,
    job: RequesterJob,
    record: AuditRecord,
    cheaters: list[Execution],
    winners: list[Execution],
    released: Sequence[Execution],
    why: str,
    now: float,
    out: list[Command],
) -> None:
    """Reject ``cheaters`` as frauds (each a :class:`FraudFound`), accept ``winners``."""
    record.outcome = "fraud"
    for ex in cheaters:
        record.cheater = record.cheater or ex.node_id
        req._count(ex.node_id, "fraud")
        req._reject_results(job, ex, why, now, out)
        req._note(job, now, "fraud", ex.node_id, why, out)
        witnesses = [w.node_id for w in (*winners, *released)]
        out.append(FraudFound(job_id=job.job_id, cheater=ex.node_id, witnesses=tuple(witnesses)))
    _conclude(req, job, winners=winners, released=released, now=now, out=out)


def _settle_here(
    req: RequesterState,
    job: RequesterJob,
    record: AuditRecord,
    worker: Execution,
    auditor: Execution,
    now: float,
    out: list[Command],
) -> bool:
    """Settle a disagreement with the requester's own re-run; False: a third node must."""
    if not req.config.audit_recheck or record.recheck.startswith("cannot"):
        return False
    if record.recheck == "":
        record.recheck = ASKED
        out.append(RecheckJob(job.job_id, job.spec))
        what = f"{auditor.node_id} disagrees with {worker.node_id}: the requester re-runs the job"
        req._note(job, now, "audit_recheck", req.node_id, what, out)
        return True
    if record.recheck == ASKED:
        return True  # its answer is on the way
    mine = bytes.fromhex(record.recheck)
    worker_ok, auditor_ok = (
        e.commitment is not None and e.commitment.results_digest == mine for e in (worker, auditor)
    )
    if worker_ok == auditor_ok:  # matches neither (or both, with other commitments)
        record.recheck = "cannot: the requester's own run matches " + (
            "both" if worker_ok else "neither"
        )
        req._note(job, now, "audit_recheck", req.node_id, record.recheck, out)
        return False
    cheat, honest = (auditor, worker) if worker_ok else (worker, auditor)
    why = "audit: results differ from the requester's own re-run of the job (fraud recorded)"
    _convict(req, job, record, [cheat], [honest], (), why, now, out)
    return True


def handle(req: RequesterState, event: RecheckDone | ProofJudged, now: float) -> list[Command]:
    """The requester's own re-run came back, or the fraud desk judged a proof."""
    out: list[Command] = []
    if isinstance(event, ProofJudged):
        outcome = _PROOF_OUTCOME.get(event.verdict)
        node = event.cheater if event.verdict == "fraud" else event.sender
        if outcome is not None and node != req.node_id:  # never brands itself
            req._count(node, outcome)
            out.append(ReputationChanged(node, outcome))
        return out
    job = req.jobs.get(event.job_id)
    record = job.audit if job is not None else None
    if job is None or record is None or record.recheck != ASKED or job.state is not S.RUNNING:
        return [Dropped(reason=f"a re-run of {event.job_id} that no audit waits for")]
    if event.digest is None:
        record.recheck = f"cannot: {event.error or 'no reason given'}"[:300]
        req._note(job, now, "audit_recheck", req.node_id, record.recheck, out)
    else:
        record.recheck = event.digest.hex()
    req._progress(job, now, out)  # nothing runs: this decides
    return out


def pending_rechecks(req: RequesterState) -> list[Command]:
    """After a restart: ask again for the re-runs that audits were waiting for."""
    return [
        RecheckJob(job.job_id, job.spec)
        for job in req.jobs.values()
        if job.audit is not None and job.audit.recheck == ASKED and job.state is S.RUNNING
    ]


def _fail(req: RequesterState, job: RequesterJob, why: str, now: float, out: list[Command]) -> None:
    req.move(job, JobAction.VERIFY)
    for ex in job.in_state(X.PROPOSED):
        req._reject_results(job, ex, f"job failed: {why}", now, out, blame=False)
    req._finish(job, JobAction.FAIL, why, now, out)


def _conclude(
    req: RequesterState,
    job: RequesterJob,
    *,
    winners: list[Execution],
    released: Sequence[Execution] = (),
    now: float,
    out: list[Command],
) -> None:
    """Accept ``winners`` (they publish), release ``released`` without blame."""
    if job.state is S.RUNNING:
        req.move(job, JobAction.VERIFY)
    for ex in winners:
        req.move_execution(ex, X.RESULTS_ACCEPTED)
        req._count(ex.node_id, "accepted")
        out.append(Send(ex.node_id, ResultsAccepted(job.job_id, ex.node_id)))
        req._note(job, now, "results_accepted", ex.node_id, "", out)
    for ex in released:
        req.move_execution(ex, X.RESULTS_REJECTED)
        ex.reason = "audit: matched; other results stand"
        out.append(
            Send(
                ex.node_id, ResultsRejected(job_id=job.job_id, node_id=ex.node_id, reason=ex.reason)
            )
        )
        req._note(job, now, "audit_released", ex.node_id, ex.reason, out)
    req.move(job, JobAction.PUBLISH)
    out.append(
        SetTimer(TimerKey(job.job_id, RequesterTimer.PUBLISH), now + req.config.publish_timeout)
    )
