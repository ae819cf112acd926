"""The lifecycle messages that cross the wire, each inside a signed envelope.

The envelope's signer is the message's author: a compute node's messages
(bids, proposals, results) name no node id because the signer *is* the node;
a requester's decisions name the node they are about. ``KINDS`` maps the
envelope kind to the class.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..models import JobSpec, StorageRef, from_data, to_data

__all__ = [
    "KINDS",
    "BidAccepted",
    "BidDeclined",
    "BidPlaced",
    "BidRejected",
    "ExecutionFailed",
    "JobCancelled",
    "JobCompleted",
    "JobCreated",
    "JobFailed",
    "Message",
    "ResultsAccepted",
    "ResultsProposed",
    "ResultsPublished",
    "ResultsRejected",
    "decode_message",
    "encode_message",
]


@attrs.frozen
class JobCreated:
    """Requester -> everyone: a new job. ``seal_key`` is the requester's X25519 key."""

    job_id: str
    spec: JobSpec
    seal_key: bytes
    created_at: float


@attrs.frozen
class BidPlaced:
    """Compute -> requester: I will run it."""

    job_id: str


@attrs.frozen
class BidDeclined:
    """Compute -> requester: I will not run it, and why."""

    job_id: str
    reason: str


@attrs.frozen
class BidAccepted:
    """Requester -> compute ``node_id``: run it."""

    job_id: str
    node_id: str


@attrs.frozen
class BidRejected:
    """Requester -> compute ``node_id``: do not run it (or stop running it)."""

    job_id: str
    node_id: str
    reason: str


@attrs.frozen
class ResultsProposed:
    """Compute -> requester: my verification proposal (opaque to everyone else)."""

    job_id: str
    proposal: bytes


@attrs.frozen
class ExecutionFailed:
    """Compute -> requester: I could not run (or publish) it, and why."""

    job_id: str
    reason: str


@attrs.frozen
class ResultsAccepted:
    """Requester -> compute ``node_id``: your results are accepted; publish them."""

    job_id: str
    node_id: str


@attrs.frozen
class ResultsRejected:
    """Requester -> compute ``node_id``: your results are rejected; delete them."""

    job_id: str
    node_id: str
    reason: str


@attrs.frozen
class ResultsPublished:
    """Compute -> requester: the accepted results are published at ``ref``."""

    job_id: str
    ref: StorageRef
    exit_code: int
    stdout: str = ""
    stderr: str = ""


@attrs.frozen
class JobCompleted:
    job_id: str


@attrs.frozen
class JobFailed:
    job_id: str
    reason: str


@attrs.frozen
class JobCancelled:
    job_id: str
    reason: str


Message = (
    JobCreated
    | BidPlaced
    | BidDeclined
    | BidAccepted
    | BidRejected
    | ResultsProposed
    | ExecutionFailed
    | ResultsAccepted
    | ResultsRejected
    | ResultsPublished
    | JobCompleted
    | JobFailed
    | JobCancelled
)

KINDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        JobCreated,
        BidPlaced,
        BidDeclined,
        BidAccepted,
        BidRejected,
        ResultsProposed,
        ExecutionFailed,
        ResultsAccepted,
        ResultsRejected,
        ResultsPublished,
        JobCompleted,
        JobFailed,
        JobCancelled,
    )
}

REQUESTER_KINDS = frozenset(
    {
        "JobCreated",
        "BidAccepted",
        "BidRejected",
        "ResultsAccepted",
        "ResultsRejected",
        "JobCompleted",
        "JobFailed",
        "JobCancelled",
    }
)
"""Kinds only a job's requester may author."""


def encode_message(message: Message) -> tuple[str, Any]:
    """(kind, plain body) for an envelope."""
    return type(message).__name__, to_data(message)


def decode_message(kind: str, body: Any) -> Message:
    """Rebuild a message from an envelope; ValidationError if it is not one."""
    from ..errors import ValidationError

    cls = KINDS.get(kind)
    if cls is None:
        raise ValidationError(f"unknown message kind {kind!r}")
    message: Message = from_data(body, cls, what=kind)
    return message
