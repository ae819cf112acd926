"""Sealing the results commitment (:mod:`bacalhau.commitment`) for the job's requester.

Sealed with :func:`bacalhau.verifier.deterministic.seal` (magic ``BCS1``), bound to
the job id and the proposer's node id exactly as a deterministic proposal is, so a
commitment cannot be read, copied or replayed by another node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..commitment import Commitment
from .deterministic import seal, unseal

if TYPE_CHECKING:
    from ..identity import Identity

__all__ = ["SEALED_MAGIC", "Commitment", "seal_commitment", "unseal_commitment"]

SEALED_MAGIC = b"BCS1"


def seal_commitment(
    commitment: Commitment, *, job_id: str, node_id: str, requester_key: bytes
) -> bytes:
    """Seal for the requester (X25519 key ``requester_key``), bound to job and node."""
    return seal(
        SEALED_MAGIC,
        commitment.encode(),
        job_id=job_id,
        node_id=node_id,
        requester_key=requester_key,
    )


def unseal_commitment(
    identity: Identity, sealed: bytes, *, job_id: str, node_id: str
) -> Commitment:
    """Open a sealed commitment from ``node_id`` for ``job_id``.

    Raises:
        VerificationError: copied, replayed, tampered, sealed for another requester,
            or malformed.
    """
    return Commitment.decode(unseal(SEALED_MAGIC, identity, sealed, job_id=job_id, node_id=node_id))
