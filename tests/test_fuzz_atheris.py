"""Coverage-guided fuzzing with atheris, seeded with valid inputs (x86-64 wheels only;
skipped with the reason where atheris is not installed)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bacalhau.convert import to_json_data
from bacalhau.identity import Identity
from bacalhau.models import JobSpec
from bacalhau.protocol.messages import JobCreated, encode_message
from bacalhau.wire import encode_envelope

pytestmark = pytest.mark.slow
TARGETS = Path(__file__).parent / "fuzz" / "atheris_targets.py"
RUNS = 10_000


def seeds(target: str) -> list[bytes]:
    spec = JobSpec.noop(stdout="x", env={"A": "b"}, outputs=[])
    if target == "wire":
        frame, _ = encode_envelope(
            Identity.generate(),
            *encode_message(
                JobCreated(job_id="j-1", spec=spec, seal_key=b"k" * 32, created_at=1.0)
            ),
            now=time.time(),
        )
        return [frame]
    if target == "spec":
        return [json.dumps(to_json_data(spec)).encode()]
    from bacalhau.cid import encode_varint
    from bacalhau.storage.ipfs.car import encode_header
    from bacalhau.storage.ipfs.dagpb import PBLink, PBNode, encode_node

    block = encode_node(
        PBNode(
            links=(PBLink(hash=b"\x12\x20" + b"\x01" * 32, name="a", tsize=3),),
            data=b"\x08\x02\x12\x03abc\x18\x03",
        )
    )
    if target == "dagpb":
        return [block]
    cid = b"\x01\x70\x12\x20" + hashlib.sha256(block).digest()
    header = encode_header([cid])
    return [encode_varint(len(header)) + header + encode_varint(len(cid + block)) + cid + block]


@pytest.mark.parametrize("target", ["wire", "spec", "dagpb", "car"])
def test_atheris(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds(target)):
        (corpus / f"seed{i}").write_bytes(seed)
    proc = subprocess.run(
        [
            sys.executable,
            str(TARGETS),
            target,
            f"-runs={RUNS}",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {RUNS} runs" in proc.stderr
