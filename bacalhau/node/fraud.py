"""The node's fraud desk: it sends fraud proofs for audits it caught, checks others',
and re-runs jobs its requester's audits need settled.

- :meth:`FraudDesk.remember` keeps the signed commitments of the proposals this node
  opened as a requester (bounded, oldest forgotten).
- :meth:`FraudDesk.report` (on the requester's ``FraudFound``) builds the proof from
  them, signs it and broadcasts a ``FraudReport``.
- :meth:`FraudDesk.receive` checks a proof: signatures first (a forged or empty proof
  is ``refused``), then a local re-run of the job, one at a time (``fraud``: the
  witnesses' results reproduce; ``false``: the accused node's do). It changes no
  state of the requester: the verdict goes to the requester's state machine as a
  ``ProofJudged`` event, which records the fraud against the cheater (so this node
  stops choosing it) or counts a refused or false proof against its sender.
- :meth:`FraudDesk.recheck` re-runs a job for the requester's own audit
  (``RecheckJob`` -> ``RecheckDone``).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs

from ..errors import BacalhauError, VerificationError
from ..protocol.events import Event, ProofJudged, RecheckDone
from ..protocol.messages import FraudReport, Message
from ..verifier.fraud import FraudProof, SignedCommitment, check_signatures, judge, proof_id

if TYPE_CHECKING:
    from ..compute.runner import ExecutionRunner
    from ..identity import Identity
    from ..protocol.commands import FraudFound, RecheckJob
    from ..protocol.requester import RequesterState

__all__ = ["FraudDesk", "rerun_digest"]

log = logging.getLogger("bacalhau.fraud")
KEEP = 4096
"""Signed commitments kept for proofs (per job and node)."""
MAX_PENDING = 16
"""Proofs waiting for a re-run beyond this are dropped (counted)."""


async def rerun_digest(runner: ExecutionRunner, job_id: str, spec: object) -> bytes:
    """Run ``spec`` again under ``job_id`` in a scratch folder; its canonical results digest."""
    from ..models import JobSpec
    from ..paths import remove_tree

    assert isinstance(spec, JobSpec)
    runner.root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="recheck-", dir=runner.root))
    runner.removing.add(folder.name)  # busy: not swept, and waited for when stopping
    try:
        digest = (await runner.produce(job_id, spec, folder, digest=True)).digest
        assert digest is not None
        return digest
    finally:
        with anyio.CancelScope(shield=True):  # cancelled or not, the folder goes
            await anyio.to_thread.run_sync(remove_tree, folder)
        runner.removing.discard(folder.name)


@attrs.define
class FraudDesk:
    node_id: str
    identity: Identity
    requester: RequesterState
    post: Callable[[str | None, Message], None]
    stats: Counter[str]
    feed: Callable[[Event], None]
    """Hands the verdicts to the state machines (the driver's ``feed``)."""
    runner: ExecutionRunner | None = None
    signed: OrderedDict[tuple[str, str], SignedCommitment] = attrs.Factory(OrderedDict)
    verdicts: dict[str, str] = attrs.Factory(dict)
    """Proof id -> verdict (``fraud``, ``false``, ``inconclusive``, ``forged: ...``)."""
    _pending: int = 0
    _lock: anyio.Lock = attrs.Factory(anyio.Lock)

    def remember(self, job_id: str, node_id: str, commitment: bytes, signature: bytes) -> None:
        self.signed[(job_id, node_id)] = SignedCommitment(
            node_id=node_id, commitment=commitment, signature=signature
        )
        while len(self.signed) > KEEP:
            self.signed.popitem(last=False)

    async def recheck(self, cmd: RecheckJob) -> None:
        """Re-run ``cmd``'s job here for the requester's audit; feed ``RecheckDone``."""
        if self.runner is None:
            self.feed(
                RecheckDone(job_id=cmd.job_id, digest=None, error="this node cannot run jobs")
            )
            return
        try:
            digest = await rerun_digest(self.runner, cmd.job_id, cmd.spec)
        except BacalhauError as exc:
            self.stats["audit_rechecks_failed"] += 1
            self.feed(
                RecheckDone(job_id=cmd.job_id, digest=None, error=f"cannot re-run it here: {exc}")
            )
            return
        self.stats["audit_rechecks"] += 1
        self.feed(RecheckDone(job_id=cmd.job_id, digest=digest))

    def build(self, cmd: FraudFound) -> FraudProof | None:
        """The signed proof for ``cmd``, or None when a signed commitment is missing
        (a node that sent an unsigned format, ``BCS3`` or ``BCS1``)."""
        job = self.requester.jobs.get(cmd.job_id)
        cheater = self.signed.get((cmd.job_id, cmd.cheater))
        witnesses = [self.signed.get((cmd.job_id, w)) for w in cmd.witnesses]
        if job is None or cheater is None or not all(witnesses):
            return None
        proof = FraudProof(
            job_id=cmd.job_id,
            spec=job.spec,
            cheater=cheater,
            witnesses=tuple(w for w in witnesses if w is not None),
            sender=self.node_id,
        )
        return proof.signed(self.identity.sign)

    async def report(self, cmd: FraudFound) -> None:
        proof = self.build(cmd)
        if proof is None:
            self.stats["fraud_proofs_unbuildable"] += 1
            log.warning("%s: no signed commitments to prove %s", self.node_id[-8:], cmd)
            return
        self.verdicts[proof_id(proof)] = "fraud"
        self.stats["fraud_proofs_sent"] += 1
        self.post(None, FraudReport(cmd.job_id, proof.encode()))

    async def receive(self, sender: str, message: FraudReport) -> str:
        """Check a proof from ``sender``; feed the verdict as ``ProofJudged`` and return it
        (also kept in :attr:`verdicts`)."""
        try:
            proof = FraudProof.decode(message.proof)
            if proof.job_id != message.job_id:
                raise VerificationError("forged: the proof is for another job")
            pid = proof_id(proof)
            if pid in self.verdicts:
                return self.verdicts[pid]
            cheated, witnessed = check_signatures(proof, sender=sender)
        except VerificationError as exc:
            self.stats["fraud_proofs_refused"] += 1
            log.warning("%s: refused a fraud proof from %s: %s", self.node_id[-8:], sender, exc)
            self.feed(
                ProofJudged(job_id=message.job_id, sender=sender, cheater="", verdict="refused")
            )
            return f"refused: {exc}"
        if self.runner is None or self._pending >= MAX_PENDING:
            self.stats["fraud_proofs_unchecked"] += 1
            return "unchecked"
        self._pending += 1
        try:
            async with self._lock:
                try:
                    digest = await rerun_digest(self.runner, proof.job_id, proof.spec)
                except BacalhauError as exc:
                    self.stats["fraud_proofs_unchecked"] += 1
                    log.info("%s: cannot re-run %s: %s", self.node_id[-8:], proof.job_id, exc)
                    return "unchecked"
        finally:
            self._pending -= 1
        verdict = judge(cheated, witnessed, digest)
        self.verdicts[pid] = verdict
        self.stats[f"fraud_proofs_{verdict}"] += 1
        log.info("%s: fraud proof %s from %s: %s", self.node_id[-8:], pid, sender, verdict)
        self.feed(
            ProofJudged(
                job_id=proof.job_id,
                sender=sender,
                cheater=proof.cheater.node_id,
                verdict=verdict,
                proof_id=pid,
            )
        )
        return verdict
