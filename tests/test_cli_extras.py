"""CLI options exist whether or not an optional extra is installed; using one that needs a
missing extra is a clear error naming it (never 'unrecognized arguments' or a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WITHOUT_NATS = """
import sys
class NoNats:
    def find_spec(self, name, path=None, target=None):
        if name == "nats" or name.startswith("nats."):
            raise ImportError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoNats())
from bacalhau.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_without_nats(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_NATS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )


def test_nats_options_exist_without_the_extra(tmp_path: Path) -> None:
    proc = run_without_nats(tmp_path, "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--nats-url" in proc.stdout


def test_the_nats_transport_without_the_extra_names_it(tmp_path: Path) -> None:
    proc = run_without_nats(
        tmp_path,
        *("serve", "--transport", "nats", "--nats-url", "nats://127.0.0.1:9"),
        *("--data-dir", str(tmp_path / "node"), "--api-port", "0"),
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "needs the 'nats' extra" in proc.stderr
    assert "pip install 'bacalhau-py[nats]'" in proc.stderr
