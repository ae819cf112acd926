"""GossipSub-like broadcast bookkeeping, sans-IO.

This is the part of the TCP gossip transport (:mod:`bacalhau.transport.gossip`)
that decides *who gets what*: which messages were already seen, which peers
form the forwarding mesh, which message ids to advertise for lazy repair, and
which advertised ids to ask for. It never touches a socket or a clock: every
method that depends on time takes ``now`` (seconds, any monotonic origin), and
randomness comes from the ``random.Random`` it is given, so a test can drive it
deterministically.

The scheme follows libp2p GossipSub with a single topic:

* every node keeps a *mesh* of about ``d`` peers (between ``d_lo`` and
  ``d_hi``), kept symmetric by GRAFT / PRUNE control messages;
* a message is identified by a hash of its bytes (:func:`message_id`), so a
  peer cannot poison the seen-cache by announcing a wrong id for a frame;
* a node forwards each *valid* message once, to its mesh peers except the one
  it came from; its own messages go to every connected peer (flood publish);
* each heartbeat it advertises the ids of recent messages (IHAVE) to
  ``d_lazy`` random peers, which ask (IWANT) for those they have not seen:
  this repairs messages lost to a dropped connection or a full queue;
* on receiving a new large message it tells its mesh peers IDONTWANT, so
  they skip it when forwarding (GossipSub v1.2).

Everything is bounded: the seen-cache by entries and TTL, the message cache by
heartbeats and bytes, IHAVE / IWANT by id counts per heartbeat.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict, deque

import attrs

__all__ = [
    "ID_SIZE",
    "GossipCommand",
    "GossipConfig",
    "GossipState",
    "Graft",
    "IDontWant",
    "IHave",
    "IWant",
    "MessageCache",
    "Prune",
    "SeenCache",
    "message_id",
]

ID_SIZE = 20
"""Bytes in a message id."""


def message_id(frame: bytes) -> bytes:
    """The id of a broadcast frame: the 20-byte BLAKE2b hash of its bytes.

    Two identical frames are one message (a signed envelope carries its own
    random id, so distinct events never collide).
    """
    return hashlib.blake2b(frame, digest_size=ID_SIZE).digest()


@attrs.frozen(kw_only=True)
class GossipConfig:
    """Mesh and cache parameters (the GossipSub defaults, scaled for one topic).

    Attributes:
        d: target number of mesh peers.
        d_lo: below this many mesh peers, the heartbeat grafts more.
        d_hi: above this many, it prunes back to ``d``; a GRAFT that would pass
            it is answered with PRUNE.
        d_lazy: peers that receive IHAVE each heartbeat.
        seen_ttl: seconds a message id stays in the seen-cache.
        seen_max: most ids the seen-cache holds (the oldest go first).
        history_length: heartbeats a message stays in the message cache
            (answerable by IWANT).
        history_gossip: heartbeats of the message cache advertised by IHAVE
            (the windows before the current one; less than ``history_length``).
        mcache_max_bytes: most frame bytes the message cache holds.
        max_ihave_ids: most ids in one IHAVE, and most ids asked of one peer
            per heartbeat.
        max_iwant_ids: most messages sent to one peer per heartbeat in
            answer to IWANT.
        iwant_followup: seconds before an id asked for by IWANT may be asked
            for again (of another peer); about one heartbeat.
        flood_publish: send this node's own messages to every connected peer
            (not only the mesh), for speed and reliability.
        idontwant_size: on receiving a new message at least this large, tell
            the mesh peers not to forward it here (GossipSub v1.2 IDONTWANT), so
            a big frame crosses each link about once instead of once per path.
        idontwant_max: most IDONTWANT ids remembered per peer.
    """

    d: int = 6
    d_lo: int = 4
    d_hi: int = 12
    d_lazy: int = 6
    seen_ttl: float = 120.0
    seen_max: int = 100_000
    history_length: int = 5
    history_gossip: int = 3
    mcache_max_bytes: int = 64 * 1024 * 1024
    max_ihave_ids: int = 5000
    max_iwant_ids: int = 5000
    iwant_followup: float = 1.0
    flood_publish: bool = True
    idontwant_size: int = 16 * 1024
    idontwant_max: int = 1024

    def __attrs_post_init__(self) -> None:
        if not 0 < self.d_lo <= self.d <= self.d_hi:
            raise ValueError("gossip mesh sizes must satisfy 0 < d_lo <= d <= d_hi")
        if not 0 < self.history_gossip < self.history_length:
            raise ValueError("gossip history must satisfy 0 < history_gossip < history_length")


@attrs.frozen
class Graft:
    """Tell ``peer`` it joined this node's mesh."""

    peer: str


@attrs.frozen
class Prune:
    """Tell ``peer`` it left this node's mesh."""

    peer: str


@attrs.frozen
class IHave:
    """Advertise message ``ids`` to ``peer``."""

    peer: str
    ids: tuple[bytes, ...]


@attrs.frozen
class IWant:
    """Ask ``peer`` for the messages ``ids``."""

    peer: str
    ids: tuple[bytes, ...]


@attrs.frozen
class IDontWant:
    """Tell ``peer`` not to send the messages ``ids`` (this node has them)."""

    peer: str
    ids: tuple[bytes, ...]


GossipCommand = Graft | Prune | IHave | IWant | IDontWant


@attrs.define
class SeenCache:
    """Message ids seen recently: bounded by ``maxsize`` entries and ``ttl`` seconds.

    Ids leave in insertion order, so an id re-added after it expired counts as
    new again (a frame older than the TTL is delivered again if it comes back;
    the node's own dedup by envelope id covers that case).
    """

    ttl: float
    maxsize: int
    _ids: OrderedDict[bytes, float] = attrs.Factory(OrderedDict)

    def add(self, mid: bytes, now: float) -> bool:
        """Record ``mid``; True if it was not already there (a new message)."""
        if mid in self._ids:
            return False
        self._ids[mid] = now + self.ttl
        if len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)
        return True

    def discard(self, mid: bytes) -> None:
        """Forget ``mid`` (a message dropped before it was handled may come again)."""
        self._ids.pop(mid, None)

    def expire(self, now: float) -> int:
        """Drop ids older than the TTL; return how many went."""
        gone = 0
        while self._ids:
            mid, deadline = next(iter(self._ids.items()))
            if deadline > now:
                break
            del self._ids[mid]
            gone += 1
        return gone

    def __contains__(self, mid: object) -> bool:
        return mid in self._ids

    def __len__(self) -> int:
        return len(self._ids)


@attrs.define
class MessageCache:
    """Recent valid messages, kept for ``history_length`` heartbeats to answer IWANT.

    ``shift()`` is called once per heartbeat; ids of the newest
    ``history_gossip`` windows are what IHAVE advertises.
    """

    history_length: int
    history_gossip: int
    max_bytes: int
    _windows: deque[list[bytes]] = attrs.field(init=False)
    _frames: OrderedDict[bytes, bytes] = attrs.Factory(OrderedDict)
    nbytes: int = 0

    def __attrs_post_init__(self) -> None:
        self._windows = deque([[]])

    def put(self, mid: bytes, frame: bytes) -> None:
        """Keep ``frame`` under ``mid`` (the oldest frames go past ``max_bytes``)."""
        if mid in self._frames or len(frame) > self.max_bytes:
            return
        self._frames[mid] = frame
        self._windows[0].append(mid)
        self.nbytes += len(frame)
        while self.nbytes > self.max_bytes:
            _, old = self._frames.popitem(last=False)
            self.nbytes -= len(old)

    def get(self, mid: bytes) -> bytes | None:
        return self._frames.get(mid)

    def gossip_ids(self) -> list[bytes]:
        """Ids to advertise, newest first: those of the ``history_gossip`` windows
        before the current one (a message of the current window may still be on
        its way to the peer, and advertising it would only fetch it twice)."""
        out: list[bytes] = []
        for window in list(self._windows)[1 : self.history_gossip + 1]:
            out.extend(m for m in reversed(window) if m in self._frames)
        return out

    def shift(self) -> None:
        """Start a new window; forget the frames of the oldest beyond the history."""
        self._windows.appendleft([])
        while len(self._windows) > self.history_length:
            for mid in self._windows.pop():
                frame = self._frames.pop(mid, None)
                if frame is not None:
                    self.nbytes -= len(frame)

    def __len__(self) -> int:
        return len(self._frames)


@attrs.define
class GossipState:
    """One node's view of its gossip mesh.

    The driver tells it about connections (:meth:`add_peer`,
    :meth:`remove_peer`), control messages received (:meth:`on_graft`,
    :meth:`on_prune`, :meth:`on_ihave`, :meth:`on_iwant`) and broadcast frames
    (:meth:`publish`, :meth:`receive`, :meth:`accept`), calls :meth:`heartbeat`
    periodically, and carries out the commands these return.
    """

    config: GossipConfig = attrs.Factory(GossipConfig)
    rng: random.Random = attrs.Factory(random.Random)
    peers: set[str] = attrs.Factory(set)
    mesh: set[str] = attrs.Factory(set)
    seen: SeenCache = attrs.field(init=False)
    mcache: MessageCache = attrs.field(init=False)
    _asked: OrderedDict[bytes, float] = attrs.Factory(OrderedDict)
    _ihave_budget: dict[str, int] = attrs.Factory(dict)
    _iwant_budget: dict[str, int] = attrs.Factory(dict)
    _dontwant: dict[str, OrderedDict[bytes, None]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        c = self.config
        self.seen = SeenCache(ttl=c.seen_ttl, maxsize=c.seen_max)
        self.mcache = MessageCache(
            history_length=c.history_length,
            history_gossip=c.history_gossip,
            max_bytes=c.mcache_max_bytes,
        )

    # --- membership -------------------------------------------------------------------

    def add_peer(self, peer: str) -> list[GossipCommand]:
        """A connection to ``peer`` is up; graft it if the mesh is below ``d``."""
        self.peers.add(peer)
        if peer not in self.mesh and len(self.mesh) < self.config.d:
            self.mesh.add(peer)
            return [Graft(peer)]
        return []

    def remove_peer(self, peer: str) -> None:
        """The connection to ``peer`` is gone."""
        self.peers.discard(peer)
        self.mesh.discard(peer)
        self._ihave_budget.pop(peer, None)
        self._iwant_budget.pop(peer, None)
        self._dontwant.pop(peer, None)

    def on_graft(self, peer: str) -> list[GossipCommand]:
        """``peer`` put us in its mesh: reciprocate, or PRUNE if our mesh is full."""
        if peer not in self.peers:
            return []
        if peer in self.mesh:
            return []
        if len(self.mesh) >= self.config.d_hi:
            return [Prune(peer)]
        self.mesh.add(peer)
        return []

    def on_prune(self, peer: str) -> None:
        """``peer`` took us out of its mesh."""
        self.mesh.discard(peer)

    # --- messages ---------------------------------------------------------------------

    def publish(self, frame: bytes, now: float) -> tuple[bytes, list[str]]:
        """This node broadcasts ``frame``: return (its id, the peers to send it to)."""
        mid = message_id(frame)
        self.seen.add(mid, now)
        self.mcache.put(mid, frame)
        if self.config.flood_publish or not self.mesh:
            return mid, list(self.peers)
        return mid, list(self.mesh)

    def receive(self, frame: bytes, now: float) -> bytes | None:
        """A broadcast frame arrived: its id if new (to be validated), None if seen."""
        mid = message_id(frame)
        self._asked.pop(mid, None)
        return mid if self.seen.add(mid, now) else None

    def dont_want(self, mid: bytes, frame: bytes, source: str | None) -> list[GossipCommand]:
        """For a new message: IDONTWANT to the mesh peers if it is large, else nothing."""
        if len(frame) < self.config.idontwant_size:
            return []
        return [IDontWant(p, (mid,)) for p in sorted(self.mesh) if p != source]

    def on_idontwant(self, peer: str, ids: list[bytes]) -> None:
        """``peer`` has these messages: do not forward them to it."""
        if peer not in self.peers:
            return
        known = self._dontwant.setdefault(peer, OrderedDict())
        for mid in ids:
            known[mid] = None
        while len(known) > self.config.idontwant_max:
            known.popitem(last=False)

    def accept(self, mid: bytes, frame: bytes, source: str | None) -> list[str]:
        """The node found message ``mid`` valid: cache it; return the peers to forward to
        (the mesh, less the source and the peers that said they do not want it)."""
        self.mcache.put(mid, frame)
        dontwant = self._dontwant
        return [p for p in self.mesh if p != source and mid not in dontwant.get(p, ())]

    def forget(self, mid: bytes) -> None:
        """Message ``mid`` was dropped before validation (overload): let it come again."""
        self.seen.discard(mid)

    def on_ihave(self, peer: str, ids: list[bytes], now: float) -> list[GossipCommand]:
        """``peer`` advertised ``ids``: ask for those not seen nor already asked for."""
        budget = self._ihave_budget.get(peer, self.config.max_ihave_ids)
        wanted: list[bytes] = []
        for mid in ids:
            if budget <= 0:
                break
            if mid in self.seen:
                continue
            asked = self._asked.get(mid)
            if asked is not None and asked > now:
                continue
            self._asked[mid] = now + self.config.iwant_followup
            self._asked.move_to_end(mid)
            wanted.append(mid)
            budget -= 1
        self._ihave_budget[peer] = budget
        while len(self._asked) > self.config.seen_max:
            self._asked.popitem(last=False)
        return [IWant(peer, tuple(wanted))] if wanted else []

    def on_iwant(self, peer: str, ids: list[bytes]) -> list[bytes]:
        """``peer`` asked for ``ids``: the frames to send it (within its budget)."""
        budget = self._iwant_budget.get(peer, self.config.max_iwant_ids)
        frames: list[bytes] = []
        for mid in ids:
            if budget <= 0:
                break
            frame = self.mcache.get(mid)
            if frame is not None:
                frames.append(frame)
                budget -= 1
        self._iwant_budget[peer] = budget
        return frames

    # --- heartbeat --------------------------------------------------------------------

    def heartbeat(self, now: float) -> list[GossipCommand]:
        """Repair the mesh, advertise recent ids, age the caches."""
        c = self.config
        out: list[GossipCommand] = []
        self.mesh &= self.peers
        if len(self.mesh) < c.d_lo:
            spare = sorted(self.peers - self.mesh)
            self.rng.shuffle(spare)
            for peer in spare[: c.d - len(self.mesh)]:
                self.mesh.add(peer)
                out.append(Graft(peer))
        elif len(self.mesh) > c.d_hi:
            members = sorted(self.mesh)
            self.rng.shuffle(members)
            for peer in members[c.d :]:
                self.mesh.discard(peer)
                out.append(Prune(peer))
        ids = self.mcache.gossip_ids()[: c.max_ihave_ids]
        if ids:
            targets = sorted(self.peers)
            self.rng.shuffle(targets)
            out.extend(IHave(peer, tuple(ids)) for peer in targets[: c.d_lazy])
        self.mcache.shift()
        self.seen.expire(now)
        while self._asked and next(iter(self._asked.values())) <= now:
            self._asked.popitem(last=False)
        self._ihave_budget.clear()
        self._iwant_budget.clear()
        return out
