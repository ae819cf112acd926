"""The results commitment: what a compute node promises, before acceptance, to publish.

Verification decides *which* results are right; the commitment makes sure those
are the results that get published. Before it proposes, a compute node commits to
everything its later ``ResultsPublished`` will carry, and seals the commitment for
the job's requester inside the same signed ``ResultsProposed`` message as its
verifier proposal. When the publication arrives, the requester compares it with
the commitment it accepted; a publication that differs is refused, the node's
execution fails and its reputation takes the hit of a rejected result. ``get``
reports results as verified only when they came from a publication that matched.

The value (format version 1), every field fixed-size or length-prefixed::

    MAGIC b"BCM1"
    results_digest   32 bytes  sha256 of the canonical walk of the results folder
                               (bacalhau.verifier.canonical.hash_tree), which covers
                               stdout, stderr, exitCode and every output file
    exit_code        4 bytes   signed big-endian
    stdout_sha256    32 bytes  sha256 of the stdout head as published (UTF-8)
    stderr_sha256    32 bytes  sha256 of the stderr head as published (UTF-8)
    cid              u16 length, then ASCII: the CID the publisher will publish the
                     folder at (empty when the publisher cannot say in advance)

Sealed by :mod:`bacalhau.verifier.commitment` (magic ``BCS4``), bound to the job
id and the proposer's node id exactly as a deterministic proposal is, so a
commitment cannot be read, copied or replayed by another node. This module is the
pure value (the sans-IO requester imports it).

Honest nodes that agree on the results agree on the whole commitment (the CID is
a function of the folder for a given publisher configuration), so the requester
groups proposals by verifier digest *and* commitment: a node that proposes the
agreed digest but commits to publishing something else leaves the agreeing group.
Later work (audits, #24) can check a published DAG against ``results_digest``.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import TYPE_CHECKING

import attrs

from .errors import VerificationError

if TYPE_CHECKING:
    from .models import JobSpec, StorageRef

__all__ = ["MAGIC", "Commitment", "spec_cid", "spec_digest", "statement"]

MAGIC = b"BCM1"
_MAX_CID = 512


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@attrs.frozen(kw_only=True)
class Commitment:
    """A compute node's promise about its publication (see the module docs).

    Attributes:
        results_digest: the canonical hash of the results folder.
        exit_code: the job's exit code.
        stdout_sha256: sha256 of the published stdout head.
        stderr_sha256: sha256 of the published stderr head.
        cid: the CID the results will be published at, or None.
    """

    results_digest: bytes
    exit_code: int
    stdout_sha256: bytes
    stderr_sha256: bytes
    cid: str | None = None

    @classmethod
    def of(
        cls, *, results_digest: bytes, exit_code: int, stdout: str, stderr: str, cid: str | None
    ) -> Commitment:
        """The commitment to publishing these values."""
        return cls(
            results_digest=results_digest,
            exit_code=exit_code,
            stdout_sha256=_sha(stdout),
            stderr_sha256=_sha(stderr),
            cid=cid,
        )

    def encode(self) -> bytes:
        """The canonical bytes (see the module docs)."""
        cid = (self.cid or "").encode("ascii")
        return b"".join(
            (
                MAGIC,
                self.results_digest,
                self.exit_code.to_bytes(4, "big", signed=True),
                self.stdout_sha256,
                self.stderr_sha256,
                len(cid).to_bytes(2, "big"),
                cid,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Commitment:
        """Parse :meth:`encode` output.

        Raises:
            VerificationError: not a version-1 commitment.
        """
        fixed = len(MAGIC) + 32 + 4 + 32 + 32 + 2
        if not data.startswith(MAGIC) or len(data) < fixed:
            raise VerificationError("not a results commitment (unknown format or truncated)")
        at = len(MAGIC)
        digest = data[at : at + 32]
        exit_code = int.from_bytes(data[at + 32 : at + 36], "big", signed=True)
        out, err = data[at + 36 : at + 68], data[at + 68 : at + 100]
        n = int.from_bytes(data[at + 100 : at + 102], "big")
        raw = data[fixed:]
        if n != len(raw) or n > _MAX_CID:
            raise VerificationError("results commitment: bad CID length")
        try:
            cid = raw.decode("ascii") or None
        except UnicodeDecodeError:
            raise VerificationError("results commitment: CID is not ASCII") from None
        return cls(
            results_digest=digest,
            exit_code=exit_code,
            stdout_sha256=out,
            stderr_sha256=err,
            cid=cid,
        )

    def mismatch(self, *, ref: StorageRef, exit_code: int, stdout: str, stderr: str) -> str | None:
        """Why a publication differs from this commitment, or None if it matches."""
        if exit_code != self.exit_code:
            return f"exit code {exit_code}, committed {self.exit_code}"
        if self.cid is not None and ref.cid != self.cid:
            return f"published at {ref.cid}, committed to {self.cid}"
        if _sha(stdout) != self.stdout_sha256:
            return "stdout differs from the committed stdout"
        if _sha(stderr) != self.stderr_sha256:
            return "stderr differs from the committed stderr"
        return None


_STATEMENT = b"bacalhau/commitment/v1\n"


_DIGESTS: OrderedDict[int, tuple[JobSpec, bytes]] = OrderedDict()
"""The digests of the last :data:`_DIGESTS_KEPT` spec objects, by identity (each entry
holds its spec, so an id is never reused while cached): the nodes of one process share
a job's spec object, and each would work out the same canonical JSON again."""
_DIGESTS_KEPT = 256


def spec_digest(spec: JobSpec) -> bytes:
    """sha256 of the spec's canonical JSON (sorted keys, no spaces): the same on every
    node whatever order its fields travelled in."""
    known = _DIGESTS.get(id(spec))
    if known is not None and known[0] is spec:
        return known[1]
    from .convert import to_json_data

    text = json.dumps(to_json_data(spec), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).digest()
    _DIGESTS[id(spec)] = (spec, digest)
    if len(_DIGESTS) > _DIGESTS_KEPT:
        _DIGESTS.popitem(last=False)
    return digest


def spec_cid(spec: JobSpec) -> str:
    """The spec's content id (a raw-codec CIDv1 over its canonical JSON digest)."""
    from .cid import RAW, cid_from_digest, cid_str

    return cid_str(cid_from_digest(spec_digest(spec), codec=RAW, version=1))


def statement(commitment: Commitment, *, job_id: str, node_id: str, spec: JobSpec) -> bytes:
    """What a compute node signs inside its sealed commitment: the job, itself, the spec
    it ran and the commitment. Shown to third parties in a fraud proof or a receipt, the
    signature proves the node promised these results for this exact job."""
    ids = b"".join(len(v.encode()).to_bytes(2, "big") + v.encode() for v in (job_id, node_id))
    return _STATEMENT + ids + spec_digest(spec) + commitment.encode()
