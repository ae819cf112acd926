"""The deterministic verifier: sealed proposals, their binding, and whole networks using it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bacalhau import Deal, ExecutionState, JobSpec, JobState, Network, RequesterConfig
from bacalhau.commitment import Commitment
from bacalhau.errors import VerificationError
from bacalhau.identity import Identity
from bacalhau.models import OutputSpec
from bacalhau.verifier import deterministic
from bacalhau.verifier.canonical import hash_tree
from bacalhau.verifier.commitment import (
    SEALED_MAGIC_V1,
    SIGNED_MAGIC,
    SIGNED_MAGIC_V1,
    unseal_commitment,
    unseal_signed,
)
from bacalhau.verifier.deterministic import (
    MAGIC,
    MAGIC_V1,
    DeterministicVerifier,
    open_proposal,
    read_header,
    seal_proposal,
)

REQ = Identity.from_seed(bytes(range(32)))
OTHER = Identity.from_seed(bytes(range(1, 33)))
A, B = Identity.generate().node_id, Identity.generate().node_id
JOB, JOB2 = "j-1", "j-2"
DIGEST = bytes(range(32))


def seal(
    digest: bytes = DIGEST, job: str = JOB, node: str = A, key: bytes = REQ.seal_public_key
) -> bytes:
    return seal_proposal(digest, job_id=job, node_id=node, requester_key=key)


def test_round_trip() -> None:
    assert open_proposal(REQ, seal(), job_id=JOB, node_id=A) == DIGEST


def test_proposal_reveals_nothing_and_equal_digests_look_unrelated() -> None:
    one, two = seal(), seal()
    assert one != two
    assert DIGEST not in one
    assert DIGEST not in two
    # the ciphertexts of equal digests share no 16-byte window beyond the clear header
    size = read_header(one).size
    windows = {one[i : i + 16] for i in range(size, len(one) - 16)}
    assert not any(two[i : i + 16] in windows for i in range(size, len(two) - 16))


def test_header_names_job_proposer_and_requester() -> None:
    header = read_header(seal())
    assert (header.job_id, header.node_id, header.requester_key) == (JOB, A, REQ.seal_public_key)
    assert seal().startswith(MAGIC)


def test_copied_proposal_is_refused_as_copied() -> None:
    with pytest.raises(VerificationError, match=f"^copied: .*sealed by node {A}, but sent by {B}"):
        open_proposal(REQ, seal(node=A), job_id=JOB, node_id=B)


def test_copier_that_rewrites_the_clear_id_breaks_the_seal() -> None:
    proposal = seal(node=A)
    forged = proposal.replace(A.encode(), B.encode(), 1)
    assert read_header(forged).node_id == B
    with pytest.raises(VerificationError, match=r"^tampered"):
        open_proposal(REQ, forged, job_id=JOB, node_id=B)


def test_replayed_proposal_is_refused_as_replayed() -> None:
    with pytest.raises(VerificationError, match=f"^replayed: .*job {JOB}, not {JOB2}"):
        open_proposal(REQ, seal(job=JOB), job_id=JOB2, node_id=A)


def test_replay_with_rewritten_job_id_breaks_the_seal() -> None:
    forged = seal(job=JOB).replace(JOB.encode(), JOB2.encode(), 1)
    with pytest.raises(VerificationError, match=r"^tampered"):
        open_proposal(REQ, forged, job_id=JOB2, node_id=A)


def test_only_the_requester_can_open() -> None:
    proposal = seal()
    with pytest.raises(VerificationError, match="sealed for another requester"):
        open_proposal(OTHER, proposal, job_id=JOB, node_id=A)
    # pretending it was sealed for OTHER does not help OTHER either
    relabelled = proposal.replace(REQ.seal_public_key, OTHER.seal_public_key, 1)
    with pytest.raises(VerificationError, match=r"^tampered"):
        open_proposal(OTHER, relabelled, job_id=JOB, node_id=A)


def test_every_truncation_and_bit_flip_is_a_verification_error() -> None:
    proposal = seal()
    for n in range(len(proposal)):
        with pytest.raises(VerificationError):
            open_proposal(REQ, proposal[:n], job_id=JOB, node_id=A)
    rng = random.Random(1)
    for _ in range(300):
        data = bytearray(proposal)
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        with pytest.raises(VerificationError):
            open_proposal(REQ, bytes(data), job_id=JOB, node_id=A)


def test_garbage_and_bad_arguments() -> None:
    for junk in (b"", b"BVP1", b"XXXX" + bytes(100), b"BVP1" + bytes(64) + b"\xff\xff"):
        with pytest.raises(VerificationError):
            open_proposal(REQ, junk, job_id=JOB, node_id=A)
    with pytest.raises(VerificationError, match="digest is 32 bytes"):
        seal(digest=b"short")
    with pytest.raises(VerificationError, match="seal key must be 32 bytes"):
        seal(key=b"k")
    with pytest.raises(VerificationError, match="id must be"):
        seal(job="")
    # an all-zero (low-order) ephemeral key cannot be used to probe the requester
    good = seal()
    zero = good[: len(MAGIC) + 32] + bytes(32) + good[len(MAGIC) + 64 :]
    assert read_header(zero).ephemeral_key == bytes(32)
    with pytest.raises(VerificationError, match=r"^tampered"):
        open_proposal(REQ, zero, job_id=JOB, node_id=A)


def seal_v1(digest: bytes, job: str, node: str, key: bytes, magic: bytes = MAGIC_V1) -> bytes:
    """A proposal (or, with its ``magic``, a commitment) as version 1 sealed it: a fresh
    ephemeral key, nonce 0 (written out here, from the format in the module's
    docstring, as an older node would send it)."""
    ephemeral = X25519PrivateKey.generate()
    public = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(key))
    info = b"bacalhau/proposal/v1" + public + key
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    ids = b"".join(len(v).to_bytes(2, "big") + v for v in (job.encode(), node.encode()))
    header = magic + key + public + ids
    return header + ChaCha20Poly1305(derived).encrypt(bytes(12), ids + digest, header)


def test_a_version_2_proposal_is_what_the_documented_construction_opens() -> None:
    """Opened by hand, as the module's docstring gives format version 2."""
    proposal = seal()
    header = read_header(proposal)
    assert proposal[4:36] == REQ.seal_public_key
    assert (proposal[36:68], proposal[68:80]) == (header.ephemeral_key, header.nonce)
    shared = REQ.seal_exchange(header.ephemeral_key)
    info = b"bacalhau/proposal/v2" + header.ephemeral_key + REQ.seal_public_key
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    ids = b"".join(len(v).to_bytes(2, "big") + v for v in (JOB.encode(), A.encode()))
    assert proposal[80 : header.size] == ids
    plain = ChaCha20Poly1305(derived).decrypt(
        header.nonce, proposal[header.size :], proposal[: header.size]
    )
    assert plain == ids + DIGEST


def test_version_1_commitments_still_open() -> None:
    commitment = Commitment.of(results_digest=DIGEST, exit_code=0, stdout="o", stderr="", cid=None)
    key = REQ.seal_public_key
    unsigned = seal_v1(commitment.encode(), JOB, A, key, magic=SEALED_MAGIC_V1)
    signed = seal_v1(commitment.encode() + b"s" * 64, JOB, A, key, magic=SIGNED_MAGIC_V1)
    assert unseal_commitment(REQ, unsigned, job_id=JOB, node_id=A) == commitment
    assert unseal_signed(REQ, unsigned, job_id=JOB, node_id=A) == (commitment, None)
    assert unseal_signed(REQ, signed, job_id=JOB, node_id=A) == (commitment, b"s" * 64)
    with pytest.raises(VerificationError, match=r"^copied"):
        unseal_signed(REQ, signed, job_id=JOB, node_id=B)
    # relabelled to the other format (or version), neither opens
    for blob, magic in ((unsigned, SIGNED_MAGIC_V1), (signed, SIGNED_MAGIC)):
        with pytest.raises(VerificationError):
            unseal_signed(REQ, magic + blob[4:], job_id=JOB, node_id=A)


def test_a_version_1_proposal_still_opens_with_its_checks() -> None:
    old = seal_v1(DIGEST, JOB, A, REQ.seal_public_key)
    assert open_proposal(REQ, old, job_id=JOB, node_id=A) == DIGEST
    with pytest.raises(VerificationError, match=r"^copied"):
        open_proposal(REQ, old, job_id=JOB, node_id=B)
    with pytest.raises(VerificationError, match=r"^replayed"):
        open_proposal(REQ, old, job_id=JOB2, node_id=A)
    with pytest.raises(VerificationError, match="sealed for another requester"):
        open_proposal(OTHER, old, job_id=JOB, node_id=A)
    for i in range(len(old)):  # no byte of it can change unnoticed
        flipped = bytearray(old)
        flipped[i] ^= 0x01
        with pytest.raises(VerificationError):
            open_proposal(REQ, bytes(flipped), job_id=JOB, node_id=A)
    with pytest.raises(VerificationError, match="no longer written"):
        deterministic.seal(
            MAGIC_V1, DIGEST, job_id=JOB, node_id=A, requester_key=REQ.seal_public_key
        )


def test_a_node_keeps_one_sender_key_per_requester_with_a_fresh_nonce_per_seal() -> None:
    node, other_node = Identity.generate().node_id, Identity.generate().node_id
    one, two = seal(node=node), seal(node=node)
    h1, h2 = read_header(one), read_header(two)
    assert h1.ephemeral_key == h2.ephemeral_key  # one exchange for both
    assert h1.nonce != h2.nonce and len(h1.nonce) == 12
    # another node, or another requester: another key
    assert read_header(seal(node=other_node)).ephemeral_key != h1.ephemeral_key
    key = OTHER.seal_public_key
    assert read_header(seal(node=node, key=key)).ephemeral_key != h1.ephemeral_key
    for proposal in (one, two):
        assert open_proposal(REQ, proposal, job_id=JOB, node_id=node) == DIGEST


def test_a_sender_key_is_replaced_after_its_seals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deterministic, "REUSE", 3)
    node = Identity.generate().node_id
    keys = [read_header(seal(node=node)).ephemeral_key for _ in range(7)]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert keys[3] == keys[4] == keys[5] != keys[6]


def test_the_requester_exchanges_keys_once_per_sender_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requester = Identity.generate()
    exchanges: list[bytes] = []
    real = Identity.seal_exchange

    def counted(self: Identity, peer: bytes) -> bytes:
        if self is requester:
            exchanges.append(peer)
        return real(self, peer)

    monkeypatch.setattr(Identity, "seal_exchange", counted)
    node = Identity.generate().node_id
    key = requester.seal_public_key
    for job in ("j-1", "j-2", "j-3"):
        proposal = seal(node=node, job=job, key=key)
        assert open_proposal(requester, proposal, job_id=job, node_id=node) == DIGEST
    assert len(exchanges) == 1
    # a forged proposal under a kept key still fails its tag; a version-1 one costs its own
    forged = bytearray(seal(node=node, key=key))
    forged[-1] ^= 1
    with pytest.raises(VerificationError, match=r"^tampered"):
        open_proposal(requester, bytes(forged), job_id=JOB, node_id=node)
    old = seal_v1(DIGEST, JOB, node, key)
    assert open_proposal(requester, old, job_id=JOB, node_id=node) == DIGEST
    assert len(exchanges) == 2


def test_junk_never_takes_a_place_among_the_requesters_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cipher is kept only once it has opened something: proposals with made-up
    sender keys (no exchange for their sender) push no real sender's key out."""
    monkeypatch.setattr(deterministic, "_OPENERS", deterministic._Kept(2))
    requester, node = Identity.generate(), Identity.generate().node_id
    key = requester.seal_public_key
    assert open_proposal(requester, seal(node=node, key=key), job_id=JOB, node_id=node)
    real = read_header(seal(node=node, key=key)).ephemeral_key
    rng = random.Random(3)
    for _ in range(20):
        junk = bytearray(seal(node=node, key=key))
        junk[36:68] = rng.randbytes(32)  # another sender key, a tag that cannot hold
        with pytest.raises(VerificationError, match=r"^tampered"):
            open_proposal(requester, bytes(junk), job_id=JOB, node_id=node)
    assert deterministic._OPENERS.get((key, real)) is not None
    assert len(deterministic._OPENERS._items) == 1


def test_the_kept_keys_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deterministic, "_SEALERS", deterministic._Kept(2))
    monkeypatch.setattr(deterministic, "_OPENERS", deterministic._Kept(2))
    requester = Identity.generate()
    key = requester.seal_public_key
    nodes = [Identity.generate().node_id for _ in range(3)]
    first = [read_header(seal(node=n, key=key)).ephemeral_key for n in nodes]
    assert len(set(first)) == 3
    assert len(deterministic._SEALERS._items) == 2
    # the least recently used node's key was dropped: it seals under a new one
    assert read_header(seal(node=nodes[0], key=key)).ephemeral_key != first[0]
    assert read_header(seal(node=nodes[2], key=key)).ephemeral_key == first[2]
    for n in nodes:
        assert open_proposal(requester, seal(node=n, key=key), job_id=JOB, node_id=n) == DIGEST
    assert len(deterministic._OPENERS._items) == 2


@pytest.mark.anyio
async def test_verifier_proposes_the_canonical_hash(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_text("out")
    verifier = DeterministicVerifier(identity=REQ)
    proposal = await verifier.propose(
        job_id=JOB, node_id=A, results_dir=tmp_path, requester_key=REQ.seal_public_key
    )
    assert verifier.open(job_id=JOB, node_id=A, proposal=proposal) == hash_tree(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "stdout")
    with pytest.raises(VerificationError, match="symlink"):
        await verifier.propose(
            job_id=JOB, node_id=A, results_dir=tmp_path, requester_key=REQ.seal_public_key
        )


def test_proposal_from_a_digest_opens_as_the_folder_proposal(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_text("out")
    verifier = DeterministicVerifier(identity=REQ)
    digest = hash_tree(tmp_path)
    proposal = verifier.propose_digest(
        digest, job_id=JOB, node_id=A, requester_key=REQ.seal_public_key
    )
    assert proposal is not None
    assert verifier.open(job_id=JOB, node_id=A, proposal=proposal) == digest
    with pytest.raises(VerificationError, match=r"^replayed"):
        verifier.open(job_id=JOB2, node_id=A, proposal=proposal)

    class Own(DeterministicVerifier):  # a subclass with its own proposal keeps it
        async def propose(
            self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
        ) -> bytes:
            return b"own"

    assert Own().propose_digest(digest, job_id=JOB, node_id=A, requester_key=bytes(32)) is None


def test_verifier_takes_identity_from_the_node_services() -> None:
    class Services:
        identity = REQ

    assert DeterministicVerifier(Services()).open(job_id=JOB, node_id=A, proposal=seal()) == DIGEST
    with pytest.raises(VerificationError, match="no identity"):
        DeterministicVerifier().open(job_id=JOB, node_id=A, proposal=seal())


# --- whole networks ---------------------------------------------------------------------------

FAST = RequesterConfig(bid_timeout=2, execution_grace=3, publish_timeout=10)
DEAL = Deal(concurrency=3, confidence=2, min_bids=3)


@pytest.mark.anyio
async def test_network_accepts_agreeing_results_with_identical_cids() -> None:
    spec = JobSpec.noop(
        stdout="forty-two\n",
        files={"out/answer.txt": "42"},
        outputs=[OutputSpec("out", "/outputs")],
        verifier="deterministic",
        publisher="ipfs",
        deal=DEAL,
        timeout=10,
    )
    async with Network.in_memory(4, seed=11, requester=FAST) as net:
        assert all("deterministic" in n.info().verifiers for n in net.nodes)
        result = await net.nodes[0].run_job(spec, timeout=30)
        await net.wait_idle()
    assert result.state is JobState.COMPLETED, result.reason
    assert len(result.accepted) == 3
    cids = {e.published.cid for e in result.accepted if e.published}
    assert len(cids) == 1
    assert result.cid in cids
    kinds = [e.kind for e in result.events]
    assert kinds.count("proposed") == 3
    assert kinds.count("results_accepted") == 3


@pytest.mark.anyio
async def test_network_with_confidence_above_agreeing_nodes_fails_with_reason() -> None:
    spec = JobSpec.noop(
        stdout="x",
        verifier="deterministic",
        retries=0,
        deal=Deal(concurrency=2, confidence=2),
        timeout=10,
    )
    async with Network.in_memory(1, requester=FAST) as net:
        result = await net.nodes[0].run_job(spec, timeout=30)
    assert result.state is JobState.FAILED
    assert result.reason == "only 1 agreeing result of 1; confidence needs 2"


CLOCK_AND_RANDOM = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "0123456789abcdef")
  ;; hex-encode n bytes at src into dst
  (func $hex (param $src i32) (param $n i32) (param $dst i32)
    (local $i i32) (local $b i32) (local $o i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $b (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $o (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1))))
      (i32.store8 (local.get $o) (i32.load8_u (i32.shr_u (local.get $b) (i32.const 4))))
      (i32.store8 (i32.add (local.get $o) (i32.const 1))
                  (i32.load8_u (i32.and (local.get $b) (i32.const 15))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func (export "_start")
    ;; 8 bytes realtime clock, 8 bytes monotonic clock, 16 random bytes at 100..132
    (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 100)))
    (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 108)))
    (drop (call $random_get (i32.const 116) (i32.const 16)))
    (call $hex (i32.const 100) (i32.const 32) (i32.const 200))
    (i32.store8 (i32.const 264) (i32.const 10))
    (i32.store (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 65))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""


@pytest.mark.anyio
async def test_wasm_jobs_reading_clock_and_random_verify_across_nodes() -> None:
    spec = JobSpec.wasm(
        CLOCK_AND_RANDOM,
        verifier="deterministic",
        publisher="noop",
        deal=Deal(concurrency=3, confidence=3, min_bids=3),
        timeout=20,
    )
    async with Network.in_memory(3, seed=12, requester=FAST) as net:
        first = await net.nodes[0].run_job(spec, timeout=60)
        second = await net.nodes[1].run_job(spec, timeout=60)
        await net.wait_idle()
    outputs = []
    for result in (first, second):
        assert result.state is JobState.COMPLETED, result.reason
        assert len(result.accepted) == 3
        assert all(e.state is ExecutionState.PUBLISHED for e in result.executions)
        (stdout,) = {e.stdout for e in result.accepted}
        raw = bytes.fromhex(stdout.strip())
        realtime, monotonic = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8))
        assert realtime > 1_700_000_000 * 10**9
        assert monotonic > 0
        assert raw[16:] != bytes(16), "the module really read random bytes"
        outputs.append(raw)
    assert outputs[0] != outputs[1], "clock and random differ between jobs, not between nodes"
