"""One exception tree, rooted at :class:`BacalhauError`.

Every error that reaches a user names what was wrong. Callers catch
``BacalhauError`` to handle anything this library raises on purpose; anything
else escaping is a bug.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BacalhauError",
    "BlockNotFound",
    "ConnectionRetired",
    "CorruptBlock",
    "DecodeError",
    "ExecutorError",
    "ExecutorUnavailable",
    "IllegalTransition",
    "JobFailed",
    "JobNotFound",
    "NetworkInvariantError",
    "NodeNotFound",
    "NodeUnreachable",
    "PeerUnreachable",
    "PublishError",
    "StorageError",
    "StoreError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "WireError",
]


class BacalhauError(Exception):
    """Base of every error raised on purpose by bacalhau."""


class ValidationError(BacalhauError, ValueError):
    """A value (job spec, deal, volume, option) is invalid.

    ``field`` names the offending field in dotted form (``deal.concurrency``)
    when one field is to blame.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class IllegalTransition(BacalhauError):
    """A state machine was asked to make a move its transition table forbids."""

    def __init__(self, machine: str, state: object, event: object) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(
            f"{machine}: event {_name(event)!r} is not allowed in state {_name(state)!r}"
        )


def _name(value: object) -> object:
    """An enum member's value (``'fail'``, not ``<JobAction.FAIL: 'fail'>``)."""
    import enum

    return value.value if isinstance(value, enum.Enum) else value


class WireError(BacalhauError):
    """A frame or envelope from the network is malformed, oversized or forged."""


class DecodeError(WireError, ValueError):
    """Bytes could not be decoded as the format they claim to be."""


class TransportError(BacalhauError):
    """The transport could not deliver a message."""


class PeerUnreachable(TransportError):
    """A direct request to a peer failed: unknown peer, closed or timed out."""


class ConnectionRetired(PeerUnreachable):
    """A request was not sent: its connection was replaced by a newer one to the same
    peer. Nothing reached the peer, so the transport sends it again on the new one."""


class NodeNotFound(BacalhauError, KeyError):
    """No live node with that id (or id prefix) is known to this requester."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "node not found"


class JobNotFound(BacalhauError, KeyError):
    """No job with that id (or id prefix) is known to this node."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "job not found"


class JobFailed(BacalhauError):
    """A job ended in a state other than completed (raised by ``JobResult.raise_for_state``)."""


class ExecutorError(BacalhauError):
    """An executor could not run a job (not the job's own non-zero exit)."""


class ExecutorUnavailable(ExecutorError):
    """The executor's engine is not available on this node."""


class StorageError(BacalhauError):
    """An input volume could not be prepared."""


class BlockNotFound(StorageError, KeyError):
    """No block with that CID is held locally or by any reachable provider."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "block not found"


class CorruptBlock(StorageError):
    """A block's bytes do not hash to its CID."""


class PublishError(BacalhauError):
    """A results folder could not be published."""


class VerificationError(BacalhauError):
    """A proposal could not be produced or opened."""


class StoreError(BacalhauError):
    """The node's state could not be written (disk full, read-only, damaged)."""


class NetworkInvariantError(BacalhauError):
    """A network closed in a state that should be impossible (leaked work, lost jobs,
    a state machine's internal error)."""


class ApiError(BacalhauError):
    """The node's HTTP API refused a request or answered something unexpected.

    ``status`` is the HTTP status (0 when no answer came) and ``code`` the
    API's machine-readable error code (``validation_error``, ``unauthorized``, ...).
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "api_error") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class NodeUnreachable(ApiError):
    """No node answered at the API address (refused, timed out, not HTTP)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=0, code="node_unreachable")


def sole_error(group: BaseExceptionGroup[BaseException], body: BaseException | None) -> bool:
    """True when every exception inside ``group`` is ``body``, the error raised in the body
    of an ``async with`` block: the task group of a context manager wrapped it, and the
    caller should see that one error, not a group (``raise body``)."""
    if body is None:
        return False
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif exc is not body:
            return False
    return True


def lone_error(exc: BaseException) -> BacalhauError | None:
    """The one library error inside ``exc`` when ``exc`` is a group (of groups) holding only
    that error, else None. A start-up failure (a transport that cannot connect, a data dir
    that cannot be used) comes out of a task group wrapped so; the caller raises it alone,
    the one error a user should see, not an exception group."""
    if not isinstance(exc, BaseExceptionGroup):
        return None
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, BacalhauError) else None
