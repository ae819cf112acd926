"""``bacalhau verify`` re-runs jobs that read inputs by CID (from CAR files or a node) and
by URL, and Docker jobs marked deterministic; what it cannot check exits 2 with the reason."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import pytest
from test_cli_jobs import COPY_WAT  # the same cat-a-file module
from test_ipfs_url import serving

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
    with serving(CONTENT) as url:
        yield url


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
