"""The outbox: messages are signed and leave the node here, one ordered queue per destination.

A destination is a peer's node id, or ``"*"`` for a broadcast. Each has a bounded
queue and one sender task, so a slow or dead peer never holds up the others and
frames to one peer arrive in the order they were sent. The sender takes every
message waiting for its destination at once and sends them as one frame, signed
once (a batch, :func:`~bacalhau.wire.encode_batch`): under load a node signs and
sends far fewer frames than messages, and a lone message leaves as soon as the
sender runs (nothing waits to fill a batch). A drained queue to a peer keeps its task
for :data:`LINGER` seconds, then ends. A direct send is retried a few times
with backoff; past that the frame is dropped and counted (the protocol's timers
cover loss). A full queue drops new messages, also counted.

On a transport that can carry a request at once
(:class:`~bacalhau.transport.base.ImmediateRequests`: the in-memory one), direct
messages skip the per-peer tasks: one task of the outbox takes every message waiting
for each peer (a batch, as above) and hands it over in its own turn, the peer's node
handling it there. A message then costs no task switch of its own, no timer and no
task to start for a peer not written to lately, while what waits still leaves
batched. The driver holds them while it handles an event (:meth:`Outbox.hold`), so
whoever that event woke (a client waiting for the job that just ended) runs before
the messages it caused leave. A peer that
cannot take a frame at once gets it, and whatever follows for it, from its own
sender task as above (retries included).
"""

from __future__ import annotations

import logging
from collections import Counter, deque

import anyio
import anyio.abc
import anyio.lowlevel

from ..errors import PeerUnreachable, TransportError, WireError
from ..identity import Identity
from ..protocol.messages import Message, encode_message
from ..transport.base import ImmediateRequests, Transport
from ..wire import (
    BATCH,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    VerifiedCache,
    encode_batch,
    encode_envelope,
    pack,
    unpack,
)
from .clock import Clock
from .gate import Sealed

__all__ = ["BROADCAST", "EVENT_PROTOCOL", "Outbox", "split_request"]

log = logging.getLogger("bacalhau.node")

BROADCAST = "*"
"""The destination meaning every node."""
EVENT_PROTOCOL = "event"
"""The direct-request protocol that carries event frames."""
SEND_BACKOFF = (0.05, 0.25, 1.0, 0.0)
"""Pauses between the (at most four) attempts of a direct send."""
SEND_TIMEOUT = 10.0
LINGER = 0.5
"""Seconds a drained queue to one peer waits for more before its sender task ends (so
the messages of one job to one node, a round trip apart, share a task)."""
HAND_OVER_BURST = 64
"""Peers handed their messages in a row before other tasks get a turn."""
OUTBOX_LIMIT = 10_000
"""Messages queued for one destination before new ones are dropped."""


def split_request(frame: bytes, stats: Counter[str]) -> tuple[str, bytes]:
    """A direct request's ``(protocol, payload)``.

    Raises:
        PeerUnreachable: the request is malformed (counted as ``dropped_malformed``).
    """
    try:
        protocol, payload = unpack(frame)
        if not isinstance(protocol, str) or not isinstance(payload, bytes):
            raise WireError("request must be [protocol, payload]")
    except (WireError, ValueError, TypeError) as exc:
        stats["dropped_malformed"] += 1
        raise PeerUnreachable(f"malformed request: {exc}") from None
    return protocol, payload


class _Box:
    """One destination's queue: messages waiting, and a way to wake its sender."""

    __slots__ = ("closed", "queue", "wake")

    def __init__(self) -> None:
        self.queue: _Queue = deque()
        self.wake = anyio.Event()
        self.closed = False


class _Encoded:
    """A message taken from the queue and encoded, that did not fit in the last batch."""

    __slots__ = ("body", "entry", "kind", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.kind, self.body = encode_message(message)
        self.entry = pack([self.kind, self.body])


class _Frame:
    """A frame already signed that could not be handed over at once (its sender task
    sends it as it is, before what follows)."""

    __slots__ = ("count", "frame")

    def __init__(self, frame: bytes, count: int) -> None:
        self.frame = frame
        self.count = count


_Queue = deque[Message | _Encoded | _Frame]


class Outbox:
    """Per-destination queues of messages, drained (in batches) by one task each."""

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
        self._boxes: dict[str, _Box] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._now = transport if isinstance(transport, ImmediateRequests) else None
        self._soon: dict[str, _Queue] = {}
        """Direct messages for the handing-over task, per peer (in the order posted)."""
        self._kick = anyio.Event()
        self._handing = False
        """Whether the handing-over task runs."""
        self._held = False

    def bind(self, tg: anyio.abc.TaskGroup) -> None:
        """Run sender tasks in ``tg`` (messages posted before this are dropped); on a
        transport that hands frames over at once, start the handing-over task."""
        self._tg = tg
        if self._now is not None and not self._handing:
            self._handing = True
            tg.start_soon(self._hander)

    def close(self) -> None:
        """Stop accepting messages; queued ones are abandoned."""
        self._tg = None
        for box in self._boxes.values():
            box.closed = True
            box.queue.clear()
            box.wake.set()
        self._boxes.clear()
        self._soon.clear()
        self._kick.set()

    def post(self, to: str | None, message: Message) -> None:
        """Queue ``message`` for node ``to`` (``None``: every node); never blocks. It is
        signed when its sender task takes it (with whatever else waits for ``to``)."""
        dest = BROADCAST if to is None else to
        box = self._boxes.get(dest)
        if box is None and self._now is not None and to is not None and self._tg is not None:
            self._hand_over(to, message)
            return
        if box is None:
            if self._tg is None:
                return
            self._boxes[dest] = box = _Box()
            self._tg.start_soon(self._sender, dest, box)
        if len(box.queue) >= OUTBOX_LIMIT:
            self.stats["outbox_full"] += 1
            log.warning("%s: outbox to %s full; message dropped", self.node_id[-8:], dest[-8:])
            return
        box.queue.append(message)
        box.wake.set()

    def seal(self, batch: list[_Encoded]) -> bytes:
        """Sign ``batch`` as one frame (remembered as signed and decoded by the
        process's shared cache, so the nodes here neither verify nor decode it)."""
        now = self.clock.now()
        if len(batch) == 1:
            one = batch[0]
            frame, msg_id = encode_envelope(self.identity, one.kind, one.body, now=now)
            kind = one.kind
        else:
            frame, msg_id = encode_batch(self.identity, [e.entry for e in batch], now=now)
            kind = BATCH
        messages = tuple(e.message for e in batch)
        sealed = Sealed(
            sender=self.node_id, msg_id=msg_id, sent_at=now, kind=kind, messages=messages
        )
        self.verify_cache.add(frame, sealed)
        return frame

    def hold(self) -> None:
        """Keep the direct messages posted from now on until :meth:`release` (the
        driver holds them while it handles an event: whoever that wakes, a client
        waiting for the job that just ended, runs before the notices leave)."""
        self._held = True

    def release(self) -> None:
        """Let the held messages go (from the handing-over task's next turn)."""
        self._held = False
        if self._soon:
            self._kick.set()

    def _hand_over(self, to: str, message: Message) -> None:
        """Queue a direct message for the handing-over task."""
        queue = self._soon.get(to)
        if queue is None:
            queue = self._soon[to] = deque()
        if len(queue) >= OUTBOX_LIMIT:
            self.stats["outbox_full"] += 1
            log.warning("%s: outbox to %s full; message dropped", self.node_id[-8:], to[-8:])
            return
        queue.append(message)
        if not self._held:
            self._kick.set()

    async def _hander(self) -> None:
        """Hand each peer's waiting messages over, in batches, in this task's turn."""
        handed = 0
        try:
            while self._tg is not None:
                if not self._soon or self._held:
                    self._kick = anyio.Event()
                    await self._kick.wait()
                    continue
                dest = next(iter(self._soon))
                self._send_now(dest, self._soon.pop(dest))
                handed += 1
                if handed % HAND_OVER_BURST == 0:  # (an ops job offered to a thousand nodes)
                    await anyio.lowlevel.checkpoint()
        finally:
            self._handing = False

    def _send_now(self, dest: str, queue: _Queue) -> None:
        """Hand ``queue`` to ``dest`` at once; what cannot go at once (and all that
        follows it) goes to the peer's sender task, which retries as usual."""
        assert self._now is not None
        while queue:
            box = self._boxes.get(dest)
            if box is not None:  # a sender task has this peer's frames: keep the order
                box.queue.extend(queue)
                box.wake.set()
                return
            batch = self._take(queue)
            frame = self.seal(batch)
            self.stats["frames_sent"] += 1
            try:
                if self._now.request_now(dest, pack([EVENT_PROTOCOL, frame])) is not None:
                    continue
            except TransportError:
                self.stats["send_retried"] += 1
            if self._tg is None:
                return
            self._boxes[dest] = box = _Box()
            box.queue.append(_Frame(frame, len(batch)))
            self._tg.start_soon(self._sender, dest, box)

    def _take(self, queue: _Queue) -> list[_Encoded]:
        """The next batch: the oldest waiting messages, within the batch limits (one
        that does not fit goes back to the head of the queue, encoded). A signed frame
        waiting (:class:`_Frame`) is never part of a batch."""
        batch: list[_Encoded] = []
        size = 0
        while queue and len(batch) < MAX_BATCH:
            head = queue.popleft()
            if isinstance(head, _Frame):
                queue.appendleft(head)
                break
            encoded = head if isinstance(head, _Encoded) else _Encoded(head)
            if batch and size + len(encoded.entry) > MAX_BATCH_BYTES:
                queue.appendleft(encoded)
                break
            batch.append(encoded)
            size += len(encoded.entry)
        return batch

    async def _sender(self, dest: str, box: _Box) -> None:
        """Deliver one destination's messages in order, in batches; retry direct sends
        a few times."""
        while not box.closed:
            if not box.queue:
                box.wake = anyio.Event()
                if dest == BROADCAST:
                    await box.wake.wait()
                    continue
                # drained: wait a moment for more (a job's next message to this node
                # comes a round trip later), then retire the queue (peers' ids cost
                # nothing to make, so a queue and a task per id ever answered would grow
                # without bound)
                with anyio.move_on_after(LINGER):
                    await box.wake.wait()
                if box.queue or box.closed:
                    continue
                if self._boxes.get(dest) is box:
                    del self._boxes[dest]
                return
            head = box.queue[0]
            if isinstance(head, _Frame):  # signed already (it could not go at once)
                box.queue.popleft()
                frame, count = head.frame, head.count
            else:
                batch = self._take(box.queue)
                frame, count = self.seal(batch), len(batch)
                self.stats["frames_sent"] += 1
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
                        self.stats["send_failed"] += count
                        log.info(
                            "%s: giving up sending to %s: %s", self.node_id[-8:], dest[-8:], exc
                        )
                    else:
                        self.stats["send_retried"] += 1
                        await anyio.sleep(backoff)
