"""Direct messages handed over at once on the in-memory transport.

A node's handler answers an event frame without awaiting anything, so the hub runs it
in the sender's turn (:meth:`~bacalhau.transport.memory.MemoryTransport.request_now`)
and the outbox hands each peer its waiting messages from one task: no task per peer,
no timer per frame. What cannot go at once (faults to apply, a peer gone) takes the
peer's sender task, retries and order included."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import anyio
import anyio.abc
import pytest
from fakes import HandsOver, outbox_on

from bacalhau.errors import PeerUnreachable
from bacalhau.identity import Identity
from bacalhau.models import JobSpec
from bacalhau.network import Network
from bacalhau.node.clock import SystemClock
from bacalhau.node.gate import InboundGate
from bacalhau.node.outbox import BROADCAST
from bacalhau.protocol import messages as m
from bacalhau.transport.base import ImmediateRequests, Reply, TransportHandler
from bacalhau.transport.memory import Faults, ImmediateRequestHandler, MemoryHub
from bacalhau.wire import VerifiedCache

pytestmark = pytest.mark.anyio

SENDER = Identity.generate()


class Answers(TransportHandler):
    """Answers ``now:`` requests at once, the others only by awaiting."""

    def __init__(self, fail: bool = False) -> None:
        self.now: list[bytes] = []
        self.fail = fail

    def handle_request_now(self, peer_id: str, frame: bytes) -> Reply | None:
        if not frame.startswith(b"now:"):
            return None
        if self.fail:
            raise RuntimeError("a bug in the peer")
        self.now.append(frame)
        return [b"got ", frame]

    async def handle_broadcast(self, frame: bytes) -> bool:
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        await anyio.lowlevel.checkpoint()
        return b"later " + frame


class Awaits(TransportHandler):
    async def handle_broadcast(self, frame: bytes) -> bool:
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        return frame


async def test_request_now_runs_the_peers_handler_in_the_callers_turn() -> None:
    hub = MemoryHub(seed=1)
    a, b, c = (hub.transport(Identity.generate().node_id) for _ in range(3))
    answers = Answers()
    assert isinstance(answers, ImmediateRequestHandler) and isinstance(a, ImmediateRequests)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run, Awaits())
        await tg.start(b.run, answers)
        await tg.start(c.run, Awaits())
        assert a.request_now(b.node_id, b"now:1") == b"got now:1"  # no await: done
        assert answers.now == [b"now:1"]
        assert a.request_now(b.node_id, b"other") is None  # it must await: nothing sent
        assert await a.request(b.node_id, b"other") == b"later other"
        assert a.request_now(c.node_id, b"now:2") is None  # c's handler cannot answer now
        with pytest.raises(PeerUnreachable, match="not connected"):
            a.request_now(Identity.generate().node_id, b"now:3")
        hub.partition({a.node_id}, {b.node_id, c.node_id})
        with pytest.raises(PeerUnreachable, match="lost"):
            a.request_now(b.node_id, b"now:4")
        assert hub.dropped == 1 and answers.now == [b"now:1"]
        hub.heal()
        answers.fail = True
        with pytest.raises(PeerUnreachable, match="failed to answer"):
            a.request_now(b.node_id, b"now:5")
        hub.faults = Faults(delay=(0.0, 0.001))  # faults keep to the seeded, awaited path
        answers.fail = False
        assert a.request_now(b.node_id, b"now:6") is None
        assert answers.now == [b"now:1"]
        tg.cancel_scope.cancel()


def decoded(transport: HandsOver) -> list[tuple[str, m.Message]]:
    """Every message the transport got, checked by a gate of another process."""
    got: list[tuple[str, m.Message]] = []
    for dest, frame in transport.frames:
        assert dest != BROADCAST  # direct messages only here
        gate = InboundGate(
            node_id="x", clock=SystemClock().now, verify_cache=VerifiedCache(), stats=Counter()
        )
        verdict = gate.admit(frame)
        assert isinstance(verdict, list)
        got.extend((dest, a.message) for a in verdict)
    return got


def per_peer(pairs: Sequence[tuple[str, m.Message]], peer: str) -> list[m.Message]:
    return [msg for dest, msg in pairs if dest == peer]


async def test_the_outbox_hands_over_batches_in_order_without_a_task_per_peer() -> None:
    transport = HandsOver(SENDER.node_id)
    peers = [Identity.generate().node_id for _ in range(3)]
    posts = [(peers[i % 3], m.BidDeclined(job_id=f"j-{i}", reason="no")) for i in range(30)]
    stats: Counter[str] = Counter()
    outbox = outbox_on(transport, SENDER, stats)
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        for to, msg in posts:
            outbox.post(to, msg)
        await transport.wait_frames(3)
        outbox.close()
    got = decoded(transport)
    for peer in peers:
        assert per_peer(got, peer) == per_peer(posts, peer)
    assert len(transport.frames) == 3  # what waited for a peer left as one frame
    assert stats["frames_sent"] == 3 and transport.awaited == 0


@pytest.mark.parametrize("unreachable", [True, False], ids=["unreachable", "not-at-once"])
async def test_a_frame_that_cannot_go_at_once_goes_first_from_the_peers_task(
    unreachable: bool,
) -> None:
    transport = HandsOver(SENDER.node_id, refuse=1, unreachable=unreachable)
    peer = Identity.generate().node_id
    first = [(peer, m.BidDeclined(job_id="j-first", reason="no"))]
    stats: Counter[str] = Counter()
    outbox = outbox_on(transport, SENDER, stats)
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        outbox.post(*first[0])
        await transport.wait_frames(1)  # the refused frame, sent again from a task
        assert peer in outbox._boxes  # the peer's frames now go through its sender task
        later = [(peer, m.BidDeclined(job_id=f"j-{i}", reason="no")) for i in range(5)]
        for to, msg in later:
            outbox.post(to, msg)
        await transport.wait_frames(2)
        outbox.close()
    assert decoded(transport) == first + later  # in order, none twice
    assert transport.awaited == len(transport.frames) == 2
    assert stats["frames_sent"] == 2  # the refused frame was signed once, sent as it was
    assert stats["send_retried"] == (1 if unreachable else 0)


async def test_a_remote_job_on_a_memory_network_starts_no_task_per_peer() -> None:
    """The requester and the node running its job exchange every message through
    their handing-over tasks; neither opens a queue (and a task) for the other."""
    async with Network.in_memory(2, seed=3, per_node_options=[{"compute": None}, {}]) as net:
        result = await net.nodes[0].run_job(JobSpec.noop(publisher="noop"), timeout=30)
        assert result.ok
        assert [e.node_id for e in result.executions] == [net.nodes[1].node_id]
        for node in net.nodes:
            assert node.outbox._boxes.keys() <= {"*"}  # broadcasts only (announcements)
            assert node.stats["send_retried"] == node.stats["send_failed"] == 0


async def test_held_messages_leave_only_once_released() -> None:
    """The driver holds the outbox while it handles an event: the tasks that event woke
    (a client waiting for the job that just ended) run before the messages it caused
    leave."""
    transport = HandsOver(SENDER.node_id)
    outbox = outbox_on(transport, SENDER)
    peer = Identity.generate().node_id
    woken: list[str] = []
    ended = anyio.Event()

    async def client() -> None:
        await ended.wait()
        woken.append(f"client saw the end with {len(transport.frames)} frames sent")

    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        tg.start_soon(client)
        await anyio.lowlevel.checkpoint()  # the client waits
        outbox.hold()
        outbox.post(peer, m.JobCompleted("j-1"))  # the notice, posted first
        ended.set()  # then the job's end wakes the client
        outbox.release()
        await transport.wait_frames(1)
        outbox.close()
    assert woken == ["client saw the end with 0 frames sent"]
    assert [msg for _, msg in decoded(transport)] == [m.JobCompleted("j-1")]


async def test_handing_over_to_many_peers_lets_other_tasks_run() -> None:
    """An ops job offered to a thousand nodes: the handing-over task lets others run
    every so many peers, as each peer's own task used to."""
    from bacalhau.node.outbox import HAND_OVER_BURST

    transport = HandsOver(SENDER.node_id)
    outbox = outbox_on(transport, SENDER)
    peers = [Identity.generate().node_id for _ in range(3 * HAND_OVER_BURST)]
    seen: list[int] = []

    async def other() -> None:
        while len(transport.frames) < len(peers):
            seen.append(len(transport.frames))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        for peer in peers:
            outbox.post(peer, m.JobCompleted("j-1"))
        tg.start_soon(other)
        await transport.wait_frames(len(peers))
        outbox.close()
    assert any(0 < n < len(peers) for n in seen)  # it ran while the peers were handed over
