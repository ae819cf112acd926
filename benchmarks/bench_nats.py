"""The NATS transport against the gossip and in-memory transports, in one run.

* Broadcast latency to 16 and 64 nodes spread over 4 processes (this one and
  three workers): the time from ``broadcast()`` on one node until the last of
  the other nodes' handlers has the frame, p50 / p99 over spaced broadcasts, for
  NATS (one local ``nats-server``) and gossip (TCP mesh on 127.0.0.1); the
  in-memory transport runs the same count of nodes in this process alone (it
  cannot span processes), as the floor.
* Jobs per second through 32 compute nodes on NATS (8 per process, 4 processes,
  the requester in this one), against the same network in memory.

Processes share the machine's monotonic clock, so cross-process latencies are
direct differences. Writes ``benchmarks/results/nats.json``.

Run: ``python benchmarks/bench_nats.py [--quick]`` (needs ``nats-server``:
``scripts/nats-server.sh``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).parent))
from _common import pct, table, write

from bacalhau.identity import Identity
from bacalhau.transport.base import Transport, TransportHandler

PAD = b"x" * 200
HEAD = struct.Struct(">qd")  # sequence number, monotonic send time
PROCS = 4


class Recorder(TransportHandler):
    """Records when each benchmark frame arrived (latency by sequence number)."""

    def __init__(self) -> None:
        self.latency: dict[int, float] = {}

    async def handle_broadcast(self, frame: bytes) -> bool:
        now = time.monotonic()
        seq, sent = HEAD.unpack_from(frame)
        self.latency[seq] = now - sent
        return True

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        return b"ok"


def make_transport(kind: str, conf: dict[str, Any]) -> Transport:
    if kind == "nats":
        from bacalhau.transport.nats import NatsOptions, NatsTransport

        opts = NatsOptions(servers=(conf["url"],), subject=conf["subject"], heartbeat=1.0)
        return NatsTransport(Identity.generate(), opts)
    from bacalhau.transport.gossip import GossipTransport

    return GossipTransport(
        Identity.generate(), peers=[conf["bootstrap"]] if conf.get("bootstrap") else []
    )


async def start_group(
    kind: str, conf: dict[str, Any], count: int, tg: Any
) -> list[tuple[Transport, Recorder]]:
    out = []
    for _ in range(count):
        t, r = make_transport(kind, conf), Recorder()
        await tg.start(t.run, r)
        out.append((t, r))
    return out


async def wait_peers(group: list[tuple[Transport, Recorder]], n: int, limit: float = 90.0) -> None:
    with anyio.fail_after(limit):
        while any(len(t.peers()) < n - 1 for t, _ in group):  # noqa: ASYNC110 - polled state
            await anyio.sleep(0.05)


def local_report(group: list[tuple[Transport, Recorder]], messages: int) -> dict[int, float]:
    """Per sequence number: the slowest local receiver's latency (inf if one lacks it)."""
    return {seq: max(r.latency.get(seq, math.inf) for _, r in group) for seq in range(messages)}


# --- worker process: n/4 transports, driven by lines on stdin -------------------------------


async def worker(kind: str, conf: dict[str, Any], count: int) -> None:
    async with anyio.create_task_group() as tg:
        group = await start_group(kind, conf, count, tg)
        print("READY", flush=True)
        while True:
            line = (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            if line[0] == "peers":
                await wait_peers(group, int(line[1]))
                print("OK", flush=True)
            elif line[0] == "reset":
                for _, r in group:
                    r.latency.clear()
                print("OK", flush=True)
            elif line[0] == "report":
                print(json.dumps(local_report(group, int(line[1]))), flush=True)
        tg.cancel_scope.cancel()


# --- coordinator ------------------------------------------------------------------------------


class Workers:
    def __init__(self, kind: str, conf: dict[str, Any], count: int) -> None:
        argv = [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--conf",
            json.dumps(conf),
            "--count",
            str(count),
        ]
        self.procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(PROCS - 1)
        ]

    async def ask(self, command: str) -> list[str]:
        replies = []
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(command + "\n")
            p.stdin.flush()
        for p in self.procs:
            assert p.stdout is not None
            line = await anyio.to_thread.run_sync(p.stdout.readline)
            if not line:
                raise RuntimeError(f"a {command!r} worker died (exit {p.wait()})")
            replies.append(line.strip())
        return replies

    async def ready(self) -> None:
        for p in self.procs:
            assert p.stdout is not None
            line = await anyio.to_thread.run_sync(p.stdout.readline)
            if line.strip() != "READY":
                raise RuntimeError(f"worker failed to start: {line!r}")

    def close(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def send(sender: Transport, messages: int, gap: float, base: int = 0) -> None:
    for seq in range(base, base + messages):
        await sender.broadcast(HEAD.pack(seq, time.monotonic()) + PAD)
        await anyio.sleep(gap)
    await anyio.sleep(0.5)


def summarize(reach: list[float]) -> dict[str, Any]:
    got = [x for x in reach if x != math.inf]
    return {
        "p50_ms": pct(got, 50) * 1000,
        "p99_ms": pct(got, 99) * 1000,
        "lost": len(reach) - len(got),
        "broadcasts": len(reach),
    }


async def spread_latency(
    kind: str, n: int, messages: int, gap: float, conf: dict[str, Any]
) -> dict[str, Any]:
    """``n`` nodes over 4 processes; node 0 (here) broadcasts."""
    per = n // PROCS
    async with anyio.create_task_group() as tg:
        group = await start_group(kind, conf, 1, tg)
        if kind == "gossip":
            host, port = group[0][0].address  # type: ignore[attr-defined]
            conf = {**conf, "bootstrap": f"{host}:{port}"}
        group += await start_group(kind, conf, per - 1, tg)
        workers = Workers(kind, conf, per)
        try:
            await workers.ready()
            # A gossip node keeps a bounded set of connections (GossipOptions.target_peers),
            # not one to every node; it reaches the rest through them.
            want = n
            if kind == "gossip":
                from bacalhau.transport.gossip import GossipOptions

                want = min(n, GossipOptions().target_peers + 1)
            await wait_peers(group, want)
            await workers.ask(f"peers {want}")
            sender = group[0][0]
            await send(sender, 20, gap, base=messages)  # warm up (not counted)
            await workers.ask("reset")
            for _, r in group:
                r.latency.clear()
            await send(sender, messages, gap)
            reach = local_report(group[1:], messages)
            for reply in await workers.ask(f"report {messages}"):
                for seq, lat in json.loads(reply).items():
                    reach[int(seq)] = max(reach[int(seq)], lat)
        finally:
            workers.close()
        tg.cancel_scope.cancel()
    return {"nodes": n, **summarize([reach[s] for s in range(messages)])}


async def memory_latency(n: int, messages: int, gap: float) -> dict[str, Any]:
    from bacalhau.transport.memory import MemoryHub

    hub = MemoryHub(seed=1)
    group = [(hub.transport(Identity.generate().node_id), Recorder()) for _ in range(n)]
    async with anyio.create_task_group() as tg:
        for t, r in group:
            await tg.start(t.run, r)
        await send(group[0][0], 20, gap, base=messages)
        for _, r in group:
            r.latency.clear()
        await send(group[0][0], messages, gap)
        reach = local_report(group[1:], messages)
        tg.cancel_scope.cancel()
    return {"nodes": n, **summarize([reach[s] for s in range(messages)])}


def jobs_per_second(kind: str, jobs: int, url: str | None) -> dict[str, Any]:
    """32 compute nodes (8 per process on NATS) and a requester here; all jobs at once."""
    procs: list[subprocess.Popen[str]] = []
    subject = "bacalhau.bench" + os.urandom(4).hex()
    if kind == "nats":
        assert url is not None
        argv = [sys.executable, "-m", "bacalhau.testing.nats", "nodes", "--nats-url", url]
        for _ in range(PROCS - 1):
            argv_i = [*argv, "--subject", subject, "--count", "8"]
            procs.append(subprocess.Popen(argv_i, stdout=subprocess.PIPE, text=True))
    try:
        return anyio.run(_jobs, kind, jobs, url, subject, procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)


async def _jobs(
    kind: str, jobs: int, url: str | None, subject: str, procs: list[subprocess.Popen[str]]
) -> dict[str, Any]:
    from bacalhau import JobSpec, Network

    if kind == "nats":
        from bacalhau.transport.nats import nats_transport_factory

        assert url is not None
        factory = nats_transport_factory([url], subject=subject, heartbeat=1.0)
        net = Network.custom(9, factory, per_node_options=[{"compute": None}] + [{}] * 8)
    else:
        net = Network.in_memory(33, per_node_options=[{"compute": None}] + [{}] * 32)
    for p in procs:
        assert p.stdout is not None
        if not await anyio.to_thread.run_sync(p.stdout.readline):
            raise RuntimeError("a node process failed to start")
    async with net:
        requester = net.nodes[0]
        with anyio.fail_after(60):
            while len(requester.peers()) < 32:  # noqa: ASYNC110 - polled state
                await anyio.sleep(0.05)
        warm = await requester.run_job(JobSpec.noop(stdout="warm"), timeout=30)
        assert warm.ok, warm.reason
        start = time.monotonic()
        handles = [await requester.submit(JobSpec.noop(stdout=str(i))) for i in range(jobs)]
        results = [await h.wait(timeout=300) for h in handles]
        wall = time.monotonic() - start
    ok = sum(r.ok for r in results)
    ran_on = len({e.node_id for r in results for e in r.accepted})
    return {"jobs": jobs, "ok": ok, "wall_s": wall, "jobs_per_s": jobs / wall, "nodes_used": ran_on}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run for CI smoke tests")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--conf", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        anyio.run(worker, args.worker, json.loads(args.conf), args.count)
        return {}
    from bacalhau.testing.nats import running_server

    sizes = [16] if args.quick else [16, 64]
    messages = 30 if args.quick else 100
    jobs = 40 if args.quick else 100
    gap = 0.01
    results: dict[str, Any] = {"latency": [], "quick": args.quick, "processes": PROCS}
    with (
        tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp,
        running_server(Path(tmp)) as server,
    ):
        for n in sizes:
            row: dict[str, Any] = {"nodes": n}
            conf = {"url": server.url, "subject": "bacalhau.lat" + os.urandom(4).hex()}
            row["nats"] = anyio.run(spread_latency, "nats", n, messages, gap, conf)
            row["gossip"] = anyio.run(spread_latency, "gossip", n, messages, gap, {})
            row["memory"] = anyio.run(memory_latency, n, messages, gap)
            results["latency"].append(row)
        results["jobs"] = {
            "nats": jobs_per_second("nats", jobs, server.url),
            "memory": jobs_per_second("memory", jobs, None),
        }
    rows = [
        (
            str(r["nodes"]),
            *(f"{r[k]['p50_ms']:.2f} / {r[k]['p99_ms']:.2f}" for k in ("nats", "gossip", "memory")),
            f"{r['nats']['p50_ms'] / r['gossip']['p50_ms']:.2f}",
            f"{r['nats']['p99_ms'] / r['gossip']['p99_ms']:.2f}",
            f"{r['nats']['p50_ms'] / r['memory']['p50_ms']:.0f}",
            f"{r['nats']['lost']}/{r['gossip']['lost']}/{r['memory']['lost']}",
        )
        for r in results["latency"]
    ]
    print(
        table(
            f"broadcast reaches every node: p50 / p99 ms ({messages} broadcasts, "
            f"{gap * 1000:.0f} ms apart; NATS and gossip nodes over {PROCS} processes, "
            "memory in one)",
            rows,
            (
                "nodes",
                "nats",
                "gossip",
                "memory",
                "nats/gossip p50",
                "p99",
                "nats/mem p50",
                "lost n/g/m",
            ),
        )
    )
    j = results["jobs"]
    print()
    print(
        table(
            f"jobs/second through 32 compute nodes ({jobs} noop jobs submitted at once)",
            [
                (
                    k,
                    f"{j[k]['jobs_per_s']:.1f}",
                    f"{j[k]['ok']}/{j[k]['jobs']}",
                    str(j[k]["nodes_used"]),
                )
                for k in ("nats", "memory")
            ]
            + [
                (
                    "nats/memory",
                    f"{j['nats']['jobs_per_s'] / j['memory']['jobs_per_s']:.2f}",
                    "",
                    "",
                )
            ],
            ("transport", "jobs/s", "completed", "nodes used"),
        )
    )
    path = write("nats", results)
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    main()
