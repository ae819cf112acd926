"""The architecture's whole example as a shell session: ``bacalhau devstack`` in the
background, ``data add``, ``docker run`` (or ``wasm run`` without an engine), ``get``, and
the file back on disk. Real processes, the installed ``bacalhau`` command, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_jobs import write_copy_module

from bacalhau.testing.docker import docker_test_image, require_docker_engine

pytestmark = pytest.mark.slow

CONTENT = "hello from the architecture page\n"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("BACALHAU_API", None)
    env.pop("BACALHAU_API_TOKEN", None)
    return env


@pytest.fixture
def devstack(tmp_path: Path) -> Iterator[str]:
    """``bacalhau devstack --nodes 3`` in the background; yields its API address, and on
    teardown stops it with Ctrl-C (SIGINT) and checks it exits cleanly."""
    log = tmp_path / "devstack.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bacalhau", "devstack", "--nodes", "3", "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(),
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"export BACALHAU_API=(\S+)", log.read_text())):
            if proc.poll() is not None:
                pytest.fail(f"devstack exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"devstack did not start within 60s:\n{log.read_text()}")
            time.sleep(0.1)
        yield found.group(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert "Stopping the devstack" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_session(script: str, api: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = _env()
    env["BACALHAU_API"] = api
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def check_outcome(done: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    for phase in ("bidding", "running", "verifying", "publishing"):
        assert re.search(rf"\d\d:\d\d:\d\d\s+{phase}\s", done.stdout), (phase, done.stdout)
    assert re.search(r"^Results CID: (Qm\w{44})$", done.stdout, re.M), done.stdout
    assert (cwd / "results" / "apples" / "file.txt").read_text() == CONTENT
    assert done.stdout.endswith(CONTENT)  # the last command of the session: cat


SESSION = """
printf '{content}' > file.txt
cid=$(bacalhau data add file.txt | tail -n1)
echo "cid: $cid"
bacalhau {run} -v "$cid:/file.txt" -o apples:/output_folder {what} | tee run.log
job=$(awk '/^Job /{{print $2; exit}}' run.log)
bacalhau get "$job" --output-dir results
cat results/apples/file.txt
"""


def session(run: str, what: str) -> str:
    return SESSION.format(content=CONTENT.replace("\n", "\\n"), run=run, what=what)


def test_architecture_example_with_wasm(devstack: str, tmp_path: Path) -> None:
    write_copy_module(tmp_path / "copy.wasm")
    done = run_session(session("wasm run", "copy.wasm"), devstack, tmp_path)
    check_outcome(done, tmp_path)


@pytest.fixture
def docker_image() -> str:
    require_docker_engine()  # skip visibly, or fail when BACALHAU_REQUIRE_DOCKER=1
    return docker_test_image()


@pytest.mark.docker
def test_architecture_example_with_docker(docker_image: str, devstack: str, tmp_path: Path) -> None:
    what = f"{docker_image} sh -c 'cat /file.txt > /output_folder/file.txt'"
    done = run_session(session("docker run", what), devstack, tmp_path)
    check_outcome(done, tmp_path)
