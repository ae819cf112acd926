"""Block exchange between nodes, on an in-memory fake of NodeServices.

The fake hub can take a peer down (before or in the middle of a transfer) and can
make a peer tamper with the blocks it sends, so the tests can show that fetching
resumes from other providers and that a corrupt block is never stored or returned.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import msgpack
import pytest

from bacalhau.cid import RAW, cid_str, make_cid, split_cid, to_cid
from bacalhau.errors import BlockNotFound, PeerUnreachable, StorageError
from bacalhau.identity import Identity
from bacalhau.models import StorageSpec
from bacalhau.node.clock import VirtualClock
from bacalhau.publisher.ipfs import IpfsPublisher
from bacalhau.storage.ipfs import (
    BlockService,
    BlockStore,
    IpfsStorage,
    add_bytes,
    add_path,
    cat,
    exchange,
    export_car,
    import_car,
)
from bacalhau.storage.ipfs.exchange import pack_want_reply
from bacalhau.storage.ipfs.flow import FlowWindow
from bacalhau.storage.ipfs.records import ProviderRecords, Reprovider
from bacalhau.transport.base import MAX_FRAME, join_reply
from bacalhau.transport.services import ProtocolHandler

Handler = ProtocolHandler


@attrs.define
class Hub:
    nodes: dict[str, FakeServices] = attrs.Factory(dict)
    down: set[str] = attrs.Factory(set)
    # peer -> number of "want" replies it sends before vanishing
    vanish_after: dict[str, int] = attrs.Factory(dict)
    tamper: set[str] = attrs.Factory(set)
    requests: list[tuple[str, str, str]] = attrs.Factory(list)
    # every CID asked for in a "want", by the asking node
    wanted: dict[str, list[bytes]] = attrs.Factory(dict)
    # cancel this scope once that many "want" replies have been delivered (a killed fetch)
    kill_after: tuple[int, anyio.CancelScope] | None = None
    # set (and replaced) whenever a request is made
    asked: anyio.Event = attrs.Factory(anyio.Event)


@attrs.define
class FakeServices:
    """Just enough of the node for BlockService: peers, requests, protocol handlers."""

    node_id: str
    hub: Hub
    data_dir: Path
    identity: Identity = attrs.Factory(Identity.generate)
    handlers: dict[str, Handler] = attrs.Factory(dict)
    blocks: Any = None

    @property
    def blockstore(self) -> BlockStore:
        return self.blocks.store  # type: ignore[no-any-return]

    def peers(self) -> frozenset[str]:
        return frozenset(n for n in self.hub.nodes if n != self.node_id and n not in self.hub.down)

    def register_protocol(self, protocol: str, handler: Handler) -> None:
        self.handlers[protocol] = handler

    async def request(
        self,
        peer_id: str,
        protocol: str,
        payload: bytes,
        *,
        timeout: float = 10.0,
    ) -> bytes:
        hub = self.hub
        if peer_id in hub.down or peer_id not in hub.nodes:
            raise PeerUnreachable(f"{peer_id} is unreachable")
        op, cids = msgpack.unpackb(payload)
        hub.requests.append((self.node_id, peer_id, op))
        hub.asked.set()
        hub.asked = anyio.Event()
        if op == "want":
            hub.wanted.setdefault(self.node_id, []).extend(cids)
        with anyio.fail_after(timeout):
            reply = join_reply(await hub.nodes[peer_id].handlers[protocol](self.node_id, payload))
        await anyio.lowlevel.checkpoint()
        if op == "want" and peer_id in hub.vanish_after:
            hub.vanish_after[peer_id] -= 1
            if hub.vanish_after[peer_id] < 0:
                hub.down.add(peer_id)
        if peer_id in hub.down:
            raise PeerUnreachable(f"{peer_id} went away")
        if op == "want" and peer_id in hub.tamper:
            message = msgpack.unpackb(reply)
            for pair in message["blocks"]:
                pair[1] = b"X" + pair[1][1:]
            reply = msgpack.packb(message)
        if op == "want" and hub.kill_after is not None:
            left, scope = hub.kill_after
            hub.kill_after = (left - 1, scope)
            if left <= 1:
                scope.cancel()
        return reply


def make_nodes(tmp_path: Path, n: int) -> tuple[Hub, list[BlockService]]:
    hub = Hub()
    services = []
    for i in range(n):
        fake = FakeServices(f"node-{i}", hub, tmp_path / f"n{i}")
        service = BlockService(BlockStore(fake.data_dir / "blocks"), fake, request_timeout=5.0)
        fake.blocks = service
        service.register()
        hub.nodes[fake.node_id] = fake
        services.append(service)
    return hub, services


def payload_bytes(n: int) -> bytes:
    return os.urandom(n)


async def read(blocks: Any, cid: str) -> bytes:
    return b"".join([piece async for piece in cat(blocks, cid)])


@pytest.mark.anyio
async def test_fetch_a_dag_from_another_node(tmp_path: Path) -> None:
    _, (a, b) = make_nodes(tmp_path, 2)
    data = payload_bytes(3 * 1024 * 1024 + 5)
    cid = await add_bytes(a.store, data)
    assert not await b.has_locally(cid)
    fetched = await b.fetch_dag(cid)
    assert fetched == 14  # 13 leaves and the root
    assert await b.has_dag_locally(cid)
    assert await read(b.store, cid) == data
    assert await b.fetch_dag(cid) == 0


@pytest.mark.anyio
async def test_blocks_come_from_several_providers_in_parallel(tmp_path: Path) -> None:
    _hub, services = make_nodes(tmp_path, 4)
    data = payload_bytes(8 * 1024 * 1024)
    cid = await add_bytes(services[0].store, data, chunk_size=65536)
    for holder in services[1:3]:
        await import_copy(services[0], holder, cid, tmp_path)
    await services[3].fetch_dag(cid)
    assert await read(services[3].store, cid) == data
    served = [s.stats["blocks_served"] for s in services[:3]]
    assert all(n > 0 for n in served), served  # each provider took its share of the leaves


async def import_copy(src: BlockService, dst: BlockService, cid: str, tmp_path: Path) -> None:
    car = tmp_path / f"{os.urandom(4).hex()}.car"
    await export_car(src.store, cid, car)
    assert await import_car(dst.store, car) == [cid]


@pytest.mark.anyio
async def test_fetch_resumes_after_a_provider_vanishes(tmp_path: Path) -> None:
    hub, (a, b, c) = make_nodes(tmp_path, 3)
    data = payload_bytes(16 * 1024 * 1024)  # 256 leaves: each provider's share needs 2+ asks
    cid = await add_bytes(a.store, data, chunk_size=65536)
    await import_copy(a, b, cid, tmp_path)
    hub.vanish_after["node-0"] = 1  # serves one reply, then is gone mid-transfer
    await c.fetch_dag(cid)
    assert "node-0" in hub.down
    assert a.stats["blocks_served"] > 0, "the vanished provider had served part of the DAG"
    assert c.stats["provider_failures"] >= 1
    assert await read(c.store, cid) == data


@pytest.mark.anyio
async def test_a_lone_provider_vanishing_fails_with_block_not_found(tmp_path: Path) -> None:
    hub, (a, b) = make_nodes(tmp_path, 2)
    cid = await add_bytes(a.store, payload_bytes(2 * 1024 * 1024), chunk_size=65536)
    hub.vanish_after["node-0"] = 1
    with pytest.raises(BlockNotFound, match="could not be fetched"):
        await b.fetch_dag(cid)


@pytest.mark.anyio
async def test_corrupt_blocks_are_refetched_from_an_honest_provider(tmp_path: Path) -> None:
    hub, (a, b, c) = make_nodes(tmp_path, 3)
    data = payload_bytes(2 * 1024 * 1024)
    cid = await add_bytes(a.store, data, chunk_size=65536)
    await import_copy(a, b, cid, tmp_path)
    hub.tamper.add("node-0")
    await c.fetch_dag(cid)
    assert await read(c.store, cid) == data
    assert c.stats["corrupt_received"] >= 1
    assert b.stats["blocks_served"] > 0
    for key in c.store.all_cids():
        c.store.get_verified(key)  # nothing corrupt was stored


@pytest.mark.anyio
async def test_a_corrupt_only_provider_never_yields_bytes(tmp_path: Path) -> None:
    hub, (a, b) = make_nodes(tmp_path, 2)
    cid = await add_bytes(a.store, payload_bytes(300_000))
    hub.tamper.add("node-0")
    with pytest.raises(BlockNotFound):
        await read(b, cid)
    assert b.stats["corrupt_received"] >= 1
    assert list(b.store.all_cids()) == []


@pytest.mark.anyio
async def test_a_corrupt_local_block_is_refetched(tmp_path: Path) -> None:
    _, (a, b) = make_nodes(tmp_path, 2)
    data = payload_bytes(1_000_000)
    cid = await add_bytes(a.store, data)
    await b.fetch_dag(cid)
    victim = next(k for k in b.store.all_cids() if b.store.size(k) > 200_000)
    path = b.store._file(victim)[0]
    path.write_bytes(b"\0" * path.stat().st_size)
    assert await read(b, cid) == data
    assert b.stats["corrupt_local"] == 1


@pytest.mark.anyio
async def test_nobody_has_it(tmp_path: Path) -> None:
    _, (_a, b) = make_nodes(tmp_path, 2)
    cid = await add_bytes(None, b"nobody stored this")
    with pytest.raises(BlockNotFound):
        await b.get(cid)


@pytest.mark.anyio
async def test_announce_and_find_providers(tmp_path: Path) -> None:
    hub, (a, b, _c) = make_nodes(tmp_path, 3)
    cid = await add_bytes(a.store, b"announced")
    assert await a.announce(cid) == 2
    hub.requests.clear()
    assert await b.find_providers(cid) == ["node-0"]
    assert hub.requests == []  # a live provider record: nobody had to be asked
    assert await b.find_providers(cid, ask=True) == ["node-0"]
    assert ("node-1", "node-2", "have") in hub.requests  # asked the others too
    hub.down.add("node-0")
    assert await b.find_providers(cid) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        random.Random(64).randbytes(64),  # seeded: the same test id in every run and worker
        msgpack.packb(["want"]),
        msgpack.packb(["want", "not a list"]),
        msgpack.packb(["want", [b"x"]]),
        msgpack.packb(["want", [b"\x01\x55\x12\x20" + b"\0" * 31]]),
        msgpack.packb(["want", [b"\x12\x20" + b"\0" * 32] * 1000]),
        msgpack.packb(["steal", []]),
        msgpack.packb({"op": "want"}),
        b"\x00" * 200_000,
    ],
)
async def test_untrusted_requests_get_an_error_reply(tmp_path: Path, payload: bytes) -> None:
    hub, (a, _) = make_nodes(tmp_path, 2)
    reply = msgpack.unpackb(
        join_reply(await hub.nodes["node-0"].handlers["bitswap"]("node-1", payload))
    )
    assert isinstance(reply, dict)
    assert "error" in reply
    assert a.stats["refused_requests"] == 1


@pytest.mark.anyio
async def test_want_reply_respects_its_budget_and_reports_missing(tmp_path: Path) -> None:
    hub, (a, _) = make_nodes(tmp_path, 2)
    cid = await add_bytes(a.store, payload_bytes(4 * 1024 * 1024))
    leaves = [k for k in a.store.all_cids() if a.store.size(k) > 1000]
    absent = to_cid(await add_bytes(None, b"absent"))
    payload = msgpack.packb(["want", [absent, *leaves]])
    reply = msgpack.unpackb(
        join_reply(await hub.nodes["node-0"].handlers["bitswap"]("node-1", payload))
    )
    assert reply["missing"] == [absent]
    assert 1 <= len(reply["blocks"]) < len(leaves)
    assert sum(len(d) for _, d in reply["blocks"]) <= exchange.REPLY_BUDGET
    pieces = await hub.nodes["node-0"].handlers["bitswap"]("node-1", payload)
    assert len(join_reply(pieces)) <= MAX_FRAME
    del cid


@pytest.mark.anyio
async def test_ipfs_storage_and_publisher_across_nodes(tmp_path: Path) -> None:
    _, (a, b) = make_nodes(tmp_path, 2)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.bin").write_bytes(payload_bytes(700_000))
    (src / ".hidden").write_bytes(b"kept by the publisher")
    ref = await IpfsPublisher(a).publish("job", "job/node-0", src)
    assert ref.type == "ipfs"
    assert ref.cid
    assert a.store.is_pinned(ref.cid)
    assert a.store.gc() == 0
    storage = IpfsStorage(b)
    spec = StorageSpec.ipfs(ref.cid)
    assert not await storage.has_locally(spec)
    out = await storage.prepare(spec, tmp_path / "inputs" / "0")
    assert (out / "sub" / "data.bin").read_bytes() == (src / "sub" / "data.bin").read_bytes()
    assert (out / ".hidden").read_bytes() == b"kept by the publisher"
    assert await storage.has_locally(spec)
    assert await storage.open_reader(spec) is None  # a directory cannot be streamed
    sub = StorageSpec.ipfs(ref.cid, path="sub/data.bin")
    opened = await storage.open_reader(sub)
    assert opened is not None
    reader, size = opened
    assert size == 700_000
    assert reader(1000, 10) == (src / "sub" / "data.bin").read_bytes()[1000:1010]
    single = await storage.prepare(sub, tmp_path / "inputs" / "1")
    assert single.read_bytes() == (src / "sub" / "data.bin").read_bytes()


@pytest.mark.anyio
async def test_library_reader_fetches_remote_file_first(tmp_path: Path) -> None:
    _, (a, b) = make_nodes(tmp_path, 2)
    data = payload_bytes(900_000)
    cid = await add_path(a.store, write(tmp_path / "f.bin", data), cid_version=1)
    opened = await IpfsStorage(b).open_reader(StorageSpec.ipfs(cid))
    assert opened is not None
    reader, size = opened
    assert size == len(data)

    def read_in_threads() -> list[bytes]:
        return [reader(i * 1000, 300_000) for i in range(5)]

    parts = await anyio.to_thread.run_sync(read_in_threads)
    assert parts == [data[i * 1000 : i * 1000 + 300_000] for i in range(5)]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.anyio
async def test_streaming_a_remote_file_asks_the_peer_that_served_it(tmp_path: Path) -> None:
    hub, (a, b, _, _) = make_nodes(tmp_path, 4)
    data = payload_bytes(6 * 1024 * 1024)
    cid = await add_bytes(a.store, data, chunk_size=65536)  # 96 leaves: 6 windows of 16
    assert await read(b, cid) == data
    asked = [to for frm, to, op in hub.requests if frm == "node-1" and op == "have"]
    windows = 96 // 16
    assert asked.count("node-0") >= windows
    # only the first lookups go to everyone; later windows ask the peer that served us
    assert asked.count("node-2") <= 2
    assert asked.count("node-3") <= 2


@pytest.mark.anyio
async def test_three_providers_one_drops_out_one_corrupt(tmp_path: Path) -> None:
    hub, (a, b, c, d) = make_nodes(tmp_path, 4)
    data = payload_bytes(16 * 1024 * 1024)
    cid = await add_bytes(a.store, data, chunk_size=65536)
    for holder in (b, c):
        await import_copy(a, holder, cid, tmp_path)
    for holder in (a, b, c):
        await holder.announce(cid)
    hub.vanish_after["node-0"] = 0  # drops out while serving its first reply
    hub.tamper.add("node-1")  # every block it sends is corrupt
    await d.fetch_dag(cid)
    assert await read(d.store, cid) == data
    assert "node-0" in hub.down and a.stats["blocks_served"] > 0
    assert d.stats["corrupt_received"] >= 1
    assert d.stats["provider_failures"] >= 2
    assert d.stats["provider_records_used"] >= 1  # no who-has broadcast was needed
    for key in d.store.all_cids():
        d.store.get_verified(key)  # nothing corrupt was stored


@pytest.mark.anyio
async def test_a_killed_fetch_resumes_without_refetching(tmp_path: Path) -> None:
    hub, (a, b) = make_nodes(tmp_path, 2)
    data = payload_bytes(4 * 1024 * 1024)
    cid = await add_bytes(a.store, data, chunk_size=65536)
    total = len(list(a.store.all_cids()))
    with anyio.CancelScope() as scope:
        hub.kill_after = (3, scope)
        await b.fetch_dag(cid)
    assert scope.cancelled_caught
    hub.kill_after = None
    had = {split_cid(k)[2] for k in b.store.all_cids()}
    assert 0 < len(had) < total
    hub.wanted.clear()
    fetched = await b.fetch_dag(cid)
    assert fetched == total - len(had)
    again = {split_cid(k)[2] for k in hub.wanted["node-1"]}
    assert again.isdisjoint(had), "a block the node already had was asked for again"
    assert await read(b.store, cid) == data


@pytest.mark.anyio
async def test_a_fetched_dag_is_announced_and_records_expire(tmp_path: Path) -> None:
    hub, (a, b, c) = make_nodes(tmp_path, 3)
    now = [1000.0]
    for service in (a, b, c):
        service.records.clock = lambda: now[0]
    cid = await add_bytes(a.store, payload_bytes(600_000))
    await b.fetch_dag(cid)  # found a by asking; b now announces it holds the DAG
    assert c.records.providers(cid) == ["node-1"]
    hub.requests.clear()
    assert await c.find_providers(cid) == ["node-1"]
    assert hub.requests == []  # answered from the record
    now[0] += c.records.ttl + 1
    assert c.records.providers(cid) == []
    assert await c.find_providers(cid) == ["node-0", "node-1"]  # asked everyone again
    assert ("node-2", "node-0", "have") in hub.requests


def test_provider_records_are_bounded_and_expire() -> None:
    now = [0.0]
    records = ProviderRecords(ttl=10.0, max_roots=2, max_per_root=2, clock=lambda: now[0])
    roots = [to_cid(add_bytes_sync(bytes([i]))) for i in range(3)]
    records.add(roots[0], "p1")
    now[0] = 1.0
    records.add(roots[0], "p2")
    now[0] = 2.0
    records.add(roots[0], "p3")  # the stalest (p1) goes
    assert records.providers(roots[0]) == ["p3", "p2"]
    records.add(roots[1], "p1")
    records.add(roots[2], "p1")  # the least recently announced root (0) goes
    assert records.providers(roots[0]) == []
    assert len(records) == 2
    now[0] = 11.5  # roots 1 and 2 were announced at 2.0: still live
    assert records.providers(roots[1]) == ["p1"]
    now[0] = 12.0
    assert records.expire() == 2
    assert len(records) == 0
    with pytest.raises(ValueError, match="positive"):
        ProviderRecords(ttl=0)


def add_bytes_sync(data: bytes) -> str:
    from bacalhau.cid import cid_from_digest

    return cid_str(cid_from_digest(hashlib.sha256(data).digest(), codec=0x55, version=1))


def test_flow_window_grows_to_the_bandwidth_delay_product_and_halves_on_failure() -> None:
    window = FlowWindow(low=2, high=16, start=2)
    # a 10 ms path delivering 1 MiB replies back to back: throughput follows the window
    now = 0.0
    for _ in range(40):
        interval = 0.010 / window.limit  # w replies per round trip
        now += interval
        window.on_reply(now - 0.010, now, 1 << 20)
    assert window.limit == 16  # grew until the bound
    window.on_failure()
    assert window.limit == 8
    # a path whose round trip grows with the load (a full pipe) stops growing
    full = FlowWindow(low=2, high=64, start=4)
    now = 0.0
    for _ in range(200):
        rtt = 0.002 * full.limit  # queueing: each extra request waits its turn
        now += 0.002
        full.on_reply(now - rtt, now, 1 << 20)
    assert full.limit < 64
    with pytest.raises(ValueError, match="bounds"):
        FlowWindow(low=4, high=2)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300])
@pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536, 300_000])
def test_want_reply_encoding_is_msgpack(count: int, size: int) -> None:
    blocks = [(os.urandom(34), os.urandom(size)) for _ in range(min(count, 2))]
    blocks = (blocks * count)[:count]
    missing = [os.urandom(36) for _ in range(count % 17)]
    expected = msgpack.packb(
        {"blocks": [list(b) for b in blocks], "missing": missing}, use_bin_type=True
    )
    assert pack_want_reply(blocks, missing) == expected


@pytest.mark.anyio
async def test_streaming_export_from_two_providers(tmp_path: Path) -> None:
    _, (a, b, c) = make_nodes(tmp_path, 3)
    data = payload_bytes(3 * 1024 * 1024 + 11)
    cid = await add_bytes(a.store, data, chunk_size=65536)
    await import_copy(a, b, cid, tmp_path)
    dest = await c.export(cid, tmp_path / "out.bin")
    assert dest.read_bytes() == data
    assert a.stats["blocks_served"] + b.stats["blocks_served"] == c.stats["blocks_fetched"]
    nobody = await add_bytes(None, b"stored nowhere")
    with pytest.raises(BlockNotFound):
        await c.export(nobody, tmp_path / "nothing")


@pytest.mark.anyio
async def test_streaming_export_hashes_fetched_blocks_once_and_checks_local_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (a, b) = make_nodes(tmp_path, 2)
    data = payload_bytes(2 * 1024 * 1024 + 7)
    cid = await add_bytes(a.store, data, chunk_size=65536)
    # b already holds part of the DAG, one of those blocks corrupt on its disk
    leaves = [k for k in a.store.all_cids() if a.store.size(k) > 60_000]
    for leaf in leaves[:4]:
        b.store.put(leaf, a.store.get(leaf))
    victim = b.store._file(leaves[1])[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)
    reread: list[bytes] = []
    verified = BlockStore.get_verified

    def counting(store: BlockStore, key: bytes | str) -> bytes:
        reread.append(to_cid(key))
        return verified(store, key)

    monkeypatch.setattr(BlockStore, "get_verified", counting)
    dest = await b.export(cid, tmp_path / "out.bin")
    assert dest.read_bytes() == data
    # blocks this fetch stored were verified on receipt and read back as they are,
    # whether the exporter read them during the fetch or after it had ended
    local = {split_cid(k)[2] for k in leaves[:4]}
    assert {split_cid(k)[2] for k in reread} <= local
    assert b.stats["blocks_fetched"] >= len(leaves) - 3  # the corrupt one came again
    assert b.store.get_verified(leaves[1]) == a.store.get(leaves[1])


def test_put_many_durable_batch(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s", fsync=True)
    blocks = [os.urandom(1000 + i) for i in range(20)]
    cids = [to_cid(add_bytes_sync(b)) for b in blocks]
    assert store.put_many([(c, (b[:10], b[10:])) for c, b in zip(cids, blocks, strict=True)]) == 20
    assert store.put_many([(cids[0], (blocks[0],))]) == 0  # already there
    assert [store.get_verified(c) for c in cids] == blocks
    assert os.listdir(tmp_path / "s" / "tmp") == []


@pytest.mark.anyio
async def test_streaming_export_bounds_what_the_fetch_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange, "MAX_INFLIGHT_BYTES", 2 * 1024 * 1024)
    _, (a, b) = make_nodes(tmp_path, 2)
    cid = await add_bytes(a.store, payload_bytes(12 * 1024 * 1024), chunk_size=65536)
    with pytest.raises(StorageError):
        await b.export(cid, tmp_path / "out.bin", max_size=1024 * 1024)
    # the export refused the root's declared size and the fetch behind it stopped
    assert sum(b.store.size(k) for k in b.store.all_cids()) <= 8 * 1024 * 1024
    # a fetch's own bound holds even when no exporter checks sizes (a lying root)
    with pytest.raises(StorageError, match="more than the 100000 allowed"):
        await b.fetch_dag(cid, max_bytes=100_000)
    # it stopped near the bound, plus what was in flight, not at the whole 12 MiB
    assert 100_000 < b.stats["bytes_fetched"] <= 7 * 1024 * 1024
    assert sum(b.store.size(k) for k in b.store.all_cids()) <= 8 * 1024 * 1024


def test_reprovider_hands_out_due_roots_in_bounded_rounds() -> None:
    roots = [make_cid(b"root %d" % i, codec=RAW, version=1) for i in range(6)]
    rep = Reprovider(interval=100.0, max_roots=5, batch=2)
    for i, root in enumerate(roots):
        rep.provided(root, float(i))
    assert len(rep) == 5 and roots[0] not in rep  # the one provided longest ago went
    assert rep.next_at() == 101.0
    assert rep.due(100.5) == []
    assert rep.due(103.0) == [roots[1], roots[2]]  # most overdue first, two a round
    rep.provided(roots[1], 103.0)
    rep.drop(roots[2])
    assert rep.due(103.0) == [roots[3]]
    assert rep.next_at() == 103.0
    with pytest.raises(ValueError, match="positive"):
        Reprovider(interval=0)


@pytest.mark.anyio
async def test_provided_roots_are_announced_again_before_records_lapse(tmp_path: Path) -> None:
    hub, (a, b, c) = make_nodes(tmp_path, 3)
    clock = VirtualClock(start=1000.0)
    b.clock = clock
    records_now = [0.0]
    c.records.clock = lambda: records_now[0]
    cid = await add_bytes(a.store, payload_bytes(300_000))
    await b.fetch_dag(cid)  # b announces it now holds the DAG
    assert c.records.providers(cid) == ["node-1"]

    def announced_by_b() -> int:
        return sum(1 for who, _, op in hub.requests if who == "node-1" and op == "announce")

    async def until(predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not predicate():
                await hub.asked.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(b.reprovide)
        first = announced_by_b()
        for round_ in range(1, 4):  # three intervals: c's record never lapses
            records_now[0] += b.reprovide_interval
            clock.advance(b.reprovide_interval)
            want = first + 2 * round_  # to a and to c
            await until(lambda: announced_by_b() >= want)  # noqa: B023
            for _ in range(1000):  # the round ends without threads: a few checkpoints
                if b.stats["reprovided"] == round_:
                    break
                await anyio.lowlevel.checkpoint()
            assert b.stats["reprovided"] == round_
            assert c.records.providers(cid) == ["node-1"]
        assert b.stats["reprovided"] == 3
        # b loses the DAG (garbage collected): it stops announcing it
        b.store.delete(cid)
        clock.advance(b.reprovide_interval)
        with anyio.fail_after(10):
            while b.stats["reprovide_dropped"] < 1:
                await anyio.sleep(0.01)  # the check runs on a worker thread: nothing to await
        assert cid not in b.reprovider
        count = announced_by_b()
        clock.advance(10 * b.reprovide_interval)
        for _ in range(100):
            await anyio.lowlevel.checkpoint()
        assert announced_by_b() == count
        tg.cancel_scope.cancel()
    records_now[0] += c.records.ttl + 1
    assert c.records.providers(cid) == []  # and c's record of it lapses


def test_a_fetch_splits_what_is_left_among_its_providers() -> None:
    state = exchange._Fetch(dag=True)
    state.add([bytes([1, i]) for i in range(10)])
    state.pumps.update({"p", "q", "r"})
    assert state.share("p") == 4  # ceil(10 / 3)
    for _ in range(4):  # p asks for four
        state.queue.popleft()
    state.peer_cids["p"] = 4
    assert state.share("p") == 0  # holds its share in flight: the others ask next
    assert state.share("q") == 4
    state.failed["r"] = "gone"
    assert state.share("q") == 5  # r's share goes to those still pumping
