"""The deterministic verifier: sealed proposals, their binding, and whole networks using it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bacalhau import Deal, ExecutionState, JobSpec, JobState, Network, RequesterConfig
from bacalhau.errors import VerificationError
from bacalhau.identity import Identity
from bacalhau.models import OutputSpec
from bacalhau.verifier.canonical import hash_tree
from bacalhau.verifier.deterministic import (
    MAGIC,
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
