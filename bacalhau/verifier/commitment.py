"""Sealing the results commitment (:mod:`bacalhau.commitment`) for the job's requester.

Sealed with :func:`bacalhau.verifier.deterministic.seal` (magic ``BCS4``, or ``BCS3``
without the node's signature), bound to the job id and the proposer's node id exactly
as a deterministic proposal is, so a commitment cannot be read, copied or replayed by
another node. ``BCS2`` and ``BCS1`` are the same with the version-1 seal (a fresh key
per seal): still opened, no longer written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..commitment import Commitment, statement
from ..errors import VerificationError
from .deterministic import seal, unseal

if TYPE_CHECKING:
    from ..identity import Identity
    from ..models import JobSpec

__all__ = [
    "SEALED_MAGIC",
    "SEALED_MAGIC_V1",
    "SIGNED_MAGIC",
    "SIGNED_MAGIC_V1",
    "Commitment",
    "seal_commitment",
    "unseal_commitment",
    "unseal_signed",
]

SEALED_MAGIC = b"BCS3"
SIGNED_MAGIC = b"BCS4"
"""A sealed commitment followed by the node's Ed25519 signature over its
:func:`~bacalhau.commitment.statement` (64 bytes)."""
SEALED_MAGIC_V1 = b"BCS1"
SIGNED_MAGIC_V1 = b"BCS2"
_SIG = 64


def seal_commitment(
    commitment: Commitment,
    *,
    job_id: str,
    node_id: str,
    requester_key: bytes,
    sign: Callable[[bytes], bytes] | None = None,
    spec: JobSpec | None = None,
) -> bytes:
    """Seal for the requester (X25519 key ``requester_key``), bound to job and node.

    With ``sign`` (the node's key) and ``spec``, the node's signature over the
    :func:`~bacalhau.commitment.statement` goes inside the seal (format ``BCS2``): the
    requester can then show a third party what the node promised (fraud proofs,
    receipts), which the seal alone cannot prove.
    """
    payload, magic = commitment.encode(), SEALED_MAGIC
    if sign is not None and spec is not None:
        signature = sign(statement(commitment, job_id=job_id, node_id=node_id, spec=spec))
        payload, magic = payload + signature, SIGNED_MAGIC
    return seal(magic, payload, job_id=job_id, node_id=node_id, requester_key=requester_key)


def unseal_signed(
    identity: Identity, sealed: bytes, *, job_id: str, node_id: str
) -> tuple[Commitment, bytes | None]:
    """Open a sealed commitment: the commitment and the node's signature (None for the
    unsigned formats, ``BCS3`` and ``BCS1``).

    The signature is not checked here (the requester trusts the seal); whoever shows it
    to a third party checks it against the statement.

    Raises:
        VerificationError: as :func:`unseal_commitment`.
    """
    signed = next((m for m in (SIGNED_MAGIC, SIGNED_MAGIC_V1) if sealed.startswith(m)), None)
    if signed is not None:
        plain = unseal(signed, identity, sealed, job_id=job_id, node_id=node_id)
        if len(plain) < _SIG:
            raise VerificationError("results commitment: signature missing")
        return Commitment.decode(plain[:-_SIG]), plain[-_SIG:]
    return unseal_commitment(identity, sealed, job_id=job_id, node_id=node_id), None


def unseal_commitment(
    identity: Identity, sealed: bytes, *, job_id: str, node_id: str
) -> Commitment:
    """Open a sealed commitment from ``node_id`` for ``job_id``.

    Raises:
        VerificationError: copied, replayed, tampered, sealed for another requester,
            or malformed.
    """
    magic = SEALED_MAGIC_V1 if sealed.startswith(SEALED_MAGIC_V1) else SEALED_MAGIC
    return Commitment.decode(unseal(magic, identity, sealed, job_id=job_id, node_id=node_id))
