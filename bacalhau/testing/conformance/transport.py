"""The transport conformance suite: one set of checks every Transport must pass.

Use it from a test module of any transport::

    from bacalhau.testing.conformance.transport import CHECKS, TransportFactory

    @pytest.mark.parametrize("check", sorted(CHECKS))
    async def test_conformance(check):
        await CHECKS[check](my_factory)

A factory is an async context manager ``factory(n)`` yielding ``n`` transports
that are not yet running and that will find each other once run (by a shared
hub, static peers, discovery or a server). The suite runs them with recording
handlers and stops them when done.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager

import anyio
import attrs

from ...errors import TransportError
from ...transport.base import Reply, ReplyPiece, Transport, TransportHandler

__all__ = [
    "CHECKS",
    "RecordingHandler",
    "TransportFactory",
    "reply_in_pieces",
    "running",
    "status_count",
]

TransportFactory = Callable[[int], AbstractAsyncContextManager[list[Transport]]]


@attrs.define(eq=False)
class RecordingHandler(TransportHandler):
    """Records broadcasts; answers requests with ``b"re:" + frame`` (raises on ``b"boom"``;
    answers ``b"pieces"`` with :func:`reply_in_pieces`, ``b"bad pieces"`` with a
    piece that is not bytes)."""

    node_id: str
    heard: list[bytes] = attrs.Factory(list)
    requests: list[tuple[str, bytes]] = attrs.Factory(list)
    changed: anyio.Event = attrs.Factory(anyio.Event)

    async def handle_broadcast(self, frame: bytes) -> bool:
        self.heard.append(frame)
        self.changed.set()
        self.changed = anyio.Event()
        return not frame.startswith(b"invalid")

    async def handle_request(self, peer_id: str, frame: bytes) -> Reply:
        self.requests.append((peer_id, frame))
        if frame == b"boom":
            raise RuntimeError("handler failed on purpose")
        if frame == b"pieces":
            return reply_in_pieces()
        if frame == b"bad pieces":
            return [b"re:", "not bytes"]  # type: ignore[list-item]
        return b"re:" + frame

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until ``predicate()`` holds; ``timeout`` only bounds a hang (generous: a loaded
        machine can stall a process for seconds)."""
        with anyio.fail_after(timeout):
            while not predicate():
                with anyio.move_on_after(0.05):
                    await self.changed.wait()  # woken by each frame heard

    async def wait_heard(self, frames: Collection[bytes], timeout: float = 30.0) -> None:
        """Wait until every frame in ``frames`` has been heard (any order, duplicates allowed)."""
        want = set(frames)
        await self.wait_for(lambda: want <= set(self.heard), timeout)


def reply_in_pieces() -> list[ReplyPiece]:
    """The reply :class:`RecordingHandler` gives to ``b"pieces"``: many small pieces
    (more than one vectored write takes), large ones, an empty one, a bytearray and
    memoryviews (one of 4-byte items); the requester must receive them joined."""
    big = bytes(range(256)) * 4096  # 1 MiB
    words = memoryview(bytearray(b"abcd" * 1000)).cast("I")
    small = [b"%d," % i for i in range(2000)]
    return [b"re:", *small, big, b"", bytearray(b"middle"), memoryview(big)[7:70_007], words]


def status_count(transport: Transport, key: str) -> int:
    """A counter from ``transport.status()`` (``reconnects``, ``refused``, ...)."""
    value = transport.status()[key]
    if not isinstance(value, int):
        raise AssertionError(f"status()[{key!r}] is {value!r}, not a count")
    return value


@contextlib.asynccontextmanager
async def running(
    factory: TransportFactory, n: int, *, connect_timeout: float = 20.0
) -> AsyncIterator[tuple[list[Transport], list[RecordingHandler]]]:
    """Run ``n`` transports from ``factory`` until every one sees the other ``n - 1``."""
    async with factory(n) as transports, anyio.create_task_group() as tg:
        handlers = [RecordingHandler(t.node_id) for t in transports]
        for t, h in zip(transports, handlers, strict=True):
            await tg.start(t.run, h)
        with anyio.fail_after(connect_timeout):
            while any(len(t.peers()) < n - 1 for t in transports):  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.02)
        yield transports, handlers
        tg.cancel_scope.cancel()


async def check_broadcast_reaches_all_others_once(factory: TransportFactory) -> None:
    async with running(factory, 4) as (ts, hs):
        await ts[0].broadcast(b"hello")
        for h in hs[1:]:
            await h.wait_heard([b"hello"])
        await anyio.sleep(0.2)  # room for a wrong duplicate to show up
        assert [h.heard.count(b"hello") for h in hs[1:]] == [1, 1, 1]
        assert b"hello" not in hs[0].heard, "a broadcast must not come back to its sender"


async def check_broadcasts_from_everyone(factory: TransportFactory) -> None:
    async with running(factory, 3) as (ts, hs):
        for i, t in enumerate(ts):
            for j in range(20):
                await t.broadcast(f"{i}:{j}".encode())
        for i, h in enumerate(hs):
            want = {f"{k}:{j}".encode() for k in range(3) if k != i for j in range(20)}
            await h.wait_heard(want)
            assert len(h.heard) == len(set(h.heard))


async def check_request_reply(factory: TransportFactory) -> None:
    async with running(factory, 2) as (ts, hs):
        reply = await ts[0].request(ts[1].node_id, b"ping")
        assert reply == b"re:ping"
        assert hs[1].requests == [(ts[0].node_id, b"ping")], "the receiver learns who asked"


async def check_concurrent_requests(factory: TransportFactory) -> None:
    async with running(factory, 3) as (ts, _):
        replies: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            replies[i] = await ts[i % 2].request(ts[2].node_id, str(i).encode())

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(ask, i)
        assert replies == {i: b"re:" + str(i).encode() for i in range(50)}


async def check_large_frames(factory: TransportFactory) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    async with running(factory, 2) as (ts, hs):
        assert await ts[0].request(ts[1].node_id, big) == b"re:" + big
        await ts[1].broadcast(big)
        await hs[0].wait_for(lambda: big in hs[0].heard)


async def check_reply_in_pieces(factory: TransportFactory) -> None:
    want = b"".join(reply_in_pieces())
    async with running(factory, 2) as (ts, _):
        assert await ts[0].request(ts[1].node_id, b"pieces") == want
        # pieces interleaved with other replies on the same connection stay whole
        replies: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            replies[i] = await ts[0].request(ts[1].node_id, b"pieces" if i % 2 else b"%d" % i)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(ask, i)
        assert replies == {i: want if i % 2 else b"re:%d" % i for i in range(6)}


async def check_reply_in_bad_pieces(factory: TransportFactory) -> None:
    async with running(factory, 2) as (ts, _):
        try:
            await ts[0].request(ts[1].node_id, b"bad pieces", timeout=5)
        except TransportError:
            pass
        else:
            raise AssertionError("a reply with a piece that is not bytes must raise TransportError")
        assert await ts[0].request(ts[1].node_id, b"after") == b"re:after"


async def check_unknown_peer(factory: TransportFactory) -> None:
    async with running(factory, 2) as (ts, _):
        with contextlib.suppress(TransportError):
            unknown = "12D3KooWNoSuchPeerNoSuchPeerNoSuchPeerNoSuchPeer11"
            await ts[0].request(unknown, b"x", timeout=2)
            raise AssertionError("a request to an unknown peer must raise TransportError")


async def check_failing_handler(factory: TransportFactory) -> None:
    async with running(factory, 2) as (ts, _):
        try:
            await ts[0].request(ts[1].node_id, b"boom", timeout=5)
        except TransportError:
            pass
        else:
            raise AssertionError("a request whose handler failed must raise TransportError")
        assert await ts[0].request(ts[1].node_id, b"after") == b"re:after"


async def check_peers(factory: TransportFactory) -> None:
    async with running(factory, 3) as (ts, _):
        ids = {t.node_id for t in ts}
        for t in ts:
            assert t.peers() == ids - {t.node_id}


CHECKS: dict[str, Callable[[TransportFactory], Awaitable[None]]] = {
    name.removeprefix("check_"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("check_") and callable(fn)
}
