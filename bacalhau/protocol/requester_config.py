"""The requester's settings (deadlines, how bidders are chosen, how offers go out)."""

from __future__ import annotations

import attrs

from ..errors import ValidationError
from ..models import JobSpec
from .nodes import NODE_TTL

__all__ = ["RequesterConfig"]


@attrs.frozen(kw_only=True)
class RequesterConfig:
    """Deadlines of the requester, in seconds.

    Args:
        bid_timeout: how long bids are collected (``min_bids`` must be met by then).
        bid_window: with ``min_bids`` 0, how long the requester's own bid waits for a
            bid from another node before it is taken alone. Its own compute side always
            hears the job first; without the window it would win every job. As soon as
            another node bids, the choice is made at random among the bids in hand. Nodes
            with no peers skip the window. 0 takes bids as they come.
        execution_grace: how long past ``spec.timeout`` an accepted node may stay
            silent before it is replaced.
        publish_timeout: how long accepted nodes have to publish.
        job_timeout: an overall limit; None derives one from the others.
        selection: ``random`` (the architecture's default: any bidder is as good) or
            ``reputation`` (prefer nodes whose results were accepted before and never
            rejected; ties broken at random).
        offers: ``targeted`` (ask only the best-ranked known nodes, as many as the deal
            needs plus ``offer_headroom``) or ``broadcast`` (every node hears every job:
            the architecture's original behaviour).
        offer_headroom: nodes asked beyond ``concurrency`` in a job's first round, for
            declines.
        retry_interval: how often queued jobs are offered again when nothing else
            (an announcement, a finished execution) prompts it.
        node_ttl: seconds after which a node that stopped announcing gets no offers.
        bid_review: bids wait for ``ReviewBid`` / ``BidReviewed`` (the node's bid
            acceptance hooks) before they can be chosen. Set by the node when it has
            acceptance hooks, such as ``acceptance_probe_http`` / ``acceptance_probe_exec``
            (same protocol as the compute side's probes, see ``bacalhau.compute.hooks``).
        audit: the least audit probability of ``audit`` jobs (a job may ask for more).
        audit_first: how many of a node's first ``audit`` jobs are always audited.
        audit_recheck: when a worker and its auditor disagree, this node first re-runs the
            job itself (``RecheckJob``) and believes its own digest, so colluders cannot
            outvote an honest node here; only when it cannot (no executor, inputs out of
            reach, its run matches neither) does a third node break the tie. A node with
            its compute side off still re-runs such jobs (False: it never runs a job).
    """

    bid_timeout: float = 10.0
    bid_window: float = 0.05
    execution_grace: float = 30.0
    publish_timeout: float = 120.0
    job_timeout: float | None = None
    selection: str = attrs.field(default="random")
    offers: str = attrs.field(default="targeted")
    offer_headroom: int = 1
    retry_interval: float = 0.5
    node_ttl: float = NODE_TTL
    bid_review: bool = False
    acceptance_probe_http: str | None = None
    acceptance_probe_exec: str | None = None
    acceptance_probe_timeout: float = 5.0
    audit: float = 0.0
    audit_first: int = 3
    audit_recheck: bool = True

    @selection.validator
    def _check_selection(self, attribute: object, value: str) -> None:
        if value not in ("random", "reputation"):
            raise ValidationError(
                f"selection must be 'random' or 'reputation', got {value!r}", field="selection"
            )

    @offers.validator
    def _check_offers(self, attribute: object, value: str) -> None:
        if value not in ("targeted", "broadcast"):
            raise ValidationError(
                f"offers must be 'targeted' or 'broadcast', got {value!r}", field="offers"
            )

    def job_deadline(self, spec: JobSpec) -> float:
        """How long a job may take once a node took it (the queue timeout comes on top)."""
        if self.job_timeout is not None:
            return self.job_timeout
        per_run = spec.timeout + self.execution_grace
        runs = spec.retries + (3 if spec.verifier == "audit" else 1)  # worker, auditor, recheck
        return self.bid_timeout + per_run * runs + self.publish_timeout
