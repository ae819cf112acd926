"""The requester's scheduling: whom to offer a job, and the queue of jobs waiting for room.

Pure, part of :class:`~bacalhau.protocol.requester.RequesterState` (a mixin, kept
apart so each file stays small). The requester keeps a :class:`NodeTable` from the
nodes' signed announcements. For a job it asks only as many nodes as the deal needs
(``max(min_bids, concurrency + offer_headroom)``, the headroom only while offers are
being declined; every matching node for ``target="all"``), best-ranked first
(:func:`~bacalhau.protocol.nodes.rank`); nodes not chosen hear nothing of the job. It
falls back to a broadcast while it knows fewer nodes than that, and always broadcasts
with ``offers="broadcast"``.

A job that finds no room waits in the queue (state ``queued``, with the reason in its
history) and is offered again when a node announces room, when one of this
requester's executions ends, and every ``retry_interval`` seconds, until its
``queue_timeout``. A node that is busy declines with ``busy``: it is skipped for a
moment and the job asks another node or waits; it never costs the job a retry.

A job no known node can ever run does not wait: when every known compute node has
declined it (other than ``busy``), it fails at once with their reasons. When their
announcements alone say so (no engine, storage, verifier, publisher, size or GPUs for
it), the job is broadcast so each node answers for itself first. Selectors are not such
a reason: a job only they keep from every node waits for a matching node to join.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

from ..models import ExecutionState, JobSpec, JobState
from .commands import Broadcast, CancelTimers, Command, JobChanged, Send, SetTimer
from .messages import BidDeclined, JobCreated, NodeAnnounced, ResultsAccepted
from .nodes import LABELS_DIFFER, NodeTable, check_announced, incapable
from .timers import JobAction, RequesterTimer, TimerKey

if TYPE_CHECKING:
    from .requester import RequesterConfig
    from .requester_jobs import Execution, RequesterJob

__all__ = ["Scheduling"]

S, X = JobState, ExecutionState
REQUEUE_KEY = TimerKey("", RequesterTimer.REQUEUE)
DRAIN_MISSES = 16
"""A drain stops after this many queued jobs in a row found no node (the rest would not)."""


class Scheduling:
    """Offers, the node table and the queue. Mixed into the requester's state."""

    node_id: str
    seal_key: bytes
    config: RequesterConfig
    rng: random.Random
    jobs: dict[str, RequesterJob]
    nodes: NodeTable
    queue: OrderedDict[str, None]
    _requeue_at: float | None

    def _init_scheduling(self) -> None:
        self.nodes = NodeTable(ttl=self.config.node_ttl)
        self.queue = OrderedDict()
        self._requeue_at = None

    # hooks the requester provides
    def score(self, node_id: str) -> float:
        raise NotImplementedError

    def move(self, job: RequesterJob, action: JobAction) -> None:
        raise NotImplementedError

    def _finish(
        self, job: RequesterJob, action: JobAction, reason: str, now: float, out: list[Command]
    ) -> None:
        raise NotImplementedError

    def _decide(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        raise NotImplementedError

    def _accept(self, job: RequesterJob, ex: Execution, now: float, out: list[Command]) -> None:
        raise NotImplementedError

    @staticmethod
    def move_execution(execution: Execution, to: ExecutionState) -> None:
        raise NotImplementedError

    def _count(self, node_id: str, outcome: str) -> None:
        raise NotImplementedError

    def _note(
        self,
        job: RequesterJob,
        now: float,
        kind: str,
        node: str | None,
        detail: str,
        out: list[Command],
    ) -> None:
        raise NotImplementedError

    def _progress(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        raise NotImplementedError

    def _deadline(self, spec: JobSpec) -> float:
        """The job's overall deadline: its queue timeout plus the time to run it."""
        if self.config.job_timeout is not None:
            return self.config.job_timeout
        return spec.queue_timeout + self.config.job_deadline(spec)

    # --- announcements -------------------------------------------------------------------

    def _announced(self, sender: str, msg: NodeAnnounced, now: float, out: list[Command]) -> None:
        check_announced(msg.info, sender)
        if self.nodes.update(msg.info, now) and self.queue:
            self._drain(now, out)

    # --- offers --------------------------------------------------------------------------

    def wanted(self, job: RequesterJob) -> int:
        """How many nodes a round of offers asks."""
        deal = job.spec.deal
        return max(deal.min_bids, deal.concurrency + self.config.offer_headroom)

    def _schedule(self, job: RequesterJob, now: float, out: list[Command]) -> bool:
        """Offer the job to more nodes if it needs them. False: nobody to ask (queued)."""
        if job.state not in (S.QUEUED, S.BIDDING, S.RUNNING):
            return True
        if job.broadcast:
            return True
        known = self.nodes.count(now)
        ops = job.spec.target == "all"
        if self.config.offers == "broadcast" or (
            not job.asked and (not known if ops else known < self.wanted(job))
        ):
            return self._broadcast(job, now, out)
        if ops:
            return self._offer_all(job, now, out)
        deal = job.spec.deal
        bids = job.count(X.BID)
        running = job.count(X.ACCEPTED, X.PROPOSED)
        pending = sum(1 for answered in job.asked.values() if not answered)
        need_nodes = deal.concurrency - running
        if need_nodes <= 0 or job.acceptances_left <= 0:
            return True
        target = need_nodes if job.state is S.RUNNING else max(deal.min_bids, need_nodes)
        if job.asked and bids + pending >= target:
            return True  # enough answers are in or on their way
        # a spare node in the first round only, and only while declines are being seen
        spare = not job.asked and self.nodes.spare_helps()
        headroom = self.config.offer_headroom if spare else 0
        more = target + headroom - bids - pending
        asked = [*job.asked, *job.executions]
        ranking = self.nodes.rank(
            job.spec, now, self.rng, exclude=asked, score=self.score, limit=max(more, 0)
        )
        chosen = ranking.ready[:more]
        for node in chosen:
            self._offer(job, node, now, out)
        if chosen or pending:
            return True
        if bids and bids >= deal.min_bids:
            return True
        if not bids and self._nobody_can(job, now, out):
            return True
        reason = ranking.reason
        if bids:
            reason = f"waiting for min_bids: {bids} of {deal.min_bids} bids ({reason})"
        elif job.declined and not ranking.full:
            why = "; ".join(f"{n[-8:]}: {r}" for n, r in list(job.declined.items())[:3])
            reason = f"no node would take it ({why})"
        self._wait(job, reason, now, out)
        return False

    def _retry_publish(self, job: RequesterJob, why: str, now: float, out: list[Command]) -> bool:
        """No accepted result was published (each winner failed to, or the publish
        deadline passed): run the job again on other nodes (passed-over bidders first)
        while ``spec.retries`` allows. False: no retry left (or an ops or audit job, whose
        runs are not interchangeable), so the caller fails the job."""
        if job.acceptances_left <= 0 or job.spec.target == "all" or job.audit is not None:
            return False
        self.move(job, JobAction.RETRY)
        out.append(CancelTimers(job_id=job.job_id, name=RequesterTimer.PUBLISH))
        self._note(job, now, "retrying", self.node_id, why, out)
        self._schedule(job, now, out)
        self._progress(job, now, out)
        return True

    def _offer(self, job: RequesterJob, node: str, now: float, out: list[Command]) -> None:
        job.asked[node] = False
        job.window_open = False  # targeted offers give no node a head start: no window
        self.nodes.offered(node)
        self.queue.pop(job.job_id, None)
        if job.state is S.QUEUED:
            self.move(job, JobAction.OFFER)
            out.append(JobChanged(job.job_id))
        if len(job.asked) == 1 or not job.bidding_closed:
            out.append(
                SetTimer(TimerKey(job.job_id, RequesterTimer.BIDS), now + self.config.bid_timeout)
            )
        job.bidding_closed = False
        out.append(
            Send(
                node,
                JobCreated(
                    job_id=job.job_id,
                    spec=job.spec,
                    seal_key=self.seal_key,
                    created_at=job.created_at,
                ),
            )
        )

    def _offer_all(self, job: RequesterJob, now: float, out: list[Command]) -> bool:
        """Ops job: every matching node, each once (busy ones again when they have room)."""
        if not job.targets:
            ranking = self.nodes.rank(job.spec, now, self.rng)
            job.targets = sorted([*ranking.ready, *ranking.full])
            if not job.targets:
                self._wait(job, ranking.reason, now, out)
                return False
            self._note(job, now, "targets", self.node_id, f"{len(job.targets)} nodes", out)
        todo = [n for n in job.targets if n not in job.asked and n not in job.executions]
        offered = False
        for node in todo:
            known = self.nodes.get(node)
            if known is not None and known.room(now) <= 0:
                continue
            self._offer(job, node, now, out)
            offered = True
        if todo and not offered and not any(not a for a in job.asked.values()):
            self._wait(job, f"waiting for capacity on {len(todo)} target nodes", now, out)
            return False
        return True

    def _broadcast(self, job: RequesterJob, now: float, out: list[Command]) -> bool:
        job.broadcast = True
        self.queue.pop(job.job_id, None)
        if job.state is S.QUEUED:
            self.move(job, JobAction.OFFER)
        job.bidding_closed = False
        out.append(
            Broadcast(
                JobCreated(
                    job_id=job.job_id,
                    spec=job.spec,
                    seal_key=self.seal_key,
                    created_at=job.created_at,
                )
            )
        )
        out.append(
            SetTimer(TimerKey(job.job_id, RequesterTimer.BIDS), now + self.config.bid_timeout)
        )
        if job.window_open:
            key = TimerKey(job.job_id, RequesterTimer.WINDOW)
            out.append(SetTimer(key, now + self.config.bid_window))
        return True

    # --- jobs no node can run ---------------------------------------------------------

    def _cannot_run(self, job: RequesterJob, now: float, *, heard: bool) -> str | None:
        """Why no node this requester knows can ever run the job, or None while one might.

        A node can never run it when it declined the job other than ``busy``, or (unless
        ``heard``, which asks for every node's own answer) when its announcement lacks
        what the job needs: engine, storage, verifier, publisher, size, GPUs. Anything
        else leaves hope, and the job waits queued: a node that is busy, silent, not
        asked yet, or passed over only by the job's selectors (a node with those labels
        may join), no compute node known at all, or a bid in hand. Ops jobs
        (``target="all"``) keep their own rules.
        """
        if job.executions or job.acceptances or job.spec.target == "all":
            return None
        if any(r.startswith(LABELS_DIFFER) for r in job.declined.values()):
            return None  # a node its selectors passed over: one with those labels may join
        why: dict[str, tuple[str, bool]] = {}
        for known in self.nodes.live(now):
            info = known.info
            if not info.compute:
                continue
            declined = job.declined.get(info.node_id)
            reason = declined or (None if heard else incapable(info, job.spec))
            if reason is None:
                return None
            why[info.node_id] = (reason, declined is not None)
        if not why:
            return None
        for node, reason in job.declined.items():  # nodes a broadcast reached
            why.setdefault(node, (reason, True))
        counts = Counter(why.values())
        parts = [
            f"{reason} ({n} node{'s' if n != 1 else ''}{' declined' if declined else ''})"
            for (reason, declined), n in counts.most_common(5)
        ]
        more = len(counts) - len(parts)
        return (
            f"no known node can run this {job.spec.engine.type} job: "
            + "; ".join(parts)
            + (f"; and {more} other reasons" if more > 0 else "")
        )

    def _nobody_can(self, job: RequesterJob, now: float, out: list[Command]) -> bool:
        """Targeted offers found no node to ask. True if that ended the job, or if the
        job was broadcast instead: when every known node lacks what it needs by its
        announcement, each is asked for its own answer (an announcement may be older
        than an engine that started, or a plugin added since), and the job fails as
        soon as they all decline (:meth:`_declined`)."""
        if (why := self._cannot_run(job, now, heard=True)) is not None:
            self._finish(job, JobAction.FAIL, why, now, out)
            return True
        if self._cannot_run(job, now, heard=False) is not None:
            return self._broadcast(job, now, out)
        return False

    def _declined(
        self,
        job: RequesterJob,
        sender: str,
        msg: BidDeclined,
        most: int,
        now: float,
        out: list[Command],
    ) -> None:
        """``sender`` will not run the live job (``most``: declines worth recording).

        A busy node may be asked again once it has room. Any other decline counts the
        node out for this job: a targeted job asks another node (or fails when no known
        node can run it); a broadcast job fails once every known node declined and every
        node the requester could reach when the job came has answered (the others, if
        any, have until the bid timeout).
        """
        if sender in job.asked:
            self.nodes.answered(sender, bid=False, busy=msg.busy, now=now)
            job.asked[sender] = True
            if msg.busy:
                del job.asked[sender]
        if not msg.busy and sender not in job.declined and len(job.declined) < most:
            job.declined[sender] = msg.reason[:500]
            self._note(job, now, "declined", sender, msg.reason[:500], out)
        if not job.broadcast:
            self._schedule(job, now, out)
            self._progress(job, now, out)
        elif not msg.busy:
            heard = len(job.declined) - (self.node_id in job.declined)
            why = self._cannot_run(job, now, heard=True)
            if 0 <= job.peers <= heard and why is not None:
                self._finish(job, JobAction.FAIL, why, now, out)

    # --- the queue -----------------------------------------------------------------------

    def _wait(self, job: RequesterJob, reason: str, now: float, out: list[Command]) -> None:
        """Put the job in the queue (it keeps any bids it holds)."""
        if job.state in (S.QUEUED, S.BIDDING):
            self.move(job, JobAction.QUEUE)
        self.queue[job.job_id] = None
        if reason != job.waiting:
            job.waiting = reason
            self._note(job, now, "queued", self.node_id, reason, out)
        self._arm(now, out)

    def _arm(self, now: float, out: list[Command]) -> None:
        at = now + self.config.retry_interval
        if self.queue and (self._requeue_at is None or self._requeue_at <= now):
            self._requeue_at = at
            out.append(SetTimer(REQUEUE_KEY, at))

    def _drain(self, now: float, out: list[Command], *, full: bool = False) -> None:
        """Offer queued jobs again, oldest first, while nodes have room.

        It stops after ``DRAIN_MISSES`` jobs in a row found no node and, unless ``full``
        (the periodic retry), after its first job once no known compute node has room
        left: the jobs after it would only be put back (the periodic retry also refreshes
        their reasons, and tries those that need no room, such as broadcasts).
        """
        misses = 0
        visited: set[str] = set()
        while misses < DRAIN_MISSES:
            if visited and not full and not self._room_anywhere(now):
                break
            # the jobs before ``misses`` were visited and stay queued; the rest are new
            job_id = next(itertools.islice(self.queue, misses, None), None)
            if job_id is None or job_id in visited:
                break
            visited.add(job_id)
            job = self.jobs.get(job_id)
            if job is None or job.state not in (S.QUEUED, S.BIDDING, S.RUNNING):
                self.queue.pop(job_id, None)
                continue
            if job.broadcast:  # a broadcast that found nobody: start over
                job.broadcast = False
                job.asked.clear()
            if self._schedule(job, now, out):
                self.queue.pop(job_id, None)
                misses = 0
                self._progress(job, now, out)
            else:
                misses += 1
        self._arm(now, out)

    def _room_anywhere(self, now: float) -> bool:
        """Whether some known compute node could take another offer of ours now."""
        return any(k.info.compute and k.room(now) > 0 for k in self.nodes.live(now))

    def _freed(self, node: str, now: float, out: list[Command]) -> None:
        """One of our executions (or a bid we did not take) on ``node`` ended."""
        self.nodes.released(node)
        if self.queue:
            self._drain(now, out)

    def _requeue_timer(self, now: float, out: list[Command]) -> None:
        self._requeue_at = None
        if self.queue:
            self._drain(now, out, full=True)

    def _unqueue(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        """The job ended: out of the queue; offers nobody answered stop counting."""
        self.queue.pop(job.job_id, None)
        if not self.queue and self._requeue_at is not None:
            self._requeue_at = None
            out.append(CancelTimers(job_id="", name=RequesterTimer.REQUEUE))
        for node, answered in job.asked.items():
            if not answered:
                self.nodes.answered(node, bid=False, busy=False, now=now, counted=False)

    # --- timers --------------------------------------------------------------------------

    def _queue_timeout(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        self.queue.pop(job.job_id, None)
        if job.state in (S.QUEUED, S.BIDDING) and not job.acceptances:
            why = job.waiting or "no node answered"
            self._finish(
                job,
                JobAction.FAIL,
                f"no node took the job within its queue timeout "
                f"({job.spec.queue_timeout:g}s): {why}",
                now,
                out,
            )
        else:  # running on fewer nodes than asked for: stop looking for more
            job.bidding_closed, job.window_open = True, False
            self._progress(job, now, out)

    def _bids_closed(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        job.window_open = False
        if not job.broadcast:  # nodes that stayed silent are skipped for a while
            for asked, answered in list(job.asked.items()):
                if not answered:
                    job.asked[asked] = True
                    self.nodes.answered(asked, bid=False, busy=True, now=now)
            self._schedule(job, now, out)
            self._progress(job, now, out)
            return
        job.bidding_closed = True
        if (why := self._cannot_run(job, now, heard=False)) is not None:
            self._finish(job, JobAction.FAIL, why, now, out)
            return
        if job.state is S.BIDDING or (job.state is S.QUEUED and job.acceptances == 0):
            bids, want = len(job.executions), job.spec.deal.min_bids
            if bids == 0 or bids < want:
                why = "; ".join(f"{n[-8:]}: {r}" for n, r in list(job.declined.items())[:5])
                if bids:
                    why = f"only {bids} bids for min_bids {want}"
                why = f"no node bid within {self.config.bid_timeout:g}s" + (
                    f" ({why})" if why else ""
                )
                self._wait(job, why, now, out)
                return
        self._progress(job, now, out)

    # --- ops jobs (target="all") ---------------------------------------------------------

    def _progress_all(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        """Accept every bid from a target node; decide once each has ended. A broadcast
        ops job's targets are the nodes that bid (each checked the selectors itself)."""
        for ex in job.in_state(X.BID):
            if ex.reviewed:
                if job.broadcast and ex.node_id not in job.targets:
                    job.targets.append(ex.node_id)
                self._accept(job, ex, now, out)
        if job.count(X.ACCEPTED, X.BID):
            return
        open_targets = [n for n in job.targets if n not in job.executions and n not in job.declined]
        if (open_targets or not job.targets or job.broadcast) and not job.bidding_closed:
            return  # a broadcast hears of all its targets only once bidding closes
        if job.count(X.PROPOSED):
            self._decide(job, now, out)
        else:
            reasons = "; ".join(
                f"{n[-8:]}: {r}"
                for n, r in [
                    *((e.node_id, e.reason) for e in job.executions.values() if e.reason),
                    *job.declined.items(),
                ]
            )
            self._finish(job, JobAction.FAIL, f"no node produced results ({reasons})", now, out)

    def _accept_all_results(self, job: RequesterJob, now: float, out: list[Command]) -> None:
        """Ops job: each node's result stands for that node; all are published."""
        for ex in job.in_state(X.PROPOSED):
            self.move_execution(ex, X.RESULTS_ACCEPTED)
            self._count(ex.node_id, "accepted")
            out.append(Send(ex.node_id, ResultsAccepted(job.job_id, ex.node_id)))
            self._note(job, now, "results_accepted", ex.node_id, "", out)
        self.move(job, JobAction.PUBLISH)
        key = TimerKey(job.job_id, RequesterTimer.PUBLISH)
        out.append(SetTimer(key, now + self.config.publish_timeout))
