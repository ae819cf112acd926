"""Memory of a long-running network: does RSS level off as finished jobs are forgotten?

An in-process :class:`~bacalhau.network.Network` of durable nodes (job retention of a
few seconds, retention every second) runs no-op jobs submitted from node 0, 20 in
flight, in phases of N jobs. What a node keeps for a time rather than per job (compute
tombstones, 10 minutes; the replay window, ``max_message_age``) is shortened to
``--windows`` seconds so that it fills within the run: after that, anything that still
grows grows per job. After each phase (and a ``gc.collect()``) it records the
process's RSS and Python heap (tracemalloc, when ``--trace``), the MB per 1,000 jobs of
that phase, and the size of the node structures that could grow per job. A plateau is
what we want: the last phases' MB per 1,000 jobs near 0, not a constant slope.

    python benchmarks/bench_memory.py                  # 3 nodes, 8 phases of 1,000 jobs
    python benchmarks/bench_memory.py --quick          # 4 phases of 500
    python benchmarks/bench_memory.py --trace          # + the top growing allocation sites

Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

from bacalhau import JobSpec, Network
from bacalhau.node.node import Node


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sizes(nodes: list[Node]) -> dict[str, int]:
    """Per-job structures, summed over the nodes (what should stay bounded)."""
    out: dict[str, int] = {}

    def add(name: str, value: dict[Any, Any] | set[Any] | list[Any]) -> None:
        out[name] = out.get(name, 0) + len(value)

    for node in nodes:
        add("requester.jobs", node.requester.jobs)
        add("compute.jobs", node.compute.jobs)
        owners = {
            name: getattr(node, name, None)
            for name in ("driver", "runner", "outbox", "requester", "compute", "watch", "gate")
        }
        owners |= {"holdings": node.holdings, "announcer": node.announcer, "store": node.store}
        owners |= {"timers": getattr(node.driver, "timers", None)}
        owners |= {"fraud": getattr(node.driver, "fraud", None), "cache": node.verify_cache}
        for owner_name, owner in owners.items():
            if owner is None:
                continue
            names = set(vars(owner)) if hasattr(owner, "__dict__") else set()
            for klass in type(owner).__mro__:
                names |= set(getattr(klass, "__slots__", ()))
            for attr in sorted(names):
                value = getattr(owner, attr, None)
                if isinstance(value, dict | set | list) and attr != "jobs":
                    add(f"{owner_name}.{attr}", value)
    return out


async def phase(node: Node, count: int, in_flight: int) -> tuple[int, int]:
    done = failed = 0
    limiter = anyio.Semaphore(in_flight)

    async def one(i: int) -> None:
        nonlocal done, failed
        async with limiter:
            result = await node.run_job(JobSpec.noop(stdout=f"job {i}"), timeout=120)
            if result.state.value == "completed":
                done += 1
            else:
                failed += 1

    async with anyio.create_task_group() as tg:
        for i in range(count):
            await limiter.acquire()  # keep at most in_flight tasks alive
            limiter.release()
            tg.start_soon(one, i)
    return done, failed


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    logging.disable(logging.WARNING)
    if args.trace:
        tracemalloc.start(8)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        async with Network.in_memory(
            args.nodes,
            data_dir=Path(tmp),
            durable=True,
            job_retention=args.retention,
            gc_interval=1.0,
            **({"max_message_age": args.windows} if args.windows else {}),
        ) as net:
            # max_message_age also sets the compute tombstones' time (Node ties them)
            submitter = net.nodes[0]
            previous = None
            base_rss = rss_mb()
            total = 0
            for p in range(args.phases + 1):  # phase 0 warms up
                t0 = time.perf_counter()
                done, failed = await phase(submitter, args.jobs, args.in_flight)
                total += done + failed
                await anyio.sleep(args.retention + 1.5)  # let retention catch up
                for node in net.nodes:
                    await node.collect_garbage()
                gc.collect()
                rss = rss_mb()
                objects = len(gc.get_objects())
                heap = tracemalloc.get_traced_memory()[0] / 2**20 if args.trace else None
                row: dict[str, Any] = {
                    "phase": p,
                    "jobs": total,
                    "completed": done,
                    "failed": failed,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "rss_mb": round(rss, 1),
                    "objects": objects,
                    "heap_mb": None if heap is None else round(heap, 2),
                    "sizes": sizes(net.nodes),
                }
                if rows:
                    last = rows[-1]
                    row["rss_mb_per_1000"] = round((rss - last["rss_mb"]) * 1000 / args.jobs, 2)
                    row["objects_per_1000"] = round((objects - last["objects"]) * 1000 / args.jobs)
                    if heap is not None:
                        row["heap_mb_per_1000"] = round(
                            (heap - last["heap_mb"]) * 1000 / args.jobs, 3
                        )
                rows.append(row)
                print(
                    f"phase {p}: {total} jobs, rss {rss:.1f} MB"
                    + (f", heap {heap:.2f} MB" if heap is not None else "")
                    + f", {row.get('rss_mb_per_1000', '-')} MB/1000"
                    + f", {objects:,} objects ({row.get('objects_per_1000', '-')}/1000)",
                    flush=True,
                )
                if args.trace:
                    snap = tracemalloc.take_snapshot().filter_traces(
                        [tracemalloc.Filter(False, tracemalloc.__file__)]
                    )
                    if previous is not None and p >= 2:
                        for stat in snap.compare_to(previous, "traceback")[: args.top]:
                            print(f"  {stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d}")
                            for line in stat.traceback.format()[-6:]:
                                print("     ", line)
                    previous = snap
            growing = {
                k: (rows[1]["sizes"].get(k, 0), v)
                for k, v in rows[-1]["sizes"].items()
                if v > rows[1]["sizes"].get(k, 0) + 10
            }
    half = len(rows) // 2
    late = [r["rss_mb_per_1000"] for r in rows[half:] if "rss_mb_per_1000" in r]
    early = [r["rss_mb_per_1000"] for r in rows[1:half] if "rss_mb_per_1000" in r]
    late_objects = [r["objects_per_1000"] for r in rows[half:] if "objects_per_1000" in r]
    early_objects = [r["objects_per_1000"] for r in rows[1:half] if "objects_per_1000" in r]
    print(
        table(
            f"Memory over {total} jobs ({args.nodes} nodes, retention {args.retention}s)",
            [
                (
                    str(r["phase"]),
                    str(r["jobs"]),
                    f"{r['rss_mb']:.1f}",
                    str(r.get("rss_mb_per_1000", "-")),
                    str(r.get("objects_per_1000", "-")),
                    str(r.get("heap_mb_per_1000", "-")),
                )
                for r in rows
            ],
            ("phase", "jobs", "RSS MB", "RSS MB/1000 jobs", "objects/1000 jobs", "heap MB/1000"),
        )
    )
    print("structures still growing after phase 1:", growing or "none")
    return {
        "nodes": args.nodes,
        "windows_s": args.windows or None,
        "jobs_per_phase": args.jobs,
        "retention_s": args.retention,
        "start_rss_mb": round(base_rss, 1),
        "phases": rows,
        "early_mean_rss_mb_per_1000": round(sum(early) / len(early), 2) if early else None,
        "late_mean_rss_mb_per_1000": round(sum(late) / len(late), 2) if late else None,
        "early_mean_objects_per_1000": round(sum(early_objects) / len(early_objects))
        if early_objects
        else None,
        "late_mean_objects_per_1000": round(sum(late_objects) / len(late_objects))
        if late_objects
        else None,
        "growing_structures": growing,
        "bounds": {
            "cache._digests": "65,536 frame digests per process (VerifiedCache)",
            "cache._decoded": "8,192 decoded frames per process, counted once per node here",
            "fraud.signed": "4,096 signed commitments per node",
            "gate._seen": "message ids of the last max_message_age seconds",
            "timers._heap": "at most 2x the live timers + 1,024 (compacted on cancel)",
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per phase")
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--retention", type=float, default=2.0)
    parser.add_argument(
        "--windows",
        type=float,
        default=30.0,
        help="seconds of the time-bounded windows (compute tombstones, the replay window; "
        "600 by default in a node) so they fill within the run; 0: the node defaults",
    )
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.phases, args.jobs = 4, 500
    result = anyio.run(measure, args)
    result["quick"] = args.quick
    result["headline"] = (
        f"RSS per 1,000 finished jobs: {result['early_mean_rss_mb_per_1000']} MB in the first "
        f"half of the run, {result['late_mean_rss_mb_per_1000']} MB in the second "
        f"({result['phases'][-1]['jobs']:,} jobs, {args.nodes} nodes)"
    )
    print("wrote", write("memory" + ("_quick" if args.quick else ""), result))
    return result


if __name__ == "__main__":
    main()
