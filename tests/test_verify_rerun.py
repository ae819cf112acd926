"""``bacalhau verify`` re-runs jobs that read inputs by CID (from CAR files or a node) and
by URL, and Docker jobs marked deterministic; what it cannot check exits 2 with the reason."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import pytest

from bacalhau import Deal, JobSpec, Network, RequesterConfig
from bacalhau.api.server import serve_api
from bacalhau.cli import main
from bacalhau.compute.capacity import ComputeConfig
from bacalhau.limits import JobLimits
from bacalhau.models import InputSpec, OutputSpec, StorageSpec
from bacalhau.node.node import Node
from bacalhau.node.receipt import Receipt, receipt_of
from bacalhau.storage.ipfs.car import export_car

T = TypeVar("T")

COPY_WAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "file.txt")
  ;; cat /file.txt > /out/file.txt : fd 3 is the input's parent, fd 4 the output
  (func (export "_start") (local $in i32) (local $out i32) (local $n i32) (local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 8)
                     (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 100) (local.get $err)))))
    (local.set $in (i32.load (i32.const 64)))
    (local.set $err (call $path_open (i32.const 4) (i32.const 0) (i32.const 1024) (i32.const 8)
                     (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 200) (local.get $err)))))
    (local.set $out (i32.load (i32.const 64)))
    (block $done (loop $copy
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 60000))
      (if (call $fd_read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 3))))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $done (i32.eqz (local.get $n)))
      (i32.store (i32.const 4) (local.get $n))
      (drop (call $fd_write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $copy)))))
"""
CONTENT = b"apples and pears\n"
FAST = RequesterConfig(bid_timeout=2.0, bid_window=0.0, publish_timeout=30.0)
LOOPBACK = JobLimits(url_allow_networks=("127.0.0.0/8",))


def copy_job(source: StorageSpec, module: StorageSpec | str = COPY_WAT) -> JobSpec:
    return JobSpec.wasm(
        module,
        inputs=[InputSpec(source, "/file.txt")],
        outputs=[OutputSpec("out", "/out")],
        verifier="audit",
        deal=Deal(min_bids=2),
    )


class Served:
    """A 2-node network (URL inputs may reach loopback) with node 0's API, on a worker
    thread: the CLI runs its own event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, node: Node, api: str) -> None:
        self.portal, self.node, self.api = portal, node, api

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(fn, *args)

    def receipt(self, spec: JobSpec) -> Receipt:
        async def run() -> Receipt:
            result = await self.node.run_job(spec, timeout=120)
            assert result.ok, result.reason
            return receipt_of(self.node, result.job_id)

        return self.call(run)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    compute = ComputeConfig(limits=LOOPBACK)
    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[Served] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with (
                Network.in_memory(2, requester=FAST, compute=compute) as net,
                anyio.create_task_group() as tg,
            ):
                address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
                box.append(Served(portal, net.nodes[0], str(address)))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            yield box[0]
        finally:
            future.cancel()


def verify(
    capsys: pytest.CaptureFixture[str], receipt: Receipt, tmp_path: Path, *options: str
) -> tuple[int, str]:
    path = tmp_path / "receipt.json"
    path.write_text(receipt.to_json())
    code = main(["verify", str(path), *options])
    out = capsys.readouterr()
    return code, out.out + out.err


def tampered(receipt: Receipt) -> Receipt:
    """The same receipt claiming other results (the requester's signature then fails)."""
    data = json.loads(receipt.to_json())
    data["results_digest"] = "00" * 32
    return Receipt.from_json(json.dumps(data))


def test_inputs_by_cid_from_a_car_file_or_from_a_node(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = served.node
    data_cid = served.call(node.add_data, CONTENT)
    module_cid = served.call(node.add_data, COPY_WAT.encode())  # the module by CID too
    receipt = served.receipt(copy_job(StorageSpec.ipfs(data_cid), module_cid))
    car = tmp_path / "inputs.car"
    for cid in (data_cid, module_cid):  # two CAR files, one DAG each
        served.call(export_car, node.blockstore, cid, tmp_path / f"{cid}.car")
    cars = [f"--car={tmp_path / f'{cid}.car'}" for cid in (data_cid, module_cid)]

    code, out = verify(capsys, receipt, tmp_path)  # nowhere to take the inputs from
    assert code == 2, out
    assert "is not here: pass --car FILE" in out
    assert "Traceback" not in out

    code, out = verify(capsys, receipt, tmp_path, *cars)
    assert code == 0, out
    assert "match" in out

    code, out = verify(capsys, receipt, tmp_path, "--inputs-from", served.api)
    assert code == 0, out

    code, out = verify(capsys, tampered(receipt), tmp_path, *cars)
    assert code == 1, out

    car.write_bytes(b"not a car")
    code, out = verify(capsys, receipt, tmp_path, f"--car={car}")
    assert code == 2, out
    assert "cannot read the CAR file" in out


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(CONTENT)))
            self.end_headers()
            self.wfile.write(CONTENT)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_url_inputs_are_fetched_where_the_policy_allows(
    served: Served, http_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = served.receipt(copy_job(StorageSpec.from_url(http_server + "/file.txt")))
    code, out = verify(capsys, receipt, tmp_path, "--allow-url-network", "127.0.0.0/8")
    assert code == 0, out
    assert "match" in out
    code, out = verify(capsys, receipt, tmp_path)  # loopback is refused by default
    assert code == 2, out
    assert "127.0.0.1" in out
    assert "Traceback" not in out


@pytest.mark.docker
def test_a_deterministic_docker_job_re_runs_on_the_engine(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from bacalhau.testing.docker import docker_test_image, require_docker_engine

    require_docker_engine()
    spec = JobSpec.docker(
        docker_test_image(),
        ["sh", "-c", "cat /file.txt /file.txt > /out/twice.txt"],
        inputs=[InputSpec(StorageSpec.inline(CONTENT), "/file.txt")],
        outputs=[OutputSpec("out", "/out")],
        verifier="audit",
        deterministic=True,
        deal=Deal(min_bids=2),
    )
    receipt = served.receipt(spec)
    assert receipt.executor == "docker"
    code, out = verify(capsys, receipt, tmp_path)
    assert code == 0, out
    assert "match" in out
    code, out = verify(capsys, tampered(receipt), tmp_path)
    assert code == 1, out
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # no engine answers there
    code, out = verify(capsys, receipt, tmp_path)
    assert code == 2, out
    assert "needs a Docker engine" in out
