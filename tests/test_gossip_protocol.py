"""The sans-IO gossip core: seen-cache, message cache, mesh, IHAVE/IWANT repair."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from bacalhau.protocol.gossip import (
    GossipConfig,
    GossipState,
    Graft,
    IDontWant,
    IHave,
    IWant,
    MessageCache,
    Prune,
    SeenCache,
    message_id,
)


def test_importing_the_gossip_core_loads_no_io() -> None:
    code = (
        "import sys, bacalhau.protocol.gossip; "
        "bad = [m for m in ('anyio', 'socket', 'asyncio', 'zeroconf') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_message_id_is_a_content_hash() -> None:
    assert message_id(b"a") == message_id(b"a")
    assert message_id(b"a") != message_id(b"b")
    assert len(message_id(b"")) == 20


def test_seen_cache_dedups_expires_and_is_bounded() -> None:
    seen = SeenCache(ttl=10.0, maxsize=3)
    assert seen.add(b"1", now=0.0)
    assert not seen.add(b"1", now=1.0)
    seen.add(b"2", now=5.0)
    assert seen.expire(now=10.0) == 1  # b"1" was due at 10
    assert b"1" not in seen
    assert b"2" in seen
    for i in range(3, 7):
        seen.add(bytes([i]), now=6.0)
    assert len(seen) == 3
    assert b"2" not in seen, "the oldest id goes past maxsize"
    seen.discard(bytes([6]))
    assert seen.add(bytes([6]), now=7.0), "a discarded id counts as new again"


def test_message_cache_windows_and_byte_bound() -> None:
    mc = MessageCache(history_length=3, history_gossip=2, max_bytes=10)
    mc.put(b"a", b"1234")
    assert mc.gossip_ids() == [], "the current window is not advertised yet"
    mc.shift()
    mc.put(b"b", b"5678")
    assert mc.gossip_ids() == [b"a"]
    mc.shift()
    assert mc.gossip_ids() == [b"b", b"a"]
    mc.shift()
    assert mc.get(b"a") is None, "frames leave after history_length heartbeats"
    assert mc.get(b"b") == b"5678"
    mc.put(b"c", b"abcdef")
    mc.put(b"d", b"ghij")  # 4 + 6 + 4 > 10: the oldest (b) goes
    assert mc.get(b"b") is None
    assert mc.get(b"c") == b"abcdef"
    assert mc.nbytes == 10
    mc.put(b"huge", b"x" * 11)
    assert mc.get(b"huge") is None, "a frame larger than the cache is not kept"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="d_lo"):
        GossipConfig(d=2, d_lo=3)
    with pytest.raises(ValueError, match="history"):
        GossipConfig(history_length=3, history_gossip=3)


def state(**kw: int) -> GossipState:
    return GossipState(config=GossipConfig(**kw), rng=random.Random(1))  # type: ignore[arg-type]


def test_mesh_grows_to_d_and_grafts_are_reciprocated_up_to_d_hi() -> None:
    s = state(d=2, d_lo=1, d_hi=3)
    assert s.add_peer("a") == [Graft("a")]
    assert s.add_peer("b") == [Graft("b")]
    assert s.add_peer("c") == [], "the mesh is at d: c stays a plain peer"
    assert s.mesh == {"a", "b"}
    assert s.on_graft("c") == []
    assert "c" in s.mesh, "a graft is reciprocated below d_hi"
    s.add_peer("d")
    assert s.on_graft("d") == [Prune("d")], "a graft past d_hi is answered by prune"
    assert s.on_graft("stranger") == [], "grafts from unconnected peers are ignored"
    s.on_prune("a")
    s.remove_peer("b")
    assert s.mesh == {"c"}


def test_heartbeat_repairs_the_mesh() -> None:
    s = state(d=3, d_lo=2, d_hi=4)
    for p in "abcdef":
        s.add_peer(p)
    s.remove_peer("a")
    s.remove_peer("b")
    cmds = s.heartbeat(now=1.0)
    grafts = [c for c in cmds if isinstance(c, Graft)]
    assert len(grafts) == 2, "below d_lo: graft back up to d"
    assert len(s.mesh) == 3
    for p in "def":
        s.on_graft(p)
    assert len(s.mesh) == 4, "the one spare peer's graft is reciprocated (below d_hi)"
    s.mesh |= {"x", "y"}  # as if grafted by peers beyond d_hi
    s.peers |= {"x", "y"}
    cmds = s.heartbeat(now=2.0)
    assert len([c for c in cmds if isinstance(c, Prune)]) == 3, "above d_hi: prune back to d"
    assert len(s.mesh) == 3


def test_publish_floods_and_forwarding_skips_the_source() -> None:
    s = state(d=2, d_lo=1, d_hi=3)
    for p in "abcd":
        s.add_peer(p)
    mid, targets = s.publish(b"mine", now=0.0)
    assert sorted(targets) == ["a", "b", "c", "d"], "own messages go to every peer"
    assert s.receive(b"mine", now=0.1) is None, "our own message coming back is a duplicate"
    assert s.receive(b"theirs", now=0.2) == message_id(b"theirs")
    mid = message_id(b"theirs")
    assert s.receive(b"theirs", now=0.3) is None
    assert sorted(s.accept(mid, b"theirs", source="a")) == sorted(s.mesh - {"a"})
    flood_off = GossipState(config=GossipConfig(d=2, d_lo=1, flood_publish=False))
    for p in "abcd":
        flood_off.add_peer(p)
    assert set(flood_off.publish(b"x", now=0.0)[1]) == flood_off.mesh


def test_ihave_iwant_round_trip_with_budgets() -> None:
    sender, receiver = state(max_ihave_ids=2, max_iwant_ids=1), state(max_ihave_ids=2)
    sender.add_peer("r")
    receiver.add_peer("s")
    for frame in (b"f1", b"f2", b"f3"):
        mid = sender.receive(frame, now=0.0)
        assert mid is not None
        sender.accept(mid, frame, source=None)
    assert not [c for c in sender.heartbeat(now=1.0) if isinstance(c, IHave)], "current window"
    ihaves = [c for c in sender.heartbeat(now=2.0) if isinstance(c, IHave)]
    assert len(ihaves) == 1
    assert len(ihaves[0].ids) == 2, "IHAVE is capped at max_ihave_ids"
    receiver.receive(b"f3", now=2.0)  # already has f3
    ids = [*ihaves[0].ids, message_id(b"f1")]
    [want] = receiver.on_ihave("s", ids, now=2.0)
    assert want == IWant("s", (message_id(b"f2"), message_id(b"f1"))), "only unseen ids"
    assert receiver.on_ihave("s", [message_id(b"f9")], now=2.5) == [], "budget spent"
    assert sender.on_iwant("r", list(want.ids)) == [b"f2"], "IWANT answers are budgeted"
    assert sender.on_iwant("r", list(want.ids)) == []
    sender.heartbeat(now=3.0)
    assert sender.on_iwant("r", [message_id(b"f1"), message_id(b"nope")]) == [b"f1"]


def test_ihave_asks_again_after_the_followup_delay() -> None:
    s = state()
    s.add_peer("a")
    s.add_peer("b")
    ids = [message_id(b"lost")]
    assert s.on_ihave("a", ids, now=0.0) == [IWant("a", tuple(ids))]
    assert s.on_ihave("b", ids, now=0.5) == []
    assert s.on_ihave("b", ids, now=1.5) == [IWant("b", tuple(ids))]


def simulate(
    n: int, *, degree: int, loss: float, seed: int, messages: int, **config: int
) -> list[set[bytes]]:
    """Drive n GossipStates over a random graph whose links lose ``loss`` of
    PUBLISH frames (never control); return what each node delivered."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(n)]
    nodes = {
        p: GossipState(config=GossipConfig(**config), rng=random.Random(i))  # type: ignore[arg-type]
        for i, p in enumerate(names)
    }
    links: set[frozenset[str]] = {frozenset((names[i], names[i - 1])) for i in range(1, n)}
    while sum(1 for _ in links) < n * degree // 2:
        a, b = rng.sample(names, 2)
        links.add(frozenset((a, b)))
    queue: list[tuple[str, str, object]] = []  # (to, from, command or frame)
    for link in sorted(sorted(link) for link in links):
        a, b = link
        for x, y in ((a, b), (b, a)):
            queue.extend((c.peer, x, c) for c in nodes[x].add_peer(y))
    delivered: dict[str, set[bytes]] = {p: set() for p in names}

    def pump() -> None:
        while queue:
            to, frm, item = queue.pop(0)
            node = nodes[to]
            if isinstance(item, bytes):
                if rng.random() < loss:
                    continue
                mid = node.receive(item, now)
                if mid is not None:
                    delivered[to].add(item)
                    queue.extend((p, to, item) for p in sorted(node.accept(mid, item, frm)))
            elif isinstance(item, Graft):
                queue.extend((c.peer, to, c) for c in node.on_graft(frm))
            elif isinstance(item, Prune):
                node.on_prune(frm)
            elif isinstance(item, IHave):
                queue.extend((c.peer, to, c) for c in node.on_ihave(frm, list(item.ids), now))
            elif isinstance(item, IWant):
                queue.extend((frm, to, f) for f in node.on_iwant(frm, list(item.ids)))

    now = 0.0
    pump()
    for m in range(messages):
        src = names[m % n]
        frame = f"m{m}".encode()
        _, targets = nodes[src].publish(frame, now)
        delivered[src].add(frame)
        queue.extend((p, src, frame) for p in sorted(targets))
    pump()
    for _ in range(4):
        now += 1.0
        for p in names:
            queue.extend((c.peer, p, c) for c in nodes[p].heartbeat(now))
        pump()
    return list(delivered.values())


def test_simulated_mesh_delivers_everything_without_loss() -> None:
    got = simulate(30, degree=8, loss=0.0, seed=3, messages=40)
    assert all(len(d) == 40 for d in got)


def test_simulated_mesh_repairs_lossy_links_by_ihave_iwant() -> None:
    got = simulate(30, degree=8, loss=0.3, seed=0, messages=40)
    assert all(len(d) == 40 for d in got), sorted(len(d) for d in got)
    unrepaired = simulate(30, degree=8, loss=0.3, seed=0, messages=40, max_ihave_ids=0)
    assert sum(40 - len(d) for d in unrepaired) > 0, "the loss is real: without IHAVE, gaps stay"


def test_idontwant_for_large_messages_only_and_forwarding_skips_those_peers() -> None:
    s = state(d=3, d_lo=2, d_hi=4, idontwant_size=100, idontwant_max=2)
    for p in "abc":
        s.add_peer(p)
    small, big = b"s" * 99, b"b" * 100
    assert s.dont_want(message_id(small), small, source="a") == []
    assert s.dont_want(message_id(big), big, source="a") == [
        IDontWant("b", (message_id(big),)),
        IDontWant("c", (message_id(big),)),
    ]
    mid = s.receive(big, now=0.0)
    assert mid is not None
    s.on_idontwant("b", [mid])
    s.on_idontwant("stranger", [mid])  # ignored: not a peer
    assert sorted(s.accept(mid, big, source="a")) == ["c"], "b said it has it"
    s.on_idontwant("b", [b"x" * 20, b"y" * 20])  # bounded: the oldest id goes
    assert sorted(s.accept(mid, big, source="a")) == ["b", "c"]
    s.remove_peer("b")
    s.add_peer("b")
    assert "b" in s.accept(mid, big, source=None), "a reconnected peer starts afresh"
