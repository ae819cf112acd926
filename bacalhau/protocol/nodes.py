"""What a requester knows about the network's nodes, and how it ranks them for a job.

Pure (no clock, no I/O, randomness from the ``rng`` handed in):

- :class:`Announcer` decides when a node tells the network about itself: when it
  joins, when what it offers changes or it fills up or has room again (at most every
  ``min_gap`` seconds), and on a heartbeat, which carries the exact numbers.
- :class:`NodeTable` keeps every node's latest signed :class:`~bacalhau.models.NodeInfo`
  with the time it was heard; a node silent for ``ttl`` seconds drops out. On top of the
  node's own numbers the table counts this requester's offers since, so it does not
  send a node more than it said it would take. It expires silent nodes only when one
  can have expired (the oldest announcement is older than ``ttl``), remembers per job
  shape (:func:`shape_of`) which nodes could run it (judged again only when a node's
  announcement changes what it offers), and indexes who holds which CID, so a round
  of offers (:meth:`NodeTable.rank`) costs the same on 3 nodes as on 1,000.
- :func:`rank` orders the nodes for one job: only nodes that support it (engine,
  storage, verifier, publisher, size, GPUs) and match its selectors, then those with
  room first, then data locality, then reputation, then free capacity, then at random.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
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
    "shape_of",
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

SAMPLE = 32
"""On a table with more suitable nodes than this, a round of offers ranks a random
sample of them (at least four per node it asks), plus every node holding the job's
data, instead of the whole table (:meth:`NodeTable.rank`)."""
SHAPES = 64
"""How many job shapes a table remembers the suitable nodes of (least recently used
go first)."""

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
    slots: int | None = None
    """Our share of it once it said it was busy (None: its announced free slots).
    Other requesters fill it too, so its announcement overstates the room left for
    us: the share is what our bids held when it said so (``taken``), and from then on
    we offer it one job for each of ours that ends there, and (after
    :data:`BUSY_BACKOFF`) one probe at a time, each bid on it growing the share,
    until it announces itself again."""

    def room(self, now: float) -> int:
        """How many more offers it could take now, by what we know."""
        if now < self.busy_until:
            return 0
        if self.slots is None:
            return self.info.free_slots - self.in_flight - self.taken
        room = self.slots - self.in_flight - self.taken
        return 1 if room <= 0 and self.in_flight == 0 else room


def shape_of(spec: JobSpec) -> tuple[object, ...]:
    """What of a job decides which nodes could ever run it (:func:`unsuitable`):
    engine, input storage, verifier, publisher, size and selectors. Jobs of one shape
    fit the same nodes."""
    r = spec.resources
    return (
        spec.engine.type,
        tuple(v.source.type for v in spec.inputs),
        spec.verifier,
        spec.publisher,
        r.gpu,
        r.cpu,
        r.memory,
        spec.selectors,
    )


def _offers(info: NodeInfo) -> tuple[object, ...]:
    """What of an announcement :func:`unsuitable` looks at (not the free room, which
    changes with every job)."""
    return (
        info.compute,
        info.executors,
        info.unavailable,
        info.storage,
        info.verifiers,
        info.publishers,
        info.capacity,
        info.labels,
    )


@attrs.define(eq=False)
class Fit:
    """Which nodes of a table could run jobs of one shape, and why the others cannot."""

    spec: JobSpec
    """A job of the shape (what the nodes are judged against)."""
    ids: list[str] = attrs.Factory(list)
    """The suitable nodes (in no order: removal swaps the last one in)."""
    pos: dict[str, int] = attrs.Factory(dict)
    why: dict[str, str] = attrs.Factory(dict)
    """Each unsuitable node's reason."""

    def judge(self, info: NodeInfo) -> None:
        """(Re)judge one node by its announcement."""
        self.drop(info.node_id)
        reason = unsuitable(info, self.spec)
        if reason is None:
            self.pos[info.node_id] = len(self.ids)
            self.ids.append(info.node_id)
        else:
            self.why[info.node_id] = reason

    def drop(self, node_id: str) -> None:
        self.why.pop(node_id, None)
        i = self.pos.pop(node_id, None)
        if i is not None:
            last = self.ids.pop()
            if last != node_id:
                self.ids[i], self.pos[last] = last, i


class NodeTable:
    """Every node a requester has heard announce itself, with expiry.

    ``nodes`` holds the live nodes, as of the last :meth:`expire` (every method
    that takes ``now`` expires first). Change it only through the methods: the table
    keeps indexes over it.
    """

    def __init__(self, *, ttl: float = NODE_TTL) -> None:
        self.ttl = ttl
        self.nodes: dict[str, KnownNode] = {}
        self.declines = 1.0
        """How often offers were declined or not answered lately (a moving average; 1.0
        before any answer: a new requester expects declines)."""
        self._oldest = float("inf")
        """No node was heard before this (a lower bound): nothing can have expired
        while ``now - _oldest <= ttl``."""
        self._fits: OrderedDict[tuple[object, ...], Fit] = OrderedDict()
        self._holders: dict[str, set[str]] = {}
        """CID -> the nodes that announce holding it."""

    def __len__(self) -> int:
        return len(self.nodes)

    def update(self, info: NodeInfo, now: float) -> bool:
        """Take a node's announcement. True when it is new or has more room than before
        (a reason to offer queued jobs again)."""
        known = self.nodes.get(info.node_id)
        self._oldest = min(self._oldest, now)
        if known is None:
            self.nodes[info.node_id] = KnownNode(info=info, seen=now)
            self._index(None, info)
            return True
        if info.seq and info.seq < known.info.seq:
            return False  # reordered: an older announcement
        before, stale = known.room(now), now - known.seen > self.ttl
        old = known.info
        known.info, known.seen, known.taken, known.slots = info, now, 0, None
        if info.free_slots > 0:
            known.busy_until = float("-inf")
        self._index(old, info)
        return known.room(now) > before or stale

    def _index(self, old: NodeInfo | None, info: NodeInfo) -> None:
        """Keep the shape and CID indexes in step with a node's new announcement."""
        if old is None or _offers(old) != _offers(info):
            for fit in self._fits.values():
                fit.judge(info)
        if old is None or old.data != info.data:
            node_id = info.node_id
            for cid in old.data if old is not None else ():
                self._unhold(cid, node_id)
            for cid in info.data:
                self._holders.setdefault(cid, set()).add(node_id)

    def _unhold(self, cid: str, node_id: str) -> None:
        holders = self._holders.get(cid)
        if holders is not None:
            holders.discard(node_id)
            if not holders:
                del self._holders[cid]

    def forget(self, node_id: str) -> None:
        """Drop a node from the table now (as if it had gone silent)."""
        known = self.nodes.pop(node_id, None)
        if known is None:
            return
        for fit in self._fits.values():
            fit.drop(node_id)
        for cid in known.info.data:
            self._unhold(cid, node_id)

    def expire(self, now: float) -> None:
        """Forget the nodes not heard within ``ttl``. A scan of the table only when one
        can have expired (the oldest announcement is older than ``ttl``)."""
        if now - self._oldest <= self.ttl:
            return
        dead = [n for n, k in self.nodes.items() if now - k.seen > self.ttl]
        for node_id in dead:
            self.forget(node_id)
        self._oldest = min((k.seen for k in self.nodes.values()), default=float("inf"))

    def live(self, now: float) -> list[KnownNode]:
        """Nodes heard within ``ttl`` (the others are forgotten)."""
        self.expire(now)
        return list(self.nodes.values())

    def count(self, now: float) -> int:
        """How many nodes were heard within ``ttl``."""
        self.expire(now)
        return len(self.nodes)

    def fit(self, spec: JobSpec) -> Fit:
        """The nodes that could run jobs of ``spec``'s shape (remembered for the
        :data:`SHAPES` shapes used last; each node judged again when its announcement
        changes what it offers)."""
        shape = shape_of(spec)
        fit = self._fits.get(shape)
        if fit is not None:
            self._fits.move_to_end(shape)
            return fit
        fit = self._fits[shape] = Fit(spec)
        for known in self.nodes.values():
            fit.judge(known.info)
        if len(self._fits) > SHAPES:
            self._fits.popitem(last=False)
        return fit

    def rank(
        self,
        spec: JobSpec,
        now: float,
        rng: random.Random,
        *,
        exclude: Iterable[str] = (),
        score: Callable[[str], float] | None = None,
        limit: int | None = None,
    ) -> Ranking:
        """:func:`rank` over the live nodes, from the shape index. With a ``limit`` and
        more than :data:`SAMPLE` suitable nodes, it ranks a random sample of them (at
        least four per node wanted) plus every suitable node holding the job's data:
        the best of those, unless the sample holds fewer than ``limit`` with room, or
        a node of ill repute made the cut; then it ranks them all. ``full`` then lists
        only the busy nodes of the sample. A job reading no CID first draws nodes one
        at a time and takes the first ``limit`` that rank best possible (all room free,
        no ill repute): the same choice, at random among equals, at a draw or two."""
        self.expire(now)
        fit = self.fit(spec)
        skip = set(exclude)
        if limit is not None and limit > 0 and len(fit.ids) > SAMPLE:
            ranking = self._sampled(fit, spec, now, rng, skip, score, limit)
            if ranking is not None:
                return ranking
        pos = fit.pos
        suitable = [k for k in self.nodes.values() if k.info.node_id in pos]
        return _order(suitable, fit.why, len(self.nodes), spec, now, rng, skip, score, limit)

    def _sampled(
        self,
        fit: Fit,
        spec: JobSpec,
        now: float,
        rng: random.Random,
        skip: set[str],
        score: Callable[[str], float] | None,
        limit: int,
    ) -> Ranking | None:
        size = min(len(fit.ids), max(SAMPLE, 4 * limit) + len(skip))
        if not any(volume.source.cid for volume in spec.inputs):
            first = self._first_idle(fit.ids, now, rng, skip, score, limit, size)
            if first is not None:
                return first
        picked = dict.fromkeys(rng.sample(fit.ids, size))
        for volume in spec.inputs:
            cid = volume.source.cid
            if cid:
                picked.update((n, None) for n in self._holders.get(cid, ()) if n in fit.pos)
        nodes = [self.nodes[n] for n in picked]
        ranking = _order(nodes, {}, len(self.nodes), spec, now, rng, skip, score, limit)
        if len(ranking.ready) < limit:
            return None
        if score is not None and any(score(n) < 0 for n in ranking.ready):
            return None
        return ranking

    def _first_idle(
        self,
        ids: list[str],
        now: float,
        rng: random.Random,
        skip: set[str],
        score: Callable[[str], float] | None,
        limit: int,
        size: int,
    ) -> Ranking | None:
        """For a job reading no data held anywhere: the first ``limit`` nodes with the
        best rank a node can have (all its room free, no ill repute), drawn at random
        from ``ids`` one at a time, without repeats, up to ``size`` draws; None if
        fewer turned up (then rank a sample). Those ``limit`` are what ranking any
        sample holding them would choose at random among equals, without ranking the
        rest of a sample: a job costs a draw or two, however large the table."""
        ready: list[str] = []
        full: list[str] = []
        drawn: set[str] = set()
        for _ in range(4 * size):  # bounded: repeats are drawn again, not counted
            if len(drawn) >= size or len(ready) >= limit:
                break
            node_id = ids[rng.randrange(len(ids))]
            if node_id in drawn:
                continue
            drawn.add(node_id)
            if node_id in skip:
                continue
            known = self.nodes[node_id]
            room = known.room(now)
            if room <= 0:
                full.append(node_id)
            elif room >= max(known.info.max_executions, 1) and (
                score is None or score(node_id) >= 0
            ):
                ready.append(node_id)
        if len(ready) < limit:
            return None
        return Ranking(ready=tuple(ready), full=tuple(full), reason="", known=len(self.nodes))

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
            if known.slots is not None:
                known.slots = max(known.slots, known.taken)
        if busy:
            known.busy_until = now + BUSY_BACKOFF
            known.slots = known.taken  # full for us: as many as we hold there now

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
    suitable: list[KnownNode] = []
    why: dict[str, str] = {}
    known = 0
    for k in nodes:
        known += 1
        if k.info.node_id in skip:
            continue
        reason = unsuitable(k.info, spec)
        if reason is None:
            suitable.append(k)
        else:
            why[k.info.node_id] = reason
    return _order(suitable, why, known, spec, now, rng, skip, score, limit)


def _order(
    suitable: Iterable[KnownNode],
    unfit: Mapping[str, str],
    known: int,
    spec: JobSpec,
    now: float,
    rng: random.Random,
    skip: set[str],
    score: Callable[[str], float] | None,
    limit: int | None,
) -> Ranking:
    """:func:`rank` of nodes already found suitable (``unfit``: the others' reasons,
    ``known``: how many nodes there are in all)."""
    ready: list[tuple[tuple[float, float, float], str]] = []
    full: list[str] = []
    for k in suitable:
        node_id = k.info.node_id
        if node_id in skip:
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
        why = Counter(r for n, r in unfit.items() if n not in skip)
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
