"""Test doubles for the outbox's tests: transports that keep what they are asked to send.

The outbox (:class:`bacalhau.node.outbox.Outbox`) talks to a
:class:`~bacalhau.transport.base.Transport`; these stand in for one so a test can read
back every frame, in the order it left. :class:`Recorder` takes frames the awaited way
only (as the TCP and NATS transports do); :class:`HandsOver` also takes them at once
(``request_now``, as the in-memory transport does).
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.abc

from bacalhau.errors import PeerUnreachable
from bacalhau.identity import Identity
from bacalhau.node.clock import SystemClock
from bacalhau.node.outbox import BROADCAST, EVENT_PROTOCOL, Outbox
from bacalhau.transport.base import Transport, TransportHandler
from bacalhau.wire import VerifiedCache, unpack

__all__ = ["HandsOver", "Recorder", "outbox_on"]


class Recorder(Transport):
    """Keeps every frame: ``frames`` holds ``(destination, frame)`` in the order sent,
    a broadcast's destination being ``BROADCAST`` (its frame as given), a direct frame's
    the peer (its frame the signed envelope or batch inside the event protocol's
    wrapping). ``sent`` is set at each frame (a waiter replaces it); ``awaited`` counts
    the direct frames that came the awaited way."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self.frames: list[tuple[str, bytes]] = []
        self.sent = anyio.Event()
        self.awaited = 0

    @property
    def node_id(self) -> str:
        return self._node_id

    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()

    def _keep(self, dest: str, frame: bytes) -> None:
        self.frames.append((dest, frame))
        self.sent.set()

    def _take(self, peer_id: str, frame: bytes) -> bytes:
        protocol, payload = unpack(frame)
        assert protocol == EVENT_PROTOCOL
        self._keep(peer_id, payload)
        return b""

    async def broadcast(self, frame: bytes) -> None:
        self._keep(BROADCAST, frame)

    async def request(self, peer_id: str, frame: bytes, *, timeout: float = 10.0) -> bytes:
        self.awaited += 1
        return self._take(peer_id, frame)

    def peers(self) -> frozenset[str]:
        return frozenset()

    async def wait_frames(self, count: int) -> None:
        """Until at least ``count`` frames have been sent (10 s at most)."""
        with anyio.fail_after(10):
            while len(self.frames) < count:
                self.sent = anyio.Event()
                await self.sent.wait()


class HandsOver(Recorder):
    """A :class:`Recorder` that also takes direct frames at once (``request_now``),
    refusing the first ``refuse`` of them: ``unreachable`` raising
    :class:`~bacalhau.errors.PeerUnreachable`, else answering None (not at once)."""

    def __init__(self, node_id: str, *, refuse: int = 0, unreachable: bool = True) -> None:
        super().__init__(node_id)
        self.refuse = refuse
        self.unreachable = unreachable

    def request_now(self, peer_id: str, frame: bytes) -> bytes | None:
        if self.refuse:
            self.refuse -= 1
            if self.unreachable:
                raise PeerUnreachable("not yet")
            return None
        return self._take(peer_id, frame)


def outbox_on(
    transport: Transport,
    identity: Identity,
    stats: Counter[str] | None = None,
    verify_cache: VerifiedCache | None = None,
) -> Outbox:
    """An outbox signing as ``identity`` onto ``transport`` (a cache of its own unless
    ``verify_cache`` is given)."""
    return Outbox(
        identity=identity,
        transport=transport,
        clock=SystemClock(),
        verify_cache=verify_cache if verify_cache is not None else VerifiedCache(),
        stats=stats if stats is not None else Counter(),
    )
