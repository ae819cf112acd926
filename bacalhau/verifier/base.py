"""The Verifier interface, both halves.

Compute side: :meth:`Verifier.propose` turns a results folder into an opaque
proposal for the job's requester. Requester side: :meth:`Verifier.open` turns a
proposal back into a digest (or None when the verifier does not compare
results). The requester's state machine then groups proposals by digest; a
group of at least ``deal.confidence`` (at least 1) agreeing members wins.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

__all__ = ["Verifier"]


class Verifier(abc.ABC):
    name: ClassVar[str]
    reads_only: ClassVar[bool] = False
    """True when :meth:`propose` never changes the results folder: the runner may then
    take the results' digest (for its commitment) before proposing, on the same worker
    thread that checks the results. False (the safe default): after proposing."""

    @abc.abstractmethod
    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        """Compute side: the proposal for the requester (whose X25519 key is given)."""

    def propose_digest(
        self, digest: bytes, *, job_id: str, node_id: str, requester_key: bytes
    ) -> bytes | None:
        """Compute side, for a :attr:`reads_only` verifier whose proposal depends only on
        the results' canonical digest (:func:`~bacalhau.verifier.canonical.hash_tree`),
        which the runner has already taken: the same proposal as :meth:`propose`,
        without reading the results again. None (the default): call :meth:`propose`."""
        return None

    @abc.abstractmethod
    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        """Requester side: the digest inside ``proposal`` from ``node_id``.

        Raises:
            VerificationError: the proposal is not valid for this job and node
                (sealed for another requester, copied, replayed).
        """
