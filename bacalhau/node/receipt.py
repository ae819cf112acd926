"""Receipts: what a completed job was, signed by its requester, checkable offline.

A receipt names the spec (whole, and its CID), the input CIDs, the executor and the
version that ran it, the results CID and canonical results digest, the nodes involved
and, when the worker sent one, the worker's own signed commitment. Its requester
signs the canonical JSON of all of that. ``bacalhau verify RECEIPT`` (or
:func:`verify_receipt`) checks the signatures and re-runs the job locally, comparing
results digests: a match means these are the results the spec gives; a mismatch
means the receipt (or the results it vouches for) is false.

Only jobs that re-run to the same results can be checked this way (WASM and noop
jobs, and Docker jobs marked deterministic where an engine answers); inputs by CID
come from CAR files or a node, URL inputs are fetched (:mod:`bacalhau.node.rerun`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import attrs

from .. import __version__, ids
from ..commitment import spec_cid
from ..convert import from_json_data, to_json_data
from ..errors import BacalhauError, JobNotFound, ValidationError, VerificationError
from ..identity import verify_signature
from ..models import JobSpec, JobState
from ..verifier.fraud import SignedCommitment
from .rerun import Sources, rerun_in_scratch

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Receipt", "check_signatures", "receipt_of", "verify_receipt"]

_DOMAIN = "bacalhau/receipt/v1"


@attrs.frozen(kw_only=True)
class Receipt:
    """See the module docs. Build with :func:`receipt_of`; read with :meth:`from_json`."""

    job_id: str = attrs.field(validator=lambda _, __, v: ids.check("job_id", v, field="job_id"))
    spec: JobSpec
    spec_cid: str
    inputs: tuple[str, ...]
    executor: str
    version: str
    results_cid: str | None
    results_digest: str
    """Hex sha256 of the canonical results folder (``bacalhau.verifier.canonical``)."""
    nodes: tuple[str, ...]
    worker: SignedCommitment | None
    requester: str = attrs.field(
        validator=lambda _, __, v: ids.check("node_id", v, field="requester")
    )
    signature: bytes = b""

    def body(self) -> bytes:
        data = to_json_data(attrs.evolve(self, signature=b""))
        data.pop("signature")
        return (_DOMAIN + json.dumps(data, sort_keys=True, separators=(",", ":"))).encode()

    def to_json(self) -> str:
        return json.dumps(to_json_data(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Receipt:
        """Raises: ValidationError naming the field that is wrong."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # nested past the decoder's depth
            raise ValidationError(f"not JSON: {exc}", field="receipt") from None
        return from_json_data(data, cls, what="receipt")


def receipt_of(node: Node, job_id: str) -> Receipt:
    """The signed receipt of a completed job this node requested.

    Live jobs are read from memory, finished ones of a node with a store from the store
    (so receipts outlive restarts; the worker's signed commitment is kept in memory only,
    and a receipt made after a restart carries none).

    Raises:
        JobNotFound: this node did not request the job.
        BacalhauError: the job is not completed, or its results carry no commitment (an
            unverified ``noop`` verifier job).
    """
    job = node.requester.jobs.get(job_id)
    if job is None and node.store is not None:
        job = node.store.get_job(job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r} on this node")
    if job.state is not JobState.COMPLETED:
        raise BacalhauError(f"job {job_id} is {job.state.value}: only completed jobs have receipts")
    published = [e for e in job.executions.values() if e.published and e.commitment]
    if not published:
        raise BacalhauError(f"job {job_id} has no committed results to vouch for")
    ex = published[0]
    assert ex.commitment is not None
    assert ex.published is not None
    fraud = node.driver.fraud
    worker = fraud.signed.get((job_id, ex.node_id)) if fraud is not None else None
    spec = job.spec
    receipt = Receipt(
        job_id=job_id,
        spec=spec,
        spec_cid=spec_cid(spec),
        inputs=tuple(_input_id(i.source) for i in spec.inputs),
        executor=spec.engine.type,
        version=f"bacalhau-py {__version__}",
        results_cid=ex.published.cid,
        results_digest=ex.commitment.results_digest.hex(),
        nodes=tuple(e.node_id for e in job.executions.values() if e.accepted),
        worker=worker,
        requester=node.node_id,
    )
    return attrs.evolve(receipt, signature=node.identity.sign(receipt.body()))


def _input_id(source: Any) -> str:
    if source.cid:
        return str(source.cid)
    if source.data is not None:
        return "inline:sha256:" + hashlib.sha256(source.data).hexdigest()
    return str(source.url or source.type)


def check_signatures(receipt: Receipt) -> None:
    """Raises: VerificationError when the receipt was changed or is inconsistent."""
    if not verify_signature(receipt.requester, receipt.signature, receipt.body()):
        raise VerificationError("tampered: the requester's signature does not hold")
    if receipt.spec_cid != spec_cid(receipt.spec):
        raise VerificationError("tampered: the spec does not have the receipt's spec CID")
    if receipt.worker is not None:
        committed = receipt.worker.check(job_id=receipt.job_id, spec=receipt.spec)
        if committed.results_digest.hex() != receipt.results_digest:
            raise VerificationError("tampered: the worker committed to other results")


async def verify_receipt(receipt: Receipt, sources: Sources | None = None) -> tuple[bool, str]:
    """(match, what was found): signatures, then a local re-run compared by digest.

    Args:
        receipt: the receipt to check.
        sources: where the re-run may take the job's inputs (:mod:`bacalhau.node.rerun`).

    Raises:
        BacalhauError: the job cannot be re-run here (neither match nor mismatch);
            :class:`~bacalhau.node.rerun.CannotRerun` says what is missing.
    """
    try:
        check_signatures(receipt)
    except VerificationError as exc:
        return False, str(exc)
    digest = await rerun_in_scratch(receipt.job_id, receipt.spec, sources)
    if digest.hex() != receipt.results_digest:
        what = (
            f"mismatch: re-running gives {digest.hex()}, the receipt says {receipt.results_digest}"
        )
        if any(i.source.type == "url" and not i.source.checksum for i in receipt.spec.inputs):
            what += " (the job reads URLs without a checksum: their content may have changed)"
        return False, what
    return True, f"match: re-running gives the receipt's results ({digest.hex()[:16]}...)"
