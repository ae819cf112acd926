"""Attacks on a real ``bacalhau serve`` process, through its HTTP API only.

The node starts from a data dir whose key file is readable by everyone (it is made
0600, with a warning), gets its API token from a file and its network secret on the
command line (a warning says so). A job whose URL input points at the node's own API
fails with the loopback refusal; the process keeps serving jobs; the data dir, the key
and ``state.db`` are private to the node's user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from bacalhau.api.client import Client
from bacalhau.errors import ApiError
from bacalhau.identity import Identity
from bacalhau.models import InputSpec, JobSpec, JobState, StorageSpec

from .conftest import assert_refused, why

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "adversarial-suite-token"
HELLO = '(module (memory (export "memory") 1) (func (export "_start")))'


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


class Serve:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log = data_dir.parent / "serve.log"
        token_file = data_dir.parent / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        args = [
            *("serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0"),
            *("--api-port", "0", "--no-mdns", "--token-file", str(token_file)),
            *("--secret", "on-the-command-line"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACALHAU_")}
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bacalhau", "--log-level", "info", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        self.api = ""

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        with anyio.fail_after(90):
            while True:
                line = await anyio.to_thread.run_sync(
                    self.proc.stdout.readline, abandon_on_cancel=True
                )
                if not line:
                    raise AssertionError(f"serve exited: {self.log.read_text()[-2000:]}")
                if line.startswith("API: "):
                    self.api = line.split()[-1]
                elif line.startswith("Ready."):
                    return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o755)
    key = data_dir / "node.key"
    key.write_bytes(Identity.generate().private_bytes())
    key.chmod(0o644)  # as a careless copy would leave it
    proc = Serve(data_dir)
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()


async def test_serve_process_refuses_url_to_itself_and_keeps_serving(serve: Serve) -> None:
    async with Client(serve.api, token=TOKEN, timeout=60) as client:
        attack = JobSpec.wasm(
            HELLO,
            inputs=[InputSpec(StorageSpec.from_url(f"{serve.api}/api/v1/jobs"), "/in/jobs")],
            timeout=30,
            retries=0,
        )
        result = await client.wait(await client.submit(attack), timeout=120)
        assert_refused(result, "a loopback address", "--allow-url-network")
        honest = await client.wait(await client.submit(JobSpec.wasm(HELLO)), timeout=120)
        assert honest.state is JobState.COMPLETED, why(honest)
    # Local secrets: the key made private with a warning, the data dir and state private.
    assert mode(serve.data_dir / "node.key") == 0o600
    assert mode(serve.data_dir) == 0o700
    assert mode(serve.data_dir / "state.db") == 0o600
    log = serve.log.read_text()
    assert "made it 0600" in log
    assert "--secret on the command line is visible" in log
    assert "--token on the command line" not in log
    # Without the token from the file, the API says no.
    async with Client(serve.api, token="wrong", timeout=60) as anonymous:
        with pytest.raises(ApiError) as refused:
            await anonymous.submit(JobSpec.wasm(HELLO))
    assert refused.value.status == 401
