"""The virtual environment holding Bacalhau's official Python client, for the tests that
drive a node through it.

``bacalhau-sdk`` 1.4.2 pins ``cryptography<43``, ``ruff<0.6`` and ``pygments==2.17.2``,
so it cannot share our environment: it gets ``.venv-bacalhau-sdk`` (or
``$BACALHAU_SDK_VENV``), made by ``scripts/test.sh`` or, when missing, by the first
test that needs it. Where PyPI cannot be reached the tests skip with the reason; on
CI (``CI=true``) or with ``BACALHAU_REQUIRE_SDK=1`` they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINS = ("bacalhau-sdk==1.4.2", "bacalhau-apiclient==1.4.1")
DRIVER = Path(__file__).resolve().parent / "bacalhau_sdk_driver.py"


def sdk_venv() -> Path:
    return Path(os.environ.get("BACALHAU_SDK_VENV") or ROOT / ".venv-bacalhau-sdk")


def sdk_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("BACALHAU_REQUIRE_SDK") == "1"


def provision(venv: Path) -> str | None:
    """Make ``venv`` with the pinned client unless it has it; the problem, or None."""
    python = venv / "bin" / "python"
    marker = venv / "bacalhau-sdk-pins.txt"
    wanted = "\n".join(PINS) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return None
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(step[:3])}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{' '.join(step[:4])} failed: {' / '.join(tail)}"
    marker.write_text(wanted)
    return None


def require_sdk_python() -> Path:
    """The venv's interpreter; skip (or fail where required) if it cannot be had."""
    venv = sdk_venv()
    problem = provision(venv)
    if problem is None:
        return venv / "bin" / "python"
    if sdk_required():
        pytest.fail(f"the Bacalhau client's venv is required but {problem}", pytrace=False)
    pytest.skip(f"Bacalhau client tests skipped: {problem}")
    raise AssertionError("unreachable: pytest.skip raises")  # pragma: no cover
