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
from bacalhau.protocol.audit import wants_audit
from bacalhau.protocol.commands import Command, FraudFound, Send
from bacalhau.protocol.events import MessageReceived, ProposalOpened, SubmitJob
from bacalhau.protocol.messages import BidAccepted, BidPlaced, BidRejected
from bacalhau.protocol.requester import RequesterState
from bacalhau.testing.malicious import rigged

X = ExecutionState
REQ = Identity.from_seed(b"\x01" * 32).node_id
NODES = [Identity.from_seed(bytes([i + 2]) * 32).node_id for i in range(4)]
TRUE = Commitment.of(results_digest=b"t" * 32, exit_code=0, stdout="42", stderr="", cid=None)
LIE = Commitment.of(results_digest=b"l" * 32, exit_code=0, stdout="41", stderr="", cid=None)
CONFIG = RequesterConfig(bid_timeout=2.0, bid_window=0.0, audit_first=1)


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
