"""A job's first round asks a spare node only while offers are being declined.

Driven on the requester's sans-IO state machine: nodes announced and answers fed by
hand, each job's offers read from the commands it returns.
"""

from __future__ import annotations

from test_requester_cannot_run import NODES, T0, info, offered, requester

from bacalhau.models import JobSpec
from bacalhau.protocol import messages as m
from bacalhau.protocol.events import CancelJob, MessageReceived, SubmitJob
from bacalhau.protocol.nodes import SPARE_WHEN, NodeTable
from bacalhau.protocol.requester import RequesterState

NOOP = JobSpec.noop(publisher="noop")


def run_one(state: RequesterState, i: int, *, answer: str = "bid") -> list[str]:
    """Submit job ``i``; each asked node answers (``bid`` or ``decline``). The nodes it
    asked."""
    job = f"j-00000000-0000-4000-8000-{i:012d}"
    now = T0 + i * 0.01  # well within the nodes' announcements' time to live
    asked = offered(state.handle(SubmitJob(job_id=job, spec=NOOP, peers=4), now))
    for n, node in enumerate(asked):
        if answer == "bid" or n > 0:
            reply: m.Message = m.BidPlaced(job)
        else:
            reply = m.BidDeclined(job_id=job, reason="my bid hook says no", busy=False)
        state.handle(MessageReceived(node, reply), now + 0.001)
    state.handle(CancelJob(job_id=job, reason="done with it"), now + 0.002)
    return asked


def test_a_new_requester_asks_a_spare_then_stops_once_nodes_keep_bidding() -> None:
    state = requester(*(info(n, free_slots=1000, max_executions=1000) for n in NODES))
    first = run_one(state, 0)
    assert len(first) == 2  # concurrency 1 plus a spare: nothing is known of declines yet
    rounds = [len(run_one(state, i)) for i in range(1, 40)]
    assert rounds[-1] == 1  # some 40 bids in a row: one node per job, no spare
    assert state.nodes.declines < SPARE_WHEN
    assert sorted(rounds, reverse=True) == rounds  # never back to two without a decline


def test_a_decline_brings_the_spare_back() -> None:
    state = requester(*(info(n, free_slots=1000, max_executions=1000) for n in NODES))
    for i in range(60):
        run_one(state, i)
    assert len(run_one(state, 60)) == 1
    asked = run_one(state, 61, answer="decline")  # its one node declines: one more asked
    assert len(asked) == 1
    assert len(run_one(state, 62)) == 2  # declines are being seen: a spare again
    assert state.nodes.declines >= SPARE_WHEN


def test_silence_and_ended_jobs_move_the_average_as_they_should() -> None:
    table = NodeTable()
    assert table.spare_helps()  # a new requester expects declines
    for _ in range(50):
        table.answered(NODES[0], bid=True, busy=False, now=T0)
    assert not table.spare_helps()
    for _ in range(50):  # offers of jobs that ended first say nothing of the nodes
        table.answered(NODES[0], bid=False, busy=False, now=T0, counted=False)
    assert not table.spare_helps()
    table.answered(NODES[0], bid=False, busy=True, now=T0)  # silent (or busy) counts
    assert table.spare_helps()
