"""Receipts: signed by the requester, checked offline by ``bacalhau verify`` re-running the job."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import attrs
import httpx
import pytest

from bacalhau import Deal, JobSpec, Network, RequesterConfig
from bacalhau.api.client import SyncClient
from bacalhau.api.server import serve_api
from bacalhau.cli import main
from bacalhau.errors import BacalhauError, JobNotFound
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


TOKEN = "receipt-token"


class Served:
    """A 2-node network on a worker thread (the CLI runs its own event loop): node 0 is
    durable (finished jobs leave memory for its store) and serves its API with a token."""

    def __init__(self, url: str, job_id: str, cid: str | None, nodes: set[str]) -> None:
        self.url, self.job_id, self.cid, self.nodes = url, job_id, cid, nodes


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    job = JobSpec.wasm(HELLO_WAT, verifier="audit", publisher="ipfs", deal=Deal(min_bids=2))
    options: list[dict[str, Any]] = [{"durable": True}, {}]
    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[Served] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with (
                Network.in_memory(2, requester=FAST, per_node_options=options) as net,
                anyio.create_task_group() as tg,
            ):
                node = net.nodes[0]
                result = await node.run_job(job, timeout=60)
                assert result.ok, result.reason
                assert result.job_id not in node.requester.jobs  # read back from the store
                address = await tg.start(functools.partial(serve_api, node, port=0, token=TOKEN))
                nodes = {n.node_id for n in net.nodes}
                box.append(Served(str(address), result.job_id, result.cid, nodes))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            yield box[0]
        finally:
            future.cancel()


@pytest.fixture(scope="module")
def receipt(served: Served) -> Receipt:
    """The receipt of a real job, fetched over HTTP with the Client."""
    with SyncClient(served.url, token=TOKEN) as client:
        made = client.receipt(served.job_id[:10])  # a unique prefix will do
    assert made.job_id == served.job_id
    assert made.results_cid == served.cid
    assert made.spec_cid.startswith("b")
    assert made.executor == "wasm"
    assert made.worker is not None  # the worker's own signed commitment
    assert set(made.nodes) <= served.nodes
    return made


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_cli_fetches_a_receipt_over_http_and_verify_passes_it(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    api = ["--api", served.url, "--api-token", TOKEN]
    code, out = cli(capsys, "receipt", served.job_id, *api, "-o", str(path))
    assert code == 0, out
    assert Receipt.from_json(path.read_text()).job_id == served.job_id
    code, out = cli(capsys, "verify", str(path))
    assert code == 0, out
    assert "match" in out
    path.write_text(path.read_text().replace(served.job_id, served.job_id[:-1] + "x"))
    code, out = cli(capsys, "verify", str(path))
    assert code == 1, out
    assert "tampered" in out
    code, out = cli(capsys, "receipt", served.job_id, *api)  # to stdout
    assert code == 0, out
    assert Receipt.from_json(out).job_id == served.job_id


def test_the_receipt_route_needs_the_token_and_a_completed_job(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    with httpx.Client(base_url="http://" + served.url, timeout=30) as raw:
        path = f"/api/v1/jobs/{served.job_id}/receipt"
        assert raw.get(path).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert raw.get(path, headers=bearer).status_code == 200
        missing = raw.get("/api/v1/jobs/j-nosuchjob/receipt", headers=bearer)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "job_not_found"
    code, out = cli(capsys, "receipt", served.job_id, "--api", served.url)
    assert code == 2  # refused without the token: a client error, said plainly
    assert "token" in out
    assert "Traceback" not in out


@pytest.mark.anyio
async def test_a_job_that_is_not_completed_has_no_receipt() -> None:
    options: list[dict[str, Any]] = [{"compute": None}]
    async with Network.in_memory(1, per_node_options=options) as net:
        node = net.nodes[0]
        handle = await node.submit(attrs.evolve(JobSpec.noop(stdout="x"), queue_timeout=60))
        with pytest.raises(BacalhauError, match="only completed jobs have receipts"):
            receipt_of(node, handle.job_id)
        with pytest.raises(JobNotFound):
            receipt_of(node, "j-nosuchjob")
        await handle.cancel()


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
