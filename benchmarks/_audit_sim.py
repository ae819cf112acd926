"""The audit verifier, simulated on the requester's pure state machine (no network).

Every job goes through :class:`bacalhau.protocol.requester.RequesterState` exactly
as on a node: bids, the worker's proposal, the audit draw (from the machine's own
``rng``), the auditor's and tie-breaker's proposals. Only the compute side is
scripted: each node proposes the true commitment or, when it lies, a wrong one.

Three measurements (``run(quick)``):

* compute per verified job: executions started per completed job, ``audit`` at
  p = 0.1 vs ``deterministic`` at concurrency 3 (9 honest nodes), against 1 (one run);
* jobs until a node lying on 10% of its jobs is caught (p = 0.1), over many seeds;
* 9 nodes, 3 colluders agreeing on one wrong answer, p = 0.1: wrong results accepted,
  how many of them after the colluder that produced them was caught (0 by design:
  its bids are refused), colluders caught, honest nodes wrongly branded; once with a
  requester that settles disagreements by re-running the job itself (the default,
  ``RequesterConfig.audit_recheck``) and once with one that cannot (a third node
  breaks ties: the residual risk of framing).

A requester's own re-run (``RecheckJob``) is answered with the true digest and
counted as one execution.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from bacalhau.commitment import Commitment
from bacalhau.identity import Identity
from bacalhau.models import Deal, ExecutionState, JobSpec, JobState
from bacalhau.protocol.commands import Command, RecheckJob, Send
from bacalhau.protocol.events import MessageReceived, ProposalOpened, RecheckDone, SubmitJob
from bacalhau.protocol.messages import BidAccepted, BidPlaced
from bacalhau.protocol.requester import RequesterConfig, RequesterState

TRUE = Commitment.of(results_digest=b"t" * 32, exit_code=0, stdout="42", stderr="", cid=None)
LIE = Commitment.of(results_digest=b"l" * 32, exit_code=0, stdout="41", stderr="", cid=None)
NODES = [Identity.from_seed(bytes([i + 2]) * 32).node_id for i in range(9)]
REQ = Identity.from_seed(b"\x01" * 32).node_id
CONFIG = RequesterConfig(bid_timeout=2.0, bid_window=0.0)
NO_RECHECK = RequesterConfig(bid_timeout=2.0, bid_window=0.0, audit_recheck=False)


def audit_spec(p: float, min_bids: int) -> JobSpec:
    return JobSpec.noop(verifier="audit", retries=0, deal=Deal(min_bids=min_bids, audit=p))


def run_job(
    state: RequesterState,
    job_id: str,
    spec: JobSpec,
    bidders: list[str],
    answer: Callable[[str], Commitment],
) -> tuple[int, list[str]]:
    """One job through the machine; (executions started, nodes whose results were accepted)."""
    now = 0.0
    state.handle(SubmitJob(job_id=job_id, spec=spec, peers=len(bidders)), now)
    queue: list[str] = []
    started = 0

    def take(out: list[Command]) -> None:
        nonlocal started
        for c in out:
            if isinstance(c, Send) and isinstance(c.message, BidAccepted):
                queue.append(c.message.node_id)
                started += 1
            elif isinstance(c, RecheckJob):  # the requester's own run: the truth
                queue.append("")
                started += 1

    for node in bidders:
        now += 0.001
        if state.jobs[job_id].state not in (JobState.BIDDING, JobState.RUNNING):
            break
        take(state.handle(MessageReceived(node, BidPlaced(job_id)), now))
    while queue:
        node = queue.pop(0)
        now += 0.001
        if not node:
            take(state.handle(RecheckDone(job_id=job_id, digest=TRUE.results_digest), now))
            continue
        c = answer(node)
        take(
            state.handle(
                ProposalOpened(job_id=job_id, node_id=node, digest=c.results_digest, commitment=c),
                now,
            )
        )
    job = state.jobs.pop(job_id)
    accepted = [
        e.node_id for e in job.executions.values() if e.state is ExecutionState.RESULTS_ACCEPTED
    ]
    return started, accepted


def compute_cost(jobs: int, seed: int) -> dict[str, Any]:
    """Executions per completed job, 9 honest nodes."""
    rows = {}
    for name, spec in (
        ("audit p=0.1", audit_spec(0.1, 9)),
        (
            "deterministic concurrency 3",
            JobSpec.noop(
                verifier="deterministic",
                retries=0,
                deal=Deal(concurrency=3, confidence=2, min_bids=9),
            ),
        ),
    ):
        state = RequesterState(REQ, bytes(32), config=CONFIG, rng=random.Random(seed))
        started = 0
        for i in range(jobs):
            n, accepted = run_job(state, f"j-{i}", spec, NODES, lambda _: TRUE)
            assert accepted, name
            started += n
        rows[name] = started / jobs
    return {"jobs": jobs, "executions_per_job": rows, "single_run": 1.0}


def detection(seeds: int, p: float, f: float, cap: int) -> dict[str, Any]:
    """Jobs a liar (lying on fraction ``f``) works before an audit catches it."""
    spec = audit_spec(p, 0)
    liar, honest = NODES[0], NODES[1:3]
    caught_at: list[int | None] = []
    for seed in range(seeds):
        state = RequesterState(REQ, bytes(32), config=CONFIG, rng=random.Random(seed))
        lies = random.Random(10_000 + seed)
        at = None
        for i in range(cap):
            lying = lies.random() < f

            def answer(node: str, lying: bool = lying) -> Commitment:
                return LIE if node == liar and lying else TRUE

            run_job(state, f"j-{i}", spec, [liar, *honest], answer)  # the liar bids first
            if state.reputation[liar]["fraud"]:
                at = i + 1
                break
        caught_at.append(at)
    found = sorted(a for a in caught_at if a is not None)
    within = sum(1 for a in found if a <= 500)
    return {
        "seeds": seeds,
        "p": p,
        "f": f,
        "cap": cap,
        "caught_within_500": within / seeds,
        "median_jobs": found[len(found) // 2] if found else None,
        "p99_jobs": found[int(0.99 * len(found))] if len(found) > 100 else None,
        "never_caught": sum(1 for a in caught_at if a is None),
        "predicted_within_500": 1 - (1 - p * f) ** 500,
    }


def colluders(jobs: int, seeds: int, p: float, config: RequesterConfig = CONFIG) -> dict[str, Any]:
    """9 nodes, 3 colluders always agreeing on one wrong answer, random choice."""
    spec = audit_spec(p, 0)  # the first bidder works; later bids wait as auditors
    bad = set(NODES[:3])
    totals = {"wrong_accepted": 0, "wrong_accepted_after_caught": 0, "colluders_caught": 0}
    totals |= {"honest_branded": 0, "failed": 0, "jobs": jobs * seeds, "executions": 0}
    totals["requester_reruns"] = config.audit_recheck
    for seed in range(seeds):
        state = RequesterState(REQ, bytes(32), config=config, rng=random.Random(seed))
        order = random.Random(seed + 1)
        caught: set[str] = set()
        for i in range(jobs):
            bidders = NODES[:]
            order.shuffle(bidders)
            before = {n for n in bad if state.reputation.get(n, {}).get("fraud")}
            started, accepted = run_job(
                state, f"j-{i}", spec, bidders, lambda n: LIE if n in bad else TRUE
            )
            totals["executions"] += started
            if not accepted:
                totals["failed"] += 1
            for n in accepted:
                if n in bad:
                    totals["wrong_accepted"] += 1
                    totals["wrong_accepted_after_caught"] += n in before
            caught |= {n for n in bad if state.reputation.get(n, {}).get("fraud")}
        totals["colluders_caught"] += len(caught)
        totals["honest_branded"] += sum(
            1 for n in NODES if n not in bad and state.reputation.get(n, {}).get("fraud")
        )
    totals["colluders"] = 3 * seeds
    totals["seeds"] = seeds
    totals["p"] = p
    return totals


def run(quick: bool) -> dict[str, Any]:
    start = time.perf_counter()
    cost = compute_cost(200 if quick else 2000, seed=1)
    det = detection(100 if quick else 1000, 0.1, 0.1, 600)
    col = colluders(100 if quick else 200, 5 if quick else 20, 0.1)
    col_tie = colluders(100 if quick else 200, 5 if quick else 20, 0.1, NO_RECHECK)
    return {
        "cost": cost,
        "detection": det,
        "colluders": col,
        "colluders_tie_breaker": col_tie,
        "seconds": time.perf_counter() - start,
    }
