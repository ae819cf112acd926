"""Fraud proofs: an audit's catch, checked by a third node that re-runs the job."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import attrs
import pytest

from bacalhau import Deal, JobSpec, JobState, Network, RequesterConfig
from bacalhau.commitment import Commitment, statement
from bacalhau.errors import VerificationError
from bacalhau.identity import Identity
from bacalhau.node.fraud import FraudDesk
from bacalhau.protocol.messages import FraudReport
from bacalhau.testing.malicious import rigged
from bacalhau.verifier.fraud import FraudProof, SignedCommitment, check_signatures

pytestmark = pytest.mark.anyio

FAST = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=10.0, audit=1.0)
JOB = JobSpec.noop(stdout="42", verifier="audit", retries=0, deal=Deal(min_bids=4))


def desk(node: Any) -> FraudDesk:
    fraud = node.driver.fraud
    assert isinstance(fraud, FraudDesk)
    return fraud


async def until(check: Any, within: float = 30.0) -> None:
    with anyio.fail_after(within):
        while not check():
            await anyio.sleep(0.01)


async def test_a_proof_checks_out_on_a_third_node_which_stops_choosing_the_cheater() -> None:
    """Node 0 requests (computes nothing); 1, 2 and 4 are honest; 3 lies. Node 4 hears
    node 0's proof, re-runs the job itself, and refuses the liar's next bid."""
    options: list[dict[str, Any]] = [
        {"compute": None},
        {},
        {},
        {"plugins": rigged("liar")},
        {},
    ]
    async with Network.in_memory(5, requester=FAST, per_node_options=options) as net:
        liar, third = net.nodes[3].node_id, net.nodes[4]
        node = net.nodes[0]
        for _ in range(40):  # the liar is drawn into a job with probability >= 1/2 each time
            result = await node.run_job(JOB, timeout=60)
            assert result.state is JobState.COMPLETED, result.reason
            assert all(e.node_id != liar for e in result.accepted)
            if node.requester.reputation.get(liar, Counter())["fraud"]:
                break
        assert node.requester.reputation[liar]["fraud"] == 1
        assert "fraud" in desk(node).verdicts.values()
        await until(lambda: "fraud" in desk(third).verdicts.values())
        assert third.requester.reputation[liar]["fraud"] == 1
        assert third.stats["fraud_proofs_fraud"] == 1
        # node 4, as a requester, never chooses the liar again
        result = await third.run_job(attrs.evolve(JOB, deal=Deal(min_bids=3)), timeout=60)
        assert result.ok, result.reason
        assert liar not in {e.node_id for e in result.executions}
        assert not third.requester.reputation.get(node.node_id, Counter())["false_proof"]


def forged_by(sender: Identity, victim: str, spec: JobSpec) -> FraudProof:
    """A proof that ``victim`` cheated, with the victim's commitment signed by the sender."""
    lie = Commitment.of(results_digest=b"x" * 32, exit_code=0, stdout="", stderr="", cid=None)
    mine = Commitment.of(results_digest=b"y" * 32, exit_code=0, stdout="", stderr="", cid=None)

    def signed(c: Commitment, node_id: str) -> SignedCommitment:
        data = statement(c, job_id="j-forged", node_id=node_id, spec=spec)
        return SignedCommitment(node_id=node_id, commitment=c.encode(), signature=sender.sign(data))

    return FraudProof(
        job_id="j-forged",
        spec=spec,
        cheater=signed(lie, victim),
        witnesses=(signed(mine, sender.node_id),),
        sender=sender.node_id,
    ).signed(sender.sign)


async def test_a_forged_proof_is_refused_and_counted_against_its_sender() -> None:
    options: list[dict[str, Any]] = [{}, {}, {"durable": True}]
    async with Network.in_memory(3, requester=FAST, per_node_options=options) as net:
        forger, victim, judge = net.nodes
        proof = forged_by(forger.identity, victim.node_id, JOB)
        with pytest.raises(VerificationError, match="forged"):
            check_signatures(proof, sender=forger.node_id)
        forger.outbox.post(None, FraudReport("j-forged", proof.encode()))
        await until(lambda: judge.stats["fraud_proofs_refused"] == 1)
        assert judge.requester.reputation[forger.node_id]["forged_proof"] == 1
        assert not judge.requester.reputation.get(victim.node_id, Counter())["fraud"]
        # the verdict went through the state machine, which had it saved: a restart keeps it
        assert judge.store is not None
        await judge.store.flush()
        judge = await net.restart_node(judge)
        assert judge.requester.reputation[forger.node_id]["forged_proof"] == 1
        # the forger is no longer chosen by the judge: a job it requests runs elsewhere
        result = await judge.run_job(attrs.evolve(JOB, deal=Deal(min_bids=2)), timeout=60)
        assert result.ok, result.reason
        assert forger.node_id not in {e.node_id for e in result.executions}


async def test_a_false_proof_with_valid_signatures_costs_its_sender() -> None:
    """The sender signs a lie of its own as the witness and accuses an honest node with
    that node's genuine signed commitment: the judge's re-run clears the accused."""
    options: list[dict[str, Any]] = [{"compute": None}, {}, {}]
    async with Network.in_memory(3, requester=FAST, per_node_options=options) as net:
        accuser, _, judge = net.nodes
        job = attrs.evolve(JOB, deal=Deal(min_bids=2, audit=1.0))
        result = await accuser.run_job(job, timeout=60)
        assert result.ok, result.reason
        worker = result.accepted[0].node_id
        genuine = desk(accuser).signed[(result.job_id, worker)]
        other = Commitment.of(results_digest=b"y" * 32, exit_code=0, stdout="", stderr="", cid=None)
        fake_witness = SignedCommitment(
            node_id=accuser.node_id,
            commitment=other.encode(),
            signature=accuser.identity.sign(
                statement(other, job_id=result.job_id, node_id=accuser.node_id, spec=job)
            ),
        )
        proof = FraudProof(
            job_id=result.job_id,
            spec=job,
            cheater=genuine,
            witnesses=(fake_witness,),
            sender=accuser.node_id,
        ).signed(accuser.identity.sign)
        accuser.outbox.post(None, FraudReport(result.job_id, proof.encode()))
        await until(lambda: judge.stats["fraud_proofs_false"] == 1)
        assert judge.requester.reputation[accuser.node_id]["false_proof"] == 1
        assert not judge.requester.reputation.get(worker, Counter())["fraud"]
