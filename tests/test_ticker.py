"""One ticker for the periodic chores of a network's nodes, and the frozen heap."""

from __future__ import annotations

import gc
from collections.abc import Callable

import anyio
import pytest

from bacalhau import Network
from bacalhau.live.events import NODE_JOINED, NODE_LEFT
from bacalhau.network import GC_THRESHOLD
from bacalhau.node.clock import SystemClock, VirtualClock
from bacalhau.node.ticker import GRID, Ticker

pytestmark = pytest.mark.anyio


async def until(done: Callable[[], bool]) -> None:
    """Let other tasks run until ``done()`` holds (bounded)."""
    for _ in range(1000):
        if done():
            return
        await anyio.sleep(0.001)
    raise AssertionError("the condition never held")


async def test_chores_run_on_their_own_periods_from_one_task() -> None:
    clock = VirtualClock()
    ticker = Ticker(clock=clock)
    calls: list[str] = []

    async def slow() -> None:
        calls.append("async")

    ticker.add(1.0, lambda: calls.append("every second"))
    ticker.add(5.0, slow)
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        assert ticker.running
        await anyio.sleep(0.01)
        assert calls == []  # a chore first runs one period after it is added
        for _ in range(5):
            clock.advance(1.0)
            seen = len(calls)
            await until(lambda seen=seen: len(calls) > seen)  # type: ignore[misc]
        await until(lambda: "async" in calls)
        tg.cancel_scope.cancel()
    assert calls.count("every second") == 5
    assert calls.count("async") == 1
    assert not ticker.running


async def test_a_failing_chore_is_logged_and_neither_stops_itself_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    ticker = Ticker(clock=clock)
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a node's bug")

    ticker.add(1.0, broken)
    ticker.add(1.0, lambda: calls.append("fine"))
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        for rounds in (1, 2):
            clock.advance(1.0)
            await until(lambda rounds=rounds: len(calls) == 2 * rounds)  # type: ignore[misc]
        tg.cancel_scope.cancel()
    assert sorted(calls) == ["broken", "broken", "fine", "fine"]
    assert "a periodic chore failed" in caplog.text


class CountingClock(VirtualClock):
    """Counts the waits armed on it."""

    waits = 0

    def wake_at(self, at: float) -> anyio.CancelScope:
        self.waits += 1
        return super().wake_at(at)


async def test_chores_added_at_many_moments_come_due_together() -> None:
    """A thousand nodes add their chores at a thousand moments: they fall due on a grid,
    so the ticker wakes once for all those due together, not once for each."""
    clock = CountingClock(start=1000.0)
    ticker = Ticker(clock=clock)
    calls: list[int] = []
    for i in range(40):
        ticker.add(1.0, lambda i=i: calls.append(i))  # type: ignore[misc]
        clock.advance(GRID / 50)  # 40 moments within one grid step
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        await until(lambda: clock.waits == 1)  # waiting for the first due time
        clock.advance(1.0)
        await until(lambda: len(calls) == 40)
        assert calls == list(range(40))  # in the order they were added
        assert clock.waits <= 2  # one wake for all forty (and the wait for the next round)
        tg.cancel_scope.cancel()


async def test_a_removed_chore_runs_no_more() -> None:
    clock = VirtualClock()
    ticker = Ticker(clock=clock)
    calls: list[str] = []
    gone = ticker.add(1.0, lambda: calls.append("gone"))
    ticker.add(1.0, lambda: calls.append("kept"))
    assert len(ticker) == 2
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        clock.advance(1.0)
        await until(lambda: len(calls) == 2)
        ticker.remove(gone)
        ticker.remove(gone)  # twice is harmless
        clock.advance(1.0)
        await until(lambda: len(calls) == 3)
        tg.cancel_scope.cancel()
    assert calls.count("gone") == 1 and calls.count("kept") == 2
    assert len(ticker) == 1


def test_a_chore_needs_a_positive_period() -> None:
    with pytest.raises(ValueError, match="positive"):
        Ticker().add(0, lambda: None)


def test_only_nodes_on_the_tickers_clock_share_it() -> None:
    virtual = VirtualClock()
    assert Ticker().shared_with(SystemClock())  # any two wall clocks
    assert not Ticker().shared_with(virtual)
    assert Ticker(clock=virtual).shared_with(virtual)
    assert not Ticker(clock=virtual).shared_with(VirtualClock())


async def test_a_networks_nodes_leave_their_chores_to_one_ticker() -> None:
    """Three nodes, two chores each (peer changes, engine checks), no loop of their own;
    a stopped node's chores go with it; a node on a virtual clock keeps its own loops."""
    async with Network.in_memory(3) as net:
        assert all(node.ticker is net.ticker for node in net.nodes)
        assert len(net.ticker) == 6
        await net.stop_node(net.nodes[2])
        assert len(net.ticker) == 4
        odd = await net.add_node(clock=VirtualClock())
        assert odd.ticker is None
        assert len(net.ticker) == 4


async def test_nodes_joining_and_leaving_are_still_published_from_the_shared_ticker() -> None:
    # the watcher keeps no node table: a node leaves its view as it leaves the transport
    async with Network.in_memory(2, per_node_options=[{"requester": None}, {}]) as net:
        watcher = net.nodes[0]
        hub = watcher.watch.events
        cursor = hub.read(0).next
        late = await net.add_node()
        with anyio.fail_after(30):
            while not any(
                e.kind == NODE_JOINED and e.node_id == late.node_id for e in hub.read(cursor).events
            ):
                await anyio.sleep(0.05)
        await net.stop_node(late)
        with anyio.fail_after(30):
            while not any(
                e.kind == NODE_LEFT and e.node_id == late.node_id for e in hub.read(cursor).events
            ):
                await anyio.sleep(0.05)


async def test_a_compute_only_node_sees_its_transports_peers_without_copying_them() -> None:
    async with Network.in_memory(3, per_node_options=[{}, {"requester": None}, {}]) as net:
        compute_only = net.nodes[1]
        members = compute_only.watch.members()
        assert members is compute_only.peers()  # no copy made at every look
        assert members == {net.nodes[0].node_id, net.nodes[2].node_id}
        hub = compute_only.watch.events
        compute_only.watch.poll()  # publishes the node that joined after this one
        cursor = hub.read(0).next
        compute_only.watch.poll()
        assert hub.read(cursor).events == ()  # nothing changed, nothing published


async def test_a_running_network_freezes_the_heap_and_thaws_it_when_it_closes() -> None:
    frozen_before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    async with Network.in_memory(2) as net:
        assert net.freeze_heap
        assert gc.get_freeze_count() > frozen_before
        assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    async with Network.in_memory(2, freeze_heap=False):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds


async def test_overlapping_networks_restore_the_collector_whatever_order_they_close_in() -> None:
    thresholds = gc.get_threshold()
    started = [anyio.Event(), anyio.Event()]
    close = [anyio.Event(), anyio.Event()]
    closed = [anyio.Event(), anyio.Event()]

    async def run(i: int) -> None:
        async with Network.in_memory(1):
            started[i].set()
            await close[i].wait()
        closed[i].set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, 0)
            await started[0].wait()
            tg.start_soon(run, 1)
            await started[1].wait()
            close[0].set()  # the first to start closes first: not in reverse order
            await closed[0].wait()
            assert gc.get_threshold() == GC_THRESHOLD  # the second still runs
            assert gc.get_freeze_count() > 0
            close[1].set()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


async def test_a_network_does_not_report_the_nodes_it_started_with_as_joining() -> None:
    async with Network.in_memory(4, per_node_options=[{"requester": None}] * 4) as net:
        for node in net.nodes:
            node.watch.poll()
            kinds = {e.kind for e in node.watch.events.read(0).events}
            assert NODE_JOINED not in kinds  # all four were there from the start
        late = await net.add_node()
        net.nodes[0].watch.poll()
        joined = [e.node_id for e in net.nodes[0].watch.events.read(0).events]
        assert joined == [late.node_id]  # one that joins after does show
