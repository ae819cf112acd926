"""The in-process transport: every node of a :class:`MemoryHub` hears every broadcast.

Built for tests and for ``Network.in_memory``: frames are handed over as the
same ``bytes`` objects (nothing is copied), and the hub can misbehave on
purpose - drop, delay, duplicate and reorder frames, or partition the nodes -
with a seeded random generator, so a failing run can be replayed.

Broadcasts reach the nodes one at a time, in arrival order, from an unbounded
queue (a bounded one could deadlock two nodes broadcasting to each other from
their handlers). A handler that can take a frame without waiting
(:class:`ImmediateHandler`, as a :class:`~bacalhau.node.node.Node` does) gets it
from one task the hub runs for all of them: a broadcast is queued once with the
nodes that hear it, not once per node, and no node's task wakes for it. Any other
handler gets its frames from its transport's own task, as do frames delayed on
purpose (:class:`Faults`). Direct requests run in the caller's task; a handler that
can answer one without waiting (:class:`ImmediateRequestHandler`) answers it within
:meth:`MemoryTransport.request_now`, synchronously, while the hub has no faults to
apply (a sender then hands a node its frames with no task switch and no timer).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, Protocol, runtime_checkable

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ..errors import PeerUnreachable, TransportError
from .base import MAX_FRAME, Reply, Transport, TransportHandler, join_reply

__all__ = [
    "Faults",
    "ImmediateHandler",
    "ImmediateRequestHandler",
    "MemoryHub",
    "MemoryTransport",
]

log = logging.getLogger("bacalhau.transport.memory")

Kind = Literal["broadcast", "request"]
FrameFilter = Callable[[str, str, Kind, bytes], bool]
BURST = 64
"""Broadcasts handled in a row before other tasks get a turn."""
"""(source, destination, kind, frame) -> deliver? A custom drop rule."""


@runtime_checkable
class ImmediateHandler(Protocol):
    """A :class:`~bacalhau.transport.base.TransportHandler` that can also take a
    broadcast frame without awaiting anything (what ``handle_broadcast`` does, at once)."""

    def handle_broadcast_now(self, frame: bytes) -> bool:
        """As ``handle_broadcast``, synchronously."""
        ...


@runtime_checkable
class ImmediateRequestHandler(Protocol):
    """A :class:`~bacalhau.transport.base.TransportHandler` that can answer some
    requests without awaiting anything (a :class:`~bacalhau.node.node.Node`: event
    frames)."""

    def handle_request_now(self, peer_id: str, frame: bytes) -> Reply | None:
        """As ``handle_request``, synchronously; ``None`` (having done nothing) for a
        request it must await to answer."""
        ...


@attrs.define(kw_only=True)
class Faults:
    """How a hub misbehaves. Rates are probabilities per delivery (0 to 1).

    ``delay`` is a (min, max) range of seconds; random delays also reorder.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    filter: FrameFilter | None = None

    @property
    def active(self) -> bool:
        return bool(self.drop or self.duplicate or self.delay[1] or self.filter)


@attrs.define(eq=False)
class _Pending:
    """A broadcast on its way to immediate handlers (``done`` of them have it)."""

    frame: bytes
    dsts: list[MemoryTransport]
    done: int = 0


@attrs.define(eq=False, kw_only=True)
class MemoryHub:
    """Connects :class:`MemoryTransport` s in one process.

    Args:
        seed: seeds the generator behind every fault decision.
    """

    seed: int | None = None
    faults: Faults = attrs.Factory(Faults)
    _transports: dict[str, MemoryTransport] = attrs.Factory(dict)
    _groups: list[frozenset[str]] | None = None
    rng: random.Random = attrs.field(init=False)
    dropped: int = 0
    delivered: int = 0
    version: int = 0
    """Bumped whenever who reaches whom changes (a join, a leave, a partition, a heal)."""
    _members: tuple[int, frozenset[str]] = (-1, frozenset())
    _queue: deque[_Pending] = attrs.Factory(deque)
    """Broadcasts for immediate handlers, in order."""
    _drainer: MemoryTransport | None = None
    """In whose task group the queue is being delivered."""

    def __attrs_post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def transport(self, node_id: str) -> MemoryTransport:
        """A new transport for ``node_id`` on this hub (joins when it runs)."""
        return MemoryTransport(hub=self, node_id=node_id)

    # --- faults ---------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the nodes: only nodes in the same group reach each other.
        Nodes not named in any group form one more group together."""
        named = [frozenset(g) for g in groups]
        rest = frozenset(self._transports) - frozenset().union(*named)
        self._groups = [*named, rest] if rest else named
        self.version += 1

    def heal(self) -> None:
        """Undo :meth:`partition`."""
        self._groups = None
        self.version += 1

    def members(self) -> frozenset[str]:
        """Every node on the hub now (made once per change of membership)."""
        version, members = self._members
        if version != self.version:
            members = frozenset(self._transports)
            self._members = (self.version, members)
        return members

    def reachable(self, src: str, dst: str) -> bool:
        if self._groups is None:
            return True
        return any(src in g and dst in g for g in self._groups)

    def _plan(self, src: str, dst: str, kind: Kind, frame: bytes) -> list[float]:
        """Delays of each copy to deliver (empty: dropped)."""
        if not self.reachable(src, dst):
            self.dropped += 1
            return []
        f = self.faults
        if not f.active:
            return [0.0]
        if (f.filter is not None and not f.filter(src, dst, kind, frame)) or (
            f.drop and self.rng.random() < f.drop
        ):
            self.dropped += 1
            return []
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        lo, hi = f.delay
        return [self.rng.uniform(lo, hi) if hi else 0.0 for _ in range(copies)]

    # --- delivery -------------------------------------------------------------------------

    def _broadcast(self, src: str, frame: bytes) -> None:
        now: list[MemoryTransport] = []
        for dst, transport in list(self._transports.items()):
            if dst != src:
                for delay in self._plan(src, dst, "broadcast", frame):
                    self.delivered += 1
                    if delay or transport._immediate is None:
                        transport._deliver(frame, delay)
                    else:
                        now.append(transport)
        if now:
            self._queue.append(_Pending(frame, now))
            drainer = self._drainer
            if drainer is None or not drainer._running():
                self._start_drain()

    def _start_drain(self) -> None:
        """Hand the queue to one task, in the task group of a transport still running
        (one whose group is cancelled may never start it: the next broadcast, or the
        drain ending there, then starts another)."""
        self._drainer = None
        for transport in self._transports.values():
            if transport._running():
                assert transport._tg is not None
                self._drainer = transport
                transport._tg.start_soon(self._drain, transport)
                return

    async def _drain(self, owner: MemoryTransport) -> None:
        """Deliver the queued broadcasts, in order, to each of their nodes still on the
        hub; let other tasks run every ``BURST`` deliveries. A handler's error is raised
        in its own transport's task group (it stops that node, as it would have done
        in the node's own task), never in this one."""
        handled = 0
        try:
            queue = self._queue
            while queue:
                pending = queue[0]
                frame, dsts = pending.frame, pending.dsts
                while pending.done < len(dsts):
                    transport = dsts[pending.done]
                    pending.done += 1
                    transport._take_now(frame)
                    handled += 1
                    if handled % BURST == 0:
                        await anyio.lowlevel.checkpoint()
                if queue and queue[0] is pending:  # (another drain may have taken it)
                    queue.popleft()
        finally:
            if self._drainer is owner:
                self._drainer = None
                if self._queue:  # its task group is going away: carry on elsewhere
                    self._start_drain()

    def _request_now(self, src: str, dst: str, frame: bytes) -> bytes | None:
        """A request answered in the caller's task, or None: the hub has faults to apply
        (delays and random drops keep to the seeded path), or the peer's handler cannot
        answer at once."""
        if self.faults.active:
            return None
        transport = self._transports.get(dst)
        if transport is None or transport._handler is None:
            raise PeerUnreachable(f"peer {dst} is not connected")
        handler = transport._now
        if handler is None:
            return None
        if not self.reachable(src, dst):
            self.dropped += 1
            raise PeerUnreachable(f"request to {dst} was lost")
        try:
            reply = handler.handle_request_now(src, frame)
        except TransportError:
            raise
        except Exception as exc:  # the peer's bug must not become ours
            raise PeerUnreachable(f"peer {dst} failed to answer: {exc!r}") from exc
        return None if reply is None else join_reply(reply)

    async def _request(self, src: str, dst: str, frame: bytes, timeout: float) -> bytes:
        transport = self._transports.get(dst)
        if transport is None or transport._handler is None:
            raise PeerUnreachable(f"peer {dst} is not connected")
        plan = self._plan(src, dst, "request", frame)
        if not plan:
            raise PeerUnreachable(f"request to {dst} was lost")
        with anyio.fail_after(timeout):
            if plan[0]:
                await anyio.sleep(plan[0])
            try:
                return join_reply(await transport._handler.handle_request(src, frame))
            except TransportError:
                raise
            except Exception as exc:  # the peer's bug must not become ours
                raise PeerUnreachable(f"peer {dst} failed to answer: {exc!r}") from exc


@attrs.define(eq=False, kw_only=True)
class MemoryTransport(Transport):
    """One node's end of a :class:`MemoryHub`."""

    hub: MemoryHub
    _node_id: str = attrs.field(alias="node_id")
    _handler: TransportHandler | None = None
    _inbox: deque[bytes] | None = None
    _wake: anyio.Event = attrs.Factory(anyio.Event)
    _tg: anyio.abc.TaskGroup | None = None
    _peers: tuple[int, frozenset[str]] = (-1, frozenset())
    _immediate: ImmediateHandler | None = None
    _now: ImmediateRequestHandler | None = None

    @property
    def node_id(self) -> str:
        return self._node_id

    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._node_id in self.hub._transports:
            raise TransportError(f"node {self._node_id} is already on this hub")
        self._handler, self._inbox = handler, deque()
        self._immediate = handler if isinstance(handler, ImmediateHandler) else None
        self._now = handler if isinstance(handler, ImmediateRequestHandler) else None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.hub._transports[self._node_id] = self
                self.hub.version += 1
                tg.start_soon(self._worker)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            hub = self.hub
            if hub._transports.pop(self._node_id, None) is not None:
                hub.version += 1
            self._handler = self._inbox = self._tg = self._immediate = self._now = None
            if hub._drainer is self and hub._queue:  # its drain may never have started
                hub._start_drain()

    async def _worker(self) -> None:
        """Hand the node its broadcasts one at a time, in arrival order: all that wait at
        each wake-up (one wake-up per burst, not per frame), letting other tasks run
        every ``BURST`` frames."""
        handled = 0
        while self._inbox is not None:
            if not self._inbox:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            frame = self._inbox.popleft()
            if self._immediate is not None:
                self._immediate.handle_broadcast_now(frame)
            elif self._handler is not None:
                await self._handler.handle_broadcast(frame)
            handled += 1
            if handled % BURST == 0:
                await anyio.lowlevel.checkpoint()

    def _running(self) -> bool:
        return self._tg is not None and not self._tg.cancel_scope.cancel_called

    def _take_now(self, frame: bytes) -> None:
        """One queued broadcast, from the hub's task (dropped if the node has stopped)."""
        handler, tg = self._immediate, self._tg
        if handler is None or tg is None or self._inbox is None:
            return
        try:
            handler.handle_broadcast_now(frame)
        except Exception as exc:  # the node's own bug: it stops that node, as before
            tg.start_soon(_raise, exc)

    def _deliver(self, frame: bytes, delay: float) -> None:
        if self._inbox is None or self._tg is None:
            return
        if delay:
            self._tg.start_soon(self._deliver_later, frame, delay)
        else:
            self._put(frame)

    def _put(self, frame: bytes) -> None:
        if self._inbox is not None:  # a node stopping drops what arrives late
            self._inbox.append(frame)
            self._wake.set()

    async def _deliver_later(self, frame: bytes, delay: float) -> None:
        await anyio.sleep(delay)
        self._put(frame)

    async def broadcast(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._inbox is None:
            raise TransportError("transport is not running")
        self.hub._broadcast(self._node_id, frame)

    async def request(self, peer_id: str, frame: bytes, *, timeout: float = 10.0) -> bytes:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._inbox is None:
            raise TransportError("transport is not running")
        try:
            return await self.hub._request(self._node_id, peer_id, frame, timeout)
        except TimeoutError:
            raise PeerUnreachable(f"no reply from {peer_id} within {timeout:g}s") from None

    def request_now(self, peer_id: str, frame: bytes) -> bytes | None:
        """As :meth:`request`, answered at once in this task, or None (nothing sent):
        the hub has faults to apply, or the peer must await to answer."""
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._inbox is None:
            raise TransportError("transport is not running")
        return self.hub._request_now(self._node_id, peer_id, frame)

    def peers(self) -> frozenset[str]:
        hub, me = self.hub, self._node_id
        version, peers = self._peers
        if version != hub.version:  # computed once per change of the hub's membership
            if hub._groups is None:  # everyone reaches everyone: one set operation
                peers = hub.members() - {me}
            else:
                peers = frozenset(n for n in hub._transports if n != me and hub.reachable(me, n))
            self._peers = (hub.version, peers)
        return peers

    def status(self) -> dict[str, object]:
        return {"transport": "memory", "peers": len(self.peers())}


async def _raise(exc: Exception) -> None:
    raise exc
