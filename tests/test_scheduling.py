"""Scheduling: node announcements, targeted offers, the queue, labels and selectors, ops jobs.

The pure pieces (selectors, the node table, ranking, the announcer) are tested
directly; the rest on in-memory networks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import anyio
import attrs
import pytest

from bacalhau import ComputeConfig, Deal, JobSpec, JobState, Network, RequesterConfig
from bacalhau.compute.bidding import BidRequest, BidResponse
from bacalhau.errors import ValidationError
from bacalhau.models import ExecutionState, NodeInfo, Resources
from bacalhau.node.node import Node
from bacalhau.protocol.nodes import Announcer, NodeTable, rank
from bacalhau.selectors import Selector, matches, parse_labels, parse_selectors

pytestmark = pytest.mark.anyio

FAST = RequesterConfig(bid_timeout=2, execution_grace=5, publish_timeout=10)


def info(node_id: str, **kw: object) -> NodeInfo:
    base: dict[str, object] = {
        "node_id": node_id,
        "executors": ("noop",),
        "verifiers": ("noop",),
        "publishers": ("noop",),
        "storage": ("inline",),
        "capacity": Resources(cpu=4, memory=2**32),
        "free_slots": 8,
        "max_executions": 4,
    }
    base.update(kw)
    return NodeInfo(**base)  # type: ignore[arg-type]


# --- selectors and labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("region=eu", {"region": "eu"}, True),
        ("region==eu", {"region": "us"}, False),
        ("region!=eu", {}, True),
        ("region!=eu", {"region": "eu"}, False),
        ("zone in (a, b)", {"zone": "b"}, True),
        ("zone in (a,b)", {"zone": "c"}, False),
        ("zone notin (a,b)", {"zone": "c"}, True),
        ("zone notin (a,b)", {}, True),
        ("gpu", {"gpu": ""}, True),
        ("gpu", {}, False),
        ("!spot", {"spot": "yes"}, False),
        ("!spot", {}, True),
        ("mem>16", {"mem": "32"}, True),
        ("mem>16", {"mem": "8"}, False),
        ("mem<16", {"mem": "8"}, True),
        ("mem<16", {"mem": "lots"}, False),
        ("mem<16", {}, False),
        ("region=eu, zone in (a,b), !spot", {"region": "eu", "zone": "a"}, True),
    ],
)
def test_selector_operators(text: str, labels: dict[str, str], expected: bool) -> None:
    assert matches(parse_selectors(text), labels) is expected


def test_selectors_print_as_they_parse() -> None:
    text = "region=eu, zone in (a,b), zone notin (c), gpu, !spot, mem>16, cpu<4, os!=win"
    parsed = parse_selectors(text)
    assert [str(s) for s in parsed] == [
        "region=eu",
        "zone in (a,b)",
        "zone notin (c)",
        "gpu",
        "!spot",
        "mem>16",
        "cpu<4",
        "os!=win",
    ]
    assert parse_selectors([str(s) for s in parsed]) == parsed


@pytest.mark.parametrize(
    "bad", ["region=eu=x", "=eu", "zone in ()", "mem>lots", "a b", "region=e u", "x in (a", "!"]
)
def test_bad_selectors_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_selectors(bad)
    assert err.value.field == "selectors"


def test_labels_parse_and_refuse() -> None:
    assert parse_labels("region=eu, gpu=a100") == {"region": "eu", "gpu": "a100"}
    assert parse_labels(["a=1", "b=2"]) == {"a": "1", "b": "2"}
    for bad in ("region", "region=eu,region=us", "bad key=1", "k=v v"):
        with pytest.raises(ValidationError) as err:
            parse_labels(bad)
        assert err.value.field == "labels"


def test_spec_files_take_selectors_as_text_or_mappings() -> None:
    from bacalhau.convert import from_json_data, to_json_data

    data = to_json_data(JobSpec.noop(selectors=parse_selectors("region=eu")))
    assert data["selectors"] == [{"key": "region", "operator": "=", "values": ["eu"]}]
    data["selectors"] = ["region=eu", {"key": "gpu", "operator": "exists"}]
    spec = from_json_data(data, JobSpec)
    assert spec.selectors == (
        Selector(key="region", operator="=", values=("eu",)),
        Selector(key="gpu"),
    )
    data["selectors"] = ["region=eu, gpu"]
    with pytest.raises(ValidationError, match="one selector"):
        from_json_data(data, JobSpec)
    with pytest.raises(ValidationError, match="queue_timeout"):
        JobSpec.noop(queue_timeout=-1)
    with pytest.raises(ValidationError, match="target"):
        JobSpec.noop(target="some")


# --- the node table, ranking, announcements (pure) ----------------------------------------


def test_silent_nodes_drop_out_of_the_table() -> None:
    table = NodeTable(ttl=15)
    table.update(info("a"), now=0)
    table.update(info("b"), now=10)
    assert {k.info.node_id for k in table.live(14)} == {"a", "b"}
    assert {k.info.node_id for k in table.live(16)} == {"b"}
    ranking = rank(table.live(16), JobSpec.noop(publisher="noop"), 16, random.Random(1))
    assert ranking.ready == ("b",)


def test_older_announcements_do_not_replace_newer_ones() -> None:
    table = NodeTable()
    table.update(info("a", seq=5, free_slots=1), now=0)
    assert not table.update(info("a", seq=4, free_slots=9), now=1)
    assert table.nodes["a"].info.free_slots == 1


def test_rank_filters_by_support_selectors_size_and_gpu() -> None:
    table = NodeTable()
    table.update(info("eu", labels={"region": "eu"}), now=0)
    table.update(info("us", labels={"region": "us"}), now=0)
    table.update(info("wasm", executors=("wasm",), labels={"region": "eu"}), now=0)
    table.update(
        info("gpu", capacity=Resources(cpu=4, memory=2**32, gpu=2), labels={"region": "eu"}),
        now=0,
    )
    rng = random.Random(3)
    live = table.live(1)
    eu = JobSpec.noop(publisher="noop", selectors=parse_selectors("region=eu"))
    assert set(rank(live, eu, 1, rng).ready) == {"eu", "gpu"}
    gpu = JobSpec.noop(publisher="noop", resources=Resources(gpu=1))
    assert rank(live, gpu, 1, rng).ready == ("gpu",)
    nowhere = JobSpec.noop(publisher="noop", selectors=parse_selectors("region=mars"))
    ranking = rank(live, nowhere, 1, rng)
    assert not ranking.ready and ranking.reason.startswith("no node matches region=mars")
    assert "labels do not match" in ranking.reason


def test_rank_prefers_room_then_spreads_at_random() -> None:
    table = NodeTable()
    for name in "abcd":
        table.update(info(name), now=0)
    table.update(info("full", free_slots=0), now=0)
    spec = JobSpec.noop(publisher="noop")
    firsts: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(400):
        ranking = rank(table.live(1), spec, 1, rng)
        assert ranking.full == ("full",)
        firsts[ranking.ready[0]] += 1
    assert set(firsts) == set("abcd")  # no node has a standing advantage
    assert min(firsts.values()) > 50


def test_offers_and_busy_answers_count_against_room() -> None:
    table = NodeTable()
    table.update(info("a", free_slots=2), now=0)
    table.offered("a")
    table.offered("a")
    assert table.nodes["a"].room(0) == 0
    table.answered("a", bid=True, busy=False, now=0)
    table.answered("a", bid=False, busy=True, now=0)
    assert table.nodes["a"].room(0.1) == 0  # busy for a moment
    table.released("a")
    # busy: our share is what we held then (one); our job there ended, so one offer
    assert table.nodes["a"].room(0.1) == 1
    table.update(info("a", free_slots=2), now=1)  # its own numbers again
    assert table.nodes["a"].room(1) == 2


def test_announcer_joins_changes_and_heartbeats() -> None:
    ann = Announcer(heartbeat=5, min_gap=0.2)
    first = ann.due(info("a"), now=0)
    assert first is not None and first.seq == 1
    assert ann.due(info("a"), now=1) is None  # nothing changed
    assert ann.due(info("a", free_slots=3), now=1.1) is None  # a job came: not worth a message
    assert ann.due(info("a", free_slots=0), now=0.1) is None  # full, but too soon
    full = ann.due(info("a", free_slots=0), now=1.2)
    assert full is not None and full.seq == 2 and full.free_slots == 0
    beat = ann.due(info("a", free_slots=3), now=2)  # room again: a change
    assert beat is not None and beat.seq == 3
    assert ann.due(info("a", free_slots=5), now=6.9) is None
    beat = ann.due(info("a", free_slots=5), now=7.1)  # the heartbeat: exact numbers
    assert beat is not None and beat.seq == 4 and beat.free_slots == 5


# --- networks -----------------------------------------------------------------------------


async def known(node: Node, count: int) -> None:
    """Until ``node`` knows ``count`` live nodes (announcements are asynchronous).

    Bounded in time, generously: a loaded machine can stall a one-process network."""
    with anyio.move_on_after(60):
        while len(node.known_nodes()) < count:
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"{node} knows {len(node.known_nodes())} nodes, not {count}")


async def test_a_burst_ten_times_the_capacity_completes_without_failure() -> None:
    small = ComputeConfig(capacity=Resources(cpu=4, memory=2**32), max_executions=2, queue_size=2)
    async with Network.in_memory(3, seed=2, compute=small, requester=FAST) as net:
        await known(net.nodes[0], 3)
        capacity = 3 * (2 + 2)
        spec = JobSpec.noop(delay=0.01)
        handles = [await net.nodes[i % 3].submit(spec) for i in range(10 * capacity)]
        results = [await h.wait(120) for h in handles]
    assert [r.state for r in results] == [JobState.COMPLETED] * len(results)
    kinds = Counter(e.kind for r in results for e in r.events)
    assert kinds["execution_failed"] == 0 and kinds["execution_lost"] == 0
    assert kinds["queued"] > 0, "a burst this size must have waited in the queue"
    assert max(n.capacity.peak_running for n in net.nodes) <= 2


async def test_a_job_waits_for_a_suitable_node_then_runs() -> None:
    async with Network.in_memory(2, seed=3, requester=FAST) as net:
        await known(net.nodes[0], 2)
        spec = JobSpec.noop(stdout="late", selectors=parse_selectors("zone=late"))
        handle = await net.nodes[0].submit(spec)
        async for event in handle.events():
            if event.kind == "queued":
                assert event.detail.startswith("no node matches zone=late"), event.detail
                break
        waiting = net.nodes[0].describe(handle.job_id)
        assert waiting.state is JobState.QUEUED
        assert waiting.reason.startswith("no node matches zone=late"), waiting.reason
        (row,) = (await net.nodes[0].query_jobs()).rows
        assert (row.state, row.reason) == (JobState.QUEUED, waiting.reason)
        late = await net.add_node(compute=ComputeConfig(labels={"zone": "late"}))
        result = await handle.wait(30)
        (row,) = (await net.nodes[0].query_jobs()).rows
    assert result.ok, result.reason
    assert result.reason == "" and row.reason == "", "the wait is over: no reason shown"
    assert [e.node_id for e in result.executions] == [late.node_id]


async def test_the_queue_timeout_ends_a_job_with_its_reason() -> None:
    async with Network.in_memory(2, seed=4, requester=FAST) as net:
        await known(net.nodes[0], 2)
        spec = JobSpec.noop(selectors=parse_selectors("gpu.model=h100"), queue_timeout=0.5)
        result = await net.nodes[0].run_job(spec, timeout=30)
    assert result.state is JobState.FAILED
    assert "queue timeout (0.5s)" in result.reason
    assert "no node matches gpu.model=h100" in result.reason


async def test_labels_and_selectors_place_jobs_on_a_heterogeneous_network() -> None:
    labels = [
        {"region": "eu", "tier": "1", "spot": "yes"},
        {"region": "eu", "tier": "3"},
        {"region": "us", "tier": "2"},
        {"region": "ap", "tier": "5", "ssd": "nvme"},
        {},
    ]
    per_node = [{"compute": ComputeConfig(labels=lab)} for lab in labels]
    async with Network.in_memory(5, seed=5, requester=FAST, per_node_options=per_node) as net:
        by_id = {n.node_id: lab for n, lab in zip(net.nodes, labels, strict=True)}
        await known(net.nodes[0], 5)
        cases: dict[str, Callable[[dict[str, str]], bool]] = {
            "region=eu": lambda lab: lab.get("region") == "eu",
            "region!=eu": lambda lab: lab.get("region") != "eu",
            "region in (us,ap)": lambda lab: lab.get("region") in ("us", "ap"),
            "region notin (eu,us)": lambda lab: lab.get("region") not in ("eu", "us"),
            "ssd": lambda lab: "ssd" in lab,
            "!spot, region": lambda lab: "spot" not in lab and "region" in lab,
            "tier>2": lambda lab: float(lab.get("tier", "0")) > 2,
            "tier<2": lambda lab: float(lab.get("tier", "9")) < 2,
        }
        for text, ok in cases.items():
            eligible = {n for n, lab in by_id.items() if ok(lab)}
            for i in range(4):
                spec = JobSpec.noop(selectors=parse_selectors(text))
                result = await net.nodes[i % 5].run_job(spec, timeout=30)
                assert result.ok, (text, result.reason)
                ran = {e.node_id for e in result.executions}
                assert ran <= eligible, (text, [by_id[n] for n in ran])
                asked = {e.node_id for e in result.events if e.kind in ("bid", "declined")}
                assert asked <= eligible, text


@pytest.mark.parametrize("offers", ["targeted", "broadcast"])
async def test_an_ops_job_runs_on_exactly_the_matching_nodes(offers: str) -> None:
    per_node = [
        {"compute": ComputeConfig(labels={"role": "edge" if i % 3 == 0 else "core"})}
        for i in range(10)
    ]
    config = FAST if offers == "targeted" else attrs.evolve(FAST, offers="broadcast")
    async with Network.in_memory(10, seed=6, requester=config, per_node_options=per_node) as net:
        edge = {n.node_id for i, n in enumerate(net.nodes) if i % 3 == 0}
        await known(net.nodes[1], 10)
        spec = JobSpec.noop(stdout="hello", selectors=parse_selectors("role=edge"), target="all")
        result = await net.nodes[1].run_job(spec, timeout=60)
    assert result.ok, result.reason
    assert {e.node_id for e in result.executions} == edge
    assert all(e.state is ExecutionState.PUBLISHED for e in result.executions)
    assert all(e.stdout == "hello" for e in result.executions)
    assert len(result.executions) == len(edge) == 4


async def test_a_node_that_stops_announcing_stops_getting_offers() -> None:
    quick = RequesterConfig(bid_timeout=2, node_ttl=0.6)
    async with Network.in_memory(3, seed=7, requester=quick, heartbeat=0.15) as net:
        a, b, c = net.nodes
        await known(a, 3)
        assert net.hub is not None
        net.hub.partition([a.node_id, b.node_id], [c.node_id])  # c goes silent for a
        with anyio.move_on_after(60):
            while c.node_id in {i.node_id for i in a.known_nodes()}:
                await anyio.sleep(0.01)
        if c.node_id in {i.node_id for i in a.known_nodes()}:
            raise AssertionError("the silent node never dropped out")
        results = [
            await a.run_job(JobSpec.noop(deal=Deal(concurrency=1)), timeout=30) for _ in range(8)
        ]
        assert all(r.ok for r in results)
        for r in results:
            assert c.node_id not in {e.node_id for e in r.events}
        net.hub.heal()
        await known(a, 3)  # its next heartbeat brings it back


async def test_broadcast_selection_keeps_the_original_behaviour() -> None:
    config = RequesterConfig(bid_timeout=2, offers="broadcast")
    async with Network.in_memory(4, seed=8, requester=config) as net:
        await known(net.nodes[0], 4)
        result = await net.nodes[0].run_job(JobSpec.noop(deal=Deal(min_bids=4)), timeout=30)
    assert result.ok
    assert len([e for e in result.events if e.kind == "bid"]) == 4


async def test_broadcast_offers_run_jobs_only_where_the_selectors_match() -> None:
    """A broadcast reaches every node: each compute node checks the job's selectors
    against its own labels, and one they do not match declines (it did bid before)."""
    config = RequesterConfig(bid_timeout=1, offers="broadcast")
    options: list[dict[str, object]] = [
        {"compute": ComputeConfig(labels={"zone": zone})} for zone in ("a", "b", "b", "c")
    ]
    async with Network.in_memory(4, seed=12, requester=config, per_node_options=options) as net:
        await known(net.nodes[0], 4)
        b_nodes = {n.node_id for n in net.nodes[1:3]}
        spec = JobSpec.noop(selectors=parse_selectors("zone=b"), deal=Deal(concurrency=2))
        results = [await net.nodes[0].run_job(spec, timeout=30) for _ in range(4)]
        for r in results:
            assert r.ok, r.reason
            assert {e.node_id for e in r.accepted} == b_nodes
            declined = {e.node_id for e in r.events if e.kind == "declined"}
            assert declined <= {net.nodes[0].node_id, net.nodes[3].node_id}
        # every node declines for its labels: the job waits (one with them may join)
        nowhere = JobSpec.noop(selectors=parse_selectors("zone=z"), queue_timeout=3.0)
        r = await net.nodes[0].run_job(nowhere, timeout=30)
    assert not r.ok and not r.executions, r.reason
    assert "queued" in {e.kind for e in r.events}
    assert "queue timeout" in r.reason and "labels do not match (zone=z)" in r.reason


async def test_targeted_offers_ask_only_what_the_deal_needs() -> None:
    async with Network.in_memory(8, seed=9, requester=FAST) as net:
        await known(net.nodes[0], 8)
        result = await net.nodes[0].run_job(JobSpec.noop(deal=Deal(concurrency=2)), timeout=30)
        heard = [n for n in net.nodes if result.job_id in n.compute.jobs]
    assert result.ok
    assert len(heard) == 3  # concurrency 2 plus one node of headroom; the others heard nothing


async def test_a_requester_that_forgets_a_heard_job_keeps_the_jobs_timers() -> None:
    # Node 0 is the job's requester and, as a compute node, hears the job and declines it
    # (a bid strategy of its own says no; offers are broadcast, so it hears the job
    # though its labels do not match). Its compute side keeps one heard-only job: the
    # second job evicts the first. The first job (two bids wanted, one node can bid)
    # then depends on its bid timer, which the eviction must not cancel: it ends
    # instead of bidding forever.
    class NotHere:
        async def decide(self, request: BidRequest) -> BidResponse:
            return BidResponse(bid=False, reason="not here")

    config = RequesterConfig(offers="broadcast", bid_timeout=0.2, execution_grace=5)
    options: list[dict[str, object]] = [
        {"bid_strategies": [NotHere()]},
        {"compute": ComputeConfig(labels={"zone": "b"})},
    ]
    async with Network.in_memory(2, seed=5, requester=config, per_node_options=options) as net:
        await known(net.nodes[0], 2)
        requester = net.nodes[0]
        requester.compute.max_heard = 1
        spec = JobSpec.noop(
            selectors=parse_selectors("zone=b"),
            queue_timeout=1.0,
            deal=Deal(concurrency=1, min_bids=2),
        )
        first = await requester.submit(spec)
        await requester.submit(JobSpec.noop(selectors=parse_selectors("zone=b")))
        result = await first.wait(30)
        assert requester.compute.evicted >= 1
    assert result.state.terminal  # not bidding forever
