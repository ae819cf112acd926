"""The ``deterministic`` verifier: nodes prove they got the same results without showing them.

Compute side (:meth:`DeterministicVerifier.propose`): hash the results folder
canonically (:mod:`bacalhau.verifier.canonical`), then *seal* the digest for
the job's requester, bound to the job id and to the proposing node's id.
Requester side (:meth:`DeterministicVerifier.open`): unseal with the node's
X25519 key and check the binding; the requester's state machine then groups
the digests and accepts the agreeing majority.

The sealed proposal (format version 2)::

    header = b"BVP2" | requester_key (32) | sender_key (32) | nonce (12)
             | u16 len | job_id | u16 len | proposer node_id
    proposal = header | ChaCha20-Poly1305(key, nonce, plaintext, aad=header)
    plaintext = u16 len | job_id | u16 len | node_id | sha256 digest (32)
    key = HKDF-SHA256(X25519(sender, requester_key),
                      info=b"bacalhau/proposal/v2" | sender_key | requester_key)

The sender key is an X25519 key the proposing node keeps for one requester (made at
its first seal for that requester, replaced after :data:`REUSE` seals; it is not the
node's identity), and the nonce is random for each seal. So each (key, nonce) pair is
used once, as in version 1, but a node pays for one key exchange per requester, not
two per job: sealing took a sixth of the CPU time of a no-op job. Two nodes with the
*same* digest still send unrelated bytes (different keys, different nonces): no node
other than the requester can read a digest or tell which proposals agree. The
requester keeps the keys it derived for the senders it hears from
(:data:`OPENERS_KEPT` at most), so it too skips the exchange after a node's first
proposal.

Version 1 (magic ``BVP1``: a fresh ephemeral key per proposal, nonce 0, info
``b"bacalhau/proposal/v1"``) is still opened, never written.

The job id and proposer id are in the clear (everyone on the wire knows them
anyway) and authenticated twice, as AAD and inside the plaintext, so:

- a proposal copied from another node opens to that node's id: refused as
  ``copied``, and changing the clear id breaks the AEAD tag: refused as
  ``tampered``;
- a proposal replayed from an earlier job opens to that job's id: refused as
  ``replayed``;
- a proposal sealed for another requester is refused before any crypto.

Copying a proposal therefore gains a lazy node nothing: it cannot learn the
digest, and it cannot re-seal what it cannot read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio.to_thread
import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VerificationError
from .base import Verifier
from .canonical import hash_tree

if TYPE_CHECKING:
    from ..identity import Identity

__all__ = [
    "MAGIC",
    "MAGIC_V1",
    "OPENERS_KEPT",
    "REUSE",
    "SEALERS_KEPT",
    "V1_MAGICS",
    "DeterministicVerifier",
    "ProposalHeader",
    "open_proposal",
    "read_header",
    "seal",
    "seal_proposal",
    "unseal",
]

log = logging.getLogger("bacalhau.verifier")
_K = TypeVar("_K")
_V = TypeVar("_V")

MAGIC = b"BVP2"
"""First bytes of a sealed proposal (format version 2)."""
MAGIC_V1 = b"BVP1"
"""First bytes of a version-1 sealed proposal (opened, no longer written)."""
V1_MAGICS = frozenset({MAGIC_V1, b"BCS1", b"BCS2"})
"""The formats sealed with the version-1 construction (the proposal's, and the results
commitment's of :mod:`bacalhau.verifier.commitment`); every other magic is version 2."""
_INFO_V1 = b"bacalhau/proposal/v1"
_INFO = b"bacalhau/proposal/v2"
_NONCE_V1 = bytes(12)
_NONCE_SIZE = 12
REUSE = 1 << 20
"""Seals under one sender key before a node makes a new one for that requester (random
96-bit nonces stay far from colliding: about 2**-57 after this many)."""
SEALERS_KEPT = 1024
"""Sender keys a process keeps (one per node and requester, least recently used
dropped)."""
OPENERS_KEPT = 4096
"""Derived keys a process keeps for opening (one per requester and sender key, least
recently used dropped), each kept only once it has opened a proposal: junk cannot push
a sender's key out, and a node sealing under many keys pays an exchange for each."""
_DIGEST = 32
_MAX_ID = 1024
_TAG = 16


@attrs.frozen(kw_only=True)
class ProposalHeader:
    """The clear part of a sealed proposal: who sealed it, for whom, for which job.

    Nothing here is trusted until :func:`open_proposal` has checked the AEAD tag.
    """

    requester_key: bytes
    ephemeral_key: bytes
    """The sender's X25519 key (version 1: a fresh one per proposal)."""
    nonce: bytes
    job_id: str
    node_id: str
    size: int
    """Length of the header in bytes (the ciphertext follows)."""


def _lp(value: str) -> bytes:
    raw = value.encode()
    if not 0 < len(raw) <= _MAX_ID:
        raise VerificationError(f"id must be 1 to {_MAX_ID} bytes, got {len(raw)}")
    return len(raw).to_bytes(2, "big") + raw


def _read_lp(data: bytes, at: int, what: str) -> tuple[str, int]:
    if at + 2 > len(data):
        raise VerificationError(f"proposal is truncated (no {what})")
    n = int.from_bytes(data[at : at + 2], "big")
    end = at + 2 + n
    if not 0 < n <= _MAX_ID or end > len(data):
        raise VerificationError(f"proposal is truncated or malformed ({what})")
    try:
        return data[at + 2 : end].decode(), end
    except UnicodeDecodeError:
        raise VerificationError(f"proposal {what} is not UTF-8") from None


def _key(shared: bytes, ephemeral: bytes, requester: bytes, info: bytes = _INFO) -> bytes:
    if shared == bytes(32):
        raise VerificationError("proposal uses a degenerate key")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info + ephemeral + requester)
    return hkdf.derive(shared)


class _Kept(Generic[_K, _V]):
    """A bounded map, least recently used dropped first, safe across threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: _K, item: _V) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@attrs.define
class _Sender:
    """A node's sender key for one requester: its public bytes, the cipher it gives,
    and how many seals it has made."""

    key: bytes
    cipher: ChaCha20Poly1305
    uses: int = 0


_SEALERS: _Kept[tuple[str, bytes], _Sender] = _Kept(SEALERS_KEPT)
_OPENERS: _Kept[tuple[bytes, bytes], ChaCha20Poly1305] = _Kept(OPENERS_KEPT)


_SEALING = threading.Lock()


def _sealer(node_id: str, requester_key: bytes) -> _Sender:
    """``node_id``'s sender key for this requester (a new one after :data:`REUSE`
    seals)."""
    with _SEALING:
        sender = _SEALERS.get((node_id, requester_key))
        if sender is None or sender.uses >= REUSE:
            private = X25519PrivateKey.generate()
            public = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            try:
                shared = private.exchange(X25519PublicKey.from_public_bytes(requester_key))
            except ValueError as exc:
                raise VerificationError(f"the requester's seal key is unusable: {exc}") from None
            sender = _Sender(public, ChaCha20Poly1305(_key(shared, public, requester_key)))
            _SEALERS.put((node_id, requester_key), sender)
        sender.uses += 1
        return sender


def _opener(identity: Identity, header: ProposalHeader, v1: bool) -> tuple[ChaCha20Poly1305, bool]:
    """The cipher that opens what ``header``'s sender sealed for ``identity``, and
    whether it is worth keeping once it has opened something (derived now, version 2):
    a cipher is kept only for a sender key proven by a tag, so junk from a peer never
    pushes a real sender's key out.

    Raises:
        ValueError: the sender key is unusable (a low-order point).
        VerificationError: the exchange gives a degenerate secret.
    """
    if not v1:
        cipher = _OPENERS.get((header.requester_key, header.ephemeral_key))
        if cipher is not None:
            return cipher, False
    info = _INFO_V1 if v1 else _INFO  # version 1: a fresh key per proposal, never kept
    shared = identity.seal_exchange(header.ephemeral_key)
    derived = _key(shared, header.ephemeral_key, header.requester_key, info)
    return ChaCha20Poly1305(derived), not v1


def seal_proposal(digest: bytes, *, job_id: str, node_id: str, requester_key: bytes) -> bytes:
    """Seal ``digest`` for the requester whose X25519 public key is ``requester_key``.

    Args:
        digest: the 32-byte canonical hash of the results.
        job_id: the job the results belong to.
        node_id: the proposing node (the envelope's signer must be this node).
        requester_key: the requester's 32-byte X25519 key (from ``JobCreated``).

    Raises:
        VerificationError: a wrong-sized digest or key, or an empty/oversized id.
    """
    if len(digest) != _DIGEST:
        raise VerificationError(f"a digest is {_DIGEST} bytes, got {len(digest)}")
    return seal(MAGIC, digest, job_id=job_id, node_id=node_id, requester_key=requester_key)


def seal(magic: bytes, payload: bytes, *, job_id: str, node_id: str, requester_key: bytes) -> bytes:
    """Seal ``payload`` (format ``magic``) for one requester, bound to the job and the node.

    The construction of :func:`seal_proposal`, for any payload: the commitment of
    :mod:`bacalhau.verifier.commitment` travels the same way.
    """
    if len(requester_key) != 32:
        raise VerificationError(
            f"the requester's seal key must be 32 bytes, got {len(requester_key)}"
        )
    if magic in V1_MAGICS:
        raise VerificationError(f"{magic!r} is a version-1 format, which is no longer written")
    ids = _lp(job_id) + _lp(node_id)
    sender = _sealer(node_id, requester_key)
    nonce = os.urandom(_NONCE_SIZE)
    header = magic + requester_key + sender.key + nonce + ids
    return header + sender.cipher.encrypt(nonce, ids + payload, header)


def read_header(proposal: bytes, *, magic: bytes = MAGIC) -> ProposalHeader:
    """Parse the clear header of a sealed proposal (nothing is authenticated yet).

    Args:
        proposal: the sealed bytes.
        magic: the format expected (version 1 for :data:`V1_MAGICS`, else version 2).

    Raises:
        VerificationError: not of the format ``magic`` names, or truncated.
    """
    if not isinstance(proposal, bytes) or not proposal.startswith(magic):
        raise VerificationError("not a deterministic proposal (unknown format or version)")
    at = len(magic)
    nonce_size = 0 if magic in V1_MAGICS else _NONCE_SIZE
    if len(proposal) < at + 64 + nonce_size:
        raise VerificationError("proposal is truncated (keys)")
    requester_key, ephemeral_key = proposal[at : at + 32], proposal[at + 32 : at + 64]
    nonce = proposal[at + 64 : at + 64 + nonce_size] if nonce_size else _NONCE_V1
    job_id, at = _read_lp(proposal, at + 64 + nonce_size, "job id")
    node_id, at = _read_lp(proposal, at, "node id")
    return ProposalHeader(
        requester_key=requester_key,
        ephemeral_key=ephemeral_key,
        nonce=nonce,
        job_id=job_id,
        node_id=node_id,
        size=at,
    )


def open_proposal(identity: Identity, proposal: bytes, *, job_id: str, node_id: str) -> bytes:
    """The digest sealed in ``proposal``, if it is valid from ``node_id`` for ``job_id``.

    Args:
        identity: the requester's keys (its X25519 key opens the seal).
        proposal: the bytes carried by ``ResultsProposed``.
        job_id: the job the proposal arrived for.
        node_id: the signer of the envelope that carried it.

    Raises:
        VerificationError: with a reason starting with ``copied``, ``replayed``,
            ``tampered``, ``sealed for another requester`` or naming the format
            problem.
    """
    v1 = isinstance(proposal, bytes) and proposal.startswith(MAGIC_V1)
    digest = unseal(MAGIC_V1 if v1 else MAGIC, identity, proposal, job_id=job_id, node_id=node_id)
    if len(digest) != _DIGEST:
        raise VerificationError("tampered: sealed and clear ids disagree")
    return digest


def unseal(magic: bytes, identity: Identity, sealed: bytes, *, job_id: str, node_id: str) -> bytes:
    """The payload of :func:`seal`, checked as :func:`open_proposal` checks a proposal."""
    header = read_header(sealed, magic=magic)
    if header.requester_key != identity.seal_public_key:
        raise VerificationError("sealed for another requester (not this node's seal key)")
    try:
        cipher, keep = _opener(identity, header, magic in V1_MAGICS)
        plain = cipher.decrypt(header.nonce, sealed[header.size :], sealed[: header.size])
        if keep:
            _OPENERS.put((header.requester_key, header.ephemeral_key), cipher)
    except (InvalidTag, ValueError):
        raise VerificationError(
            f"tampered: the proposal from {node_id} does not open (its clear part was changed, "
            "or it was not sealed for this requester)"
        ) from None
    sealed_job, at = _read_lp(plain, 0, "sealed job id")
    sealed_node, at = _read_lp(plain, at, "sealed node id")
    if sealed_job != header.job_id or sealed_node != header.node_id:
        raise VerificationError("tampered: sealed and clear ids disagree")
    if sealed_job != job_id:
        raise VerificationError(
            f"replayed: this proposal was sealed for job {sealed_job}, not {job_id}"
        )
    if sealed_node != node_id:
        raise VerificationError(
            f"copied: this proposal was sealed by node {sealed_node}, but sent by {node_id}"
        )
    return plain[at:]


class DeterministicVerifier(Verifier):
    """Accepts results that enough nodes proved identical, without revealing them.

    Args:
        services: the node (anything with an ``identity``); the requester side
            opens proposals with its X25519 key.
        identity: the keys to open proposals with, instead of ``services.identity``.

    A node without an identity can still propose (compute side) but not open.
    """

    name = "deterministic"
    reads_only = True

    def __init__(self, services: object | None = None, *, identity: Identity | None = None) -> None:
        self.identity: Identity | None = identity or getattr(services, "identity", None)

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        """Hash ``results_dir`` canonically (in a worker thread) and seal the digest.

        Raises:
            VerificationError: the folder holds something that cannot be verified
                (a symlink, a special file), or the requester's key is invalid.
        """
        digest = await anyio.to_thread.run_sync(hash_tree, results_dir)
        log.debug("%s: results of %s hash to %s", node_id[-8:], job_id, digest.hex())
        return seal_proposal(digest, job_id=job_id, node_id=node_id, requester_key=requester_key)

    def propose_digest(
        self, digest: bytes, *, job_id: str, node_id: str, requester_key: bytes
    ) -> bytes | None:
        """What :meth:`propose` seals, from the digest the runner already took (no
        second pass over the results, no hop to a worker thread). None for a subclass
        that changes :meth:`propose`: its own proposal is used."""
        if type(self).propose is not DeterministicVerifier.propose:
            return None
        return seal_proposal(digest, job_id=job_id, node_id=node_id, requester_key=requester_key)

    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        """The digest ``node_id`` proposed for ``job_id``; see :func:`open_proposal`."""
        if self.identity is None:
            raise VerificationError("this node has no identity to open proposals with")
        return open_proposal(self.identity, proposal, job_id=job_id, node_id=node_id)
