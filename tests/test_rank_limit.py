"""Ranking a large node table for a round of offers: only the best few, at random
among equals, in one pass."""

from __future__ import annotations

import random
from collections import Counter

from test_requester_cannot_run import T0, info

from bacalhau.identity import Identity
from bacalhau.models import JobSpec
from bacalhau.protocol.nodes import KnownNode, rank

NOOP = JobSpec.noop(publisher="noop")
IDS = [Identity.from_seed(bytes([i]) * 32).node_id for i in range(10, 30)]


def table(special: dict[str, dict[str, int]] | None = None) -> list[KnownNode]:
    """The nodes, each with 2 of 4 slots free but for the ``special`` ones."""
    special = special or {}
    base = {"free_slots": 2, "max_executions": 4}
    return [KnownNode(info=info(n, **{**base, **special.get(n, {})}), seen=T0) for n in IDS]


def test_a_limit_keeps_the_best_and_the_rest_of_the_ranking() -> None:
    busy, roomy = IDS[3], IDS[7]
    nodes = table({busy: {"free_slots": 0}, roomy: {"free_slots": 4}})
    everyone = rank(nodes, NOOP, T0, random.Random(1))
    assert len(everyone.ready) == len(IDS) - 1 and everyone.full == (busy,)
    assert everyone.ready[0] == roomy  # most room for its size: first
    top = rank(nodes, NOOP, T0, random.Random(1), limit=3)
    assert len(top.ready) == 3 and top.ready[0] == roomy
    assert set(top.ready) <= set(everyone.ready)
    assert top.full == (busy,)
    assert rank(nodes, NOOP, T0, random.Random(1), limit=0).ready == ()
    assert len(rank(nodes, NOOP, T0, random.Random(1), limit=99).ready) == len(IDS) - 1


def test_equal_nodes_are_chosen_at_random_whatever_the_limit() -> None:
    nodes = table()
    firsts: Counter[str] = Counter()
    for seed in range(400):
        chosen = rank(nodes, NOOP, T0, random.Random(seed), limit=2).ready
        assert len(set(chosen)) == 2
        firsts[chosen[0]] += 1
    assert set(firsts) == set(IDS)  # every one of the equals is picked first sometimes
    assert max(firsts.values()) < 60  # and none much more than its share (20 of 400)


def test_the_same_seed_ranks_the_same_way() -> None:
    nodes = table()
    one = rank(nodes, NOOP, T0, random.Random(5), limit=4).ready
    assert one == rank(nodes, NOOP, T0, random.Random(5), limit=4).ready
