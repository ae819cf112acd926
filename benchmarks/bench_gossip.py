"""TCP gossip across processes vs direct TCP across the same number of processes.

One run measures, for networks of 4, 8 and 16 nodes (each gossip node its own
process on 127.0.0.1, found through one static peer and peer exchange):

* broadcast latency: the time from ``broadcast()`` on one node until the last
  of the other nodes' handlers has it (p50 / p99 over spaced broadcasts);
* throughput: messages per second one node pushes to every other node
  (each message delivered to all of them), with 2 and 4 nodes;

and the same figures for two references:

* **direct TCP** (the headline reference): the same number of processes, the sender
  holding one plain TCP connection to each other process and writing every frame to
  each (length-prefixed, no signatures, no peer exchange, no relaying): the fastest
  honest way to reach every process, so the ratio shows what gossip itself costs;
* the in-memory transport, all nodes in this process (no process boundary at all;
  kept as a second row).

It prints them side by side with ratios and writes ``benchmarks/results/gossip.json``.
Processes share the machine's monotonic clock, so cross-process latencies are direct
differences.

Run: ``python benchmarks/bench_gossip.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgpack
from anyio.streams.buffered import BufferedByteReceiveStream

sys.path.insert(0, str(Path(__file__).parent))
from _common import pct, table, write

from bacalhau.identity import Identity
from bacalhau.transport.base import Transport, TransportHandler
from bacalhau.transport.gossip import GossipTransport
from bacalhau.transport.memory import MemoryHub

PAD = b"x" * 200
HEAD = struct.Struct(">qd")  # sequence number, monotonic send time


class Recorder(TransportHandler):
    """Records the latency of each benchmark frame; answers report requests."""

    def __init__(self, transport: Transport | None = None) -> None:
        self.latency: dict[int, float] = {}
        self.count = 0
        self.transport = transport
        self.changed = anyio.Event()

    async def handle_broadcast(self, frame: bytes) -> bool:
        now = time.monotonic()
        seq, sent = HEAD.unpack_from(frame)
        self.count += 1
        if seq >= 0:
            self.latency[seq] = now - sent
        self.changed.set()
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        if frame == b"report":
            return msgpack.packb(self.latency)  # type: ignore[no-any-return]
        if frame == b"count":
            return msgpack.packb(self.count)  # type: ignore[no-any-return]
        if frame == b"peers" and self.transport is not None:
            return msgpack.packb(len(self.transport.peers()))  # type: ignore[no-any-return]
        if frame == b"status" and self.transport is not None:
            return msgpack.packb(self.transport.status())  # type: ignore[no-any-return]
        if frame == b"reset":
            self.latency.clear()
            self.count = 0
            return b"ok"
        return b"?"


def frame(seq: int) -> bytes:
    return HEAD.pack(seq, time.monotonic()) + PAD


# --- worker process ------------------------------------------------------------------------


async def worker(peer: str) -> None:
    t = GossipTransport(Identity.generate(), peers=[peer])
    rec = Recorder(t)
    async with anyio.create_task_group() as tg:
        await tg.start(t.run, rec)
        print(f"READY {t.node_id}", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the coordinator closes stdin
        tg.cancel_scope.cancel()


async def tcp_worker() -> None:
    """A direct-TCP reference process: one connection from the sender; ``F`` frames are
    recorded like broadcasts, ``C`` frames are requests answered on the same connection."""
    rec = Recorder()
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = multi.listeners[0]
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    print(f"READY {port}", flush=True)
    async with multi, await listener.accept() as stream:
        pending = bytearray()
        while True:
            try:
                pending += await stream.receive(1 << 20)  # many frames per read
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            at = 0
            while len(pending) - at >= 4:
                size = int.from_bytes(pending[at : at + 4], "big")
                if len(pending) - at - 4 < size:
                    break
                body = bytes(pending[at + 4 : at + 4 + size])
                at += 4 + size
                if body[:1] == b"F":
                    await rec.handle_broadcast(body[1:])
                else:
                    reply = await rec.handle_request("", body[1:])
                    await stream.send(len(reply).to_bytes(4, "big") + reply)
            del pending[:at]


class DirectTcp:
    """The sender's side of the direct-TCP reference: one stream per other process.

    With ``batch`` (throughput runs) frames are coalesced into writes of up to 64 KiB, as
    a good sender would; without it (latency runs) every frame is written at once.
    """

    def __init__(self, streams: list[anyio.abc.SocketStream]) -> None:
        self.streams = streams
        self.readers = [BufferedByteReceiveStream(s) for s in streams]
        self.batch = False
        self.pending = bytearray()

    async def flush(self) -> None:
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            for stream in self.streams:
                await stream.send(data)

    async def broadcast(self, frame: bytes) -> None:
        self.pending += (len(frame) + 1).to_bytes(4, "big") + b"F" + frame
        if not self.batch or len(self.pending) >= 65536:
            await self.flush()

    async def ask(self, peer: str, what: bytes) -> bytes:
        await self.flush()
        i = int(peer)
        await self.streams[i].send((len(what) + 1).to_bytes(4, "big") + b"C" + what)
        size = int.from_bytes(await self.readers[i].receive_exactly(4), "big")
        return await self.readers[i].receive_exactly(size)


# --- coordinator ---------------------------------------------------------------------------


async def wait_mesh(t: GossipTransport, ids: list[str], n: int) -> None:
    with anyio.fail_after(60):
        while len(t.peers()) < n - 1:  # noqa: ASYNC110 (polls the mesh forming)
            await anyio.sleep(0.05)
        for peer in ids:
            while msgpack.unpackb(await t.request(peer, b"peers")) < n - 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)


async def latency_run(
    t: Transport | DirectTcp, ask: Any, others: list[str], messages: int, gap: float
) -> list[float]:
    for peer in others:
        await ask(peer, b"reset")
    for seq in range(messages):
        await t.broadcast(frame(seq))
        await anyio.sleep(gap)
    await anyio.sleep(0.5)
    reach: dict[int, float] = {}
    for peer in others:
        got = msgpack.unpackb(await ask(peer, b"report"), strict_map_key=False)
        for seq in range(messages):
            reach[seq] = max(reach.get(seq, 0.0), got.get(seq, math.inf))
    return [reach[s] for s in range(messages)]


async def throughput_run(
    t: Transport | DirectTcp, ask: Any, others: list[str], messages: int, queued: Any
) -> float:
    for peer in others:
        await ask(peer, b"reset")
    start = time.monotonic()
    for i in range(messages):
        await t.broadcast(frame(-1 - i))
        if i % 64 == 0:
            while queued() > 512 * 1024:  # noqa: ASYNC110 (the sender paces itself by its queues)
                await anyio.sleep(0.0005)
    with anyio.fail_after(120):
        for peer in others:
            while msgpack.unpackb(await ask(peer, b"count")) < messages:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    return messages / (time.monotonic() - start)


async def gossip_side(n: int, messages: int, flood: int | None) -> dict[str, Any]:
    coordinator = GossipTransport(Identity.generate())
    rec = Recorder(coordinator)
    procs: list[subprocess.Popen[str]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(coordinator.run, rec)
        host, port = coordinator.address
        try:
            command = [sys.executable, __file__, "--worker", f"{host}:{port}"]
            for _ in range(n - 1):
                procs.append(
                    await anyio.to_thread.run_sync(
                        lambda: subprocess.Popen(
                            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                        )
                    )
                )
            ids = []
            for p in procs:
                assert p.stdout is not None
                line = await anyio.to_thread.run_sync(p.stdout.readline)
                if not line.startswith("READY "):
                    raise RuntimeError(f"worker failed to start: {line!r}")
                ids.append(line.split()[1])
            await wait_mesh(coordinator, ids, n)

            async def ask(peer: str, what: bytes) -> bytes:
                return await coordinator.request(peer, what, timeout=30)

            await latency_run(coordinator, ask, ids, 20, 0.01)  # warm up
            lat = await latency_run(coordinator, ask, ids, messages, 0.01)
            out: dict[str, Any] = {
                "nodes": n,
                "p50_ms": pct(lat, 50) * 1000,
                "p99_ms": pct(lat, 99) * 1000,
                "lost": sum(1 for x in lat if x == math.inf),
            }
            if flood:
                out["msgs_per_s"] = await throughput_run(
                    coordinator,
                    ask,
                    ids,
                    flood,
                    lambda: coordinator.status()["queued_bytes"],
                )
            tg.cancel_scope.cancel()
        finally:
            for p in procs:
                if p.stdin:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return out


async def tcp_side(n: int, messages: int, flood: int | None) -> dict[str, Any]:
    """The direct-TCP reference with ``n`` processes: this one sends, ``n - 1`` receive."""
    command = [sys.executable, __file__, "--tcp-worker"]
    procs: list[subprocess.Popen[str]] = []
    streams: list[anyio.abc.SocketStream] = []
    try:
        for _ in range(n - 1):
            proc = await anyio.to_thread.run_sync(
                lambda: subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
                )
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            if not line.startswith("READY "):
                raise RuntimeError(f"tcp worker failed to start: {line!r}")
            streams.append(await anyio.connect_tcp("127.0.0.1", int(line.split()[1])))
        direct = DirectTcp(streams)
        others = [str(i) for i in range(n - 1)]
        await latency_run(direct, direct.ask, others, 20, 0.01)  # warm up
        lat = await latency_run(direct, direct.ask, others, messages, 0.01)
        out: dict[str, Any] = {
            "nodes": n,
            "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000,
            "lost": sum(1 for x in lat if x == math.inf),
        }
        if flood:
            direct.batch = True
            out["msgs_per_s"] = await throughput_run(direct, direct.ask, others, flood, lambda: 0)
    finally:
        for stream in streams:
            await stream.aclose()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return out


async def memory_side(n: int, messages: int, flood: int | None) -> dict[str, Any]:
    hub = MemoryHub(seed=1)
    ts = [hub.transport(Identity.generate().node_id) for _ in range(n)]
    recs = [Recorder(t) for t in ts]
    by_id = {t.node_id: r for t, r in zip(ts, recs, strict=True)}
    async with anyio.create_task_group() as tg:
        for t, r in zip(ts, recs, strict=True):
            await tg.start(t.run, r)
        others = [t.node_id for t in ts[1:]]

        async def ask(peer: str, what: bytes) -> bytes:
            return await by_id[peer].handle_request("", what)

        await latency_run(ts[0], ask, others, 20, 0.01)
        lat = await latency_run(ts[0], ask, others, messages, 0.01)
        out: dict[str, Any] = {
            "nodes": n,
            "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000,
            "lost": sum(1 for x in lat if x == math.inf),
        }
        if flood:
            out["msgs_per_s"] = await throughput_run(ts[0], ask, others, flood, lambda: 0)
        tg.cancel_scope.cancel()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run for CI smoke tests")
    ap.add_argument("--worker", metavar="PEER", help=argparse.SUPPRESS)
    ap.add_argument("--tcp-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        anyio.run(worker, args.worker)
        return {}
    if args.tcp_worker:
        anyio.run(tcp_worker)
        return {}
    load = os.getloadavg()  # other work on the machine skews multi-process latency
    sizes = [4, 8] if args.quick else [4, 8, 16]
    messages = 50 if args.quick else 300
    flood = 2000 if args.quick else 20000
    results: dict[str, Any] = {"latency": [], "throughput": []}
    for n in sizes:
        g = anyio.run(gossip_side, n, messages, None)
        d = anyio.run(tcp_side, n, messages, None)
        m = anyio.run(memory_side, n, messages, None)
        results["latency"].append({"nodes": n, "gossip": g, "tcp": d, "memory": m})
    for n in (2, 4):
        g = anyio.run(gossip_side, n, 20, flood)
        d = anyio.run(tcp_side, n, 20, flood)
        m = anyio.run(memory_side, n, 20, flood)
        results["throughput"].append({"nodes": n, "gossip": g, "tcp": d, "memory": m})
    rows = [
        (
            str(r["nodes"]),
            f"{r['gossip']['p50_ms']:.2f}",
            f"{r['gossip']['p99_ms']:.2f}",
            f"{r['tcp']['p50_ms']:.2f}",
            f"{r['tcp']['p99_ms']:.2f}",
            f"{r['gossip']['p50_ms'] / r['tcp']['p50_ms']:.1f}x",
            f"{r['memory']['p50_ms']:.3f}",
            f"{r['gossip']['p50_ms'] / r['memory']['p50_ms']:.0f}x",
            str(r["gossip"]["lost"]),
        )
        for r in results["latency"]
    ]
    print(
        table(
            f"broadcast reaches all nodes ({messages} broadcasts, 10 ms apart; ms)",
            rows,
            (
                "nodes",
                "gossip p50",
                "gossip p99",
                "tcp p50",
                "tcp p99",
                "vs tcp",
                "mem p50",
                "vs mem",
                "lost",
            ),
        )
    )
    rows = [
        (
            str(r["nodes"]),
            f"{r['gossip']['msgs_per_s']:.0f}",
            f"{r['tcp']['msgs_per_s']:.0f}",
            f"{r['gossip']['msgs_per_s'] / r['tcp']['msgs_per_s']:.2f}",
            f"{r['memory']['msgs_per_s']:.0f}",
            f"{r['gossip']['msgs_per_s'] / r['memory']['msgs_per_s']:.2f}",
        )
        for r in results["throughput"]
    ]
    print()
    print(
        table(
            f"messages/second from one node to all others ({flood} x {len(frame(0))} B)",
            rows,
            ("nodes", "gossip msg/s", "tcp msg/s", "gossip/tcp", "memory msg/s", "gossip/mem"),
        )
    )
    most = next(r for r in results["latency"] if r["nodes"] == max(sizes))
    results["ratio_p50_at_max_nodes"] = most["gossip"]["p50_ms"] / most["tcp"]["p50_ms"]
    results["ratio_p50_at_max_nodes_vs_memory"] = (
        most["gossip"]["p50_ms"] / most["memory"]["p50_ms"]
    )
    results["quick"] = args.quick
    results["cpus"] = os.cpu_count()
    results["load_average_at_start"] = load
    results["load_average_at_end"] = os.getloadavg()
    print(
        f"load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} CPUs"
    )
    path = write("gossip_quick" if args.quick else "gossip", results)  # quick: a smoke run
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    main()
