"""A publish that fails (the node reports it, or the publish deadline passes) uses the
job's retries: the requester runs the job again on another node instead of failing it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bacalhau import Deal, JobSpec, JobState, Network, RequesterConfig
from bacalhau.identity import Identity
from bacalhau.models import ExecutionState, StorageRef
from bacalhau.node.plugins import Plugins, default_plugins
from bacalhau.node.services import NodeServices
from bacalhau.protocol.commands import Broadcast, CancelTimers, Command, Send
from bacalhau.protocol.events import MessageReceived, ProposalOpened, SubmitJob, TimerFired
from bacalhau.protocol.messages import (
    BidAccepted,
    BidPlaced,
    ExecutionFailed,
    JobCompleted,
    JobFailure,
    ResultsAccepted,
    ResultsPublished,
)
from bacalhau.protocol.requester import RequesterJob, RequesterState
from bacalhau.protocol.timers import RequesterTimer, TimerKey
from bacalhau.publisher.base import Publisher

X = ExecutionState
REQ = Identity.from_seed(b"\x01" * 32).node_id
NODES = [Identity.from_seed(bytes([i + 2]) * 32).node_id for i in range(3)]
CONFIG = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=60.0)


def sent(out: list[Command], kind: type) -> list[str]:
    return [c.to for c in out if isinstance(c, Send) and isinstance(c.message, kind)]


class Harness:
    """A requester with three bidders; the tests play the compute nodes by hand."""

    def __init__(self, retries: int) -> None:
        self.state = RequesterState(REQ, bytes(32), config=CONFIG, rng=random.Random(7))
        self.now = 0.0
        spec = JobSpec.noop(stdout="x", retries=retries, deal=Deal(min_bids=3))
        self.state.handle(SubmitJob(job_id="j-1", spec=spec, peers=3), self.now)
        out: list[Command] = []
        for node in NODES:
            out += self.handle(MessageReceived(node, BidPlaced("j-1")))
        (self.worker,) = sent(out, BidAccepted)

    def handle(self, event: object) -> list[Command]:
        self.now += 0.1
        return self.state.handle(event, self.now)  # type: ignore[arg-type]

    def propose(self, node: str) -> list[Command]:
        out = self.handle(ProposalOpened(job_id="j-1", node_id=node, digest=None))
        assert sent(out, ResultsAccepted) == [node]
        assert self.job().state is JobState.PUBLISHING
        return out

    def publish(self, node: str) -> list[Command]:
        return self.handle(
            MessageReceived(
                node, ResultsPublished(job_id="j-1", ref=StorageRef(type="noop"), exit_code=0)
            )
        )

    def job(self) -> RequesterJob:
        return self.state.jobs["j-1"]


def test_a_failed_publish_runs_the_job_again_on_another_node() -> None:
    h = Harness(retries=2)
    h.propose(h.worker)
    out = h.handle(MessageReceived(h.worker, ExecutionFailed("j-1", "disk full")))
    assert h.job().state is JobState.RUNNING, h.job().reason
    assert CancelTimers(job_id="j-1", name=RequesterTimer.PUBLISH) in out, "the old deadline goes"
    (second,) = sent(out, BidAccepted)
    assert second != h.worker, "a passed-over bidder replaces the failed publisher"
    assert h.job().executions[h.worker].state is X.FAILED
    retrying = [e for e in h.job().history if e.kind == "retrying"]
    assert len(retrying) == 1 and "disk full" in retrying[0].detail
    assert not [c for c in out if isinstance(c, Broadcast) and isinstance(c.message, JobFailure)]

    h.propose(second)
    out = h.publish(second)
    assert h.job().state is JobState.COMPLETED
    assert Broadcast(JobCompleted("j-1")) in out
    assert h.job().acceptances == 2


def test_a_publish_deadline_passed_retries_too_until_the_retries_run_out() -> None:
    h = Harness(retries=1)
    h.propose(h.worker)
    out = h.handle(TimerFired(TimerKey("j-1", RequesterTimer.PUBLISH)))
    assert h.job().state is JobState.RUNNING
    assert "did not publish within 60s" in h.job().executions[h.worker].reason
    (second,) = sent(out, BidAccepted)
    h.propose(second)
    out = h.handle(TimerFired(TimerKey("j-1", RequesterTimer.PUBLISH)))
    assert h.job().state is JobState.FAILED, "retries=1: one retry, then the job fails"
    assert h.job().reason.startswith("publishing failed: did not publish")
    assert not sent(out, BidAccepted)


def test_without_retries_a_failed_publish_fails_the_job_at_once() -> None:
    h = Harness(retries=0)
    h.propose(h.worker)
    out = h.handle(MessageReceived(h.worker, ExecutionFailed("j-1", "gone")))
    assert h.job().state is JobState.FAILED
    assert h.job().reason == "publishing failed: gone"
    assert Broadcast(JobFailure("j-1", "publishing failed: gone")) in out


class FailsOnce(Publisher):
    """Fails the first publish on its node (as a node that lost its results would)."""

    name = "fails-once"

    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        self.calls += 1
        if self.calls == 1:
            raise OSError("the results folder is gone")
        return StorageRef(type="noop")


@pytest.mark.anyio
async def test_on_a_network_a_failed_publish_completes_on_another_node() -> None:
    publisher = FailsOnce()

    def plugins(services: NodeServices) -> Plugins:
        found = default_plugins(services, entry_points_too=False)
        found.add(publisher)
        return found

    async with Network.in_memory(
        3,
        seed=5,
        requester=RequesterConfig(bid_timeout=3, publish_timeout=60),
        per_node_options=[{"compute": None}, {"plugins": plugins}, {"plugins": plugins}],
    ) as net:
        spec = JobSpec.noop(stdout="ok", publisher="fails-once", retries=2)
        result = await net.nodes[0].run_job(spec, timeout=30)
        await net.wait_idle()
    assert result.state is JobState.COMPLETED, result.reason
    failed = [e for e in result.executions if e.state is X.FAILED]
    assert len(failed) == 1 and "gone" in failed[0].reason
    (published,) = [e for e in result.executions if e.state is X.PUBLISHED]
    assert published.node_id != failed[0].node_id
    assert any(e.kind == "retrying" for e in result.events)
    assert publisher.calls == 2
