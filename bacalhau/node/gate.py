"""The inbound gate: every frame from a peer passes here before any state machine sees it.

Checks, in order: size and msgpack shape, the Ed25519 signature (once per process,
through a shared :class:`~bacalhau.wire.VerifiedCache`, so a frame heard by many
nodes or from many peers is verified once), the message id against a replay cache
keyed by ``(sender, message id)`` and the send time against ``max_message_age``,
then the message's fields. The sender's *role* for the job (only a job's requester
may accept bids, end the job, ...) is checked by the state machines, which know the
job; a forged role becomes a ``Dropped(forged=True)`` command there.

The replay check comes after the signature so that a forged frame cannot burn a
genuine message's id; keying the cache by sender as well means two nodes (in forked
processes, say) that happen to produce the same id never drop each other's messages.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable

import attrs

from ..errors import ValidationError, WireError
from ..protocol.messages import Message, decode_message
from ..wire import VerifiedCache, decode_envelope, unbatch

__all__ = ["Admitted", "InboundGate", "Sealed", "Turned", "replay_key"]

log = logging.getLogger("bacalhau.node")

REPLAY_CACHE_LIMIT = 500_000
"""Message ids remembered at most (older ones also leave after ``max_message_age``)."""


def replay_key(sender: str, msg_id: bytes) -> bytes:
    """The replay cache's key for ``(sender, msg_id)``: a 16-byte BLAKE2b digest of both
    (length-prefixed, so no two pairs share an input). A busy node remembers 100,000 ids
    or more for ``max_message_age``; as digests they take 18 MB per 100,000, against
    33 MB as ``(sender, msg_id)`` tuples (a fresh sender string per frame)."""
    who = sender.encode()
    return hashlib.blake2b(len(who).to_bytes(4, "big") + who + msg_id, digest_size=16).digest()


@attrs.frozen
class Admitted:
    """A frame that passed the gate: who signed it and what it says."""

    sender: str
    message: Message


@attrs.frozen(kw_only=True)
class Sealed:
    """A frame this process signed, as its signer built it (kept in the shared
    :class:`~bacalhau.wire.VerifiedCache` so other nodes here need not decode it)."""

    sender: str
    msg_id: bytes
    sent_at: float
    kind: str
    messages: tuple[Message, ...]


class Turned(enum.Enum):
    """Why a frame did not pass."""

    DUPLICATE = "duplicate"
    """Valid, but already seen (relaying it on is harmless)."""
    REFUSED = "refused"
    """Invalid: malformed, badly signed, too old, or not a message."""


@attrs.define(eq=False)
class InboundGate:
    """Decode, authenticate and de-duplicate frames; count what is refused in ``stats``."""

    node_id: str
    clock: Callable[[], float]
    verify_cache: VerifiedCache
    stats: Counter[str]
    max_message_age: float = 600.0
    _seen: OrderedDict[bytes, float] = attrs.Factory(OrderedDict)

    def admit(self, frame: bytes) -> list[Admitted] | Turned:
        """The messages in ``frame`` if it is new and valid, else why not.

        A frame carries one message or a batch of them (:func:`~bacalhau.wire.unbatch`),
        signed once; a malformed message in a batch is refused and counted, the others
        pass. A frame signed in this process is taken as its signer built it (the shared
        cache keeps it decoded), never decoded twice; the replay and age checks still
        apply.
        """
        known: Sealed | None = self.verify_cache.decoded(frame)
        if known is not None:
            sender, msg_id, sent_at, kind = known.sender, known.msg_id, known.sent_at, known.kind
        else:
            try:
                env = decode_envelope(frame, cache=self.verify_cache)
            except WireError as exc:
                self.stats["dropped_invalid"] += 1
                log.info("%s: refused frame: %s", self.node_id[-8:], exc)
                return Turned.REFUSED
            sender, msg_id, sent_at, kind = env.sender, env.msg_id, env.sent_at, env.kind
        now = self.clock()
        key = replay_key(sender, msg_id)
        if key in self._seen:
            self.stats["dropped_replayed"] += 1
            return Turned.DUPLICATE
        if abs(now - sent_at) > self.max_message_age:
            self.stats["dropped_replayed"] += 1
            log.info(
                "%s: refused %s from %s: sent %.0fs away from now",
                self.node_id[-8:],
                kind,
                sender[-8:],
                now - sent_at,
            )
            return Turned.REFUSED
        self._remember(key, now)
        if known is not None:
            return [Admitted(sender, message) for message in known.messages]
        try:
            items = unbatch(env)
        except WireError as exc:
            self.stats["dropped_invalid"] += 1
            log.info("%s: refused batch from %s: %s", self.node_id[-8:], sender[-8:], exc)
            return Turned.REFUSED
        admitted: list[Admitted] = []
        for item_kind, body in items:
            try:
                admitted.append(Admitted(sender, decode_message(item_kind, body)))
            except ValidationError as exc:
                self.stats["dropped_invalid"] += 1
                log.info(
                    "%s: refused %s from %s: %s", self.node_id[-8:], item_kind, sender[-8:], exc
                )
        return admitted if admitted else Turned.REFUSED

    def _remember(self, key: bytes, now: float) -> None:
        seen = self._seen
        seen[key] = now
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at <= self.max_message_age and len(seen) <= REPLAY_CACHE_LIMIT:
                break
            del seen[oldest]
