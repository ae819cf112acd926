"""The driver: routes events to the sans-IO state machines by type and carries out
the commands they return.

Every input of a node (a message that passed the inbound gate, a client's submit,
a timer, an execution's outcome) becomes an event. :meth:`Driver.feed` queues it
and pumps the queue synchronously, never re-entered, so the state machines see one
event at a time without locks. Routing is by type: requester-authored messages
(:data:`~bacalhau.protocol.messages.REQUESTER_MESSAGES`) and
:class:`~bacalhau.protocol.timers.ComputeTimer` timers go to the compute side,
everything else of a job's lifecycle to the requester.

Time comes from an injectable :class:`~bacalhau.node.clock.Clock`; with a
:class:`~bacalhau.node.clock.VirtualClock` protocol tests run on virtual time.

A state machine that raises is a bug, never the peer's fault: the driver logs it,
records it in :attr:`Driver.faults`, and moves that job to a failed state with the
error as its reason (so nothing waits on it). Test harnesses fail on any fault.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from ..compute.bidding import BidRequest, BidResponse, BidStrategy, decide, decide_now
from ..errors import VerificationError
from ..identity import Identity
from ..protocol import audit
from ..protocol import commands as c
from ..protocol.compute import ComputeJobState, ComputeState
from ..protocol.events import (
    BidDecided,
    BidReviewed,
    CancelJob,
    Event,
    ExecutionDone,
    ExecutionErrored,
    MessageReceived,
    ProofJudged,
    ProposalOpened,
    PublishDone,
    PublishErrored,
    RecheckDone,
    SubmitJob,
    TimerFired,
)
from ..protocol.messages import (
    REQUESTER_MESSAGES,
    FraudReport,
    Message,
    NodeAnnounced,
    ResultsProposed,
)
from ..protocol.nodes import Announcer
from ..protocol.requester import RequesterState
from ..protocol.timers import ComputeTimer, TimerKey
from ..verifier.commitment import unseal_signed
from .clock import Clock
from .timers import TimerQueue

if TYPE_CHECKING:
    from ..compute.capacity import Capacity
    from ..compute.runner import ExecutionRunner
    from ..verifier.base import Verifier
    from .fraud import FraudDesk
    from .outbox import Outbox
    from .store import StateStore

__all__ = ["COMPUTE_EVENTS", "REQUESTER_EVENTS", "Driver", "Fault"]

log = logging.getLogger("bacalhau.node")

REQUESTER_EVENTS = (SubmitJob, CancelJob, ProposalOpened, BidReviewed, RecheckDone, ProofJudged)
"""Local events for the requester side."""
COMPUTE_EVENTS = (BidDecided, ExecutionDone, ExecutionErrored, PublishDone, PublishErrored)
"""Local events for the compute side."""


@attrs.frozen(kw_only=True)
class Fault:
    """A state machine raised while handling an event (a bug in this package)."""

    job_id: str
    side: str
    """``requester`` or ``compute``."""
    event: str
    error: str


def job_of(event: Event) -> str:
    """The job an event is about."""
    if isinstance(event, MessageReceived):
        return event.message.job_id
    if isinstance(event, TimerFired):
        return event.key.job_id
    return event.job_id


@attrs.define(eq=False, kw_only=True)
class Driver:
    """Feeds events to a node's two state machines and carries out their commands.

    Args:
        node_id: the node's id (a message to it is delivered locally).
        requester / compute: the state machines.
        serve_requester / serve_compute: whether this node plays that role (a
            compute-only node ignores events for the requester, and the reverse).
        clock: the time given to the state machines and the timer queue.
        outbox: signs messages and queues them per destination; held while a pump runs
            (what the pump wakes, a client waiting for a job's end, runs before the
            messages it caused leave).
        stats: counters shared with the node.
    """

    node_id: str
    requester: RequesterState
    compute: ComputeState
    serve_requester: bool
    serve_compute: bool
    clock: Clock
    outbox: Outbox
    identity: Identity
    """The node's keys (to open the results commitments sealed to it)."""
    stats: Counter[str]
    store: StateStore | None = None
    runner: ExecutionRunner | None = None
    verifiers: Mapping[str, Verifier] = attrs.Factory(dict)
    strategies: Sequence[BidStrategy] = ()
    acceptance: Sequence[BidStrategy] = ()
    on_job_changed: Callable[[str], None] | None = None
    fraud: FraudDesk | None = None
    """Sends and checks fraud proofs (set when the node starts)."""
    """Called with the job id after a requester's job changed (and was saved)."""
    faults: list[Fault] = attrs.Factory(list)
    capacity: Capacity | None = None
    """The compute side's room: a bid reserves a slot (released when the job leaves the
    bid state other than to run)."""
    announcer: Announcer | None = None
    on_compute: Callable[[], None] | None = None
    """Called after a compute-side event that changed what the node's announcement would
    tell before its heartbeat (whether a slot, a GPU is free: ``Capacity.room``); after
    every one on a node without a capacity."""
    on_job_evicted: Callable[[str], None] | None = None
    """Called with the job id when a durable node's finished job leaves memory (so what
    is kept per job elsewhere can go too)."""
    _room: tuple[bool, bool] | None = None
    """The room as of the last wake of ``on_compute`` (or the start: see :meth:`use_capacity`)."""
    timers: TimerQueue = attrs.field(init=False)
    _inbox: deque[Event] = attrs.Factory(deque)
    _pumping: bool = False
    _changes: dict[str, anyio.Event] = attrs.Factory(dict)
    _ends: dict[str, anyio.Event] = attrs.Factory(dict)
    _finished: set[str] = attrs.Factory(set)
    _tg: anyio.abc.TaskGroup | None = None

    def __attrs_post_init__(self) -> None:
        self.timers = TimerQueue(clock=self.clock, fire=self._timer_fired)

    def _timer_fired(self, key: TimerKey) -> None:
        self.feed(TimerFired(key))

    def bind(self, tg: anyio.abc.TaskGroup | None) -> None:
        """Run background work (bid evaluation) in ``tg``; ``None`` when stopping."""
        self._tg = tg

    # --- inputs ---------------------------------------------------------------------------

    def use_capacity(self, capacity: Capacity | None) -> None:
        """Take the compute side's room; what it has now is what the node announces at
        start, so only a change from it wakes ``on_compute`` (on a large network each job
        lands on a node that never ran one: its first job must not cost an announcement
        check when it leaves the node's room as it was)."""
        self.capacity = capacity
        self._room = capacity.room() if capacity is not None else None

    def feed(self, event: Event) -> None:
        """Handle ``event`` and everything it causes, now."""
        self._inbox.append(event)
        self._pump()

    def deliver(self, sender: str, message: Message) -> None:
        """A message that passed the inbound gate (or one this node sent itself)."""
        if isinstance(message, FraudReport):  # checked off the state machines
            if self.fraud is not None and self._tg is not None:
                self._tg.start_soon(self.fraud.receive, sender, message)
            return
        self.feed(self._as_event(sender, message))

    def broadcast(self, message: Message) -> None:
        """Send ``message`` to every node (this one included) and handle what follows."""
        self._send(None, message)
        self._pump()

    def recover(self) -> None:
        """After a restart from the store: carry out both sides' recovery commands."""
        now = self.clock.now()
        runner = self.runner
        kept = frozenset(
            j
            for j in self.results_in_flight()
            if runner is not None and runner.has_results(j, self.compute.jobs[j].spec)
        )
        commands = [
            *self.requester.recover(now),
            *audit.pending_rechecks(self.requester),
            *self.compute.recover(now, results_kept=kept),
        ]
        if self.store is not None:  # recovery moved executions that died to failed
            for job in self.compute.jobs.values():
                self.store.save_compute(job)
        for command in commands:
            self._execute(command)
        self._pump()

    def results_in_flight(self) -> frozenset[str]:
        """Compute jobs whose results were proposed or accepted and not yet published."""
        live = (ComputeJobState.PROPOSED, ComputeJobState.PUBLISHING)
        return frozenset(j for j, job in self.compute.jobs.items() if job.state in live)

    def changed(self, job_id: str) -> anyio.Event:
        """An event set the next time the job's record changes (then replaced)."""
        event = self._changes.get(job_id)
        if event is None:
            event = self._changes[job_id] = anyio.Event()
        return event

    def ended(self, job_id: str) -> anyio.Event:
        """An event set the next time the job's record changes to a terminal state (then
        replaced): a waiter for the end wakes once, not at every step of the job."""
        event = self._ends.get(job_id)
        if event is None:
            event = self._ends[job_id] = anyio.Event()
        return event

    # --- the pump -------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        self.outbox.hold()
        try:
            while self._inbox:
                event = self._inbox.popleft()
                now = self.clock.now()
                for command in last_changes(self._dispatch(event, now)):
                    self._execute(command)
            self._evict_finished()
        finally:
            self._pumping = False
            self.outbox.release()

    def _evict_finished(self) -> None:
        """Finished jobs of a durable node leave memory: the store holds them (saved, and
        readable before the write commits), and ``describe`` reads them back."""
        for job_id in self._finished:
            job = self.requester.jobs.get(job_id)
            if job is not None and job.state.terminal:
                del self.requester.jobs[job_id]
                if self.on_job_evicted is not None:
                    self.on_job_evicted(job_id)
        self._finished.clear()

    def _dispatch(self, event: Event, now: float) -> list[c.Command]:
        if isinstance(event, MessageReceived) and isinstance(event.message, NodeAnnounced):
            return self._announced(event, now)
        if isinstance(event, MessageReceived):
            to_compute = isinstance(event.message, REQUESTER_MESSAGES)
        elif isinstance(event, TimerFired):
            to_compute = isinstance(event.key.name, ComputeTimer)
        elif isinstance(event, REQUESTER_EVENTS):
            to_compute = False
        else:
            assert isinstance(event, COMPUTE_EVENTS), event
            to_compute = True
        if to_compute:
            return self._to_compute(event, now) if self.serve_compute else []
        if not self.serve_requester:
            return []
        try:
            return self.requester.handle(event, now)
        except Exception as exc:
            return self._fault("requester", event, exc, now)

    def _announced(self, event: MessageReceived, now: float) -> list[c.Command]:
        """A node's announcement: into the requester's table; a newcomer is told about us
        directly (it missed our last announcement)."""
        if not self.serve_requester:
            return []
        sender, table = event.sender, self.requester.nodes.nodes
        new = sender != self.node_id and sender not in table
        commands = self.requester.handle(event, now)
        sent = self.announcer.sent if self.announcer is not None else None
        if new and sent is not None and sender in table:
            commands.append(c.Send(sender, NodeAnnounced(sent)))
        return commands

    def _to_compute(self, event: Event, now: float) -> list[c.Command]:
        try:
            commands = self.compute.handle(event, now)
        except Exception as exc:
            commands = self._fault("compute", event, exc, now)
        if self.capacity is not None and self.capacity.reserved:
            job_id = job_of(event)
            if job_id in self.capacity.reserved:
                cj = self.compute.jobs.get(job_id)
                if cj is None or cj.state not in (ComputeJobState.BID, ComputeJobState.RUNNING):
                    self.capacity.unreserve(job_id)
        if self.on_compute is not None:
            room = self.capacity.room() if self.capacity is not None else None
            if room is None or room != self._room:  # (not every job's coming and going)
                self._room = room
                self.on_compute()
        if self.store is not None:
            job_id = job_of(event)
            job = self.compute.jobs.get(job_id)
            if job is not None:
                if self.compute.keeps(job):  # not jobs merely heard of
                    self.store.save_compute(job)
            elif isinstance(event, TimerFired | BidDecided):
                self.store.forget_compute(job_id)
        return commands

    def _fault(self, side: str, event: Event, exc: Exception, now: float) -> list[c.Command]:
        """A state machine raised: record it, log it, and fail that job."""
        job_id = job_of(event)
        error = f"{type(exc).__name__}: {exc}"
        log.error("%s: %s state machine failed on %r", self.node_id[-8:], side, event, exc_info=exc)
        self.faults.append(Fault(job_id=job_id, side=side, event=repr(event)[:500], error=error))
        self.stats["internal_errors"] += 1
        try:
            if side == "requester":
                return self.requester.internal_error(job_id, error, now)
            return self.compute.internal_error(job_id, error)
        except Exception:
            log.exception("%s: could not fail job %s after an internal error", self.node_id, job_id)
            return []

    # --- carrying out commands ------------------------------------------------------------

    def _execute(self, cmd: c.Command) -> None:
        # one table look-up by the command's exact type (commands are final attrs
        # classes), not a chain of isinstance tests: a job costs ~40 commands
        _HANDLERS[type(cmd)](self, cmd)

    def _do_broadcast(self, cmd: c.Broadcast) -> None:
        self._send(None, cmd.message)

    def _do_send(self, cmd: c.Send) -> None:
        self._send(cmd.to, cmd.message)

    def _do_set_timer(self, cmd: c.SetTimer) -> None:
        self.timers.set(cmd.key, cmd.at)

    def _do_cancel_timers(self, cmd: c.CancelTimers) -> None:
        self.timers.cancel(cmd.job_id, cmd.name, cmd.node, cmd.side)

    def _do_job_changed(self, cmd: c.JobChanged) -> None:
        self._job_changed(cmd.job_id)

    def _do_evaluate_bid(self, cmd: c.EvaluateBid) -> None:
        if self.serve_compute:
            request = BidRequest(
                job_id=cmd.job_id,
                spec=cmd.spec,
                requester_id=cmd.requester_id,
                node_id=self.node_id,
            )
            answer = decide_now(self.strategies, request)
            if answer is None:
                self._spawn(self._evaluate_bid, cmd)
            else:  # every strategy answered at once: no task needed
                self._bid_decided(cmd.job_id, answer)

    def _do_review_bid(self, cmd: c.ReviewBid) -> None:
        self._spawn(self._review_bid, cmd)

    def _do_run(self, cmd: c.RunExecution) -> None:
        self._runner().start(cmd.job_id, cmd.spec, cmd.seal_key)

    def _do_cancel_execution(self, cmd: c.CancelExecution) -> None:
        self._runner().cancel(cmd.job_id)

    def _do_discard(self, cmd: c.DiscardResults) -> None:
        self._runner().discard(cmd.job_id)

    def _do_publish(self, cmd: c.PublishResults) -> None:
        self._runner().publish(cmd.job_id, cmd.spec)

    def _do_fraud_found(self, cmd: c.FraudFound) -> None:
        if self.fraud is not None:
            self._spawn(self.fraud.report, cmd)

    def _do_recheck(self, cmd: c.RecheckJob) -> None:
        if self.fraud is not None:
            self._spawn(self.fraud.recheck, cmd)
        else:
            self.feed(
                RecheckDone(job_id=cmd.job_id, digest=None, error="this node has no fraud desk")
            )

    def _do_reputation(self, cmd: c.ReputationChanged) -> None:
        if self.store is not None:
            self.store.save_reputation(cmd.node_id, self.requester.reputation[cmd.node_id])

    def _do_dropped(self, cmd: c.Dropped) -> None:
        self.stats["dropped_forged" if cmd.forged else "dropped"] += 1
        level = logging.WARNING if cmd.forged else logging.DEBUG
        log.log(level, "%s: dropped: %s", self.node_id[-8:], cmd.reason)

    def _runner(self) -> ExecutionRunner:
        assert self.runner is not None, "the node has not started"
        return self.runner

    def _job_changed(self, job_id: str) -> None:
        if self.store is not None:
            job = self.requester.jobs[job_id]
            self.store.save_requester(job)
            for node_id in job.executions:
                if node_id in self.requester.reputation:
                    self.store.save_reputation(node_id, self.requester.reputation[node_id])
        if self.on_job_changed is not None:
            self.on_job_changed(job_id)
        event = self._changes.pop(job_id, None)
        if event is not None:
            event.set()
        if self.requester.jobs[job_id].state.terminal:
            event = self._ends.pop(job_id, None)
            if event is not None:
                event.set()
            if self.store is not None:
                self._finished.add(job_id)  # it leaves memory once this pump is done

    def _send(self, to: str | None, message: Message) -> None:
        kind = "announce" if isinstance(message, NodeAnnounced) else "job"
        self.stats[f"{kind}_{'sent' if to else 'broadcast'}"] += 1
        if isinstance(message, FraudReport):
            self.outbox.post(to, message)
            return
        if to == self.node_id:
            self._inbox.append(self._as_event(self.node_id, message))
            return
        if to is None:  # broadcast: hear it ourselves, then tell everyone
            self._inbox.append(self._as_event(self.node_id, message))
        self.outbox.post(to, message)

    def _spawn(self, fn: Callable[[Any], Coroutine[Any, Any, None]], cmd: c.Command) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, cmd)

    async def _evaluate_bid(self, cmd: c.EvaluateBid) -> None:
        if not self.serve_compute:
            return
        request = BidRequest(
            job_id=cmd.job_id, spec=cmd.spec, requester_id=cmd.requester_id, node_id=self.node_id
        )
        self._bid_decided(cmd.job_id, await decide(self.strategies, request))

    def _bid_decided(self, job_id: str, answer: BidResponse) -> None:
        """A bid holds a slot (no room left: a busy decline instead)."""
        if answer.bid and self.capacity is not None and not self.capacity.reserve(job_id):
            self.feed(
                BidDecided(
                    job_id=job_id, bid=False, reason="busy: execution queue is full", busy=True
                )
            )
            return
        self.feed(BidDecided(job_id=job_id, bid=answer.bid, reason=answer.reason, busy=answer.busy))

    async def _review_bid(self, cmd: c.ReviewBid) -> None:
        request = BidRequest(
            job_id=cmd.job_id, spec=cmd.spec, requester_id=self.node_id, node_id=cmd.node_id
        )
        answer = await decide(self.acceptance, request)
        self.feed(
            BidReviewed(job_id=cmd.job_id, node_id=cmd.node_id, ok=answer.bid, reason=answer.reason)
        )

    # --- proposals ------------------------------------------------------------------------

    def _as_event(self, sender: str, message: Message) -> Event:
        if isinstance(message, ResultsProposed):
            return self._open_proposal(sender, message)
        return MessageReceived(sender, message)

    def _open_proposal(self, sender: str, msg: ResultsProposed) -> ProposalOpened:
        job = self.requester.jobs.get(msg.job_id)
        if job is None:
            return ProposalOpened(
                job_id=msg.job_id, node_id=sender, digest=None, error="unknown job"
            )
        verifier = self.verifiers.get(job.spec.verifier)
        if verifier is None:
            return ProposalOpened(
                job_id=msg.job_id,
                node_id=sender,
                digest=None,
                error=f"no {job.spec.verifier} verifier",
            )
        try:
            digest = verifier.open(job_id=msg.job_id, node_id=sender, proposal=msg.proposal)
            commitment, signature = unseal_signed(
                self.identity, msg.commitment, job_id=msg.job_id, node_id=sender
            )
        except VerificationError as exc:
            self.stats["proposals_refused"] += 1
            return ProposalOpened(job_id=msg.job_id, node_id=sender, digest=None, error=str(exc))
        if signature is not None and self.fraud is not None:
            self.fraud.remember(msg.job_id, sender, commitment.encode(), signature)
        return ProposalOpened(
            job_id=msg.job_id, node_id=sender, digest=digest, commitment=commitment
        )


def last_changes(commands: list[c.Command]) -> list[c.Command]:
    """``commands`` without the :class:`~bacalhau.protocol.commands.JobChanged` of a
    job that a later one in the same batch repeats. A state machine's answer to one
    event is carried out after it returned, and nothing in the batch changes a job's
    record (an event a command causes waits in the inbox), so each ``JobChanged`` of
    the batch would save, publish and wake for the same record: the last one does it
    once (a job's answer to one message often notes two or three history lines)."""
    if len(commands) < 2:
        return commands
    last: dict[str, int] = {}
    changes = 0
    for i, cmd in enumerate(commands):
        if type(cmd) is c.JobChanged:
            last[cmd.job_id] = i
            changes += 1
    if changes == len(last):
        return commands
    return [
        cmd
        for i, cmd in enumerate(commands)
        if type(cmd) is not c.JobChanged or last[cmd.job_id] == i
    ]


_HANDLERS: dict[type, Callable[[Driver, Any], None]] = {
    c.Broadcast: Driver._do_broadcast,
    c.Send: Driver._do_send,
    c.SetTimer: Driver._do_set_timer,
    c.CancelTimers: Driver._do_cancel_timers,
    c.JobChanged: Driver._do_job_changed,
    c.EvaluateBid: Driver._do_evaluate_bid,
    c.ReviewBid: Driver._do_review_bid,
    c.RunExecution: Driver._do_run,
    c.CancelExecution: Driver._do_cancel_execution,
    c.DiscardResults: Driver._do_discard,
    c.PublishResults: Driver._do_publish,
    c.FraudFound: Driver._do_fraud_found,
    c.RecheckJob: Driver._do_recheck,
    c.ReputationChanged: Driver._do_reputation,
    c.Dropped: Driver._do_dropped,
}
"""How the driver carries out each kind of command (every member of ``c.Command``)."""
