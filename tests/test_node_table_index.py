"""The node table's indexes: live nodes (expiry only when a node can have expired),
the per-shape cache of which nodes could run a job, the CID holders, and the bounded
random sample a round of offers ranks on a large table."""

from __future__ import annotations

import random
from collections import Counter

import attrs
from test_requester_cannot_run import info

from bacalhau.models import InputSpec, JobSpec, Resources, StorageSpec
from bacalhau.protocol.nodes import SAMPLE, NodeTable, rank, shape_of
from bacalhau.selectors import parse_selectors

NOOP = JobSpec.noop(publisher="noop")
EU = JobSpec.noop(publisher="noop", selectors=parse_selectors("region=eu"))
CID = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
BIG = 4 * SAMPLE


def big_table(n: int = BIG, **changes: object) -> NodeTable:
    table = NodeTable(ttl=15)
    for i in range(n):
        table.update(info(f"n{i:03}", **changes), now=0)
    return table


def test_the_live_index_drops_a_node_that_went_silent() -> None:
    table = NodeTable(ttl=15)
    table.update(info("a"), now=0)
    table.update(info("b"), now=10)
    assert set(table.rank(NOOP, 1, random.Random(1)).ready) == {"a", "b"}
    table.update(info("b"), now=20)  # b heartbeats, a stays silent
    assert table.count(14) == 2
    assert table.count(16) == 1 and set(table.nodes) == {"b"}
    assert table.rank(NOOP, 16, random.Random(1)).ready == ("b",)
    assert table.fit(NOOP).ids == ["b"]  # out of the shape index too
    assert table.count(36) == 0  # and b once it is silent in turn


def test_expiry_holds_when_time_goes_backwards() -> None:
    table = NodeTable(ttl=15)
    table.update(info("late"), now=100)
    table.update(info("early"), now=50)  # an announcement stamped earlier
    assert {k.info.node_id for k in table.live(70)} == {"late"}
    assert table.count(120) == 0


def test_a_forgotten_node_leaves_every_index() -> None:
    table = NodeTable()
    table.update(info("a", data=(CID,)), now=0)
    table.update(info("b"), now=0)
    table.fit(NOOP)
    table.forget("a")
    table.forget("zz")  # unknown: nothing happens
    assert set(table.nodes) == {"b"} and table.fit(NOOP).ids == ["b"]
    assert table.rank(NOOP, 1, random.Random(1)).ready == ("b",)


def test_the_shape_cache_follows_a_nodes_announcements() -> None:
    table = NodeTable()
    table.update(info("a", labels={"region": "us"}), now=0)
    table.update(info("b", labels={"region": "eu"}), now=0)
    assert table.rank(EU, 1, random.Random(1)).ready == ("b",)
    # a moves to eu: the cached answer for this shape is judged again
    table.update(info("a", labels={"region": "eu"}, seq=2), now=1)
    assert set(table.rank(EU, 1, random.Random(1)).ready) == {"a", "b"}
    # b loses its engine: out, with its reason kept for the queue
    table.update(info("b", labels={"region": "eu"}, executors=("wasm",), seq=2), now=1)
    assert table.rank(EU, 1, random.Random(1)).ready == ("a",)
    assert table.fit(EU).why == {"b": "no 'noop' executor"}
    # a fills up: still suitable (room is not cached), but full
    table.update(info("a", labels={"region": "eu"}, free_slots=0, seq=3), now=1)
    ranking = table.rank(EU, 1, random.Random(1))
    assert ranking.ready == () and ranking.full == ("a",)
    assert ranking.reason.startswith("waiting for capacity")


def test_jobs_of_one_shape_share_a_cache_entry() -> None:
    table = big_table(5)
    same = JobSpec.noop(publisher="noop", stdout="other output, same needs")
    assert shape_of(same) == shape_of(NOOP)
    assert table.fit(same) is table.fit(NOOP)
    bigger = JobSpec.noop(publisher="noop", resources=Resources(cpu=64))
    assert shape_of(bigger) != shape_of(NOOP)
    assert table.fit(bigger).ids == [] and len(table.fit(bigger).why) == 5


def test_the_table_ranks_like_rank_on_a_small_network() -> None:
    table = NodeTable()
    for name in "abcdef":
        table.update(info(name, free_slots=0 if name == "c" else 4), now=0)
    table.update(info("wasm", executors=("wasm",)), now=0)
    for seed in range(20):
        ours = table.rank(NOOP, 1, random.Random(seed), exclude=["a"], limit=2)
        theirs = rank(table.live(1), NOOP, 1, random.Random(seed), exclude=["a"], limit=2)
        assert ours == theirs
    nowhere = JobSpec.noop(publisher="noop", selectors=parse_selectors("region=mars"))
    ours, theirs = (
        table.rank(nowhere, 1, random.Random(1)),
        rank(table.live(1), nowhere, 1, random.Random(1)),
    )
    assert ours == theirs and ours.reason.startswith("no node matches region=mars")


def test_a_large_table_ranks_a_sample_at_random() -> None:
    table = big_table()
    firsts: Counter[str] = Counter()
    for seed in range(1000):
        ranking = table.rank(NOOP, 1, random.Random(seed), limit=2)
        assert len(set(ranking.ready)) == 2
        firsts[ranking.ready[0]] += 1
    assert len(firsts) > 0.9 * BIG  # every node has its chance
    assert max(firsts.values()) < 40  # and none a standing advantage (about 8 each)


def test_a_sample_short_of_room_falls_back_to_the_whole_table() -> None:
    table = big_table(free_slots=0)
    roomy = ["n007", "n077", "n120"]
    for name in roomy:
        table.update(info(name, free_slots=4, seq=2), now=1)
    for seed in range(20):
        ranking = table.rank(NOOP, 1, random.Random(seed), limit=3)
        assert sorted(ranking.ready) == roomy
    asked = table.rank(NOOP, 1, random.Random(1), exclude=roomy, limit=1)
    assert asked.ready == () and asked.reason.startswith("waiting for capacity")


def test_a_large_table_offers_the_data_holder_and_avoids_ill_repute() -> None:
    table = big_table(storage=("inline", "ipfs"))
    table.update(info("n100", storage=("inline", "ipfs"), data=(CID,), seq=2), now=1)
    spec = JobSpec.noop(publisher="noop", inputs=(InputSpec(StorageSpec.ipfs(CID), "/a"),))
    for seed in range(20):  # in every sample, whatever the draw
        assert table.rank(spec, 1, random.Random(seed), limit=2).ready[0] == "n100"
    bad = {f"n{i:03}" for i in range(BIG - 2)}  # all but two have failed us
    for seed in range(5):
        ranking = table.rank(
            NOOP, 1, random.Random(seed), score=lambda n: -1.0 if n in bad else 0.0, limit=2
        )
        assert set(ranking.ready) == {f"n{BIG - 2:03}", f"n{BIG - 1:03}"}


def test_cached_shapes_are_bounded() -> None:
    table = big_table(3)
    for cpu in range(1, 200):
        table.fit(attrs.evolve(NOOP, resources=Resources(cpu=cpu / 100)))
    assert len(table._fits) <= 64


def test_a_busy_node_gets_our_share_not_its_announced_room() -> None:
    """Three requesters each see a node's announced room; once it says it is busy, a
    requester offers it one job per job of its own that ends there, and one probe at a
    time after the backoff, not its stale announced room all over again."""
    table = NodeTable()
    table.update(info("a", free_slots=68, max_executions=68), now=0)
    for _ in range(30):
        table.offered("a")
    for _ in range(20):
        table.answered("a", bid=True, busy=False, now=0)
    for _ in range(10):  # the others filled it first
        table.answered("a", bid=False, busy=True, now=0)
    node = table.nodes["a"]
    assert node.room(0.1) == 0  # the backoff
    assert node.room(1) == 1  # then one probe, not the 48 it announced and we lack
    table.offered("a")
    assert node.room(1) <= 0  # one at a time
    table.answered("a", bid=True, busy=False, now=1)  # it had room: our share grows
    assert node.slots == 21 and node.room(1) == 1
    table.released("a")
    table.released("a")  # two of ours ended there: two more
    assert node.room(1) == 2
    table.offered("a")
    table.answered("a", bid=False, busy=True, now=1)  # busy again: nothing in the backoff
    assert node.room(1.1) <= 0
    table.update(info("a", free_slots=5, max_executions=68, seq=2), now=2)
    assert node.slots is None and node.room(2) == 5  # its own numbers again


class CountingRandom(random.Random):
    """Counts its draws (every ``randrange``, ``sample`` and ``shuffle`` makes them)."""

    draws = 0

    def _randbelow(self, n: int) -> int:
        self.draws += 1
        return self.getrandbits(n.bit_length() + 8) % n  # (bias of at most 1/256: fine here)


def test_a_large_idle_table_costs_a_draw_or_two_and_still_chooses_at_random() -> None:
    """A job reading no data: the first idle nodes drawn are what ranking a sample holding
    them would choose; never a busy, partly busy or ill-reputed node while idle ones turn
    up, and every idle node has its chance."""
    table = big_table()
    busy = {f"n{i:03}" for i in range(0, BIG, 4)}
    partly = {f"n{i:03}" for i in range(1, BIG, 4)}
    bad = {f"n{i:03}" for i in range(2, BIG, 4)}
    for name in busy:
        table.update(info(name, free_slots=0, seq=2), now=0)
    for name in partly:
        table.update(info(name, free_slots=2, seq=2), now=0)
    idle = set(table.nodes) - busy - partly - bad
    firsts: Counter[str] = Counter()
    draws = 0
    for seed in range(1000):
        rng = CountingRandom(seed)
        ranking = table.rank(
            NOOP, 1, rng, score=lambda n: -1.0 if n in bad else 0.0, limit=2, exclude=["n003"]
        )
        assert len(set(ranking.ready)) == 2 and set(ranking.ready) <= idle - {"n003"}
        assert set(ranking.full) <= busy
        firsts[ranking.ready[0]] += 1
        draws += rng.draws
    assert draws / 1000 < 12  # about 8 (a quarter of the nodes are idle), never a whole sample
    assert set(firsts) == idle - {"n003"}  # every idle node has its chance
    assert max(firsts.values()) < 70  # and none a standing advantage (about 32 each)


def test_too_few_idle_nodes_drawn_ranks_a_sample_as_before() -> None:
    table = big_table(free_slots=2)  # every node partly busy: none ranks best possible
    for seed in range(20):
        ranking = table.rank(NOOP, 1, random.Random(seed), limit=2)
        assert len(set(ranking.ready)) == 2  # from the sample ranked whole
    spec = JobSpec.noop(publisher="noop", inputs=(InputSpec(StorageSpec.ipfs(CID), "/a"),))
    rng = CountingRandom(1)
    big_table(storage=("inline", "ipfs")).rank(spec, 1, rng, limit=1)
    assert rng.draws >= SAMPLE  # a job reading a CID ranks a sample (the holders among it)
