"""Bad job specs give one clear error each, naming the field."""

from typing import Any

import pytest

from bacalhau.convert import from_data, from_json_data, to_data, to_json_data
from bacalhau.errors import ValidationError
from bacalhau.models import Deal, InputSpec, JobSpec, OutputSpec, Resources, StorageSpec, parse_size

GOOD = {"engine": {"type": "noop", "params": {}}}
EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({**GOOD, "deal": {"concurrency": 0}}, "$.deal.concurrency", "at least 1"),
        (
            {**GOOD, "deal": {"concurrency": 2, "confidence": 3}},
            "$.deal.confidence",
            "confidence <= concurrency",
        ),
        ({**GOOD, "deal": {"min_bids": -1}}, "$.deal.min_bids", "from 0 to 10000"),
        ({**GOOD, "deal": {"concurrency": "two"}}, "$.deal.concurrency", "expected a number"),
        (
            {**GOOD, "outputs": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]},
            "$.outputs",
            "duplicate output names: a",
        ),
        ({**GOOD, "outputs": [{"name": "a/b", "path": "/o"}]}, "$.outputs[0].name", "no '/'"),
        ({**GOOD, "outputs": [{"name": "..", "path": "/o"}]}, "$.outputs[0].name", "'..'"),
        ({**GOOD, "outputs": [{"name": "stdout", "path": "/o"}]}, "$.outputs[0].name", "reserved"),
        (
            {**GOOD, "outputs": [{"name": "o", "path": "relative"}]},
            "$.outputs[0].path",
            "absolute path",
        ),
        ({**GOOD, "outputs": [{"name": "o", "path": "/a/../b"}]}, "$.outputs[0].path", "'..'"),
        (
            {**GOOD, "inputs": [{"source": {"type": "ipfs", "cid": "bogus"}, "target": "/in"}]},
            "$.inputs[0].source.cid",
            "not a CID",
        ),
        (
            {**GOOD, "inputs": [{"source": {"type": "ipfs"}, "target": "/in"}]},
            "$.inputs[0].source.cid",
            "needs a cid",
        ),
        (
            {**GOOD, "inputs": [{"source": {"type": "url", "url": "ftp://x"}, "target": "/in"}]},
            "$.inputs[0].source.url",
            "http(s)",
        ),
        ({**GOOD, "timeout": -1}, "$.timeout", "between 0 and 7 days"),
        ({**GOOD, "resources": {"cpu": 0}}, "$.resources.cpu", "positive"),
        ({**GOOD, "resources": {"memory": 10}}, "$.resources.memory", "at least 1 MiB"),
        ({**GOOD, "env": {"1BAD": "x"}}, "$.env", "not an environment variable name"),
        ({**GOOD, "network": "full"}, "$.network", "without network access"),
        ({**GOOD, "surprise": 1}, "$", "unknown field(s): surprise"),
        ({"deal": {}}, "$.engine", "required field missing"),
        ({"engine": 7}, "$.engine", "expected a mapping"),
        ({**GOOD, "verifier": "Not A Name"}, "$.verifier", "not a verifier name"),
    ],
)
def test_bad_spec_names_the_field(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_json_data(data, JobSpec)
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert words in message
    assert message.count(";") == 0, "one error, one message"


def test_two_volumes_at_one_path() -> None:
    with pytest.raises(ValidationError, match="same path: /x"):
        JobSpec.noop(
            inputs=[InputSpec(StorageSpec.inline("a"), "/x")], outputs=[OutputSpec("o", "/x")]
        )


def test_constructors_validate_too() -> None:
    with pytest.raises(ValidationError, match="concurrency"):
        Deal(concurrency=0)
    with pytest.raises(ValidationError, match="inline data is"):
        StorageSpec.inline(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ValidationError, match="root directory"):
        OutputSpec("o", "/")


def test_round_trips_wire_and_json() -> None:
    spec = JobSpec.wasm(
        b"\0asm\1\0\0\0",
        args=["a", "b"],
        inputs=[InputSpec(StorageSpec.ipfs(EMPTY_CID), "/in")],
        outputs=[OutputSpec("out", "/out")],
        env={"K": "V"},
        resources=Resources(cpu=1, memory=parse_size("64Mi")),
        deal=Deal(concurrency=3, confidence=2, min_bids=3),
        verifier="deterministic",
    )
    assert from_data(to_data(spec), JobSpec) == spec
    assert from_json_data(to_json_data(spec), JobSpec) == spec


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100", 100),
        ("1k", 1024),
        ("1KB", 1000),
        ("512Mi", 512 * 2**20),
        ("1g", 2**30),
        ("1GB", 10**9),
        ("1.5Gi", int(1.5 * 2**30)),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_refuses_garbage() -> None:
    with pytest.raises(ValidationError, match="not a size"):
        parse_size("lots")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"n": 2**64}, "64-bit range"),
        ({"x": float("nan")}, "not finite"),
        ({"s": {1, 2}}, "JSON-like"),
        ({"k": {1: "a"}}, "keys must be strings"),
    ],
)
def test_engine_params_must_travel(params: dict[str, Any], words: str) -> None:
    from bacalhau.models import EngineSpec

    with pytest.raises(ValidationError, match=words):
        EngineSpec("noop", params)


def test_resources_have_upper_bounds() -> None:
    with pytest.raises(ValidationError, match="memory: must be at most"):
        Resources(memory=10**30)
