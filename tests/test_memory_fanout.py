"""The in-memory hub hands broadcasts to immediate handlers (nodes) from one task."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from bacalhau.identity import Identity
from bacalhau.transport.base import TransportHandler
from bacalhau.transport.memory import BURST, Faults, ImmediateHandler, MemoryHub, MemoryTransport

pytestmark = pytest.mark.anyio


class Now(TransportHandler):
    """Takes broadcasts at once; ``handle_broadcast`` is never the way in for it."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.heard: list[bytes] = []
        self.fail_on = fail_on

    def handle_broadcast_now(self, frame: bytes) -> bool:
        if frame == self.fail_on:
            raise RuntimeError(f"bug on {frame!r}")
        self.heard.append(frame)
        return True

    async def handle_broadcast(self, frame: bytes) -> bool:
        raise AssertionError("an immediate handler gets its frames from the hub's task")

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        return frame


class Later(TransportHandler):
    """An ordinary handler: frames come from its transport's own task."""

    def __init__(self) -> None:
        self.heard: list[bytes] = []

    async def handle_broadcast(self, frame: bytes) -> bool:
        await anyio.lowlevel.checkpoint()
        self.heard.append(frame)
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        return frame


def transports(hub: MemoryHub, n: int) -> list[MemoryTransport]:
    return [hub.transport(Identity.generate().node_id) for _ in range(n)]


async def settle(done: object) -> None:
    """Let the hub's task run until ``done()`` holds (bounded: at least 10 s, a bound on
    a hang only)."""
    assert callable(done)
    for _ in range(10_000):
        if done():
            return
        await anyio.sleep(0.001)
    raise AssertionError("the frames never all arrived")


async def start(
    tg: anyio.abc.TaskGroup, transport: MemoryTransport, handler: TransportHandler
) -> anyio.CancelScope:
    scope = anyio.CancelScope()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with scope:
            await transport.run(handler, task_status=task_status)

    await tg.start(run)
    return scope


def test_a_node_is_an_immediate_handler() -> None:
    from bacalhau.node.node import Node

    assert issubclass(Node, ImmediateHandler)
    assert isinstance(Now(), ImmediateHandler) and not isinstance(Later(), ImmediateHandler)


async def test_every_node_hears_every_broadcast_once_in_order_whatever_its_handler() -> None:
    hub = MemoryHub(seed=1)
    ts = transports(hub, 4)
    handlers: list[Now | Later] = [Now(), Now(), Now(), Later()]
    frames = [f"f{i}".encode() for i in range(3 * BURST + 5)]
    async with anyio.create_task_group() as tg:
        for t, h in zip(ts, handlers, strict=True):
            await start(tg, t, h)
        for frame in frames:
            await ts[0].broadcast(frame)
        await ts[1].broadcast(b"from b")
        # every frame each handler must get (the last node's come from its own task,
        # so "from b" may reach it after it reached the others)
        await settle(
            lambda: (
                len(handlers[0].heard) >= 1
                and len(handlers[1].heard) >= len(frames)
                and all(len(h.heard) >= len(frames) + 1 for h in handlers[2:])
            )
        )
        tg.cancel_scope.cancel()
    assert handlers[0].heard == [b"from b"]  # never back to the sender
    for h in handlers[1:]:
        assert h.heard[: len(frames)] == frames
    assert handlers[1].heard == frames  # its own broadcast does not come back
    assert handlers[2].heard == [*frames, b"from b"]
    assert handlers[3].heard == [*frames, b"from b"]


async def test_broadcasts_still_arrive_when_the_node_whose_task_delivered_them_stops() -> None:
    """The hub's task runs in some node's task group: when that node stops midway, the
    rest of the queue is delivered from another's."""
    hub = MemoryHub(seed=1)
    ts = transports(hub, 3)
    handlers = [Now(), Now(), Now()]
    frames = [f"f{i}".encode() for i in range(10 * BURST)]
    async with anyio.create_task_group() as tg:
        scopes = [await start(tg, t, h) for t, h in zip(ts, handlers, strict=True)]
        for frame in frames:
            await ts[0].broadcast(frame)
        drainer = hub._drainer
        assert drainer is not None
        scopes[ts.index(drainer)].cancel()  # before it had the time to deliver them all
        survivors = [h for t, h in zip(ts, handlers, strict=True) if t is not drainer]
        others = [h for h in survivors if h is not handlers[0]]
        await settle(lambda: all(len(h.heard) == len(frames) for h in others))
        tg.cancel_scope.cancel()
    for h in others:
        assert h.heard == frames


async def test_a_handlers_error_stops_its_own_node_not_the_hubs_task() -> None:
    hub = MemoryHub(seed=1)
    ts = transports(hub, 3)
    broken, fine = Now(fail_on=b"poison"), Now()
    failed = anyio.Event()
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        await start(tg, ts[0], Now())
        await start(tg, ts[2], fine)

        async def run_broken(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                await ts[1].run(broken, task_status=task_status)
            except BaseException as exc:
                errors.append(exc)
                failed.set()

        await tg.start(run_broken)
        await ts[0].broadcast(b"poison")
        await ts[0].broadcast(b"after")
        with anyio.fail_after(10):
            await failed.wait()
        await settle(lambda: fine.heard == [b"poison", b"after"])
        tg.cancel_scope.cancel()
    assert "bug on b'poison'" in repr(errors[0])
    assert ts[1].node_id not in hub.members()  # that node is off the hub


async def test_delayed_frames_take_the_nodes_own_path() -> None:
    hub = MemoryHub(seed=3, faults=Faults(delay=(0.001, 0.002)))
    ts = transports(hub, 2)
    now = Now()
    async with anyio.create_task_group() as tg:
        await start(tg, ts[0], Now())
        await start(tg, ts[1], now)
        await ts[0].broadcast(b"late")
        assert not hub._queue  # not queued for the hub's task
        await settle(lambda: now.heard == [b"late"])
        tg.cancel_scope.cancel()
