"""The gossip transport's address book: sources, bounds, backoff, forgetting."""

from __future__ import annotations

import random

import pytest

from bacalhau.identity import Identity
from bacalhau.transport.gossip_book import AddressBook, parse_peer_entry

IDS = [Identity.from_seed(bytes([i]) * 32).node_id for i in range(1, 6)]


def book(**kw: object) -> AddressBook:
    return AddressBook(own_id=IDS[0], rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_first_hand_addresses_win_over_peer_exchange() -> None:
    b = book()
    b.remember(IDS[0], "10.0.0.1", 1, source="pex", reset=False)
    assert len(b) == 0, "this node's own address is never recorded"
    b.remember(IDS[1], "10.0.0.2", 2, source="peer", reset=True)
    b.remember(IDS[1], "10.9.9.9", 9, source="pex", reset=False)
    known = b.get(IDS[1])
    assert known is not None
    assert (known.host, known.port) == ("10.0.0.2", 2), "second-hand news does not override"
    b.remember(IDS[1], "10.0.0.3", 3, source="mdns", reset=True)
    assert (known.host, known.port, known.source) == ("10.0.0.3", 3, "mdns")


def test_bounded_least_recently_refreshed_first() -> None:
    b = book(maxsize=2)
    for i, node in enumerate(IDS[1:4]):
        b.remember(node, "h", 1000 + i, source="pex", reset=False)
    assert IDS[1] not in b
    assert IDS[2] in b
    assert IDS[3] in b


def test_failures_back_off_then_forget() -> None:
    b = book(backoff_min=1.0, backoff_max=3.0, max_failures=3)
    b.remember(IDS[1], "h", 1, source="mdns", reset=True)
    known = b.get(IDS[1])
    assert known is not None
    assert b.ready(0.0, busy=set(), room=5) == [known]
    assert b.ready(0.0, busy={IDS[1]}, room=5) == [], "busy nodes are not dialed"
    assert b.failed(known, now=0.0) is False
    assert 1.0 <= known.next_try <= 2.0, "2 x backoff_min, times 0.5-1"
    assert b.ready(0.5, busy=set(), room=5) == []
    assert b.failed(known, now=10.0) is False
    assert 11.5 <= known.next_try <= 13.0, "capped at backoff_max"
    assert b.failed(known, now=20.0) is True
    assert IDS[1] not in b
    b.remember(IDS[2], "h", 2, source="peer", reset=True)
    b.disconnected(IDS[2], now=5.0)
    assert b.ready(5.1, busy=set(), room=1) == []
    assert [k.node_id for k in b.ready(6.5, busy=set(), room=1)] == [IDS[2]]


@pytest.mark.parametrize(
    "item",
    [
        None,
        [IDS[1], "h"],
        [IDS[1], "h", 0],
        [IDS[1], "h", 70000],
        [IDS[1], "", 1],
        [IDS[1], "h", True],
        ["not-a-node-id", "h", 1],
        [IDS[1], "h" * 256, 1],
    ],
)
def test_peer_exchange_entries_are_checked(item: object) -> None:
    assert parse_peer_entry(item) is None


def test_a_good_peer_exchange_entry() -> None:
    assert parse_peer_entry([IDS[1], "127.0.0.1", 1235]) == (IDS[1], "127.0.0.1", 1235)
