"""Hostile announcements: a peer's NodeInfo (engines, unavailable engines, held CIDs,
version, GPUs) and its provider-record announcements are bounded and checked when
decoded; what is printed to an operator (``bacalhau node list``) carries no control
characters."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bacalhau.cid import RAW, make_cid
from bacalhau.convert import to_data
from bacalhau.errors import ValidationError
from bacalhau.identity import Identity
from bacalhau.models import NodeInfo
from bacalhau.protocol import messages as m
from bacalhau.storage.ipfs.records import ProviderRecords

NODE = Identity.generate().node_id
BASE: dict[str, Any] = to_data(
    m.NodeAnnounced(
        NodeInfo(node_id=NODE, executors=("wasm",), verifiers=(), publishers=(), storage=())
    )
)


def _announced(**over: Any) -> m.Message:
    body = copy.deepcopy(BASE)
    body["info"].update(over)
    return m.decode_message("NodeAnnounced", body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data", ["bafkqaaa"] * 257),  # more held CIDs than announced at most
        ("data", [1]),
        ("data", ["x" * 200]),
        ("unavailable", ["docker"] * 65),
        ("unavailable", ["docker\x1b[2J"]),  # a terminal escape in an engine name
        ("executors", ["wasm\n[fake] line"]),
        ("version", "v" * 100_000),  # a 100 kB version kept in every requester's table
        ("version", "1.0\x1b]0;pwned\x07"),
        ("gpus", [{"vendor": "x" * 100_000}]),
        ("gpus", [{"model": "\x1b[31m"}]),
        ("free_memory", -5),
        ("free_cpu", float("nan")),
        ("node_id", "../x"),
    ],
)
def test_a_bad_announcement_is_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        _announced(**{field: value})


def test_an_honest_announcement_passes() -> None:
    cids = [str(make_cid(b"%d" % i, codec=RAW, version=1)) for i in range(256)]
    msg = _announced(data=cids, unavailable=["docker"], version="0.9.0")
    assert isinstance(msg, m.NodeAnnounced)
    assert msg.info.data[0] == cids[0]


def test_a_flood_of_provider_announcements_stays_bounded() -> None:
    records = ProviderRecords(max_roots=64, max_per_root=4, clock=lambda: 0.0)
    for i in range(2000):
        records.add(make_cid(b"%d" % i, codec=RAW, version=1), "mallory")
    one = make_cid(b"one", codec=RAW, version=1)
    for i in range(100):
        records.add(one, f"peer-{i}")
    assert len(records) <= 64 * 4  # records: roots x providers per root, both bounded
    assert records.providers(make_cid(b"0", codec=RAW, version=1)) == []  # oldest root out
    assert len(records.providers(one)) == 4
