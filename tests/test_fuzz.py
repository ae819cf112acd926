"""Fuzzing every decoder that reads untrusted bytes: no crash other than our named errors.

Hypothesis generates random bytes, random msgpack/JSON structures, and byte-level
mutations of valid inputs (the mutations reach deeper into the parsers).
"""

from __future__ import annotations

import io
import json
import time

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacalhau.convert import from_data, from_json_data, to_data, to_json_data
from bacalhau.errors import BacalhauError, ValidationError, WireError
from bacalhau.identity import Identity
from bacalhau.models import JobSpec
from bacalhau.protocol.messages import KINDS, JobCreated, decode_message, encode_message
from bacalhau.wire import decode_envelope, encode_envelope

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDENT = Identity.from_seed(b"\x07" * 32)
SPEC = JobSpec.noop(stdout="x", env={"A": "b"})
FRAME = encode_envelope(
    IDENT,
    *encode_message(JobCreated(job_id="j-1", spec=SPEC, seal_key=b"k" * 32, created_at=1.0)),
    now=time.time(),
)[0]

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "engine",
                    "type",
                    "params",
                    "deal",
                    "concurrency",
                    "inputs",
                    "outputs",
                    "source",
                    "target",
                    "name",
                    "path",
                    "cid",
                    "env",
                    "timeout",
                    "resources",
                    "memory",
                    "cpu",
                    "verifier",
                    "publisher",
                    "data",
                    "url",
                    "labels",
                    "retries",
                    "min_bids",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8)


@FUZZ
@given(st.binary(max_size=300))
def test_wire_random_bytes(data: bytes) -> None:
    try:
        decode_envelope(data)
    except WireError:
        pass


@FUZZ
@given(edits)
def test_wire_mutated_frames(changes: list[tuple[int, int]]) -> None:
    try:
        env = decode_envelope(mutate(FRAME, changes))
    except WireError:
        return
    try:
        decode_message(env.kind, env.body)
    except ValidationError:
        pass


@FUZZ
@given(st.sampled_from(sorted(KINDS)), plain)
def test_message_bodies(kind: str, body: object) -> None:
    try:
        decode_message(kind, body)
    except ValidationError:
        pass


@FUZZ
@given(plain)
def test_wire_structured_garbage(value: object) -> None:
    try:
        decode_envelope(msgpack.packb(value, use_bin_type=True))
    except WireError:
        pass


@FUZZ
@given(json_like)
def test_job_spec_parser(value: object) -> None:
    for parse in (from_json_data, from_data):
        try:
            parse(value, JobSpec)
        except ValidationError:
            pass


@FUZZ
@given(edits)
def test_job_spec_mutated_json(changes: list[tuple[int, int]]) -> None:
    text = mutate(json.dumps(to_json_data(SPEC)).encode(), changes)
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return
    try:
        assert from_json_data(data, JobSpec) is not None
    except ValidationError:
        pass


def _valid_dagpb() -> bytes:
    from bacalhau.storage.ipfs.dagpb import PBLink, PBNode, encode_node

    return encode_node(
        PBNode(
            links=(PBLink(hash=b"\x12\x20" + b"\x01" * 32, name="a", tsize=3),),
            data=b"\x08\x02\x12\x03abc\x18\x03",
        )
    )


@FUZZ
@given(st.binary(max_size=300) | edits.map(lambda e: mutate(_valid_dagpb(), e)))
def test_dagpb_and_unixfs_decoders(block: bytes) -> None:
    from bacalhau.storage.ipfs.dagpb import decode_node
    from bacalhau.storage.ipfs.unixfs import decode_unixfs

    try:
        node = decode_node(block)
    except BacalhauError:
        return
    try:
        decode_unixfs(node.data or b"")
    except BacalhauError:
        pass


def _valid_car() -> bytes:
    import hashlib

    from bacalhau.cid import encode_varint
    from bacalhau.storage.ipfs.car import encode_header

    block = b"hello"
    cid = b"\x01\x55\x12\x20" + hashlib.sha256(block).digest()
    header = encode_header([cid])
    section = cid + block
    return encode_varint(len(header)) + header + encode_varint(len(section)) + section


@FUZZ
@given(st.binary(max_size=300) | edits.map(lambda e: mutate(_valid_car(), e)))
def test_car_reader(data: bytes) -> None:
    from bacalhau.storage.ipfs.car import iter_car

    try:
        _, blocks = iter_car(io.BytesIO(data))
        for _ in blocks:
            pass
    except BacalhauError:
        pass


def test_round_trip_is_stable() -> None:
    assert from_data(to_data(SPEC), JobSpec) == SPEC
