"""The public surface is what we mean it to be, and the sans-IO core loads no I/O."""

import subprocess
import sys

import pytest

import bacalhau


def test_exports_resolve() -> None:
    for name in bacalhau.__all__:
        assert getattr(bacalhau, name) is not None, name
    assert set(bacalhau.__all__) >= {
        "Network",
        "Node",
        "JobSpec",
        "Deal",
        "JobResult",
        "JobState",
        "Client",
    }


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        bacalhau.NoSuchThing  # noqa: B018


def test_protocol_core_imports_no_io() -> None:
    code = (
        "import sys, bacalhau.protocol.requester, bacalhau.protocol.compute, bacalhau.wire;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('anyio', 'asyncio', 'socket', 'trio', 'httpx', 'docker', 'wasmtime')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
