"""Examples from Bacalhau's own documentation, run against a devstack with our CLI.

Each test quotes the example as Bacalhau documents it (its README, its CLI's ``--help``
examples, its job files in ``testdata/``), then runs it with the one change this machine
needs: images and CIDs that exist offline (the test image for ``ubuntu``, a CID added to
the devstack for the documented one, which lives on Bacalhau's public network).
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.from_thread
import pytest
import yaml

from bacalhau import cli
from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.network import Network
from bacalhau.storage.ipfs.importer import add_bytes
from bacalhau.testing.docker import DockerEngine, require_docker_engine

pytestmark = pytest.mark.docker

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
"""What Bacalhau's wasm hello-world (a Rust ``println!``) prints, as a WASI module."""


class Devstack:
    def __init__(self, address: ApiAddress, cid: str) -> None:
        self.address = address
        self.cid = cid


@pytest.fixture(scope="module")
def docker_engine() -> DockerEngine:
    return require_docker_engine()


@pytest.fixture(scope="module")
def devstack(docker_engine: DockerEngine) -> Iterator[Devstack]:
    """Two nodes with Docker, node 0's API on a free port (the CLI runs its own loop)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[Devstack] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with Network.in_memory(2, seed=5) as net, anyio.create_task_group() as tg:
                address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
                cid = await add_bytes(net.nodes[0].blockstore, b"one.jpg\n", pin=True)
                box.append(Devstack(address, cid))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            yield box[0]
        finally:
            future.cancel()


class Bac:
    """``bacalhau ARGS`` in-process, as a user types it; returns (code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, line: str, *, stdin: str | None = None) -> tuple[int, str, str]:
        import io
        import sys

        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        argv = shlex.split(line)
        assert argv[0] == "bacalhau"
        try:
            code = cli.main(argv[1:])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def bac(
    devstack: Devstack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Bac:
    # Bacalhau's own variables pick the node (BACALHAU_API is not set)
    monkeypatch.delenv("BACALHAU_API", raising=False)
    monkeypatch.delenv("BACALHAU_API_TOKEN", raising=False)
    monkeypatch.setenv("BACALHAU_API_HOST", devstack.address.host)
    monkeypatch.setenv("BACALHAU_API_PORT", str(devstack.address.port))
    return Bac(capsys, monkeypatch)


def job_id_in(text: str) -> str:
    found = re.search(r"\bj-[0-9a-f-]{36}\b", text)
    assert found, text
    return found.group(0)


def test_readme_hello_world(bac: Bac, docker_engine: DockerEngine) -> None:
    """Bacalhau's README: ``bacalhau docker run ubuntu echo Hello World``."""
    code, out, err = bac(f"bacalhau docker run {docker_engine.image} echo Hello World")
    assert code == 0, out + err
    assert "completed" in out
    code, logs, _ = bac(f"bacalhau job logs {job_id_in(out)}")  # 1.x nests it under job
    assert (code, logs) == (0, "Hello World\n")
    code, listed, _ = bac("bacalhau job list -n 1 --id-only")
    assert (code, listed) == (0, job_id_in(out) + "\n")


def test_job_stop(bac: Bac, docker_engine: DockerEngine) -> None:
    """``bacalhau docker run --wait=false ...`` then ``bacalhau job stop ID``."""
    code, out, err = bac(f"bacalhau docker run --wait=false {docker_engine.image} sleep 60")
    assert code == 0, err
    job_id = job_id_in(out)
    code, out, err = bac(f"bacalhau job stop {job_id} --reason enough")
    assert (code, out) == (0, f"Job {job_id} cancelled\n"), err


def test_docker_run_help_example_with_an_ipfs_input(
    bac: Bac, docker_engine: DockerEngine, devstack: Devstack
) -> None:
    """``bacalhau docker run --help`` (1.x)::

    bacalhau docker run \\
        -i src=ipfs://QmeZRGhe4PmjctYVSVHuEiA9oSXnqmYa4kQubSHgWbjv72,dst=/input_images \\
        dpokidov/imagemagick:7.1.0-47-ubuntu \\
        -- magick mogrify -resize 100x100 -quality 100 -path /outputs '/input_images/*.jpg'
    """
    code, out, err = bac(
        f"bacalhau docker run -i src=ipfs://{devstack.cid},dst=/input_images "
        f"{docker_engine.image} -- sh -c 'cat /input_images > /outputs/listing.txt; "
        "cat /input_images'"
    )
    assert code == 0, out + err
    assert bac(f"bacalhau logs {job_id_in(out)}")[1] == "one.jpg\n"


def test_ipfs_uri_input_and_legacy_volume(
    bac: Bac, docker_engine: DockerEngine, devstack: Devstack
) -> None:
    """``-i ipfs://CID:/inputs`` (1.x docs) and 0.3's ``-v CID:/input_images``, in one job."""
    code, out, err = bac(
        f"bacalhau docker run -i ipfs://{devstack.cid}:/data/a.txt -v {devstack.cid}:/data/b.txt "
        f"{docker_engine.image} cat /data/a.txt /data/b.txt"
    )
    assert code == 0, out + err
    assert bac(f"bacalhau logs {job_id_in(out)}")[1] == "one.jpg\none.jpg\n"


def test_wasm_hello_world(bac: Bac, tmp_path: Path) -> None:
    """``bacalhau wasm run <localfile.wasm>`` (its ``--help`` example)."""
    import wasmtime

    module = tmp_path / "main.wasm"
    module.write_bytes(wasmtime.wat2wasm(HELLO_WAT))
    code, out, err = bac(f"bacalhau wasm run {module}")
    assert code == 0, out + err
    assert bac(f"bacalhau logs {job_id_in(out)}")[1] == "Hello, world!\n"


DOCKER_JOB_V1 = """\
Name: Docker Job
Type: batch
Namespace: default
Count: 1
Tasks:
  - Name: main
    Engine:
      Type: docker
      Params:
        Image: ubuntu:latest
        Entrypoint:
          - /bin/bash
        Parameters:
          - -c
          - echo 15
"""
"""Bacalhau 1.4's ``testdata/jobs/docker.yaml``, run with ``bacalhau job run job.yaml``."""

DOCKER_SPEC_V03 = """\
APIVersion: v1beta1
Spec:
  Engine: docker
  Publisher: local
  Docker:
    Image: ubuntu:latest
    Entrypoint:
    - /bin/bash
    - -c
    - echo 15
  Outputs:
  - StorageSource: localDirectory
    Name: output_custom
    Path: /output_custom
  Deal:
    Concurrency: 1
"""
"""Bacalhau's 0.3-format ``testdata/job.yaml`` (``bacalhau create job.yaml`` in 0.3)."""


def offline(text: str, image: str) -> str:
    """The documented file with the test image for ``ubuntu`` and ``sh`` for ``bash``."""
    return text.replace("ubuntu:latest", image).replace("/bin/bash", "sh")


def test_v1_job_file(bac: Bac, docker_engine: DockerEngine, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(offline(DOCKER_JOB_V1, docker_engine.image))
    assert bac(f"bacalhau job validate {job}")[:2] == (
        0,
        f"{job}: a valid docker job spec (a Bacalhau 1.x job)\n",
    )
    code, out, err = bac(f"bacalhau job run {job}")
    assert code == 0, out + err
    job_id = job_id_in(out)
    assert bac(f"bacalhau logs {job_id}")[1] == "15\n"
    # "bacalhau job describe 6e51df50 | bacalhau job run": the describe output runs again
    code, described, _ = bac(f"bacalhau job describe {job_id}")
    assert code == 0
    assert yaml.safe_load(described)["spec"]["name"] == "Docker Job"
    code, again, err = bac("bacalhau job run", stdin=described)
    assert code == 0, again + err
    assert job_id_in(again) != job_id
    assert bac(f"bacalhau logs {job_id_in(again)}")[1] == "15\n"


def test_v03_spec_file_with_create(bac: Bac, docker_engine: DockerEngine, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(offline(DOCKER_SPEC_V03, docker_engine.image))
    code, out, err = bac(f"bacalhau create {spec}")
    assert code == 0, out + err
    assert bac(f"bacalhau logs {job_id_in(out)}")[1] == "15\n"


def test_dry_run_saves_a_job_file(bac: Bac, docker_engine: DockerEngine, tmp_path: Path) -> None:
    """``bacalhau docker run --dry-run ubuntu echo hello > job.yaml``, then ``job run``."""
    code, spec, err = bac(
        f"bacalhau docker run --dry-run --cpu 500m {docker_engine.image} echo hello"
    )
    assert code == 0, err
    assert "j-" not in spec  # nothing submitted
    loaded = yaml.safe_load(spec)
    assert loaded["resources"]["cpu"] == 0.5
    job = tmp_path / "job.yaml"
    job.write_text(spec)
    code, out, err = bac(f"bacalhau job run {job} --download --output-dir {tmp_path / 'res'}")
    assert code == 0, out + err
    assert (tmp_path / "res" / "stdout").read_text() == "hello\n"
    code, out, err = bac(f"bacalhau get {job_id_in(out)} --raw --output-dir {tmp_path / 'raw'}")
    assert code == 0, out + err
    (raw,) = (tmp_path / "raw" / "raw").iterdir()
    assert (raw / "stdout").read_text() == "hello\n"


def test_refusals_name_the_key(bac: Bac, docker_engine: DockerEngine, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        offline(DOCKER_JOB_V1, docker_engine.image).replace("Count: 1", "Count: 1\nPriority: 5")
    )
    code, _, err = bac(f"bacalhau job run {job}")
    assert code == 2
    assert "Priority" in err
    job.write_text(offline(DOCKER_JOB_V1, docker_engine.image).replace("Image:", "Imagee:"))
    code, _, err = bac(f"bacalhau job validate {job}")
    assert code == 2
    assert "Tasks[0].Engine.Params.Imagee" in err
    code, _, err = bac(f"bacalhau docker run -i s3://bucket/key {docker_engine.image} ls")
    assert code == 2
    assert "s3://" in err
