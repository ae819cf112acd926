"""The ``audit`` verifier: one node runs the job; a random sample is re-run to check it.

Both halves are those of the deterministic verifier (a sealed canonical digest, bound
to the job and the node): what differs is the requester's decision
(:mod:`bacalhau.protocol.audit`), which runs the job once and has another node,
drawn at random after the worker's commitment, re-run a sample of jobs.
"""

from __future__ import annotations

from .deterministic import DeterministicVerifier

__all__ = ["AuditVerifier"]


class AuditVerifier(DeterministicVerifier):
    """Proposals as :class:`DeterministicVerifier`'s; decided by audits."""

    name = "audit"
