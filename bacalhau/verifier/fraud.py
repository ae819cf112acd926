"""Fraud proofs: what an audit caught, in a form any node can check by re-running the job.

A proof is self-contained and signed by the node that sends it (the requester whose
audit caught the cheater)::

    job id, job spec
    cheater:   node id, its encoded commitment, its signature over the statement
    witnesses: for each node that re-ran the job and agreed: the same three
    sender, signature over the canonical body (below)

Each signature covers :func:`bacalhau.commitment.statement` (the job id, the node,
the spec's digest and the commitment), made by the node *inside* its sealed proposal,
so the requester cannot invent what a node promised, nor change the spec it ran.

Checking (:func:`check_signatures`, then :func:`judge` with a re-run digest): the
signatures hold, the witnesses agree with each other and not with the cheater, and
a local re-run of the spec (same job id) reproduces the witnesses' results digest,
not the cheater's. A proof whose cheater's results *do* reproduce is false, and
costs its sender.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import attrs
import msgpack

from ..commitment import Commitment, spec_digest, statement
from ..convert import from_data, to_data
from ..errors import ValidationError, VerificationError
from ..identity import verify_signature
from ..models import JobSpec

__all__ = ["MAX_PROOF", "FraudProof", "SignedCommitment", "check_signatures", "judge"]

MAX_PROOF = 1 << 20
"""Largest encoded proof accepted (bytes)."""
MAX_WITNESSES = 8
_DOMAIN = b"bacalhau/fraud-proof/v1\n"


def _lp(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(4, "big") + raw


@attrs.frozen(kw_only=True)
class SignedCommitment:
    """A node's results commitment for a job, with its signature over the statement."""

    node_id: str
    commitment: bytes
    signature: bytes

    def opened(self) -> Commitment:
        return Commitment.decode(self.commitment)

    def check(self, *, job_id: str, spec: JobSpec) -> Commitment:
        """The commitment, if the signature is the node's over this job and spec.

        Raises:
            VerificationError: naming the node whose signature does not hold.
        """
        commitment = self.opened()
        data = statement(commitment, job_id=job_id, node_id=self.node_id, spec=spec)
        if not verify_signature(self.node_id, self.signature, data):
            raise VerificationError(
                f"forged: the commitment of {self.node_id} is not signed by it for this job"
            )
        return commitment


@attrs.frozen(kw_only=True)
class FraudProof:
    """See the module docs. Build with :meth:`signed`; read with :meth:`decode`."""

    job_id: str
    spec: JobSpec
    cheater: SignedCommitment
    witnesses: tuple[SignedCommitment, ...]
    sender: str
    signature: bytes = b""

    def body(self) -> bytes:
        """The canonical bytes the sender signs."""
        parts = [_DOMAIN, _lp(self.job_id), spec_digest(self.spec)]
        for sc in (self.cheater, *self.witnesses):
            parts += [_lp(sc.node_id), _lp(sc.commitment), _lp(sc.signature)]
        parts.append(_lp(self.sender))
        return b"".join(parts)

    def signed(self, sign: Any) -> FraudProof:
        """This proof signed with ``sign`` (the sender's ``Identity.sign``)."""
        return attrs.evolve(self, signature=sign(self.body()))

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(to_data(self), use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> FraudProof:
        """Parse :meth:`encode` output.

        Raises:
            VerificationError: not a fraud proof (too big, malformed, bad fields).
        """
        if not isinstance(data, bytes) or len(data) > MAX_PROOF:
            raise VerificationError(f"a fraud proof is at most {MAX_PROOF} bytes")
        try:
            raw = msgpack.unpackb(data, raw=False, max_bin_len=MAX_PROOF, max_str_len=MAX_PROOF)
            return from_data(raw, cls, what="fraud proof")
        except (ValidationError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise VerificationError(f"not a fraud proof: {exc}") from None


def check_signatures(proof: FraudProof, *, sender: str) -> tuple[Commitment, Commitment]:
    """Everything about ``proof`` that needs no re-run: (cheater's, witnesses') commitments.

    Args:
        proof: the proof as received.
        sender: the signer of the envelope that carried it (must be its sender).

    Raises:
        VerificationError: with a reason starting with ``forged`` (a signature does not
            hold, or the proof is not the envelope signer's) or ``invalid`` (the proof
            proves nothing: no witness, witnesses that disagree, the cheater among them,
            a job that cannot be re-run).
    """
    if proof.sender != sender:
        raise VerificationError(f"forged: proof signed as {proof.sender}, sent by {sender}")
    if not verify_signature(proof.sender, proof.signature, proof.body()):
        raise VerificationError("forged: the proof's signature is not its sender's")
    if not proof.spec.rerunnable:
        raise VerificationError("invalid: the job cannot be re-run, so nothing can be proven")
    if not 1 <= len(proof.witnesses) <= MAX_WITNESSES:
        raise VerificationError(f"invalid: a proof needs 1 to {MAX_WITNESSES} witnesses")
    names = [w.node_id for w in proof.witnesses]
    if proof.cheater.node_id in names or len(set(names)) != len(names):
        raise VerificationError("invalid: the cheater or a repeated node among the witnesses")
    cheated = proof.cheater.check(job_id=proof.job_id, spec=proof.spec)
    seen = [w.check(job_id=proof.job_id, spec=proof.spec) for w in proof.witnesses]
    if any(s.results_digest != seen[0].results_digest for s in seen):
        raise VerificationError("invalid: the witnesses disagree with each other")
    if seen[0].results_digest == cheated.results_digest:
        raise VerificationError("invalid: the witnesses agree with the accused node")
    return cheated, seen[0]


def judge(
    cheated: Commitment, witnessed: Commitment, rerun_digest: bytes
) -> Literal["fraud", "false", "inconclusive"]:
    """The verdict once the job was re-run here: ``fraud`` (the witnesses' results
    reproduce, the cheater's do not), ``false`` (the accused node's results reproduce:
    the proof lies) or ``inconclusive`` (neither: a job that is not deterministic here)."""
    if rerun_digest == cheated.results_digest:
        return "false"
    if rerun_digest == witnessed.results_digest:
        return "fraud"
    return "inconclusive"


def proof_id(proof: FraudProof) -> str:
    """A short id for logs and de-duplication."""
    return hashlib.sha256(proof.body()).hexdigest()[:16]
