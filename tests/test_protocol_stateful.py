"""Hypothesis stateful tests of the two sans-IO state machines.

The requester machine is driven by any interleaving of bids, declines,
proposals (agreeing or not, expected or not), failures, publications, timers
and cancellation. Invariants: never more accepted executions than
``concurrency``; results accepted only with ``confidence`` agreeing proposals;
and, with the nodes gone silent, firing the pending timers in time order always
ends the job (the overall job timer is never needed for that).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bacalhau.errors import IllegalTransition
from bacalhau.identity import Identity
from bacalhau.models import Deal, ExecutionState, JobSpec, JobState, StorageRef
from bacalhau.protocol import commands as c
from bacalhau.protocol import messages as m
from bacalhau.protocol.compute import ComputeJobState, ComputeState
from bacalhau.protocol.events import (
    BidDecided,
    BidReviewed,
    CancelJob,
    ExecutionDone,
    ExecutionErrored,
    MessageReceived,
    ProposalOpened,
    PublishDone,
    SubmitJob,
    TimerFired,
)
from bacalhau.protocol.requester import (
    EXECUTION_TRANSITIONS,
    JOB_TRANSITIONS,
    RequesterConfig,
    RequesterState,
)
from bacalhau.protocol.timers import JobAction, RequesterTimer, TimerKey

NODES = [Identity.from_seed(bytes([i]) * 32).node_id for i in range(1, 7)]
REQ = Identity.from_seed(b"\x99" * 32).node_id
JOB = "j-test"
X = ExecutionState
HOLDING = (X.ACCEPTED, X.PROPOSED, X.RESULTS_ACCEPTED, X.PUBLISHED)


class RequesterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.timers: dict[TimerKey, float] = {}
        self.sent: list[c.Command] = []

    @initialize(
        concurrency=st.integers(1, 4),
        confidence_frac=st.integers(0, 4),
        min_bids=st.integers(0, 6),
        retries=st.integers(0, 3),
        seed=st.integers(0, 2**16),
        review=st.booleans(),
        selection=st.sampled_from(["random", "reputation"]),
    )
    def submit(
        self,
        concurrency: int,
        confidence_frac: int,
        min_bids: int,
        retries: int,
        seed: int,
        review: bool,
        selection: str,
    ) -> None:
        confidence = min(confidence_frac, concurrency)
        self.deal = Deal(concurrency=concurrency, confidence=confidence, min_bids=min_bids)
        self.state = RequesterState(
            REQ,
            b"k" * 32,
            config=RequesterConfig(
                bid_timeout=10,
                execution_grace=5,
                publish_timeout=20,
                bid_review=review,
                selection=selection,
            ),
            rng=random.Random(seed),
        )
        self.state.reputation[NODES[0]] = __import__("collections").Counter(rejected=3)
        spec = JobSpec.noop(deal=self.deal, timeout=30, retries=retries)
        self.apply(self.state.handle(SubmitJob(job_id=JOB, spec=spec), self.now))

    def apply(self, commands: list[c.Command]) -> None:
        for cmd in commands:
            self.sent.append(cmd)
            if isinstance(cmd, c.SetTimer):
                self.timers[cmd.key] = cmd.at
            elif isinstance(cmd, c.CancelTimers):
                for key in [
                    k
                    for k in self.timers
                    if k.job_id == cmd.job_id
                    and (cmd.name is None or k.name is cmd.name)
                    and (cmd.node is None or k.node == cmd.node)
                ]:
                    del self.timers[key]

    def feed(self, event: object) -> None:
        self.now += 0.1
        self.apply(self.state.handle(event, self.now))  # type: ignore[arg-type]

    @property
    def job(self):  # type: ignore[no-untyped-def]
        return self.state.jobs[JOB]

    @rule(node=st.sampled_from(NODES))
    def bid(self, node: str) -> None:
        self.feed(MessageReceived(node, m.BidPlaced(JOB)))

    @rule(node=st.sampled_from(NODES), ok=st.booleans())
    def review(self, node: str, ok: bool) -> None:
        self.feed(BidReviewed(job_id=JOB, node_id=node, ok=ok, reason="" if ok else "hook said no"))

    @rule(node=st.sampled_from(NODES))
    def decline(self, node: str) -> None:
        self.feed(MessageReceived(node, m.BidDeclined(job_id=JOB, reason="busy")))

    @rule(node=st.sampled_from(NODES), digest=st.sampled_from([b"a", b"b", b"c"]))
    def propose(self, node: str, digest: bytes) -> None:
        self.feed(ProposalOpened(job_id=JOB, node_id=node, digest=digest))

    @rule(node=st.sampled_from(NODES))
    def bad_proposal(self, node: str) -> None:
        self.feed(
            ProposalOpened(job_id=JOB, node_id=node, digest=None, error="sealed for someone else")
        )

    @rule(node=st.sampled_from(NODES))
    def fail(self, node: str) -> None:
        self.feed(MessageReceived(node, m.ExecutionFailed(JOB, "boom")))

    @rule(node=st.sampled_from(NODES))
    def publish(self, node: str) -> None:
        self.feed(
            MessageReceived(
                node, m.ResultsPublished(job_id=JOB, ref=StorageRef(type="noop"), exit_code=0)
            )
        )

    @precondition(lambda self: any(k.name is not RequesterTimer.JOB for k in self.timers))
    @rule(data=st.data())
    def fire_timer(self, data: st.DataObject) -> None:
        key = data.draw(
            st.sampled_from(sorted(k for k in self.timers if k.name is not RequesterTimer.JOB))
        )
        self.now = max(self.now, self.timers.pop(key))
        self.feed(TimerFired(key))

    @rule()
    def cancel(self) -> None:
        self.feed(CancelJob(JOB))

    @invariant()
    def never_more_than_concurrency(self) -> None:
        holding = sum(1 for e in self.job.executions.values() if e.state in HOLDING)
        assert holding <= self.deal.concurrency

    @invariant()
    def accepted_results_agree_with_confidence(self) -> None:
        winners = [
            e for e in self.job.executions.values() if e.state in (X.RESULTS_ACCEPTED, X.PUBLISHED)
        ]
        if winners:
            assert len({e.digest for e in winners}) == 1
            assert len(winners) >= max(self.deal.confidence, 1)
        if self.job.state is JobState.COMPLETED:
            assert any(e.state is X.PUBLISHED for e in self.job.executions.values())

    @invariant()
    def terminal_means_quiet(self) -> None:
        if self.job.state.terminal:
            assert not self.timers, "a terminal job keeps no timers"
            assert all(e.state.terminal or e.state is X.BID for e in self.job.executions.values())

    def teardown(self) -> None:
        # The nodes go silent. Firing the pending timers in time order must end the job
        # without the overall job timer.
        for _ in range(200):
            pending = sorted(
                (at, k) for k, at in self.timers.items() if k.name is not RequesterTimer.JOB
            )
            if not pending or self.job.state.terminal:
                break
            at, key = pending[0]
            del self.timers[key]
            self.now = max(self.now, at)
            self.feed(TimerFired(key))
        assert self.job.state.terminal, (self.job.state, self.job.executions)


RequesterMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRequester = RequesterMachine.TestCase


class ComputeMachine(RuleBasedStateMachine):
    """Forged decisions never start work; work starts once per acceptance."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ComputeState(NODES[0])
        self.runs = 0
        self.publishes = 0
        self.running = False
        self.now = 0.0

    def feed(self, event: object) -> list[c.Command]:
        self.now += 1
        out = self.state.handle(event, self.now)  # type: ignore[arg-type]
        for cmd in out:
            if isinstance(cmd, c.RunExecution):
                assert not self.running, "a job is never run twice at once"
                self.running = True
                self.runs += 1
            elif isinstance(cmd, c.CancelExecution):
                self.running = False
            elif isinstance(cmd, c.PublishResults):
                self.publishes += 1
        return out

    @initialize()
    def hear_job(self) -> None:
        out = self.feed(
            MessageReceived(
                REQ,
                m.JobCreated(job_id=JOB, spec=JobSpec.noop(), seal_key=b"k" * 32, created_at=0.0),
            )
        )
        assert any(isinstance(x, c.EvaluateBid) for x in out)

    @rule(bid=st.booleans())
    def decide(self, bid: bool) -> None:
        self.feed(BidDecided(job_id=JOB, bid=bid, reason="" if bid else "no"))

    @rule(
        sender=st.sampled_from([REQ, NODES[1]]),
        kind=st.sampled_from(
            [
                "BidAccepted",
                "BidRejected",
                "ResultsAccepted",
                "ResultsRejected",
                "JobCompleted",
                "JobFailed",
                "JobCancelled",
            ]
        ),
    )
    def decision(self, sender: str, kind: str) -> None:
        table: dict[str, m.Message] = {
            "BidAccepted": m.BidAccepted(JOB, NODES[0]),
            "BidRejected": m.BidRejected(job_id=JOB, node_id=NODES[0], reason="no"),
            "ResultsAccepted": m.ResultsAccepted(JOB, NODES[0]),
            "ResultsRejected": m.ResultsRejected(job_id=JOB, node_id=NODES[0], reason="no"),
            "JobCompleted": m.JobCompleted(JOB),
            "JobFailed": m.JobFailure(JOB, "x"),
            "JobCancelled": m.JobCancelled(JOB, "x"),
        }
        msg = table[kind]
        before = (
            self.state.jobs[JOB].state if JOB in self.state.jobs else None,
            self.runs,
            self.publishes,
        )
        out = self.feed(MessageReceived(sender, msg))
        if sender != REQ and JOB in self.state.jobs:
            assert (self.state.jobs[JOB].state, self.runs, self.publishes) == before
            assert all(isinstance(x, c.Dropped) and x.forged for x in out)

    @precondition(lambda self: self.running)
    @rule(ok=st.booleans())
    def finish(self, ok: bool) -> None:
        self.running = False
        if ok:
            self.feed(ExecutionDone(job_id=JOB, proposal=b"", exit_code=0))
        else:
            self.feed(ExecutionErrored(JOB, "trap"))

    @rule()
    def published(self) -> None:
        self.feed(PublishDone(JOB, StorageRef(type="noop")))

    @invariant()
    def publish_only_after_acceptance(self) -> None:
        assert self.publishes <= self.runs
        if JOB in self.state.jobs and self.state.jobs[JOB].state is ComputeJobState.RUNNING:
            assert self.running


ComputeMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
TestCompute = ComputeMachine.TestCase


def test_illegal_job_transitions_raise_a_named_error() -> None:
    state = RequesterState(REQ, b"k" * 32)
    state.handle(SubmitJob(job_id=JOB, spec=JobSpec.noop()), 0.0)
    job = state.jobs[JOB]
    for s, action in [(JobState.BIDDING, JobAction.COMPLETE), (JobState.BIDDING, JobAction.VERIFY)]:
        assert (s, action) not in JOB_TRANSITIONS
        job.state = s
        with pytest.raises(IllegalTransition, match=f"event '{action}' is not allowed"):
            state.move(job, action)
    job.state = JobState.COMPLETED
    with pytest.raises(IllegalTransition):
        state.move(job, JobAction.CANCEL)


def test_illegal_execution_transitions_raise_a_named_error() -> None:
    from bacalhau.protocol.requester_jobs import Execution

    for a in ExecutionState:
        for b in ExecutionState:
            ex = Execution(node_id="n", state=a)
            if (a, b) in EXECUTION_TRANSITIONS:
                RequesterState.move_execution(ex, b)
                assert ex.state is b
            else:
                with pytest.raises(IllegalTransition):
                    RequesterState.move_execution(ex, b)


def test_compute_illegal_transition() -> None:
    state = ComputeState(NODES[0])
    state.handle(
        MessageReceived(
            REQ, m.JobCreated(job_id=JOB, spec=JobSpec.noop(), seal_key=b"k" * 32, created_at=0.0)
        ),
        0,
    )
    with pytest.raises(IllegalTransition):
        state.move(state.jobs[JOB], ComputeJobState.PUBLISHED)
