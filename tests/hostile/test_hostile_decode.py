"""Decoding what a peer sends: identifiers, numbers and hashes are checked at the door."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bacalhau import ids
from bacalhau.cid import block_digest_ok, cid_str, make_cid, to_cid
from bacalhau.convert import from_data, to_data
from bacalhau.errors import DecodeError, ValidationError
from bacalhau.identity import Identity
from bacalhau.models import JobSpec, StorageRef
from bacalhau.protocol.messages import (
    BidAccepted,
    JobCreated,
    ResultsPublished,
    decode_message,
)
from bacalhau.wire import decode_envelope, encode_envelope

NODE = Identity.from_seed(b"\x07" * 32).node_id
SPEC = to_data(JobSpec.noop())

BAD_JOB_IDS = [
    "..",
    "../..",
    "/",
    "/etc",
    "j-../x",
    "j-a/b",
    "j-",
    "",
    "j-" + "a" * 64,
    "J-ABC",
    "j-a\x00",
    "j-a\n",
    "j-.",
    "j-a.b",
]


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
def test_a_job_id_that_could_name_a_path_is_refused_at_decode(job_id: str) -> None:
    body = {"job_id": job_id, "spec": SPEC, "seal_key": b"k" * 32, "created_at": 1.0}
    with pytest.raises(ValidationError, match="job_id"):
        decode_message("JobCreated", body)


@pytest.mark.parametrize(
    "node_id", ["x", "..", NODE + "x", NODE[:-1], "12D3KooW" + "1" * 44, NODE.replace("1", "0")]
)
def test_a_node_id_must_be_a_real_ed25519_peer_id(node_id: str) -> None:
    if node_id == NODE:  # the replace() found nothing to break
        pytest.skip("no digit to break")
    with pytest.raises(ValidationError, match="node_id"):
        decode_message("BidAccepted", {"job_id": "j-1", "node_id": node_id})


def test_every_identifier_kind_has_one_pattern() -> None:
    assert ids.check("job_id", "j-0b6e1c52-1f0a-4c1e-9a63-5d1e2f3a4b5c")
    assert ids.check("node_id", NODE) == NODE
    assert ids.execution_id("j-1", NODE) == f"j-1.{NODE}"
    assert ids.check("name", "outputs") == "outputs"
    assert ids.check("subject", "bacalhau.default.node.x")
    for kind, bad in [
        ("name", ".hidden"),
        ("name", "a/b"),
        ("subject", "a.*"),
        ("subject", "a.>"),
        ("subject", "a..b"),
        ("subject", "a b"),
        ("exec_id", f"j-1/{NODE}"),
    ]:
        with pytest.raises(ValidationError, match=kind):
            ids.check(kind, bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_timestamps_are_refused(value: float) -> None:
    body = {"job_id": "j-1", "spec": SPEC, "seal_key": b"k" * 32, "created_at": value}
    with pytest.raises(ValidationError, match="created_at"):
        decode_message("JobCreated", body)
    ident = Identity.generate()
    frame, _ = encode_envelope(ident, "BidPlaced", {"job_id": "j-1"}, now=value)
    with pytest.raises(DecodeError, match="sent_at"):
        decode_envelope(frame)


def test_reasons_proposals_and_summaries_are_bounded() -> None:
    with pytest.raises(ValidationError, match="reason"):
        decode_message("BidDeclined", {"job_id": "j-1", "reason": "x" * 5000})
    with pytest.raises(ValidationError, match="proposal"):
        decode_message("ResultsProposed", {"job_id": "j-1", "proposal": b"x" * 70_000})
    ref = to_data(StorageRef(type="ipfs", cid=cid_str(make_cid(b"x"))))
    body: dict[str, Any] = {"job_id": "j-1", "ref": ref, "exit_code": 0, "stdout": "x" * 70_000}
    with pytest.raises(ValidationError, match="stdout"):
        decode_message("ResultsPublished", body)
    body = {"job_id": "j-1", "ref": ref, "exit_code": 2**40}
    with pytest.raises(ValidationError, match="exit_code"):
        decode_message("ResultsPublished", body)
    body = {"job_id": "j-1", "ref": {"type": "ipfs", "cid": "QmNotACid"}, "exit_code": 0}
    with pytest.raises(ValidationError, match="cid"):
        decode_message("ResultsPublished", body)


def test_valid_messages_still_decode() -> None:
    created = decode_message(
        "JobCreated", {"job_id": "j-1", "spec": SPEC, "seal_key": b"k" * 32, "created_at": 1.5}
    )
    assert isinstance(created, JobCreated)
    assert decode_message("BidAccepted", {"job_id": "j-1", "node_id": NODE}) == BidAccepted(
        "j-1", NODE
    )
    ref = StorageRef(type="ipfs", cid=cid_str(make_cid(b"x")))
    published = ResultsPublished(job_id="j-1", ref=ref, exit_code=0, stdout="out", stderr="")
    assert from_data(to_data(published), ResultsPublished) == published


def test_a_truncated_multihash_is_not_a_cid() -> None:
    data = b"block"
    full = make_cid(data, version=1)
    assert block_digest_ok(full, data)
    codec_prefix = full[: len(full) - 34]  # 0x01 codec
    for length in (0, 1, 16, 31):
        truncated = codec_prefix + bytes([0x12, length]) + full[-32:][:length]
        with pytest.raises(ValidationError, match="digest"):
            to_cid(truncated)
        with pytest.raises(ValueError, match="digest"):
            block_digest_ok(truncated, data)


def test_an_oversized_identity_cid_is_refused() -> None:
    inline = b"\x01\x55\x00" + bytes([0xC8, 0x01]) + b"x" * 200
    with pytest.raises(ValidationError, match="identity"):
        to_cid(inline)


def test_envelope_with_nan_inside_msgpack_float_is_refused() -> None:
    ident = Identity.generate()
    signed = msgpack.packb([1, "BidPlaced", ident.public_key, b"i" * 16, math.nan, {}])
    frame = msgpack.packb([signed, ident.sign(signed)])
    with pytest.raises(DecodeError, match="sent_at"):
        decode_envelope(frame)


def test_reasons_sent_to_peers_carry_no_server_paths(tmp_path: Path) -> None:
    from bacalhau.compute.capacity import Capacity
    from bacalhau.compute.runner import ExecutionRunner
    from bacalhau.models import Resources

    runner = ExecutionRunner(
        node_id=NODE,
        root=tmp_path / "data" / "executions",
        executors={},
        storage={},
        verifiers={},
        publishers={},
        capacity=Capacity(Resources(cpu=1, memory=1 << 30), 1, 1),
        feed=lambda event: None,
    )
    reason = runner._public(f"node storage error: No space left ({tmp_path}/data/executions/j-1/x)")
    assert str(tmp_path) not in reason
    assert "<executions>/j-1/x" in reason


def test_api_error_messages_carry_no_server_paths(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bacalhau.api._http import without_paths

    api = SimpleNamespace(node=SimpleNamespace(data_dir=tmp_path / "node"))
    message = f"cannot add {tmp_path}/node/blocks/x: No space left on device"
    assert without_paths(message, api) == "cannot add <data>/blocks/x: No space left on device"
    assert without_paths("plain", object()) == "plain"
