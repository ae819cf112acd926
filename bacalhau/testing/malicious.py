"""Malicious nodes for tests: nodes that lie, copy, replay or forge, and a referee.

A malicious node is an ordinary :class:`~bacalhau.Node` whose ``deterministic``
verifier has been swapped for a cheating one. Four kinds of cheat, each the
attack the deterministic verifier must defeat:

========== ===================================================================
``liar``    runs the job, changes its results (each liar differently; with
            ``collude=True`` all liars the same way), proposes them honestly.
``copier``  does not run the job: it waits to overhear another node's sealed
            proposal for the same job and sends it as its own.
``replayer`` works once for a requester, then answers every later job of that
            requester with the proposal it sealed for that first job.
``forger``  lies like a liar, and forges the requester's acceptance: it tells
            the other chosen nodes their results were accepted (signed by
            itself, or in an envelope claiming the requester's key), and tells
            the requester it has published.
========== ===================================================================

Proposals travel directly to the requester, never broadcast, so a copier
cannot hear them on its own; a :class:`Wiretap` on the in-memory hub plays the
eavesdropper and hands it what crosses the wire (the worst case: an attacker
on the path).

:func:`run_trial` puts it all together: a network where some nodes cheat, many
jobs, and a :class:`Ledger` that records what every node really held and
published, so the outcome can be judged from outside the protocol::

    report = await run_trial("copier", nodes=9, malicious=3, jobs=50, seed=1)
    assert report.wrong_accepted == 0 and not report.unexpected
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from ..cid import cid_str, make_cid
from ..convert import to_data
from ..errors import BacalhauError, TransportError, VerificationError
from ..identity import node_id_from_public_key, public_key_from_node_id
from ..models import Deal, ExecutionState, JobSpec, JobState, StorageRef
from ..node.plugins import Plugins, default_plugins
from ..protocol.messages import ResultsAccepted, ResultsPublished
from ..publisher.base import Publisher
from ..verifier.base import Verifier
from ..verifier.canonical import hash_tree
from ..verifier.deterministic import DeterministicVerifier
from ..wire import encode_envelope, pack, unpack

if TYPE_CHECKING:
    from ..node.services import NodeServices
    from ..protocol.requester import RequesterConfig
    from ..transport.memory import FrameFilter

__all__ = [
    "BEHAVIOURS",
    "CopyingVerifier",
    "ForgingVerifier",
    "Ledger",
    "LyingVerifier",
    "ReplayingVerifier",
    "RiggedPlugins",
    "TrialReport",
    "Wiretap",
    "rigged",
    "run_trial",
]

log = logging.getLogger("bacalhau.testing.malicious")

_EVENT = "event"  # the node's protocol name for lifecycle frames


# --- the eavesdropper -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OverheardProposal:
    job_id: str
    sender: str
    requester: str
    proposal: bytes


@attrs.define(eq=False, kw_only=True)
class Wiretap:
    """A :class:`~bacalhau.transport.memory.Faults` filter that records what crosses the hub.

    Pass it as ``Faults(filter=wiretap)``; it never drops anything itself (``chain``
    is consulted for that). Signatures are not checked: an eavesdropper reads
    whatever is sent.
    """

    chain: FrameFilter | None = None
    proposals: list[OverheardProposal] = attrs.Factory(list)
    jobs: dict[str, tuple[str, int]] = attrs.Factory(dict)
    """job id -> (requester, concurrency), from ``JobCreated``."""
    chosen: dict[str, set[str]] = attrs.Factory(dict)
    """job id -> nodes the requester sent ``BidAccepted``."""
    frames: int = 0
    _changed: anyio.Event = attrs.Factory(anyio.Event)

    def __call__(self, src: str, dst: str, kind: str, frame: bytes) -> bool:
        # a frame it cannot read (block exchange, hostile junk) has nothing to overhear
        with contextlib.suppress(BacalhauError, ValueError, KeyError, TypeError, AttributeError):
            self._record(src, dst, kind, frame)
        return self.chain(src, dst, kind, frame) if self.chain is not None else True  # type: ignore[arg-type]

    def _record(self, src: str, dst: str, kind: str, frame: bytes) -> None:
        self.frames += 1
        if kind == "request":
            outer = unpack(frame)
            if not (isinstance(outer, list) and len(outer) == 2 and outer[0] == _EVENT):
                return
            frame = outer[1]
        signed, _signature = unpack(frame)
        _version, msg_kind, public, _msg_id, _sent_at, body = unpack(signed)
        if msg_kind == "ResultsProposed":
            self.proposals.append(
                OverheardProposal(
                    job_id=body["job_id"],
                    sender=node_id_from_public_key(public),
                    requester=dst,
                    proposal=body["proposal"],
                )
            )
        elif msg_kind == "JobCreated":
            concurrency = int(body["spec"].get("deal", {}).get("concurrency", 1))
            self.jobs[body["job_id"]] = (node_id_from_public_key(public), concurrency)
        elif msg_kind == "BidAccepted":
            self.chosen.setdefault(body["job_id"], set()).add(body["node_id"])
        else:
            return
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait until ``predicate()`` holds (True) or ``within`` seconds pass (False)."""
        with anyio.move_on_after(within):
            while not predicate():
                await self._changed.wait()
            return True
        return predicate()


# --- cheating verifiers -----------------------------------------------------------------------


def _tamper(results_dir: Path, mark: str) -> None:
    """Make the results wrong: append ``mark`` to stdout (what a cheat would publish)."""
    with (results_dir / "stdout").open("ab") as f:
        f.write(f"\n[{mark}]\n".encode())


class _Cheat(Verifier):
    """A ``deterministic`` verifier that cheats when proposing; opening stays honest."""

    name = "deterministic"

    def __init__(self, inner: Verifier) -> None:
        self.inner = inner
        self.cheated = 0

    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        return self.inner.open(job_id=job_id, node_id=node_id, proposal=proposal)


class LyingVerifier(_Cheat):
    """Proposes (honestly sealed) results it has changed; ``collude``: all liars agree."""

    def __init__(self, inner: Verifier, *, collude: bool = False) -> None:
        super().__init__(inner)
        self.collude = collude

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        _tamper(results_dir, "made up" if self.collude else f"made up by {node_id[-8:]}")
        self.cheated += 1
        return await self.inner.propose(
            job_id=job_id, node_id=node_id, results_dir=results_dir, requester_key=requester_key
        )


class CopyingVerifier(_Cheat):
    """Skips the work and sends another node's overheard proposal for the same job.

    Args:
        wiretap: where overheard proposals come from.
        patience: seconds to wait for something to copy; then the execution fails.
    """

    def __init__(self, inner: Verifier, wiretap: Wiretap, *, patience: float = 1.0) -> None:
        super().__init__(inner)
        self.wiretap = wiretap
        self.patience = patience

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        _tamper(results_dir, "not run: copied")

        def victim() -> OverheardProposal | None:
            return next(
                (p for p in self.wiretap.proposals if p.job_id == job_id and p.sender != node_id),
                None,
            )

        await self.wiretap.wait_for(lambda: victim() is not None, self.patience)
        found = victim()
        if found is None:
            raise VerificationError(f"copier found no proposal to copy within {self.patience:g}s")
        self.cheated += 1
        return found.proposal


class ReplayingVerifier(_Cheat):
    """Works honestly once per requester, then replays that first proposal for every job."""

    def __init__(self, inner: Verifier) -> None:
        super().__init__(inner)
        self.stash: dict[bytes, tuple[str, bytes]] = {}

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        if requester_key in self.stash:
            _tamper(results_dir, "not run: replayed")
            self.cheated += 1
            return self.stash[requester_key][1]
        proposal = await self.inner.propose(
            job_id=job_id, node_id=node_id, results_dir=results_dir, requester_key=requester_key
        )
        self.stash[requester_key] = (job_id, proposal)
        return proposal


class ForgingVerifier(_Cheat):
    """Lies, and forges the requester's acceptance of the other chosen nodes' results.

    For each other node chosen for the job it sends ``ResultsAccepted`` signed by
    itself, and one in an envelope claiming the requester's key (so its signature
    cannot verify); then it tells the requester it published results it was never
    asked to publish. ``forged`` counts the frames it sent.
    """

    def __init__(
        self, inner: Verifier, wiretap: Wiretap, services: NodeServices, *, patience: float = 0.5
    ) -> None:
        super().__init__(inner)
        self.wiretap = wiretap
        self.services = services
        self.patience = patience
        self.forged = 0

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        _tamper(results_dir, f"made up by forger {node_id[-8:]}")
        tap = self.wiretap
        requester, concurrency = tap.jobs.get(job_id, ("", 1))
        await tap.wait_for(lambda: len(tap.chosen.get(job_id, ())) >= concurrency, self.patience)
        identity = self.services.identity
        now = time.time()
        for other in sorted(tap.chosen.get(job_id, set()) - {node_id}):
            body = to_data(ResultsAccepted(job_id, other))
            signed_by_me, _ = encode_envelope(identity, "ResultsAccepted", body, now=now)
            await self._send(other, signed_by_me)
            if requester:
                await self._send(other, _claiming(requester, identity.sign, body, now))
        if requester:
            fake = StorageRef(type="ipfs", cid=cid_str(make_cid(b"forged results")))
            claim = to_data(
                ResultsPublished(job_id=job_id, ref=fake, exit_code=0, stdout="all good", stderr="")
            )
            frame, _ = encode_envelope(identity, "ResultsPublished", claim, now=now)
            await self._send(requester, frame)
        self.cheated += 1
        return await self.inner.propose(
            job_id=job_id, node_id=node_id, results_dir=results_dir, requester_key=requester_key
        )

    async def _send(self, peer: str, frame: bytes) -> None:
        try:
            await self.services.request(peer, _EVENT, frame, timeout=2.0)
            self.forged += 1
        except TransportError as exc:
            log.debug("forged frame to %s not delivered: %s", peer[-8:], exc)


def _claiming(sender: str, sign: Callable[[bytes], bytes], body: Any, now: float) -> bytes:
    """An envelope that names ``sender``'s key but carries someone else's signature."""
    signed = pack(
        [1, "ResultsAccepted", public_key_from_node_id(sender), os.urandom(16), now, body]
    )
    return pack([signed, sign(signed)])


# --- the referee ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Publication:
    job_id: str
    node_id: str
    digest: bytes
    accepted: bool
    """Whether the job's requester had accepted this node's results when it published."""


@attrs.define(eq=False, kw_only=True)
class Ledger:
    """What each node really held (at proposal time) and published, seen from outside.

    ``is_accepted(job_id, node_id)`` tells whether the requester has accepted
    that node's results; :func:`run_trial` wires it to the network.
    """

    held: dict[tuple[str, str], bytes] = attrs.Factory(dict)
    published: list[Publication] = attrs.Factory(list)
    is_accepted: Callable[[str, str], bool] = lambda job_id, node_id: False


class _Audited(Verifier):
    name = "deterministic"

    def __init__(self, inner: Verifier, ledger: Ledger) -> None:
        self.inner, self.ledger = inner, ledger

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        proposal = await self.inner.propose(
            job_id=job_id, node_id=node_id, results_dir=results_dir, requester_key=requester_key
        )
        self.ledger.held[job_id, node_id] = await anyio.to_thread.run_sync(hash_tree, results_dir)
        return proposal

    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        return self.inner.open(job_id=job_id, node_id=node_id, proposal=proposal)


class _AuditedPublisher(Publisher):
    def __init__(self, inner: Publisher, ledger: Ledger, node_id: str) -> None:
        self.inner, self.ledger, self.node_id = inner, ledger, node_id
        self.name = inner.name  # type: ignore[misc]

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        digest = await anyio.to_thread.run_sync(hash_tree, results_dir)
        accepted = self.ledger.is_accepted(job_id, self.node_id)
        self.ledger.published.append(
            Publication(job_id=job_id, node_id=self.node_id, digest=digest, accepted=accepted)
        )
        return await self.inner.publish(job_id, execution_id, results_dir)


# --- rigged nodes -----------------------------------------------------------------------------

Rig = Callable[[Plugins, "NodeServices"], None]


@attrs.define
class RiggedPlugins(Plugins):
    """The node's default plugins, changed by ``rig(plugins, services)`` as the node starts.

    Pass as a node's ``plugins`` option. The default plugins need the running node
    (its data dir, its block exchange), so they are made in :meth:`start`, in place:
    the node holds these registries from before it starts.
    """

    rig: Rig | None = None

    async def start(self, services: NodeServices) -> None:
        base = default_plugins(services)
        for name in ("executors", "storage", "verifiers", "publishers"):
            getattr(self, name).update(getattr(base, name))
        self.data = base.data
        if self.rig is not None:
            self.rig(self, services)
        await super().start(services)


BEHAVIOURS = ("honest", "liar", "colluder", "copier", "replayer", "forger")


def rigged(
    behaviour: str,
    *,
    wiretap: Wiretap | None = None,
    ledger: Ledger | None = None,
    patience: float = 1.0,
) -> RiggedPlugins:
    """Plugins for a node that behaves as ``behaviour`` (one of :data:`BEHAVIOURS`).

    ``copier`` and ``forger`` need the ``wiretap`` installed on the hub. With a
    ``ledger``, the node's verifier and publishers report to it.
    """
    if behaviour not in BEHAVIOURS:
        raise BacalhauError(f"unknown behaviour {behaviour!r}: use one of {', '.join(BEHAVIOURS)}")
    if behaviour in ("copier", "forger") and wiretap is None:
        raise BacalhauError(f"a {behaviour} needs a wiretap to overhear the network")

    def rig(plugins: Plugins, services: NodeServices) -> None:
        honest = DeterministicVerifier(services)
        verifier: Verifier = honest
        if behaviour in ("liar", "colluder"):
            verifier = LyingVerifier(honest, collude=behaviour == "colluder")
        elif behaviour == "copier":
            assert wiretap is not None
            verifier = CopyingVerifier(honest, wiretap, patience=patience)
        elif behaviour == "replayer":
            verifier = ReplayingVerifier(honest)
        elif behaviour == "forger":
            assert wiretap is not None
            verifier = ForgingVerifier(honest, wiretap, services, patience=min(patience, 0.5))
        if ledger is not None:
            verifier = _Audited(verifier, ledger)
            for name, publisher in list(plugins.publishers.items()):
                plugins.publishers[name] = _AuditedPublisher(publisher, ledger, services.node_id)
        plugins.verifiers["deterministic"] = verifier
        plugins.verifiers["audit"] = verifier  # the same proposals; audits decide

    return RiggedPlugins(rig=rig)


def cheat_of(plugins: Plugins) -> _Cheat | None:
    """The cheating verifier inside a rigged node's plugins, if any."""
    verifier = plugins.verifiers.get("deterministic")
    if isinstance(verifier, _Audited):
        verifier = verifier.inner
    return verifier if isinstance(verifier, _Cheat) else None


# --- trials -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TrialReport:
    """The outcome of :func:`run_trial`, judged from the :class:`Ledger`.

    ``honest_majority`` counts jobs where at least ``confidence`` honest nodes
    were chosen; ``unexpected`` lists jobs whose outcome broke the rule
    "completed with the honest result if and only if enough honest nodes were
    chosen" (only meaningful for cheats that cannot agree with each other).
    """

    behaviour: str
    jobs: int
    completed: int
    failed: int
    honest_majority: int
    wrong_accepted: int
    wrong_published: int
    published_unaccepted: int
    cheats_rejected: int
    job_failures: dict[str, int]
    rejections: dict[str, int]
    forged_sent: int
    forged_dropped: int
    invalid_dropped: int
    identical_cids: bool
    unexpected: tuple[str, ...]
    seconds: float

    def rates(self) -> dict[str, float]:
        n = max(self.jobs, 1)
        return {
            "completed": self.completed / n,
            "honest_majority": self.honest_majority / n,
            "wrong_accepted": self.wrong_accepted / n,
            "wrong_published": self.wrong_published / n,
        }


def _reason_kind(reason: str) -> str:
    reason = reason.removeprefix("invalid proposal: ").removeprefix("job failed: ")
    for cut in (":", " (", ";"):
        reason = reason.split(cut, 1)[0]
    return reason.strip()


async def run_trial(
    behaviour: str,
    *,
    nodes: int = 9,
    malicious: int = 3,
    jobs: int = 50,
    deal: Deal | None = None,
    seed: int = 0,
    retries: int = 0,
    requester: RequesterConfig | None = None,
    patience: float = 1.0,
    same_output: bool | None = None,
) -> TrialReport:
    """Run ``jobs`` deterministic jobs on a network where ``malicious`` nodes cheat.

    Node 0 (honest) requests every job; the cheats are the last ``malicious``
    nodes. A warm-up job, in which every node takes part, runs first (it gives a
    replayer something to replay) and is not counted.

    Args:
        behaviour: one of :data:`BEHAVIOURS`.
        deal: default ``Deal(concurrency=3, confidence=2, min_bids=nodes)``.
        retries: the jobs' retry budget (0: the first chosen nodes decide).
        requester: the requester's config (e.g. ``selection="reputation"``).
        same_output: every job has the same output (default: only for replayers,
            whose stale proposals then carry the right digest for the wrong job).
    """
    from ..network import Network
    from ..protocol.requester import RequesterConfig
    from ..transport.memory import Faults

    deal = deal or Deal(concurrency=3, confidence=2, min_bids=nodes)
    config = requester or RequesterConfig(bid_timeout=5, execution_grace=3, publish_timeout=10)
    if same_output is None:
        same_output = behaviour == "replayer"
    wiretap, ledger = Wiretap(), Ledger()
    options = [{"plugins": rigged("honest", ledger=ledger)} for _ in range(nodes - malicious)]
    options += [
        {"plugins": rigged(behaviour, wiretap=wiretap, ledger=ledger, patience=patience)}
        for _ in range(malicious)
    ]
    started = time.perf_counter()
    async with Network.in_memory(
        nodes, seed=seed, faults=Faults(filter=wiretap), requester=config, per_node_options=options
    ) as net:
        requester_node = net.nodes[0]
        cheating = net.nodes[nodes - malicious :] if behaviour != "honest" else []
        honest = {n.node_id for n in net.nodes} - {n.node_id for n in cheating}

        def is_accepted(job_id: str, node_id: str) -> bool:
            job = requester_node.requester.jobs.get(job_id)
            ex = job.executions.get(node_id) if job else None
            return ex is not None and ex.state in (
                ExecutionState.RESULTS_ACCEPTED,
                ExecutionState.PUBLISHED,
            )

        ledger.is_accepted = is_accepted

        def spec(i: int, job_deal: Deal) -> JobSpec:
            out = "the answer is 42\n" if same_output else f"answer to job {i}\n"
            return JobSpec.noop(
                stdout=out,
                verifier="deterministic",
                publisher="ipfs",
                deal=job_deal,
                retries=retries,
                timeout=5,
            )

        warm = Deal(concurrency=nodes, confidence=1, min_bids=nodes)
        await requester_node.run_job(spec(-1, warm), timeout=60)
        results = [await requester_node.run_job(spec(i, deal), timeout=60) for i in range(jobs)]
        await net.wait_idle()
        stats = Counter[str]()
        for node in net.nodes:
            stats.update(node.stats)
        cheats = [c for c in (cheat_of(n.plugins) for n in net.nodes[nodes - malicious :]) if c]
        forged_sent = sum(getattr(c, "forged", 0) for c in cheats)
    return _judge(
        behaviour, results, honest, ledger, deal, stats, forged_sent, time.perf_counter() - started
    )


def _judge(
    behaviour: str,
    results: list[Any],
    honest: set[str],
    ledger: Ledger,
    deal: Deal,
    stats: Counter[str],
    forged_sent: int,
    seconds: float,
) -> TrialReport:
    need = max(deal.confidence, 1)
    failures: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    unexpected: list[str] = []
    completed = majority = wrong_accepted = cheats_rejected = 0
    identical = True
    job_ids = {r.job_id for r in results}
    for r in results:
        chosen = [e.node_id for e in r.executions]
        honest_digests = {
            ledger.held[r.job_id, n] for n in chosen if n in honest and (r.job_id, n) in ledger.held
        }
        if len(honest_digests) > 1:
            unexpected.append(f"{r.job_id}: honest nodes disagree")
        has_majority = sum(n in honest for n in chosen) >= need
        majority += has_majority
        for e in r.executions:
            if e.state in (ExecutionState.RESULTS_ACCEPTED, ExecutionState.PUBLISHED) and (
                e.node_id not in honest
                or ledger.held.get((r.job_id, e.node_id)) not in honest_digests
            ):
                wrong_accepted += 1
            if e.state is ExecutionState.RESULTS_REJECTED:
                rejections[_reason_kind(e.reason)] += 1
                cheats_rejected += e.node_id not in honest
        if r.state is JobState.COMPLETED:
            completed += 1
            cids = {e.published.cid for e in r.accepted if e.published}
            identical &= len(cids) == 1
        else:
            failures[_reason_kind(r.reason)] += 1
        if (r.state is JobState.COMPLETED) != has_majority:
            unexpected.append(
                f"{r.job_id}: {r.state.value} with "
                f"{sum(n in honest for n in chosen)} honest of {len(chosen)} "
                f"chosen ({r.reason})"
            )
    counted = [p for p in ledger.published if p.job_id in job_ids]
    honest_of = {(j, n): d for (j, n), d in ledger.held.items() if n in honest}
    wrong_published = sum(
        1
        for p in counted
        if p.node_id not in honest
        or p.digest not in {d for (j, _), d in honest_of.items() if j == p.job_id}
    )
    return TrialReport(
        behaviour=behaviour,
        jobs=len(results),
        completed=completed,
        failed=len(results) - completed,
        honest_majority=majority,
        wrong_accepted=wrong_accepted,
        wrong_published=wrong_published,
        published_unaccepted=sum(not p.accepted for p in counted),
        cheats_rejected=cheats_rejected,
        job_failures=dict(failures),
        rejections=dict(rejections),
        forged_sent=forged_sent,
        forged_dropped=stats["dropped_forged"],
        invalid_dropped=stats["dropped_invalid"],
        identical_cids=identical,
        unexpected=tuple(unexpected),
        seconds=seconds,
    )
