"""Identifiers that arrive from the network: one strict pattern per kind.

A peer chooses every identifier in the messages it sends, and some of them later
name a folder, a subject or a row. Each kind has one pattern, checked when the
message is decoded (the messages' own validators call :func:`check`), so nothing
that reaches a state machine, a path or a subject can hold a ``/``, a ``..``, a
wildcard, a control character or an unbounded length.

========== =============================================== ==========================
kind        pattern                                          example
========== =============================================== ==========================
job_id      ``j-`` then 1-63 of ``[0-9a-z-]``                ``j-0b6e…`` (a UUID4)
node_id     an Ed25519 libp2p peer id (``12D3KooW`` + 44     ``12D3KooWAEXQ…``
            base58 characters, checked to embed a key)
exec_id     ``job_id`` ``.`` ``node_id``                     ``j-1.12D3KooW…``
name        an output or volume name: 1-64 of                ``outputs``
            ``[A-Za-z0-9_.-]``, not starting with ``.``
subject     NATS subject: 1-16 dot-separated tokens of       ``bacalhau.default``
            ``[A-Za-z0-9_-]``, at most 255 bytes, no
            wildcards
========== =============================================== ==========================

Paths are never built from these directly: :func:`bacalhau.paths.safe_join` does
that, and proves the result stays under its root. The patterns make sure a
message that would need that proof is refused earlier, at the door, and counted.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .errors import NodeNotFound, ValidationError

__all__ = [
    "EXEC_ID",
    "JOB_ID",
    "NAME",
    "NODE_ID",
    "PATTERNS",
    "SUBJECT",
    "check",
    "check_finite",
    "execution_id",
    "find_node",
    "names_node",
]

JOB_ID = re.compile(r"j-[0-9a-z][0-9a-z-]{0,62}")
NODE_ID = re.compile(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}")
EXEC_ID = re.compile(JOB_ID.pattern + r"\." + NODE_ID.pattern)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
SUBJECT = re.compile(r"[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,15}")

PATTERNS: dict[str, re.Pattern[str]] = {
    "job_id": JOB_ID,
    "node_id": NODE_ID,
    "exec_id": EXEC_ID,
    "name": NAME,
    "subject": SUBJECT,
}
"""Every kind of identifier, by name."""


def check(kind: str, value: object, *, field: str | None = None) -> str:
    """Return ``value`` if it is a well-formed identifier of ``kind``, else raise.

    Args:
        kind: a key of :data:`PATTERNS`.
        value: the untrusted value.
        field: the name the error gives the value (default: ``kind``).

    Raises:
        ValidationError: naming the field; the value is quoted only up to 80 characters.
    """
    good = _GOOD.get(kind)
    if good is not None and type(value) is str and value in good:
        return value  # this exact string passed before (ids recur in every message)
    pattern = PATTERNS[kind]
    name = field or kind
    if not isinstance(value, str):
        raise ValidationError(f"expected a string, got {type(value).__name__}", field=name)
    if len(value) > 255 or pattern.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValidationError(f"not a valid {kind}: {shown!r}", field=name)
    if kind == "node_id":
        from .identity import public_key_from_node_id

        try:
            public_key_from_node_id(value)  # the base58 must decode to an Ed25519 key
        except ValidationError:
            raise ValidationError(f"not an Ed25519 peer id: {value!r}", field=name) from None
    if good is not None:
        if len(good) >= _GOOD_MAX:
            good.clear()
        good.add(value)
    return value


_GOOD_MAX = 65536
_GOOD: dict[str, set[str]] = {kind: set() for kind in PATTERNS}
"""Strings that passed :func:`check`, by kind (a pure function of the string: the same
one always passes); cleared when one set reaches ``_GOOD_MAX``."""


def execution_id(job_id: str, node_id: str) -> str:
    """The execution id of ``node_id``'s run of ``job_id`` (both checked)."""
    return f"{check('job_id', job_id)}.{check('node_id', node_id)}"


def _bare(given: str) -> str:
    """``given`` without the ellipsis the CLI puts before a short node id."""
    return given.removeprefix("…").removeprefix("...")


def names_node(node_id: str, given: str) -> bool:
    """Whether what a person typed, ``given``, names ``node_id``: its start, or its end
    as the CLI shows it (``…76eJkm3N``, the ellipsis optional). Every Ed25519 node id
    starts with ``12D3KooW``, so the end is what tells nodes apart; ``""`` names any."""
    given = _bare(given)
    return node_id.startswith(given) or node_id.endswith(given)


def find_node(node_ids: Collection[str], given: str) -> str:
    """The one id of ``node_ids`` that ``given`` names: the whole id, or at least 3
    characters of its start or its end (:func:`names_node`).

    Raises:
        NodeNotFound: none of them, or several (the message says how many).
    """
    if given in node_ids:
        return given
    short = _bare(given)
    matches = [n for n in node_ids if names_node(n, given)]
    if len(matches) == 1 and len(short) >= 3:
        return matches[0]
    if len(matches) > 1:
        raise NodeNotFound(f"{given!r} names {len(matches)} nodes: give more of the id")
    raise NodeNotFound(f"no live node {given!r} known to this node")


def check_finite(value: object, *, field: str) -> float:
    """A real, finite number (NaN and infinities are refused: they pass every comparison
    the wrong way, so a NaN timestamp is never "too old")."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"expected a number, got {type(value).__name__}", field=field)
    if not math.isfinite(value):
        raise ValidationError(f"must be a finite number, got {value!r}", field=field)
    return float(value)
