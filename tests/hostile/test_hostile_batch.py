"""Hostile batch frames at the inbound gate (wire BATCH: several messages signed once).

A batch's entries are not signed on their own: the envelope's one signature covers
them, and its signer is the sender of every message in it. So a peer cannot slip in
a message signed by someone else, cannot mix senders, and cannot replay a message
another node sent inside a fresh batch of its own and have it count as that node's.
Every malformed batch is refused and counted; the gate never raises.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import given, settings

from bacalhau.errors import ValidationError
from bacalhau.identity import Identity
from bacalhau.node.gate import Admitted, InboundGate, Turned
from bacalhau.protocol import messages as m
from bacalhau.wire import BATCH, MAX_BATCH, VerifiedCache, encode_batch, encode_envelope, pack

NOW = 1000.0
ALICE = Identity.generate()
MALLORY = Identity.generate()
ME = Identity.generate().node_id
FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None)


def gate() -> InboundGate:
    return InboundGate(node_id=ME, clock=lambda: NOW, verify_cache=VerifiedCache(), stats=Counter())


def entry(msg: m.Message) -> bytes:
    return pack(list(m.encode_message(msg)))


def senders(result: list[Admitted] | Turned) -> set[str]:
    assert isinstance(result, list)
    return {a.sender for a in result}


def test_another_nodes_signed_frame_inside_a_batch_is_not_admitted_as_theirs() -> None:
    alices_frame, _ = encode_envelope(ALICE, "BidPlaced", {"job_id": "j-1"}, now=NOW)
    batch, _ = encode_batch(MALLORY, [alices_frame, entry(m.JobCompleted("j-2"))], now=NOW)
    g = gate()
    assert g.admit(batch) is Turned.REFUSED  # an entry that is no [kind, body]: all refused
    assert g.stats["dropped_invalid"] == 1
    # and Alice's frame, relayed as it is, still counts once, as hers
    assert g.admit(alices_frame) == [Admitted(ALICE.node_id, m.BidPlaced("j-1"))]
    assert g.admit(alices_frame) is Turned.DUPLICATE


def test_a_replayed_inner_message_counts_as_the_replayers_only() -> None:
    g = gate()
    original, _ = encode_batch(
        ALICE, [entry(m.BidPlaced("j-1")), entry(m.JobCompleted("j-1"))], now=NOW
    )
    assert senders(g.admit(original)) == {ALICE.node_id}
    assert g.admit(original) is Turned.DUPLICATE  # the frame itself: refused as a replay
    # Mallory copies Alice's entries into a batch of its own: they are Mallory's now
    # (the state machines check Mallory's role for the job), never Alice's.
    replay, _ = encode_batch(
        MALLORY, [entry(m.BidPlaced("j-1")), entry(m.JobCompleted("j-1"))], now=NOW
    )
    assert senders(g.admit(replay)) == {MALLORY.node_id}


def test_a_batch_with_an_entry_swapped_after_signing_is_refused() -> None:
    frame, _ = encode_batch(ALICE, [entry(m.BidPlaced("j-1")), entry(m.BidPlaced("j-2"))], now=NOW)
    forged = frame.replace(b"j-2", b"j-3")
    assert forged != frame
    assert gate().admit(forged) is Turned.REFUSED


@pytest.mark.parametrize(
    "body",
    [
        [entry(m.BidPlaced("j-1"))] * (MAX_BATCH + 1),  # too many messages
        [],  # none
        [pack([BATCH, [entry(m.BidPlaced("j-1"))] * 2])],  # a batch inside a batch
        [pack(["", {}])],  # an empty kind
        [pack(["x" * 65, {}])],  # a long kind
        [pack([1, {}])],  # a kind that is no string
        [pack(["BidPlaced"])],  # no body
        ["BidPlaced"],  # an entry that is no encoded pair
        [b"\xc1"],  # an entry that is no msgpack
        [b"\x91" * 5000],  # deeply nested msgpack
        {"BidPlaced": {"job_id": "j-1"}},  # a map, not a list
    ],
)
def test_malformed_batches_are_refused_not_raised(body: Any) -> None:
    frame, _ = encode_envelope(MALLORY, BATCH, body, now=NOW)
    g = gate()
    assert g.admit(frame) is Turned.REFUSED
    assert g.stats["dropped_invalid"] >= 1


def test_a_stale_batch_is_refused_and_a_future_one_too() -> None:
    items = [entry(m.BidPlaced("j-1")), entry(m.BidPlaced("j-2"))]
    for when in (NOW - 10_000, NOW + 10_000):
        frame, _ = encode_batch(ALICE, items, now=when)
        assert gate().admit(frame) is Turned.REFUSED


_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2),
)
_FIELDS = sorted(
    {f for cls in m.KINDS.values() for f in getattr(cls, "__annotations__", {})} | {"job_id"}
)


@FAST
@given(
    kind=st.sampled_from(sorted(m.KINDS)),
    body=st.one_of(_VALUE, st.dictionaries(st.sampled_from(_FIELDS), _VALUE, max_size=6)),
)
def test_any_body_of_any_kind_is_a_message_or_a_validation_error(kind: str, body: Any) -> None:
    try:
        m.decode_message(kind, body)
    except ValidationError:
        pass


@FAST
@given(
    entries=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.tuples(st.sampled_from(sorted(m.KINDS)), _VALUE).map(
                lambda kv: msgpack.packb(list(kv), use_bin_type=True)
            ),
        ),
        min_size=2,
        max_size=6,
    )
)
def test_the_gate_never_raises_on_a_signed_batch_of_anything(entries: list[bytes]) -> None:
    frame, _ = encode_batch(MALLORY, entries, now=NOW)
    result = gate().admit(frame)
    assert result is Turned.REFUSED or senders(result) == {MALLORY.node_id}
