"""Typed timer keys and job actions: the names the state machines use, as values.

A timer belongs to one side of the node by the *type* of its name, so the driver
routes ``TimerFired`` by type (a :class:`RequesterTimer` goes to the requester, a
:class:`ComputeTimer` to the compute side) and no string is ever compared.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["ComputeTimer", "JobAction", "RequesterTimer", "TimerKey", "TimerName"]


class RequesterTimer(enum.StrEnum):
    """The requester's timers of one job."""

    JOB = "job"
    """The job's overall deadline."""
    BIDS = "bids"
    """Bidding closes."""
    WINDOW = "window"
    """The short window in which bids are collected before any is accepted."""
    EXECUTION = "execution"
    """One accepted node's deadline (the key's ``node`` names it)."""
    PUBLISH = "publish"
    """Winners must have published by now."""
    QUEUE = "queue"
    """The job's queue timeout: no node took it by now."""
    REQUEUE = "requeue"
    """Offer queued jobs again (one timer for the whole queue: its key's job id is "")."""


class ComputeTimer(enum.StrEnum):
    """The compute side's timers of one job."""

    FORGET = "forget"
    """An ended job's tombstone is dropped."""
    BID_HOLD = "bid_hold"
    """A bid the requester never answered stops holding room."""


TimerName = RequesterTimer | ComputeTimer


@attrs.frozen(order=True, cache_hash=True)  # hashed ~20 times per job (timer table)
class TimerKey:
    """Which timer: one per ``(job_id, name, node)``; setting it again replaces it."""

    job_id: str
    name: TimerName
    node: str = ""


class JobAction(enum.StrEnum):
    """What moves a requester's job along :data:`~bacalhau.protocol.requester.JOB_TRANSITIONS`."""

    OFFER = "offer"
    QUEUE = "queue"
    ACCEPT = "accept"
    VERIFY = "verify"
    PUBLISH = "publish"
    COMPLETE = "complete"
    RETRY = "retry"
    """Publishing failed everywhere: run the job again on other nodes (``spec.retries``)."""
    FAIL = "fail"
    CANCEL = "cancel"
