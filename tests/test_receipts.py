"""Receipts: signed by the requester, checked offline by ``bacalhau verify`` re-running the job."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import attrs
import pytest

from bacalhau import Deal, JobSpec, Network, RequesterConfig
from bacalhau.cli import main
from bacalhau.identity import Identity
from bacalhau.node.receipt import Receipt, receipt_of

HELLO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Hello, world!\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
FAST = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=10.0)


async def completed_job() -> tuple[Receipt, str | None, set[str]]:
    job = JobSpec.wasm(HELLO_WAT, verifier="audit", publisher="ipfs", deal=Deal(min_bids=2))
    async with Network.in_memory(2, requester=FAST) as net:
        result = await net.nodes[0].run_job(job, timeout=60)
        assert result.ok, result.reason
        return receipt_of(net.nodes[0], result.job_id), result.cid, {n.node_id for n in net.nodes}


@pytest.fixture(scope="module")
def receipt() -> Receipt:
    """A receipt of a real job (the CLI runs its own event loop, so these tests are sync)."""
    made, cid, nodes = anyio.run(completed_job)
    assert made.results_cid == cid
    assert made.spec_cid.startswith("b")
    assert made.executor == "wasm"
    assert made.worker is not None  # the worker's own signed commitment
    assert set(made.nodes) <= nodes
    return made


def verify(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "receipt.json"
    path.write_text(text)
    code = main(["verify", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_verify_passes_an_honest_receipt(
    receipt: Receipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Receipt.from_json(receipt.to_json()) == receipt
    code, out = verify(tmp_path, receipt.to_json(), capsys)
    assert code == 0, out
    assert "match" in out


def test_verify_fails_a_tampered_receipt(
    receipt: Receipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(receipt.to_json())
    data["results_digest"] = "00" * 32
    code, out = verify(tmp_path, json.dumps(data), capsys)
    assert code == 1
    assert "tampered" in out


def test_verify_fails_a_false_receipt_that_is_validly_signed(
    receipt: Receipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lying requester signs a receipt for other results: only the re-run can tell."""
    liar = Identity.generate()
    false = attrs.evolve(receipt, results_digest="00" * 32, worker=None, requester=liar.node_id)
    false = attrs.evolve(false, signature=liar.sign(false.body()))
    code, out = verify(tmp_path, false.to_json(), capsys)
    assert code == 1
    assert "mismatch: re-running gives" in out


def test_verify_says_what_is_wrong_with_a_file_that_is_no_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(tmp_path, '{"job_id": 3}', capsys)
    assert code == 2
    assert "receipt" in out
    assert "Traceback" not in out
