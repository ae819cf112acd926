"""The lifecycle messages that cross the wire, each inside a signed envelope.

The envelope's signer is the message's author: a compute node's messages
(bids, proposals, results) name no node id because the signer *is* the node;
a requester's decisions name the node they are about. ``KINDS`` maps the
envelope kind to the class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from .. import ids
from ..convert import from_data, to_data
from ..errors import ValidationError
from ..models import JobSpec, NodeInfo, StorageRef

__all__ = [
    "KINDS",
    "MAX_PROPOSAL",
    "MAX_REASON",
    "BidAccepted",
    "BidDeclined",
    "BidPlaced",
    "BidRejected",
    "ExecutionFailed",
    "FraudReport",
    "JobCancelled",
    "JobCompleted",
    "JobCreated",
    "JobFailure",
    "Message",
    "NodeAnnounced",
    "ResultsAccepted",
    "ResultsProposed",
    "ResultsPublished",
    "ResultsRejected",
    "decode_message",
    "encode_message",
]


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

MAX_REASON = 4096
"""Longest reason text a message may carry (characters)."""
MAX_PROPOSAL = 64 * 1024
"""Largest sealed proposal accepted."""
MAX_SUMMARY = 64 * 1024
"""Longest stdout/stderr head in ``ResultsPublished`` (characters)."""


def _job_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    ids.check("job_id", value, field=attribute.name)


def _node_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    ids.check("node_id", value, field=attribute.name)


def _text(limit: int) -> _Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str):
            raise ValidationError("expected a string", field=attribute.name)
        if len(value) > limit:
            raise ValidationError(
                f"{len(value)} characters (at most {limit})", field=attribute.name
            )

    return check


def _blob(low: int, high: int) -> _Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, bytes) or not low <= len(value) <= high:
            raise ValidationError(f"must be {low} to {high} bytes", field=attribute.name)

    return check


def _check_ref(_: object, __: object, ref: StorageRef) -> None:
    if not isinstance(ref, StorageRef):
        raise ValidationError("expected a storage reference", field="ref")
    if not isinstance(ref.type, str) or not ids.NAME.fullmatch(ref.type):
        raise ValidationError("not a publisher name", field="ref.type")
    if ref.cid is not None:
        from ..cid import to_cid

        to_cid(ref.cid)
    if ref.path is not None and (len(ref.path) > 4096 or "\x00" in ref.path):
        raise ValidationError("not a path", field="ref.path")


def _check_exit_code(_: object, __: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValidationError("must be a 32-bit integer", field="exit_code")


_REASON = _text(MAX_REASON)


def _finite(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    ids.check_finite(value, field=attribute.name)


@attrs.frozen(kw_only=True)
class JobCreated:
    """Requester -> everyone: a new job. ``seal_key`` is the requester's X25519 key."""

    job_id: str = attrs.field(validator=_job_id)
    spec: JobSpec
    seal_key: bytes = attrs.field(validator=_blob(32, 32))
    created_at: float = attrs.field(validator=_finite)


@attrs.frozen
class BidPlaced:
    """Compute -> requester: I will run it."""

    job_id: str = attrs.field(validator=_job_id)


@attrs.frozen(kw_only=True)
class BidDeclined:
    """Compute -> requester: I will not run it, and why. ``busy``: only for now (no room);
    the job waits for capacity instead of counting this node out."""

    job_id: str = attrs.field(validator=_job_id)
    reason: str = attrs.field(validator=_REASON)
    busy: bool = False


@attrs.frozen
class BidAccepted:
    """Requester -> compute ``node_id``: run it."""

    job_id: str = attrs.field(validator=_job_id)
    node_id: str = attrs.field(validator=_node_id)


@attrs.frozen(kw_only=True)
class BidRejected:
    """Requester -> compute ``node_id``: do not run it (or stop running it)."""

    job_id: str = attrs.field(validator=_job_id)
    node_id: str = attrs.field(validator=_node_id)
    reason: str = attrs.field(validator=_REASON)


@attrs.frozen(kw_only=True)
class ResultsProposed:
    """Compute -> requester: my verification proposal and my commitment to what I will
    publish (both sealed for the requester: opaque to everyone else)."""

    job_id: str = attrs.field(validator=_job_id)
    proposal: bytes = attrs.field(validator=_blob(0, MAX_PROPOSAL))
    commitment: bytes = attrs.field(default=b"", validator=_blob(0, 4096))
    """The sealed results commitment (:mod:`bacalhau.verifier.commitment`)."""


@attrs.frozen
class ExecutionFailed:
    """Compute -> requester: I could not run (or publish) it, and why."""

    job_id: str = attrs.field(validator=_job_id)
    reason: str = attrs.field(validator=_REASON)


@attrs.frozen
class ResultsAccepted:
    """Requester -> compute ``node_id``: your results are accepted; publish them."""

    job_id: str = attrs.field(validator=_job_id)
    node_id: str = attrs.field(validator=_node_id)


@attrs.frozen(kw_only=True)
class ResultsRejected:
    """Requester -> compute ``node_id``: your results are rejected; delete them."""

    job_id: str = attrs.field(validator=_job_id)
    node_id: str = attrs.field(validator=_node_id)
    reason: str = attrs.field(validator=_REASON)


@attrs.frozen(kw_only=True)
class ResultsPublished:
    """Compute -> requester: the accepted results are published at ``ref``."""

    job_id: str = attrs.field(validator=_job_id)
    ref: StorageRef = attrs.field(validator=_check_ref)
    exit_code: int = attrs.field(validator=_check_exit_code)
    stdout: str = attrs.field(default="", validator=_text(MAX_SUMMARY))
    stderr: str = attrs.field(default="", validator=_text(MAX_SUMMARY))


@attrs.frozen
class JobCompleted:
    job_id: str = attrs.field(validator=_job_id)


@attrs.frozen
class JobFailure:
    """The job failed (on the wire: kind ``JobFailed``; named so here to not clash with
    :class:`bacalhau.errors.JobFailed`, the exception)."""

    job_id: str = attrs.field(validator=_job_id)
    reason: str = attrs.field(validator=_REASON)


@attrs.frozen
class JobCancelled:
    job_id: str = attrs.field(validator=_job_id)
    reason: str = attrs.field(validator=_REASON)


@attrs.frozen
class FraudReport:
    """Any node -> every node: a signed fraud proof (:mod:`bacalhau.verifier.fraud`),
    checked by re-running the job before anyone believes it."""

    job_id: str = attrs.field(validator=_job_id)
    proof: bytes = attrs.field(validator=_blob(1, 1 << 20))


@attrs.frozen
class NodeAnnounced:
    """A node -> everyone: what it offers now (on join, on change, on a heartbeat).
    The envelope's signer must be ``info.node_id``."""

    info: NodeInfo = attrs.field()
    job_id: ClassVar[str] = ""

    @info.validator
    def _check_info(self, attribute: attrs.Attribute[NodeInfo], value: NodeInfo) -> None:
        from .nodes import check_announced

        ids.check("node_id", value.node_id, field="info.node_id")
        check_announced(value, value.node_id)


Message = (
    NodeAnnounced
    | JobCreated
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
    | JobFailure
    | JobCancelled
    | FraudReport
)


def _kind(cls: type[Any]) -> str:
    """A message's kind on the wire: its class name (``JobFailure`` keeps ``JobFailed``)."""
    return "JobFailed" if cls is JobFailure else cls.__name__


KINDS: dict[str, type[Any]] = {
    _kind(cls): cls
    for cls in (
        NodeAnnounced,
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
        JobFailure,
        JobCancelled,
        FraudReport,
    )
}

REQUESTER_MESSAGES: tuple[type[Any], ...] = (
    JobCreated,
    BidAccepted,
    BidRejected,
    ResultsAccepted,
    ResultsRejected,
    JobCompleted,
    JobFailure,
    JobCancelled,
)
"""Messages only a job's requester may author (the compute side handles them)."""

REQUESTER_KINDS = frozenset(_kind(cls) for cls in REQUESTER_MESSAGES)
"""Kinds only a job's requester may author."""


def encode_message(message: Message) -> tuple[str, Any]:
    """(kind, plain body) for an envelope."""
    return _kind(type(message)), to_data(message)


def decode_message(kind: str, body: Any) -> Message:
    """Rebuild a message from an envelope; ValidationError if it is not one."""
    from ..errors import ValidationError

    cls = KINDS.get(kind)
    if cls is None:
        raise ValidationError(f"unknown message kind {kind!r}")
    message: Message = from_data(body, cls, what=kind)
    return message
