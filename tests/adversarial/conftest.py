"""Shared pieces of the adversarial suite: the hostile WASI program and job helpers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bacalhau.models import JobResult, JobState

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def attack_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """``attack.c`` built with clang for wasm32-wasi (see its header for the modes)."""
    clang = shutil.which("clang")
    if clang is None:
        pytest.fail(
            "clang is needed to build tests/adversarial/attack.c (see examples/wasm/build.sh)"
        )
    out = tmp_path_factory.mktemp("attack") / "attack.wasm"
    proc = subprocess.run(
        [
            clang,
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-O2",
            "-Wl,--strip-all",
            "-o",
            str(out),
            str(HERE / "attack.c"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building attack.c failed:\n{proc.stderr}")
    return out.read_bytes()


def why(result: JobResult) -> str:
    """The job's reason, every event detail and what each execution printed, in one
    string to search."""
    printed = [f"{e.reason} {e.stdout} {e.stderr}" for e in result.executions]
    return " | ".join([result.reason, *(e.detail for e in result.events), *printed])


def assert_refused(result: JobResult, *needles: str) -> None:
    """The job failed, and its reason or events say each of ``needles``."""
    text = why(result)
    assert result.state is JobState.FAILED, f"expected a failed job, got {result.state}: {text}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
