"""Forged, replayed and malformed events are dropped and counted; the node keeps serving."""

from __future__ import annotations

import time

import anyio
import msgpack
import pytest

from bacalhau import JobSpec, JobState, Network
from bacalhau.errors import DecodeError, WireError
from bacalhau.identity import Identity
from bacalhau.protocol.messages import BidAccepted, JobCreated, ResultsAccepted, encode_message
from bacalhau.transport.memory import Faults
from bacalhau.wire import MAX_EVENT_FRAME, VerifiedCache, decode_envelope, encode_envelope

pytestmark = pytest.mark.anyio


def frame_of(ident: Identity, message: object, now: float | None = None) -> bytes:
    kind, body = encode_message(message)  # type: ignore[arg-type]
    return encode_envelope(ident, kind, body, now=time.time() if now is None else now)[0]


def test_tampered_frame_fails_signature() -> None:
    ident = Identity.generate()
    frame = frame_of(ident, BidAccepted("j-1", ident.node_id))
    signed, sig = msgpack.unpackb(frame)
    tampered = msgpack.packb([signed.replace(b"j-1", b"j-2"), sig])
    with pytest.raises(WireError, match="bad signature"):
        decode_envelope(tampered)
    assert decode_envelope(frame).sender == ident.node_id


def test_signature_checked_once_per_process() -> None:
    cache = VerifiedCache()
    frame = frame_of(Identity.generate(), BidAccepted("j-1", Identity.generate().node_id))
    for _ in range(10):
        decode_envelope(frame, cache=cache)
    assert (cache.verifications, cache.hits) == (1, 9)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc1",
        b"\x92\xc4\x01a",
        msgpack.packb([b"x" * 10, b"y" * 64]),
        msgpack.packb({"a": 1}),
        b"\x00" * 100,
        msgpack.packb([[1, 2], b"z"]),
    ],
)
def test_garbage_frames_raise_named_errors(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode_envelope(garbage)


def test_oversized_frame_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        decode_envelope(b"\x00" * (MAX_EVENT_FRAME + 1))


async def test_forged_replayed_and_garbage_events_are_dropped_and_counted() -> None:
    captured: list[tuple[str, bytes]] = []

    def tap(src: str, dst: str, kind: str, frame: bytes) -> bool:
        if kind == "broadcast":
            captured.append((dst, frame))
        return True

    async with Network.in_memory(3, seed=11, faults=Faults(filter=tap)) as net:
        requester, worker, _ = net.nodes
        result = await requester.run_job(JobSpec.noop(stdout="real", delay=0.3), timeout=10)
        assert result.state is JobState.COMPLETED

        # 1. A job's decisions signed by someone who is not its requester.
        mallory = Identity.generate()
        job_id = "j-forged"
        await worker.handle_broadcast(
            frame_of(
                requester.identity,
                JobCreated(
                    job_id=job_id,
                    spec=JobSpec.noop(delay=60, timeout=120),
                    seal_key=requester.identity.seal_public_key,
                    created_at=time.time(),
                ),
            )
        )
        await anyio.sleep(0.05)
        before = worker.stats["dropped_forged"]
        for msg in (BidAccepted(job_id, worker.node_id), ResultsAccepted(job_id, worker.node_id)):
            await worker.handle_request(
                mallory.node_id, msgpack.packb(["event", frame_of(mallory, msg)])
            )
        assert worker.stats["dropped_forged"] == before + 2
        assert not worker.runner.active, "a forged acceptance must not start work"

        # 2. Bad signature.
        frame = frame_of(requester.identity, BidAccepted(job_id, worker.node_id))
        signed, _ = msgpack.unpackb(frame)
        bad = msgpack.packb([signed, bytes(64)])
        assert await worker.handle_broadcast(bad) is False
        assert worker.stats["dropped_invalid"] >= 1

        # 3. Replays: an envelope heard before, and an old one.
        replayed = next(frame for dst, frame in captured if dst == worker.node_id)
        before = worker.stats["dropped_replayed"]
        await worker.handle_broadcast(replayed)
        stale = frame_of(
            requester.identity, BidAccepted("j-old", worker.node_id), now=time.time() - 3600
        )
        assert await worker.handle_broadcast(stale) is False
        assert worker.stats["dropped_replayed"] == before + 2

        # 4. Well-signed nonsense.
        kind_ok_body_bad = encode_envelope(mallory, "BidAccepted", {"job_id": 5}, now=time.time())[
            0
        ]
        unknown_kind = encode_envelope(mallory, "Teleport", {}, now=time.time())[0]
        for f in (kind_ok_body_bad, unknown_kind, b"junk"):
            assert await worker.handle_broadcast(f) is False

        # The network keeps serving.
        again = await requester.run_job(JobSpec.noop(stdout="still fine"), timeout=10)
        assert again.state is JobState.COMPLETED
