"""Batch frames: several messages to one destination travel in one frame, signed once.

The outbox takes every message waiting for a destination and seals them together; the
inbound gate checks the one signature, message id and age, then decodes each message
(a malformed one is refused alone). Frames signed in this process are taken as their
signer built them (the shared cache keeps them decoded)."""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.abc
import pytest
from fakes import Recorder, outbox_on

from bacalhau.errors import DecodeError
from bacalhau.identity import Identity
from bacalhau.node.clock import SystemClock
from bacalhau.node.gate import Admitted, InboundGate, Turned
from bacalhau.node.outbox import BROADCAST
from bacalhau.protocol import messages as m
from bacalhau.wire import (
    BATCH,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    VerifiedCache,
    encode_batch,
    encode_envelope,
    pack,
    unpack,
)

pytestmark = pytest.mark.anyio

NOW = 1000.0
SENDER = Identity.generate()
ME = Identity.generate().node_id


def gate(cache: VerifiedCache | None = None) -> InboundGate:
    return InboundGate(
        node_id=ME, clock=lambda: NOW, verify_cache=cache or VerifiedCache(), stats=Counter()
    )


def entries(*messages: m.Message) -> list[bytes]:
    return [pack(list(m.encode_message(msg))) for msg in messages]


def test_a_batch_passes_the_gate_in_order_once() -> None:
    msgs: list[m.Message] = [
        m.BidPlaced("j-1"),
        m.BidDeclined(job_id="j-2", reason="no room", busy=True),
        m.JobCompleted("j-3"),
    ]
    frame, _ = encode_batch(SENDER, entries(*msgs), now=NOW)
    g = gate()
    assert g.admit(frame) == [Admitted(SENDER.node_id, msg) for msg in msgs]
    assert g.admit(frame) is Turned.DUPLICATE  # the whole batch is one message id
    tampered = frame.replace(b"no room", b"no ROOM")
    assert tampered != frame
    assert g.admit(tampered) is Turned.REFUSED  # one signature covers every message


def test_a_malformed_message_in_a_batch_is_refused_alone() -> None:
    good = entries(m.BidPlaced("j-1"), m.JobCompleted("j-3"))
    bad = pack(["BidPlaced", {"job_id": "../../etc"}])
    frame, _ = encode_batch(SENDER, [good[0], bad, good[1]], now=NOW)
    g = gate()
    assert g.admit(frame) == [
        Admitted(SENDER.node_id, m.BidPlaced("j-1")),
        Admitted(SENDER.node_id, m.JobCompleted("j-3")),
    ]
    assert g.stats["dropped_invalid"] == 1


@pytest.mark.parametrize(
    "body",
    [
        "not a list",
        [],
        [b"\xc1"],  # not msgpack
        [pack(["BidPlaced"])],  # not [kind, body]
        [pack([BATCH, []]), pack(["BidPlaced", {"job_id": "j-1"}])],  # a batch in a batch
        [pack(["BidPlaced", {"job_id": "j-1"}])] * (MAX_BATCH + 1),
        [5, 6],
    ],
)
def test_malformed_batches_are_refused_whole(body: object) -> None:
    frame, _ = encode_envelope(SENDER, BATCH, body, now=NOW)
    g = gate()
    assert g.admit(frame) is Turned.REFUSED
    assert g.stats["dropped_invalid"] == 1


def test_encode_batch_refuses_what_the_gate_would() -> None:
    with pytest.raises(ValueError, match="2 to"):
        encode_batch(SENDER, entries(m.BidPlaced("j-1")), now=NOW)
    with pytest.raises(ValueError, match="2 to"):
        encode_batch(SENDER, entries(m.BidPlaced("j-1")) * (MAX_BATCH + 1), now=NOW)
    with pytest.raises(DecodeError):
        unpack(b"\xc1")


async def drain(transport: Recorder, messages: int, cache: VerifiedCache) -> list[Admitted]:
    """Every message the recorded frames carry, decoded by a gate of another process."""
    received: list[Admitted] = []
    with anyio.fail_after(10):
        while len(received) < messages:
            await transport.sent.wait()
            transport.sent = anyio.Event()
            received = []
            elsewhere = InboundGate(
                node_id=ME, clock=SystemClock().now, verify_cache=cache, stats=Counter()
            )
            for _, frame in transport.frames:
                verdict = elsewhere.admit(frame)
                assert isinstance(verdict, list)
                received.extend(verdict)
    return received


async def test_the_outbox_batches_what_waits_and_keeps_the_order() -> None:
    """Messages posted together leave in few frames, in order, each frame within the
    limits; a receiver in another process (own cache) verifies and decodes them all."""
    transport = Recorder(SENDER.node_id)
    stats: Counter[str] = Counter()
    outbox = outbox_on(transport, SENDER, stats)
    peer = Identity.generate().node_id
    big = "x" * 4000
    posted = [
        m.BidDeclined(job_id=f"j-{i}", reason=big if i % 3 == 0 else "no") for i in range(300)
    ]
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        for msg in posted:
            outbox.post(peer, msg)
        received = await drain(transport, len(posted), VerifiedCache())
        outbox.close()
    assert [a.message for a in received] == posted
    assert {a.sender for a in received} == {SENDER.node_id}
    frames = [f for _, f in transport.frames]
    assert stats["frames_sent"] == len(frames)
    assert 300 / MAX_BATCH <= len(frames) < 300 / 10  # batched, within MAX_BATCH each
    assert all(len(f) < MAX_BATCH_BYTES + 64 * 1024 for f in frames)


async def test_a_lone_message_leaves_as_a_plain_envelope() -> None:
    transport = Recorder(SENDER.node_id)
    outbox = outbox_on(transport, SENDER)
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        outbox.post(None, m.JobCompleted("j-1"))
        with anyio.fail_after(10):
            await transport.sent.wait()
        outbox.close()
    [(dest, frame)] = transport.frames
    assert dest == BROADCAST
    signed, _ = unpack(frame)
    assert unpack(signed)[1] == "JobCompleted"


async def test_nodes_of_one_process_neither_verify_nor_decode_each_others_frames() -> None:
    """The shared cache hands the gate the signer's own message objects; the replay and
    age checks still apply to them."""
    cache = VerifiedCache()
    transport = Recorder(SENDER.node_id)
    outbox = outbox_on(transport, SENDER, verify_cache=cache)
    posted: list[m.Message] = [m.BidPlaced("j-1"), m.JobCompleted("j-2")]
    async with anyio.create_task_group() as tg:
        outbox.bind(tg)
        for msg in posted:
            outbox.post(ME, msg)
        with anyio.fail_after(10):
            await transport.sent.wait()
        outbox.close()
    [(_, frame)] = transport.frames
    here = InboundGate(node_id=ME, clock=SystemClock().now, verify_cache=cache, stats=Counter())
    admitted = here.admit(frame)
    assert isinstance(admitted, list)
    assert all(a.message is p for a, p in zip(admitted, posted, strict=True))
    assert cache.verifications == 0
    assert here.admit(frame) is Turned.DUPLICATE
    late = InboundGate(
        node_id=ME,
        clock=lambda: SystemClock().now() + 3600,
        verify_cache=cache,
        stats=Counter(),
    )
    assert late.admit(frame) is Turned.REFUSED  # too old, decoded or not
