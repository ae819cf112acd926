"""Publication is bound to verification: a node publishing other than it committed to is refused."""

from __future__ import annotations

from typing import Any

import pytest

from bacalhau import Deal, JobSpec, JobState, Network, RequesterConfig
from bacalhau.cid import cid_str, make_cid
from bacalhau.commitment import Commitment
from bacalhau.identity import Identity
from bacalhau.models import ExecutionState, StorageRef
from bacalhau.protocol.commands import Send
from bacalhau.protocol.events import MessageReceived, ProposalOpened, SubmitJob
from bacalhau.protocol.messages import BidPlaced, ResultsPublished, ResultsRejected
from bacalhau.protocol.requester import RequesterState
from bacalhau.testing.hostile_peer import switching_plugins
from bacalhau.verifier.commitment import seal_commitment, unseal_commitment

pytestmark = pytest.mark.anyio

FAST = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=10.0)


def spec(concurrency: int, confidence: int) -> JobSpec:
    return JobSpec.noop(
        stdout="the one true answer\n",
        verifier="deterministic",
        publisher="ipfs",
        retries=0,
        deal=Deal(concurrency=concurrency, confidence=confidence, min_bids=concurrency),
        timeout=10,
    )


async def test_with_honest_nodes_enough_the_job_completes_with_their_results() -> None:
    options: list[dict[str, Any]] = [{}, {}, {"plugins": switching_plugins()}]
    async with Network.in_memory(3, requester=FAST, per_node_options=options) as net:
        cheat = net.nodes[2].node_id
        result = await net.nodes[0].run_job(spec(3, 2), timeout=60)
        requester = net.nodes[0].requester
    assert result.state is JobState.COMPLETED, result.reason
    by_node = {e.node_id: e for e in result.executions}
    assert by_node[cheat].state is ExecutionState.FAILED
    assert "publication refused" in by_node[cheat].reason
    assert by_node[cheat].published is None
    honest = [e for e in result.executions if e.node_id != cheat]
    assert all(e.state is ExecutionState.PUBLISHED and e.verified for e in honest)
    assert {e.published.cid for e in honest if e.published} == {result.cid}
    assert requester.reputation[cheat]["rejected"] == 1
    assert any(ev.kind == "publication_refused" for ev in result.events)


async def test_alone_the_switcher_never_completes_a_job_with_its_results() -> None:
    options: list[dict[str, Any]] = [{"plugins": switching_plugins()}]
    async with Network.in_memory(1, requester=FAST, per_node_options=options) as net:
        result = await net.nodes[0].run_job(spec(1, 1), timeout=60)
    assert result.state is JobState.FAILED
    assert "publication refused" in result.reason
    assert result.cid is None
    assert not any(e.verified for e in result.executions)


REQ = Identity.from_seed(b"\x01" * 32).node_id
NODE = Identity.from_seed(b"\x02" * 32).node_id
CID = cid_str(make_cid(b"results"))


def published_after(commitment: Commitment, message: ResultsPublished) -> RequesterState:
    state = RequesterState(REQ, bytes(32), config=FAST)
    state.handle(SubmitJob(job_id="j-1", spec=spec(1, 1), peers=1), 0.0)
    state.handle(MessageReceived(NODE, BidPlaced("j-1")), 0.1)
    state.handle(
        ProposalOpened(job_id="j-1", node_id=NODE, digest=b"d" * 32, commitment=commitment), 0.2
    )
    state.handle(MessageReceived(NODE, message), 0.3)
    return state


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            "exit code",
            ResultsPublished(
                job_id="j-1",
                ref=StorageRef(type="ipfs", cid=CID),
                exit_code=1,
                stdout="out",
                stderr="",
            ),
        ),
        (
            "stdout",
            ResultsPublished(
                job_id="j-1",
                ref=StorageRef(type="ipfs", cid=CID),
                exit_code=0,
                stdout="0ut",
                stderr="",
            ),
        ),
        (
            "stderr",
            ResultsPublished(
                job_id="j-1",
                ref=StorageRef(type="ipfs", cid=CID),
                exit_code=0,
                stdout="out",
                stderr="!",
            ),
        ),
        (
            "published at",
            ResultsPublished(
                job_id="j-1",
                ref=StorageRef(type="ipfs", cid=cid_str(make_cid(b"x"))),
                exit_code=0,
                stdout="out",
            ),
        ),
    ],
)
def test_each_committed_value_is_checked(field: str, message: ResultsPublished) -> None:
    commitment = Commitment.of(
        results_digest=b"d" * 32, exit_code=0, stdout="out", stderr="", cid=CID
    )
    state = published_after(commitment, message)
    job = state.jobs["j-1"]
    assert job.state is JobState.FAILED
    assert field in job.executions[NODE].reason
    assert state.reputation[NODE]["rejected"] == 1
    matching = ResultsPublished(
        job_id="j-1", ref=StorageRef(type="ipfs", cid=CID), exit_code=0, stdout="out", stderr=""
    )
    ok = published_after(commitment, matching)
    assert ok.jobs["j-1"].state is JobState.COMPLETED
    assert ok.result("j-1").executions[0].verified


def test_the_refused_node_is_told_why() -> None:
    commitment = Commitment.of(results_digest=b"d" * 32, exit_code=0, stdout="", stderr="", cid=CID)
    state = RequesterState(REQ, bytes(32), config=FAST)
    state.handle(SubmitJob(job_id="j-1", spec=spec(1, 1), peers=1), 0.0)
    state.handle(MessageReceived(NODE, BidPlaced("j-1")), 0.1)
    state.handle(
        ProposalOpened(job_id="j-1", node_id=NODE, digest=b"d" * 32, commitment=commitment), 0.2
    )
    bad = ResultsPublished(
        job_id="j-1", ref=StorageRef(type="ipfs", cid=cid_str(make_cid(b"y"))), exit_code=0
    )
    out = state.handle(MessageReceived(NODE, bad), 0.3)
    told = [c.message for c in out if isinstance(c, Send)]
    assert any(isinstance(m, ResultsRejected) and "publication refused" in m.reason for m in told)


def test_a_commitment_round_trips_sealed_and_only_for_its_requester() -> None:
    requester, other = Identity.generate(), Identity.generate()
    commitment = Commitment.of(
        results_digest=b"d" * 32, exit_code=-3, stdout="ä", stderr="", cid=CID
    )
    sealed = seal_commitment(
        commitment, job_id="j-1", node_id=NODE, requester_key=requester.seal_public_key
    )
    assert unseal_commitment(requester, sealed, job_id="j-1", node_id=NODE) == commitment
    from bacalhau.errors import VerificationError

    with pytest.raises(VerificationError, match="another requester"):
        unseal_commitment(other, sealed, job_id="j-1", node_id=NODE)
    with pytest.raises(VerificationError, match="copied"):
        unseal_commitment(requester, sealed, job_id="j-1", node_id=REQ)
    with pytest.raises(VerificationError, match="replayed"):
        unseal_commitment(requester, sealed, job_id="j-2", node_id=NODE)
    assert Commitment.decode(commitment.encode()) == commitment
