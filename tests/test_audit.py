"""The audit verifier: one run, a random sample re-run by another node, cheaters caught."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import attrs
import pytest

from bacalhau import Deal, JobSpec, JobState, Network, RequesterConfig
from bacalhau.commitment import Commitment
from bacalhau.errors import ValidationError
from bacalhau.identity import Identity
from bacalhau.models import ExecutionState
from bacalhau.protocol.audit import pending_rechecks, wants_audit
from bacalhau.protocol.commands import (
    Command,
    Dropped,
    FraudFound,
    RecheckJob,
    ReputationChanged,
    Send,
)
from bacalhau.protocol.events import (
    MessageReceived,
    ProofJudged,
    ProposalOpened,
    RecheckDone,
    SubmitJob,
)
from bacalhau.protocol.messages import BidAccepted, BidPlaced, BidRejected
from bacalhau.protocol.requester import RequesterState
from bacalhau.testing.malicious import rigged

X = ExecutionState
REQ = Identity.from_seed(b"\x01" * 32).node_id
NODES = [Identity.from_seed(bytes([i + 2]) * 32).node_id for i in range(4)]
TRUE = Commitment.of(results_digest=b"t" * 32, exit_code=0, stdout="42", stderr="", cid=None)
LIE = Commitment.of(results_digest=b"l" * 32, exit_code=0, stdout="41", stderr="", cid=None)
CONFIG = RequesterConfig(bid_timeout=2.0, bid_window=0.0, audit_first=1, audit_recheck=False)
"""A requester that cannot re-run jobs itself: a third node breaks ties."""
SELF_CHECK = attrs.evolve(CONFIG, audit_recheck=True)


def spec(p: float = 0.0) -> JobSpec:
    return JobSpec.noop(stdout="42", verifier="audit", retries=0, deal=Deal(min_bids=4, audit=p))


def accepted(out: list[Command]) -> list[str]:
    return [
        c.message.node_id for c in out if isinstance(c, Send) and isinstance(c.message, BidAccepted)
    ]


class Harness:
    """A requester with four bidders, driving proposals by hand."""

    def __init__(self, seed: int, config: RequesterConfig = CONFIG) -> None:
        self.state = RequesterState(REQ, bytes(32), config=config, rng=random.Random(seed))
        self.now = 0.0

    def submit(self, job_id: str, job: JobSpec) -> str:
        self.state.handle(SubmitJob(job_id=job_id, spec=job, peers=4), self.now)
        out: list[Command] = []
        for node in NODES:
            out += self.state.handle(MessageReceived(node, BidPlaced(job_id)), self.tick())
        (worker,) = accepted(out)
        return worker

    def tick(self) -> float:
        self.now += 0.1
        return self.now

    def propose(self, job_id: str, node: str, commitment: Commitment) -> list[Command]:
        event = ProposalOpened(
            job_id=job_id, node_id=node, digest=commitment.results_digest, commitment=commitment
        )
        return self.state.handle(event, self.tick())

    def rechecked(self, job_id: str, digest: bytes | None, error: str = "") -> list[Command]:
        return self.state.handle(
            RecheckDone(job_id=job_id, digest=digest, error=error), self.tick()
        )


def test_a_lying_worker_is_caught_and_its_result_never_accepted() -> None:
    h = Harness(seed=1)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, LIE))  # first job here: always audited
    assert auditor != worker
    (breaker,) = accepted(h.propose("j-1", auditor, TRUE))  # disagree: a third node decides
    assert breaker not in (worker, auditor)
    out = h.propose("j-1", breaker, TRUE)
    job = h.state.jobs["j-1"]
    assert job.state is JobState.PUBLISHING
    assert job.executions[worker].state is X.RESULTS_REJECTED
    assert "fraud" in job.executions[worker].reason
    assert [e.node_id for e in job.in_state(X.RESULTS_ACCEPTED)] == [auditor]  # one publishes
    assert FraudFound(job_id="j-1", cheater=worker, witnesses=(auditor, breaker)) in out
    assert h.state.reputation[worker]["fraud"] == 1
    assert job.audit is not None and job.audit.outcome == "fraud"
    # the cheater's next bid is refused outright
    h.state.handle(SubmitJob(job_id="j-2", spec=spec(), peers=4), h.tick())
    out = h.state.handle(MessageReceived(worker, BidPlaced("j-2")), h.tick())
    assert any(
        isinstance(c, Send) and isinstance(c.message, BidRejected) and "fraud" in c.message.reason
        for c in out
    )


def test_an_honest_worker_passes_and_alone_publishes() -> None:
    h = Harness(seed=2)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, TRUE))
    out = h.propose("j-1", auditor, TRUE)
    job = h.state.jobs["j-1"]
    assert [e.node_id for e in job.in_state(X.RESULTS_ACCEPTED)] == [worker]
    assert job.executions[auditor].state is X.RESULTS_REJECTED
    assert not any(isinstance(c, FraudFound) for c in out)
    assert h.state.reputation.get(auditor, Counter())["rejected"] == 0
    assert job.audit is not None and job.audit.outcome == "matched"


def test_a_lying_auditor_is_the_one_caught() -> None:
    h = Harness(seed=3)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, TRUE))
    (breaker,) = accepted(h.propose("j-1", auditor, LIE))
    out = h.propose("j-1", breaker, TRUE)
    job = h.state.jobs["j-1"]
    assert [e.node_id for e in job.in_state(X.RESULTS_ACCEPTED)] == [worker]
    assert h.state.reputation[auditor]["fraud"] == 1
    assert h.state.reputation[worker]["fraud"] == 0
    assert [c.cheater for c in out if isinstance(c, FraudFound)] == [auditor]


def test_the_requesters_own_rerun_settles_a_disagreement_without_a_third_node() -> None:
    h = Harness(seed=1, config=SELF_CHECK)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, LIE))
    out = h.propose("j-1", auditor, TRUE)
    assert accepted(out) == []  # no tie-breaker is asked
    assert RecheckJob("j-1", spec()) in out
    assert not any(isinstance(c, RecheckJob) for c in h.propose("j-1", auditor, TRUE))  # once
    out = h.rechecked("j-1", TRUE.results_digest)
    job = h.state.jobs["j-1"]
    assert [e.node_id for e in job.in_state(X.RESULTS_ACCEPTED)] == [auditor]
    assert FraudFound(job_id="j-1", cheater=worker, witnesses=(auditor,)) in out
    assert h.state.reputation[worker]["fraud"] == 1
    assert job.audit is not None and job.audit.recheck == TRUE.results_digest.hex()
    assert any(e.kind == "audit_recheck" for e in job.history)


def colluders_against_an_honest_auditor(config: RequesterConfig) -> tuple[Harness, str, str]:
    """The worker and every node it could get as tie-breaker collude (they all say LIE);
    only the auditor is honest. Returns (harness, worker, auditor)."""
    h = Harness(seed=3, config=config)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, LIE))
    for breaker in accepted(h.propose("j-1", auditor, TRUE)):  # the tie-breaker, if asked
        h.propose("j-1", breaker, LIE)
    return h, worker, auditor


def test_colluders_frame_an_honest_auditor_only_where_the_requester_cannot_rerun() -> None:
    """Two colluders outvote an honest auditor when a third node breaks the tie (the
    residual risk); a requester that re-runs the job itself is not fooled."""
    h, worker, auditor = colluders_against_an_honest_auditor(CONFIG)
    assert h.state.reputation[auditor]["fraud"] == 1  # framed
    assert h.state.reputation.get(worker, Counter())["fraud"] == 0
    h, worker, auditor = colluders_against_an_honest_auditor(SELF_CHECK)
    out = h.rechecked("j-1", TRUE.results_digest)
    job = h.state.jobs["j-1"]
    assert h.state.reputation.get(auditor, Counter())["fraud"] == 0
    assert h.state.reputation[worker]["fraud"] == 1
    assert [e.node_id for e in job.in_state(X.RESULTS_ACCEPTED)] == [auditor]
    assert [c.cheater for c in out if isinstance(c, FraudFound)] == [worker]
    assert job.count(X.ACCEPTED, X.PROPOSED) == 0  # no tie-breaker ever ran


def test_a_requester_that_cannot_rerun_falls_back_to_a_tie_breaker() -> None:
    for digest, error in ((None, "no wasm executor here"), (b"n" * 32, "")):
        h = Harness(seed=2, config=SELF_CHECK)
        worker = h.submit("j-1", spec())
        (auditor,) = accepted(h.propose("j-1", worker, LIE))
        h.propose("j-1", auditor, TRUE)
        (breaker,) = accepted(h.rechecked("j-1", digest, error))  # matches neither / cannot
        assert breaker not in (worker, auditor)
        h.propose("j-1", breaker, TRUE)
        assert h.state.reputation[worker]["fraud"] == 1
        job = h.state.jobs["j-1"]
        assert job.audit is not None and job.audit.recheck.startswith("cannot")


def test_a_rerun_no_audit_waits_for_is_dropped_and_a_restart_asks_again() -> None:
    h = Harness(seed=4, config=SELF_CHECK)
    out = h.rechecked("j-none", TRUE.results_digest)
    assert len(out) == 1 and isinstance(out[0], Dropped)
    worker = h.submit("j-1", spec())
    (auditor,) = accepted(h.propose("j-1", worker, TRUE))
    h.propose("j-1", auditor, LIE)
    assert pending_rechecks(h.state) == [RecheckJob("j-1", spec())]
    h.rechecked("j-1", TRUE.results_digest)
    assert pending_rechecks(h.state) == []
    assert h.state.reputation[auditor]["fraud"] == 1
    assert isinstance(h.rechecked("j-1", TRUE.results_digest)[0], Dropped)  # once only


def test_fraud_proof_verdicts_change_reputation_through_the_state_machine() -> None:
    state = RequesterState(REQ, bytes(32), config=CONFIG, rng=random.Random(0))
    sender, cheater = NODES[0], NODES[1]
    out = state.handle(
        ProofJudged(job_id="j-1", sender=sender, cheater=cheater, verdict="fraud"), 0.0
    )
    assert out == [ReputationChanged(cheater, "fraud")]
    assert state.reputation[cheater]["fraud"] == 1
    out = state.handle(
        ProofJudged(job_id="j-2", sender=sender, cheater=cheater, verdict="false"), 0.0
    )
    assert out == [ReputationChanged(sender, "false_proof")]
    out = state.handle(
        ProofJudged(job_id="j-3", sender=NODES[2], cheater="", verdict="refused"), 0.0
    )
    assert out == [ReputationChanged(NODES[2], "forged_proof")]
    for verdict in ("inconclusive", "unchecked"):
        assert (
            state.handle(
                ProofJudged(job_id="j-4", sender=sender, cheater=NODES[3], verdict=verdict), 0.0
            )
            == []
        )
    assert (
        state.handle(ProofJudged(job_id="j-5", sender=sender, cheater=REQ, verdict="fraud"), 0.0)
        == []
    )  # never itself
    assert REQ not in state.reputation
    # a node judged a cheat by a proof is refused like one caught by an audit
    state.handle(SubmitJob(job_id="j-6", spec=spec(), peers=4), 0.0)
    out = state.handle(MessageReceived(cheater, BidPlaced("j-6")), 0.1)
    assert any(isinstance(c, Send) and isinstance(c.message, BidRejected) for c in out)


def test_after_the_first_jobs_audits_follow_the_probability() -> None:
    h = Harness(seed=4, config=RequesterConfig(bid_timeout=2.0, bid_window=0.0, audit_first=0))
    worker = h.submit("j-1", spec(0.0))
    assert accepted(h.propose("j-1", worker, LIE)) == []  # p = 0: the lie stands unaudited
    job = h.state.jobs["j-1"]
    assert job.audit is not None and job.audit.outcome == "unaudited"
    rng = random.Random(5)
    draws = [
        wants_audit(job_p=0.1, requester_p=0.0, first_jobs=0, audited_before=0, rng=rng)
        for _ in range(10_000)
    ]
    assert 800 < sum(draws) < 1200
    assert wants_audit(job_p=0.0, requester_p=0.0, first_jobs=3, audited_before=2, rng=rng)


def test_only_rerunnable_jobs_can_be_audited() -> None:
    with pytest.raises(ValidationError, match="not marked deterministic") as info:
        JobSpec.docker("busybox", ["date"], verifier="audit")
    assert info.value.field == "verifier"
    assert "re-runs the job" in str(info.value)
    marked = JobSpec.docker("busybox", ["echo", "hi"], verifier="audit", deterministic=True)
    assert marked.rerunnable
    assert JobSpec.wasm("(module)", verifier="audit").rerunnable
    with pytest.raises(ValidationError, match="needs verifier 'audit'"):
        JobSpec.noop(deal=Deal(audit=0.5))
    with pytest.raises(ValidationError, match="probability"):
        Deal(audit=1.5)
    with pytest.raises(ValidationError, match="concurrency must be 1"):
        JobSpec.noop(verifier="audit", deal=Deal(concurrency=3))


FAST = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=10.0, audit=1.0)


@pytest.mark.anyio
async def test_on_a_network_a_liar_is_caught_and_its_result_never_reported() -> None:
    """A requester that computes nothing, two honest nodes and a liar. Every job is
    audited; whenever the liar works or audits, a third run outvotes it."""
    options: list[dict[str, Any]] = [{"compute": None}, {}, {}, {"plugins": rigged("liar")}]
    async with Network.in_memory(4, requester=FAST, per_node_options=options) as net:
        liar = net.nodes[3].node_id
        node = net.nodes[0]
        job = JobSpec.noop(stdout="42", verifier="audit", retries=0, deal=Deal(min_bids=3))
        caught = False
        for _ in range(40):  # the liar is drawn into a job with probability 2/3 each time
            result = await node.run_job(job, timeout=60)
            assert result.state is JobState.COMPLETED, result.reason
            assert result.accepted
            for e in result.accepted:
                assert e.node_id != liar
                assert "made up" not in e.stdout
            if node.requester.reputation.get(liar, Counter())["fraud"]:
                caught = True
                break
        assert caught
        assert node.stats["audit_rechecks"] >= 1  # the requester settled it by its own run
        after = await node.run_job(attrs.evolve(job, deal=Deal(min_bids=2)), timeout=60)
    assert after.ok
    assert liar not in {e.node_id for e in after.executions}


def test_the_cli_spells_audits_and_refuses_an_unmarked_docker_job(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bacalhau.cli import build_parser, main
    from bacalhau.cli.common import job_kwargs, job_options_from_args

    argv = ["docker", "run", "--verifier", "audit", "--audit", "0.2", "--deterministic"]
    ns = build_parser().parse_args([*argv, "busybox", "echo", "hi"])
    job = JobSpec.docker("busybox", ["echo", "hi"], **job_kwargs(**job_options_from_args(ns)))
    assert job.deterministic
    assert job.deal.audit == 0.2
    assert main(["docker", "run", "--verifier", "audit", "busybox", "date"]) != 0
    err = capsys.readouterr().err
    assert "verifier: an audit re-runs the job" in err
    assert "not marked deterministic" in err


@pytest.mark.anyio
async def test_on_a_network_colluders_cannot_frame_the_honest_node() -> None:
    """A requester (computing nothing itself, but able to re-run), one honest node and two
    colluders that agree on one wrong answer. Every job is audited; whenever the honest
    node and a colluder disagree, the requester's own run decides: the honest node is
    never branded (with a third node breaking ties instead, the other colluder would
    outvote it), and the colluder is caught."""
    options: list[dict[str, Any]] = [
        {"compute": None},
        {},
        {"plugins": rigged("colluder")},
        {"plugins": rigged("colluder")},
    ]
    async with Network.in_memory(4, requester=FAST, per_node_options=options) as net:
        node, honest = net.nodes[0], net.nodes[1].node_id
        colluders = {n.node_id for n in net.nodes[2:]}
        job = JobSpec.noop(stdout="42", verifier="audit", retries=0, deal=Deal(min_bids=3))
        for _ in range(30):  # each job catches a colluder with probability 2/3
            result = await node.run_job(job, timeout=60)
            assert result.state is JobState.COMPLETED, result.reason
            assert node.requester.reputation.get(honest, Counter())["fraud"] == 0
            caught = {c for c in colluders if node.requester.reputation.get(c, Counter())["fraud"]}
            if caught:  # then fewer than min_bids nodes may bid: stop here
                break
        assert len(caught) == 1
        assert node.stats["audit_rechecks"] >= 1
        assert node.driver.faults == []
