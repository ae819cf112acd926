"""An engine is looked for when a job needs it: one that appears (or goes) after the node
started is seen by the next job once the last answer is older than ``recheck_after``."""

from __future__ import annotations

import pytest

from bacalhau.compute.bidding import BidRequest, SupportStrategy
from bacalhau.executor.noop import NoopExecutor
from bacalhau.models import JobSpec
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.storage.inline import InlineStorage
from bacalhau.verifier.noop import NoopVerifier

pytestmark = pytest.mark.anyio


class SwitchedEngine(NoopExecutor):
    """A noop engine that can be 'installed' and 'removed' while the node runs."""

    def __init__(self) -> None:
        self.present = False
        self.asked = 0

    async def is_installed(self) -> bool:
        self.asked += 1
        return self.present


async def test_an_engine_started_after_the_node_is_seen() -> None:
    now = [100.0]
    engine = SwitchedEngine()
    support = SupportStrategy(
        executors={"noop": engine},
        storage={"inline": InlineStorage()},
        verifiers={"noop": NoopVerifier()},
        publishers={"noop": NoopPublisher()},
        recheck_after=5.0,
        clock=lambda: now[0],
    )
    request = BidRequest(job_id="j", spec=JobSpec.noop(), requester_id="requester", node_id="me")
    answer = await support.decide(request)
    assert not answer.bid
    assert "engine is not available" in answer.reason
    engine.present = True  # e.g. dockerd started after the devstack
    now[0] += 1.0
    assert not (await support.decide(request)).bid, "a recent answer is reused"
    assert engine.asked == 1
    now[0] += 5.0
    assert (await support.decide(request)).bid, "then the engine is asked again"
    engine.present = False  # and an engine that went away is noticed too
    now[0] += 5.0
    assert not (await support.decide(request)).bid
    assert engine.asked == 3
