"""A job no known node can ever run fails at once, with each node's reason; a job that
only lacks room (or a node with the right labels, or any compute node yet) waits queued.

Driven on the requester's sans-IO state machine with node announcements and answers
fed by hand, then once on an in-memory network whose nodes have no Docker engine.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from bacalhau import Network
from bacalhau.executor.docker import DockerExecutor
from bacalhau.identity import Identity
from bacalhau.models import JobSpec, JobState, NodeInfo, Resources
from bacalhau.node.plugins import Plugins, default_plugins
from bacalhau.protocol import commands as c
from bacalhau.protocol import messages as m
from bacalhau.protocol.events import MessageReceived, SubmitJob, TimerFired
from bacalhau.protocol.requester import RequesterConfig, RequesterState
from bacalhau.protocol.timers import RequesterTimer, TimerKey
from bacalhau.selectors import parse_selectors

REQ = Identity.from_seed(b"\x42" * 32).node_id
NODES = [Identity.from_seed(bytes([i]) * 32).node_id for i in range(1, 5)]
JOB = "j-00000000-0000-4000-8000-000000000001"
DOCKER = JobSpec.docker("busybox", ["echo", "hi"], publisher="noop")
NO_ENGINE = "the docker engine is not available on this node"
T0 = 1000.0


def info(node: str, **changes: Any) -> NodeInfo:
    base = NodeInfo(
        node_id=node,
        executors=("docker", "noop", "wasm"),
        verifiers=("noop",),
        publishers=("noop",),
        storage=("inline",),
        capacity=Resources(cpu=4, memory=2**32),
        free_slots=4,
        max_executions=4,
    )
    return attrs.evolve(base, **changes)


def requester(*infos: NodeInfo, **config: Any) -> RequesterState:
    state = RequesterState(REQ, b"k" * 32, config=RequesterConfig(**config))
    for i in infos:
        state.handle(MessageReceived(i.node_id, m.NodeAnnounced(i)), T0)
    return state


def offered(commands: list[c.Command]) -> list[str]:
    return [x.to for x in commands if isinstance(x, c.Send) and isinstance(x.message, m.JobCreated)]


def decline(
    state: RequesterState, node: str, reason: str, *, busy: bool = False
) -> list[c.Command]:
    return state.handle(
        MessageReceived(node, m.BidDeclined(job_id=JOB, reason=reason, busy=busy)), T0 + 0.1
    )


def broadcast(commands: list[c.Command]) -> bool:
    return any(isinstance(x, c.Broadcast) and isinstance(x.message, m.JobCreated) for x in commands)


def test_no_known_node_offers_the_engine_each_is_asked_then_the_job_fails_saying_why() -> None:
    """Announcements say nobody has docker: every node is asked for its own answer (an
    announcement can be older than an engine that started) and, once all decline, the
    job fails at once with their reasons, not after its queue timeout."""
    no_engine = info(NODES[0], executors=("noop", "wasm"), unavailable=("docker",))
    state = requester(
        no_engine, attrs.evolve(no_engine, node_id=NODES[1]), info(NODES[2], executors=("noop",))
    )
    out = state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=3), T0)
    assert broadcast(out) and not offered(out)
    decline(state, NODES[0], NO_ENGINE)
    decline(state, NODES[1], NO_ENGINE)
    assert state.result(JOB).state is JobState.BIDDING
    decline(state, NODES[2], "no 'docker' executor on this node")
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert result.reason == (
        f"no known node can run this docker job: {NO_ENGINE} (2 nodes declined); "
        "no 'docker' executor on this node (1 node declined)"
    )
    assert [e.kind for e in result.events] == ["created", *["declined"] * 3, "failed"]


def test_a_node_whose_announcement_is_behind_still_gets_the_job() -> None:
    stale = info(NODES[0], executors=("noop",), unavailable=("docker",))
    state = requester(stale, attrs.evolve(stale, node_id=NODES[1]))
    assert broadcast(state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=2), T0))
    decline(state, NODES[0], NO_ENGINE)
    out = state.handle(MessageReceived(NODES[1], m.BidPlaced(JOB)), T0 + 0.2)  # it has one now
    assert any(isinstance(x, c.Send) and isinstance(x.message, m.BidAccepted) for x in out)
    assert state.result(JOB).state is JobState.RUNNING


def test_announcements_alone_fail_a_job_once_its_bid_timeout_passes() -> None:
    lacking = info(NODES[0], executors=("noop",), unavailable=("docker",))
    state = requester(lacking, attrs.evolve(lacking, node_id=NODES[1]), bid_timeout=10)
    state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=-1), T0)  # they never answer
    state.handle(TimerFired(TimerKey(JOB, RequesterTimer.BIDS)), T0 + 10)
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert result.reason == f"no known node can run this docker job: {NO_ENGINE} (2 nodes)"


def test_every_asked_node_declining_for_good_fails_the_job_with_the_reasons() -> None:
    state = requester(*(info(n) for n in NODES[:3]))
    first = offered(state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=3), T0))
    assert len(first) == 2  # concurrency 1 plus one of headroom
    assert not offered(decline(state, first[0], NO_ENGINE))
    third = offered(decline(state, first[1], NO_ENGINE))
    assert len(third) == 1 and third[0] not in first  # the node not asked yet is asked
    assert state.result(JOB).state is JobState.BIDDING
    decline(state, third[0], "invalid docker job: no such image")
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert result.reason == (
        f"no known node can run this docker job: {NO_ENGINE} (2 nodes declined); "
        "invalid docker job: no such image (1 node declined)"
    )
    assert [e.kind for e in result.events].count("declined") == 3


def test_busy_nodes_never_fail_a_job_it_waits_queued() -> None:
    state = requester(*(info(n) for n in NODES[:3]))
    out = state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=3), T0)
    for node in offered(out):
        for more in offered(decline(state, node, "busy: execution queue is full", busy=True)):
            decline(state, more, "busy: execution queue is full", busy=True)
    result = state.result(JOB)
    assert result.state is JobState.QUEUED, result.reason
    assert "queued" in [e.kind for e in result.events]


def test_one_suitable_node_that_is_full_keeps_the_job_waiting() -> None:
    full = info(NODES[0], free_slots=0)
    lacking = info(NODES[1], executors=("noop",), unavailable=("docker",))
    state = requester(full, lacking, attrs.evolve(lacking, node_id=NODES[2]))
    state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=3), T0)
    result = state.result(JOB)
    assert result.state is JobState.QUEUED
    assert result.events[-1].detail.startswith("waiting for capacity: 1 matching node busy")


def test_a_job_only_selectors_keep_from_every_node_waits_for_one_to_join() -> None:
    state = requester(*(info(n, labels={"zone": "a"}) for n in NODES[:3]))
    spec = attrs.evolve(DOCKER, selectors=parse_selectors("zone=late"))
    state.handle(SubmitJob(job_id=JOB, spec=spec, peers=3), T0)
    result = state.result(JOB)
    assert result.state is JobState.QUEUED
    assert result.events[-1].detail.startswith("no node matches zone=late")
    late = info(NODES[3], labels={"zone": "late"})
    out = state.handle(MessageReceived(late.node_id, m.NodeAnnounced(late)), T0 + 1)
    assert offered(out) == [NODES[3]]


def test_selectors_do_not_hide_that_no_node_has_the_engine() -> None:
    lacking = info(NODES[0], executors=("noop",), labels={"zone": "a"})
    state = requester(lacking, attrs.evolve(lacking, node_id=NODES[1], labels={}))
    spec = attrs.evolve(DOCKER, selectors=parse_selectors("zone=a"))
    assert broadcast(state.handle(SubmitJob(job_id=JOB, spec=spec, peers=2), T0))
    decline(state, NODES[0], NO_ENGINE)
    decline(state, NODES[1], NO_ENGINE)
    assert state.result(JOB).state is JobState.FAILED


def test_with_no_compute_node_known_a_job_waits() -> None:
    state = requester(info(REQ, compute=False), info(NODES[0], compute=False))
    state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=1), T0)
    result = state.result(JOB)
    assert result.state is JobState.QUEUED
    assert result.events[-1].detail == "no node matches engine docker (2 known; 2: no compute)"
    alone = requester(info(REQ, compute=False))  # too few known: broadcast, then wait
    alone.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=0), T0)
    assert alone.result(JOB).state is JobState.BIDDING
    alone.handle(TimerFired(TimerKey(JOB, RequesterTimer.BIDS)), T0 + 10)
    assert alone.result(JOB).state is JobState.QUEUED


def test_a_silent_node_is_no_reason_to_fail() -> None:
    state = requester(*(info(n) for n in NODES[:2]))
    first = offered(state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=2), T0))
    decline(state, first[0], NO_ENGINE)
    state.handle(TimerFired(TimerKey(JOB, RequesterTimer.BIDS)), T0 + 10)
    assert state.result(JOB).state is JobState.QUEUED


def test_a_lone_node_that_declines_fails_the_job_at_once() -> None:
    """Too few nodes known for targeted offers: the job is broadcast. With no peers,
    this node's own decline is every answer there will be."""
    state = requester(info(REQ, executors=("noop", "wasm"), unavailable=("docker",)))
    out = state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=0), T0)
    assert any(isinstance(x, c.Broadcast) for x in out)
    decline(state, REQ, NO_ENGINE)
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert result.reason == f"no known node can run this docker job: {NO_ENGINE} (1 node declined)"


def test_a_broadcast_job_waits_for_every_reachable_node_to_answer() -> None:
    state = requester(info(REQ), bid_timeout=10)
    state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=2), T0)
    decline(state, REQ, NO_ENGINE)
    decline(state, NODES[0], NO_ENGINE)
    assert state.result(JOB).state is JobState.BIDDING  # one peer has not answered
    decline(state, NODES[1], "no 'docker' executor on this node")
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert f"{NO_ENGINE} (2 nodes declined)" in result.reason
    assert "no 'docker' executor on this node (1 node declined)" in result.reason


@pytest.mark.parametrize("peers", [-1, 3])
def test_a_broadcast_job_ends_at_the_bid_timeout_when_the_known_nodes_declined(
    peers: int,
) -> None:
    """Peers unknown, or one that never answers: the bid timeout is as long as it waits."""
    state = requester(info(REQ), bid_timeout=10)
    state.handle(SubmitJob(job_id=JOB, spec=DOCKER, peers=peers), T0)
    decline(state, REQ, NO_ENGINE)
    assert state.result(JOB).state is JobState.BIDDING
    state.handle(TimerFired(TimerKey(JOB, RequesterTimer.BIDS)), T0 + 10)
    result = state.result(JOB)
    assert result.state is JobState.FAILED
    assert NO_ENGINE in result.reason


def test_a_bid_in_hand_is_never_thrown_away() -> None:
    state = requester(info(REQ), bid_timeout=10)
    spec = attrs.evolve(DOCKER, deal=attrs.evolve(DOCKER.deal, min_bids=2))
    state.handle(SubmitJob(job_id=JOB, spec=spec, peers=1), T0)
    state.handle(MessageReceived(NODES[0], m.BidPlaced(JOB)), T0 + 0.1)
    decline(state, REQ, NO_ENGINE)
    state.handle(TimerFired(TimerKey(JOB, RequesterTimer.BIDS)), T0 + 10)
    assert state.result(JOB).state is JobState.QUEUED  # waiting for min_bids


# --- on a network ------------------------------------------------------------------------------


def without_docker_engine(node: Any) -> Plugins:
    """The node's usual plugins, its Docker executor pointed at an engine that is not there."""
    plugins = default_plugins(node)
    plugins.executors["docker"] = DockerExecutor(
        node_id=node.node_id, base_url=f"unix://{node.data_dir}/no-docker.sock"
    )
    return plugins


@pytest.mark.anyio
@pytest.mark.parametrize("n", [1, 3])
async def test_a_docker_job_where_no_node_has_an_engine_fails_at_once(n: int) -> None:
    """One node (its own answer is all there is) or three: the job ends failed with the
    nodes' reason long before its bid timeout (60 s) or queue timeout (600 s) would."""
    slow = RequesterConfig(bid_timeout=60)
    async with Network.in_memory(n, seed=1, requester=slow, plugins=without_docker_engine) as net:
        result = await net.nodes[0].run_job(DOCKER, timeout=30)
    assert result.state is JobState.FAILED
    assert result.reason.startswith("no known node can run this docker job: "), result.reason
    assert NO_ENGINE in result.reason
    assert "queued" not in {e.kind for e in result.events}


def test_a_broadcast_every_node_declines_for_its_labels_is_not_failed() -> None:
    """With ``offers="broadcast"`` each node checks the selectors itself; declines for
    labels alone leave hope (a node with those labels may join): no failure at once."""
    state = requester(*(info(n, labels={"zone": "a"}) for n in NODES[:2]), offers="broadcast")
    spec = attrs.evolve(DOCKER, selectors=parse_selectors("zone=z"))
    assert broadcast(state.handle(SubmitJob(job_id=JOB, spec=spec, peers=2), T0))
    for node in NODES[:2]:
        decline(state, node, "labels do not match (zone=z)")
    assert not state.result(JOB).state.terminal
    # the same declines for a missing engine fail it at once, naming why
    state = requester(*(info(n, labels={"zone": "a"}) for n in NODES[:2]), offers="broadcast")
    state.handle(SubmitJob(job_id=JOB, spec=spec, peers=2), T0)
    for node in NODES[:2]:
        decline(state, node, NO_ENGINE)
    assert state.result(JOB).state is JobState.FAILED
