"""What a requester knows about the network's nodes, and how it ranks them for a job.

Pure (no clock, no I/O, randomness from the ``rng`` handed in):

- :class:`Announcer` decides when a node tells the network about itself: when it
  joins, when what it offers changes or it fills up or has room again (at most every
  ``min_gap`` seconds), and on a heartbeat, which carries the exact numbers.
- :class:`NodeTable` keeps every node's latest signed :class:`~bacalhau.models.NodeInfo`
  with the time it was heard; a node silent for ``ttl`` seconds drops out. On top of the
  node's own numbers the table counts this requester's offers since, so it does not
  send a node more than it said it would take.
- :func:`rank` orders the nodes for one job: only nodes that support it (engine,
  storage, verifier, publisher, size, GPUs) and match its selectors, then those with
  room first, then data locality, then reputation, then free capacity, then at random.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from operator import itemgetter

import attrs

from ..errors import ValidationError
from ..models import JobSpec, NodeInfo, matches

__all__ = [
    "HEARTBEAT",
    "NODE_TTL",
    "Announcer",
    "KnownNode",
    "NodeTable",
    "Ranking",
    "check_announced",
    "incapable",
    "rank",
    "unsuitable",
]

HEARTBEAT = 5.0
"""Seconds between a node's announcements when nothing changes."""
NODE_TTL = 3 * HEARTBEAT
"""Seconds after which a silent node drops out of every requester's table."""
MIN_GAP = 0.2
"""A node announces a change at most this often."""
LABELS_DIFFER = "labels do not match"
"""The one reason of :func:`unsuitable` that is about placement, not capability."""
BUSY_BACKOFF = 0.5
"""A node that said it is busy gets no offers for this long (or until it says it has room)."""
DECLINE_WEIGHT = 0.1
"""How much one answer moves :attr:`NodeTable.declines` (about the last 10-20 count)."""
SPARE_WHEN = 0.02
"""A job's first round asks a spare node (``offer_headroom``) only while
:attr:`NodeTable.declines` is at least this: some 40 bids in a row with no decline
(nor silence) bring it below, one decline brings it back up for some 20 answers."""

_LIMITS = {
    "executors": 64,
    "unavailable": 64,
    "verifiers": 64,
    "publishers": 64,
    "storage": 64,
    "gpus": 64,
    "data": 256,
}


def _short(value: object) -> bool:
    """A string an operator may be shown (``bacalhau node list``): at most 128
    characters, none of them a control character (a terminal escape)."""
    return isinstance(value, str) and len(value) <= 128 and value.isprintable()


def check_announced(info: NodeInfo, sender: str) -> NodeInfo:
    """Refuse an announcement that is not the sender's own or is out of bounds.

    Raises:
        ValidationError: naming the field.
    """
    if info.node_id != sender:
        raise ValidationError("announcement about another node", field="node_id")
    for name, most in _LIMITS.items():
        value = getattr(info, name)
        if len(value) > most:
            raise ValidationError(f"at most {most} entries", field=name)
        if name not in ("gpus",) and not all(_short(v) for v in value):
            raise ValidationError("entries must be short printable strings", field=name)
    if not all(_short(g.vendor) and _short(g.model) for g in info.gpus):
        raise ValidationError("vendor and model must be short printable strings", field="gpus")
    if not _short(info.version):
        raise ValidationError("must be a short printable string", field="version")
    for name in (
        "free_slots",
        "queued",
        "running",
        "max_executions",
        "free_gpu",
        "free_memory",
        "seq",
    ):
        if getattr(info, name) < 0:
            raise ValidationError("must not be negative", field=name)
    if info.peers or info.transport:
        raise ValidationError("peers and transport are not announced", field="peers")
    return info


def _coarse(info: NodeInfo) -> NodeInfo:
    """What counts as a change worth announcing before the heartbeat: what the node
    offers, and whether it has room (not every job's coming and going, which would cost
    a network-wide message per job; requesters count their own offers meanwhile)."""
    return attrs.evolve(
        info,
        seq=0,
        running=0,
        queued=0,
        free_cpu=0.0,
        free_memory=0,
        free_slots=min(info.free_slots, 1),
        free_gpu=min(info.free_gpu, 1),
    )


@attrs.define
class Announcer:
    """When to announce: on join, on change (rate limited), on heartbeat."""

    heartbeat: float = HEARTBEAT
    min_gap: float = MIN_GAP
    seq: int = 0
    sent: NodeInfo | None = None
    """The last announcement made (what a newcomer is told directly)."""
    _last: NodeInfo | None = None
    _sent_at: float = float("-inf")

    def due(self, info: NodeInfo, now: float) -> NodeInfo | None:
        """The info to announce now (with its sequence number), or None.

        ``info`` is what the node offers now; the ``seq`` it carries is ignored.
        """
        comparable = _coarse(info)
        changed = self._last is None or comparable != self._last
        since = now - self._sent_at
        if since >= self.heartbeat or (changed and since >= self.min_gap):
            self.seq += 1
            self._last, self._sent_at = comparable, now
            self.sent = attrs.evolve(info, seq=self.seq)
            return self.sent
        return None

    def next_check(self, now: float, *, changed: bool) -> float:
        """When :meth:`due` may say yes next."""
        if changed:
            return max(now, self._sent_at + self.min_gap)
        return self._sent_at + self.heartbeat


@attrs.define(kw_only=True)
class KnownNode:
    """One node in a requester's table."""

    info: NodeInfo
    seen: float
    in_flight: int = 0
    """Offers of ours it has not answered yet."""
    taken: int = 0
    """Slots our bids took since its last announcement (less what finished since)."""
    busy_until: float = float("-inf")

    def room(self, now: float) -> int:
        """How many more offers it could take now, by what we know."""
        if now < self.busy_until:
            return 0
        return self.info.free_slots - self.in_flight - self.taken


class NodeTable:
    """Every node a requester has heard announce itself, with expiry."""

    def __init__(self, *, ttl: float = NODE_TTL) -> None:
        self.ttl = ttl
        self.nodes: dict[str, KnownNode] = {}
        self.declines = 1.0
        """How often offers were declined or not answered lately (a moving average; 1.0
        before any answer: a new requester expects declines)."""

    def __len__(self) -> int:
        return len(self.nodes)

    def update(self, info: NodeInfo, now: float) -> bool:
        """Take a node's announcement. True when it is new or has more room than before
        (a reason to offer queued jobs again)."""
        known = self.nodes.get(info.node_id)
        if known is None:
            self.nodes[info.node_id] = KnownNode(info=info, seen=now)
            return True
        if info.seq and info.seq < known.info.seq:
            return False  # reordered: an older announcement
        before, stale = known.room(now), now - known.seen > self.ttl
        known.info, known.seen, known.taken = info, now, 0
        if info.free_slots > 0:
            known.busy_until = float("-inf")
        return known.room(now) > before or stale

    def live(self, now: float) -> list[KnownNode]:
        """Nodes heard within ``ttl`` (the others are forgotten)."""
        dead = [n for n, k in self.nodes.items() if now - k.seen > self.ttl]
        for node_id in dead:
            del self.nodes[node_id]
        return list(self.nodes.values())

    def get(self, node_id: str) -> KnownNode | None:
        return self.nodes.get(node_id)

    def offered(self, node_id: str) -> None:
        known = self.nodes.get(node_id)
        if known is not None:
            known.in_flight += 1

    def answered(
        self, node_id: str, *, bid: bool, busy: bool, now: float, counted: bool = True
    ) -> None:
        """The node answered an offer (or will not: ``counted=False`` when the job ended
        first, which says nothing of the node)."""
        if counted:
            self.declines += DECLINE_WEIGHT * ((0.0 if bid else 1.0) - self.declines)
        known = self.nodes.get(node_id)
        if known is None:
            return
        known.in_flight = max(0, known.in_flight - 1)
        if bid:
            known.taken += 1
        if busy:
            known.busy_until = now + BUSY_BACKOFF

    def spare_helps(self) -> bool:
        """Whether a spare offer is worth its messages and the room its bid holds:
        only while offers were declined (or went unanswered) lately."""
        return self.declines >= SPARE_WHEN

    def released(self, node_id: str) -> None:
        """One of our executions on the node ended (or its bid was not chosen)."""
        known = self.nodes.get(node_id)
        if known is not None:
            known.taken -= 1
            known.busy_until = float("-inf")


@attrs.frozen(kw_only=True)
class Ranking:
    """Suitable nodes for a job: ``ready`` (room now, best first), ``full`` (suitable but
    busy), and ``reason`` why there are none, when there are none."""

    ready: tuple[str, ...]
    full: tuple[str, ...]
    reason: str
    known: int


def unsuitable(info: NodeInfo, spec: JobSpec) -> str | None:
    """Why the node could never run the job, by its announcement, or None."""
    if not info.compute:
        return "no compute"
    why = incapable(info, spec)
    if why is not None:
        return why
    if spec.selectors and not matches(spec.selectors, info.labels):
        return LABELS_DIFFER
    return None


def incapable(info: NodeInfo, spec: JobSpec) -> str | None:
    """Why the compute node cannot run the job whatever its labels (it lacks the engine,
    an input's storage, the verifier, the publisher, the size or the GPUs), or None."""
    engine = spec.engine.type
    if engine not in info.executors:
        if engine in info.unavailable:
            return f"the {engine} engine is not available on this node"
        return f"no {engine!r} executor"
    for volume in spec.inputs:
        if volume.source.type not in info.storage:
            return f"no {volume.source.type!r} storage"
    if spec.verifier not in info.verifiers:
        return f"no {spec.verifier!r} verifier"
    if spec.publisher not in info.publishers:
        return f"no {spec.publisher!r} publisher"
    want, total = spec.resources, info.capacity
    if total is not None:
        if want.gpu > total.gpu:
            return f"{total.gpu} GPUs, job needs {want.gpu}" if total.gpu else "no GPU"
        if want.cpu > total.cpu:
            return f"{total.cpu:g} CPUs, job needs {want.cpu:g}"
        if want.memory > total.memory:
            return "too little memory"
    return None


def _locality(info: NodeInfo, spec: JobSpec) -> int:
    if not info.data:
        return 0
    held = set(info.data)
    return sum(1 for v in spec.inputs if v.source.cid and v.source.cid in held)


def rank(
    nodes: Iterable[KnownNode],
    spec: JobSpec,
    now: float,
    rng: random.Random,
    *,
    exclude: Iterable[str] = (),
    score: Callable[[str], float] | None = None,
    limit: int | None = None,
) -> Ranking:
    """Order ``nodes`` for ``spec`` (see the module's docstring). ``exclude``: nodes
    already asked. ``score``: a node's reputation (negative counts against it).
    ``limit``: ``ready`` holds only the best this many (what a round of offers asks;
    at random among equals all the same), so a large table costs one pass, not a
    random draw per node."""
    skip = set(exclude)
    ready: list[tuple[tuple[float, float, float], str]] = []
    full: list[str] = []
    why: Counter[str] = Counter()
    known = 0
    for k in nodes:
        known += 1
        node_id = k.info.node_id
        if node_id in skip:
            continue
        reason = unsuitable(k.info, spec)
        if reason is not None:
            why[reason] += 1
            continue
        room = k.room(now)
        if room <= 0:
            full.append(node_id)
            continue
        rep = score(node_id) if score is not None else 0.0
        slots = max(k.info.max_executions, 1)
        key = (-_locality(k.info, spec), -min(rep, 0.0), -min(room / slots, 1.0))
        ready.append((key, node_id))
    ordered = _best(ready, rng, limit)
    reason = ""
    if not ready and not full:
        what = ", ".join(str(s) for s in spec.selectors) or f"engine {spec.engine.type}"
        if spec.resources.gpu and not spec.selectors:
            what += f" with {spec.resources.gpu} GPU{'s' if spec.resources.gpu > 1 else ''}"
        detail = "; ".join(f"{n}: {r}" for r, n in why.most_common(3))
        if known == 0:
            reason = f"no node matches {what} (no node known yet)"
        elif skip and not why:
            reason = f"no node matches {what} (every suitable node was asked)"
        else:
            reason = f"no node matches {what} ({known} known; {detail})"
    elif not ready:
        reason = (
            f"waiting for capacity: {len(full)} matching node{'s' if len(full) != 1 else ''} busy"
        )
    return Ranking(ready=ordered, full=tuple(full), reason=reason, known=known)


def _best(
    ready: list[tuple[tuple[float, float, float], str]], rng: random.Random, limit: int | None
) -> tuple[str, ...]:
    """The nodes best key first, in random order among equal keys; the first ``limit``
    only (None: all). Equal keys are shuffled whole, or sampled when only some fit."""
    ready.sort(key=itemgetter(0))  # stable: then shuffled within equal keys
    want = len(ready) if limit is None else max(0, min(limit, len(ready)))
    out: list[str] = []
    i = 0
    while len(out) < want:
        j = i
        while j < len(ready) and ready[j][0] == ready[i][0]:
            j += 1
        group = [n for _, n in ready[i:j]]
        room = want - len(out)
        if len(group) > room:
            out.extend(rng.sample(group, room))
        else:
            rng.shuffle(group)
            out.extend(group)
        i = j
    return tuple(out)
