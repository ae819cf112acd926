"""The outbox: messages are signed and leave the node here, one ordered queue per destination.

A destination is a peer's node id, or ``"*"`` for a broadcast. Each has a bounded
queue and one sender task, so a slow or dead peer never holds up the others and
frames to one peer arrive in the order they were sent. A direct send is retried a
few times with backoff; past that the frame is dropped and counted (the protocol's
timers cover loss). A full queue drops new frames, also counted.
"""

from __future__ import annotations

import logging
from collections import Counter

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import TransportError
from ..identity import Identity
from ..protocol.messages import Message, encode_message
from ..transport.base import Transport
from ..wire import VerifiedCache, encode_envelope, pack
from .clock import Clock

__all__ = ["BROADCAST", "EVENT_PROTOCOL", "Outbox"]

log = logging.getLogger("bacalhau.node")

BROADCAST = "*"
"""The destination meaning every node."""
EVENT_PROTOCOL = "event"
"""The direct-request protocol that carries event frames."""
SEND_BACKOFF = (0.05, 0.25, 1.0, 0.0)
"""Pauses between the (at most four) attempts of a direct send."""
SEND_TIMEOUT = 10.0
OUTBOX_LIMIT = 10_000
"""Frames queued for one destination before new ones are dropped."""


class Outbox:
    """Per-destination queues of frames, drained by one task each."""

    def __init__(
        self,
        *,
        identity: Identity,
        transport: Transport,
        clock: Clock,
        verify_cache: VerifiedCache,
        stats: Counter[str],
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.transport = transport
        self.clock = clock
        self.verify_cache = verify_cache
        self.stats = stats
        self._boxes: dict[str, MemoryObjectSendStream[bytes]] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def bind(self, tg: anyio.abc.TaskGroup) -> None:
        """Run sender tasks in ``tg`` (frames queued before this are dropped)."""
        self._tg = tg

    def close(self) -> None:
        """Stop accepting frames; queued ones are abandoned."""
        self._tg = None
        for box in self._boxes.values():
            box.close()
        self._boxes.clear()

    def post(self, to: str | None, message: Message) -> None:
        """Sign ``message`` and queue it for node ``to`` (``None``: every node)."""
        kind, body = encode_message(message)
        frame, _ = encode_envelope(self.identity, kind, body, now=self.clock.now())
        self.verify_cache.add(frame)  # nodes of this process need not check our signature
        self.put(BROADCAST if to is None else to, frame)

    def put(self, dest: str, frame: bytes) -> None:
        """Queue ``frame`` for ``dest`` (a node id or :data:`BROADCAST`); never blocks."""
        box = self._boxes.get(dest)
        if box is None:
            if self._tg is None:
                return
            send, receive = anyio.create_memory_object_stream[bytes](OUTBOX_LIMIT)
            self._boxes[dest] = box = send
            self._tg.start_soon(self._sender, dest, receive)
        try:
            box.send_nowait(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the node is stopping
        except anyio.WouldBlock:
            self.stats["outbox_full"] += 1
            log.warning("%s: outbox to %s full; message dropped", self.node_id[-8:], dest[-8:])

    async def _sender(self, dest: str, receive: MemoryObjectReceiveStream[bytes]) -> None:
        """Deliver one destination's frames in order; retry direct sends a few times."""
        async with receive:
            async for frame in receive:
                for attempt, backoff in enumerate(SEND_BACKOFF):
                    try:
                        if dest == BROADCAST:
                            await self.transport.broadcast(frame)
                        else:
                            await self.transport.request(
                                dest, pack([EVENT_PROTOCOL, frame]), timeout=SEND_TIMEOUT
                            )
                        break
                    except TransportError as exc:
                        if attempt == len(SEND_BACKOFF) - 1:
                            self.stats["send_failed"] += 1
                            log.info(
                                "%s: giving up sending to %s: %s", self.node_id[-8:], dest[-8:], exc
                            )
                        else:
                            self.stats["send_retried"] += 1
                            await anyio.sleep(backoff)
                if dest != BROADCAST and receive.statistics().current_buffer_used == 0:
                    # drained: retire the queue (peers' ids cost nothing to make, so a
                    # queue and a task per id ever answered would grow without bound)
                    if self._boxes.get(dest) is not None:
                        self._boxes.pop(dest).close()
                    return
