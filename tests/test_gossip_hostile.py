"""Hostile and broken peers: each is cut off with a logged reason; the node keeps serving.

Every test runs two honest nodes (a and b, connected) and attacks a; at the
end b's broadcast still reaches a and a still answers b's requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
import pytest

from bacalhau.identity import Identity
from bacalhau.testing.conformance import RecordingHandler
from bacalhau.transport.gossip import GossipOptions, GossipTransport
from bacalhau.transport.gossip_conn import (
    PING,
    PUBLISH,
    WIRE_MAX,
    FrameReader,
    encode,
)
from bacalhau.transport.gossip_handshake import PROTOCOL, handshake, network_key

pytestmark = pytest.mark.anyio

OPTS = GossipOptions(
    heartbeat=0.1,
    handshake_timeout=2.0,
    frame_timeout=1.0,
    idle_timeout=3.0,
    write_timeout=1.0,
    backoff_min=0.05,
    backoff_max=0.2,
    queue_bytes=256 * 1024,
    queue_frames=64,
)


@contextlib.asynccontextmanager
async def pair(
    secret: str | None = None, options: GossipOptions = OPTS
) -> AsyncIterator[tuple[GossipTransport, GossipTransport, list[RecordingHandler]]]:
    a = GossipTransport(Identity.generate(), secret=secret, options=options)
    handlers = [RecordingHandler(a.node_id)]
    async with anyio.create_task_group() as tg:
        await tg.start(a.run, handlers[0])
        b = GossipTransport(Identity.generate(), secret=secret, options=options, peers=[a.address])
        handlers.append(RecordingHandler(b.node_id))
        await tg.start(b.run, handlers[1])
        await wait_until(lambda: a.peers() == {b.node_id})
        yield a, b, handlers
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], *, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.02)


async def read_until_closed(stream: anyio.abc.SocketStream) -> None:
    while True:
        await stream.receive()


async def still_serving(a: GossipTransport, b: GossipTransport, hs: list[RecordingHandler]) -> None:
    frame = os.urandom(16)
    await b.broadcast(frame)
    await hs[0].wait_for(lambda: frame in hs[0].heard)
    assert await b.request(a.node_id, b"still there?") == b"re:still there?"
    assert a.peers() == {b.node_id}


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    await wait_until(lambda: any(text in r.getMessage() for r in caplog.records))


async def raw_peer(
    a: GossipTransport, secret: str | None = None
) -> tuple[anyio.abc.SocketStream, FrameReader, Identity]:
    """Connect to a and complete the handshake as a fresh identity."""
    stream = await anyio.connect_tcp(*a.address)
    reader = FrameReader(stream)
    ident = Identity.generate()
    await handshake(
        stream,
        reader,
        ident,
        secret_key=network_key(secret) if secret else None,
        listen_port=None,
        time_limit=5,
    )
    return stream, reader, ident


async def test_garbage_before_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs), await anyio.connect_tcp(*a.address) as s:
        await s.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await logged(caplog, "exceeds the 4096-byte limit")
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await read_until_closed(s)
        await still_serving(a, b, hs)


async def test_malformed_handshake_frame(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs), await anyio.connect_tcp(*a.address) as s:
        await s.send((20).to_bytes(4, "big") + b"\xc1" * 20)  # 0xc1 is never valid msgpack
        await logged(caplog, "malformed handshake frame")
        await still_serving(a, b, hs)


async def test_truncated_frame(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs):
        async with await anyio.connect_tcp(*a.address) as s:
            await s.send((100).to_bytes(4, "big") + b"x" * 50)
        await logged(caplog, "connection closed mid-frame (54 of 104 bytes received)")
        stream, _, _ = await raw_peer(a)
        async with stream:
            await stream.send(encode([PUBLISH, b"y" * 1000])[:500])
        await logged(caplog, "closed mid-frame")
        await still_serving(a, b, hs)


async def test_oversized_frame_after_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs):
        stream, _, ident = await raw_peer(a)
        async with stream:
            await wait_until(lambda: ident.node_id in a.peers())
            await stream.send((WIRE_MAX + 1).to_bytes(4, "big"))
            await logged(caplog, f"frame of {WIRE_MAX + 1} bytes exceeds")
            await wait_until(lambda: ident.node_id not in a.peers())
        await still_serving(a, b, hs)


async def test_garbage_after_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs):
        for bad in (b"\x93\x01\x02", encode([99])[4:], encode([PUBLISH, "not bytes"])[4:]):
            stream, _, ident = await raw_peer(a)
            async with stream:
                await wait_until(lambda ident=ident: ident.node_id in a.peers())  # type: ignore[misc]
                await stream.send(len(bad).to_bytes(4, "big") + bad)
                await wait_until(lambda ident=ident: ident.node_id not in a.peers())  # type: ignore[misc]
        texts = " | ".join(r.getMessage() for r in caplog.records)
        assert "known message type" in texts
        assert "malformed PUBLISH" in texts
        await still_serving(a, b, hs)


async def test_slow_loris_in_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs), await anyio.connect_tcp(*a.address) as s:
        hello = encode([PROTOCOL, os.urandom(32), os.urandom(32), 0, None, None])
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            for i in range(len(hello)):  # one byte per 0.1 s: 8 s in all, far past the limit
                await s.send(hello[i : i + 1])
                await anyio.sleep(0.1)
                if any("cut off" in r.getMessage() for r in caplog.records):
                    break
        await logged(caplog, "handshake did not finish within 2s")
        await still_serving(a, b, hs)


async def test_slow_loris_after_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs):
        stream, _, ident = await raw_peer(a)
        async with stream:
            frame = encode([PUBLISH, b"z" * 200])
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                for i in range(0, len(frame), 4):  # keeps trickling: never idle, never done
                    await stream.send(frame[i : i + 4])
                    await anyio.sleep(0.1)
                    if ident.node_id not in a.peers():
                        break
            await logged(caplog, "frame not complete within 1s")
        await still_serving(a, b, hs)


async def test_a_silent_peer_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs):
        stream, _, ident = await raw_peer(a)
        async with stream:
            await wait_until(lambda: ident.node_id in a.peers())
            await logged(caplog, "peer sent nothing for")
            assert ident.node_id not in a.peers()
        await still_serving(a, b, hs)


async def test_a_forged_node_key_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair() as (a, b, hs), await anyio.connect_tcp(*a.address) as s:
        victim = Identity.generate()
        await s.send(encode([PROTOCOL, victim.public_key, os.urandom(32), 0, None, None]))
        reader = FrameReader(s)
        await reader.read(max_size=4096)  # a's HELLO
        await s.send(encode([os.urandom(64), b""]))  # cannot sign as the victim
        await logged(caplog, f"peer {victim.node_id} failed to prove its node key")
        assert victim.node_id not in a.peers()
        await still_serving(a, b, hs)


@pytest.mark.parametrize("intruder_secret", [None, "the wrong passphrase"])
async def test_a_node_without_the_secret_is_refused(
    caplog: pytest.LogCaptureFixture, intruder_secret: str | None
) -> None:
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    async with pair(secret="the right passphrase") as (a, b, hs), anyio.create_task_group() as tg:
        intruder = GossipTransport(
            Identity.generate(), secret=intruder_secret, options=OPTS, peers=[a.address]
        )
        heard = RecordingHandler(intruder.node_id)
        await tg.start(intruder.run, heard)
        reason = "has no network secret" if intruder_secret is None else "another network secret"
        await logged(caplog, reason)
        if intruder_secret is None:
            await logged(caplog, "this node has no --secret")  # the intruder's own log says why
        await a.broadcast(b"members only")
        await hs[1].wait_for(lambda: b"members only" in hs[1].heard)
        assert intruder.peers() == frozenset()
        assert intruder.node_id not in a.peers()
        assert heard.heard == []
        await still_serving(a, b, hs)
        tg.cancel_scope.cancel()


async def test_a_peer_that_stops_reading_costs_bounded_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer that completes the handshake, pings, but never reads: a's queue for it
    stays within its bound, broadcasts to b never wait for it, and it is cut off."""
    caplog.set_level(logging.WARNING, "bacalhau.transport.gossip")
    opts = GossipOptions(
        heartbeat=0.1,
        idle_timeout=5.0,
        write_timeout=3.0,
        queue_bytes=256 * 1024,
        queue_frames=64,
        backoff_min=0.05,
    )
    async with pair(options=opts) as (a, b, hs), anyio.create_task_group() as tg:
        stream, _, ident = await raw_peer(a)

        async def keep_pinging() -> None:
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                while True:
                    await stream.send(encode([PING]))
                    await anyio.sleep(0.1)

        tg.start_soon(keep_pinging)
        await wait_until(lambda: ident.node_id in a.peers())
        slow = a._conns[ident.node_id]
        frames = [os.urandom(32 * 1024) for _ in range(600)]  # 19 MiB, far past socket buffers
        most = 0
        for frame in frames:
            await a.broadcast(frame)
            most = max(most, slow.queued_bytes)
            await anyio.sleep(0.002)
        assert slow.dropped > 0, "the slow peer's queue must have overflowed"
        assert most <= opts.queue_bytes + 64 * 1024
        want = set(frames)
        await hs[1].wait_for(lambda: want <= set(hs[1].heard), timeout=20)
        await logged(caplog, "peer stopped reading")
        await wait_until(lambda: ident.node_id not in a.peers())
        tg.cancel_scope.cancel()
        await stream.aclose()
        await still_serving(a, b, hs)
