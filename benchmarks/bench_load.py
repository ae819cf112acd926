"""Load: N jobs queued at once against a 5-node network; all must finish.

Reports wall time, jobs/s and the process's peak resident memory, sampled every
50 ms, for a small and a large batch side by side, so the memory growth per
1,000 jobs shows whether memory stays bounded (the requester keeps each job's
record and history; nothing else should grow with the queue).
Writes ``benchmarks/results/load.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import anyio

from _common import table, write


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def run_batch(jobs: int, nodes: int, durable: bool) -> dict[str, float]:
    import bacalhau

    spec = bacalhau.JobSpec.noop(stdout="x", publisher="noop")
    peak = rss_mb()
    base = peak
    async with bacalhau.Network.in_memory(nodes, seed=5, durable=durable) as net:
        start = time.perf_counter()
        handles = [await net.nodes[i % nodes].submit(spec) for i in range(jobs)]
        done = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb())
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            for h in handles:
                result = await h.wait(600)
                done += result.ok
            tg.cancel_scope.cancel()
        wall = time.perf_counter() - start
    return {
        "jobs": jobs,
        "completed": done,
        "wall_s": wall,
        "per_second": jobs / wall,
        "rss_start_mb": base,
        "rss_peak_mb": peak,
        "rss_growth_mb": peak - base,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(anyio.run(run_batch, args.child, args.nodes, True)))
        return {}
    big = 400 if args.quick else args.jobs
    small = max(big // 4, 1)
    rows, data = [], {}
    for jobs in (small, big):  # each batch in a fresh process, so peaks do not mix
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(jobs), "--nodes", str(args.nodes)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        data[str(jobs)] = r
        rows.append(
            (
                str(jobs),
                f"{r['completed']}",
                f"{r['wall_s']:.1f}",
                f"{r['per_second']:.0f}",
                f"{r['rss_peak_mb']:.0f}",
                f"{r['rss_growth_mb']:.0f}",
            )
        )
    per_k = (data[str(big)]["rss_growth_mb"] - data[str(small)]["rss_growth_mb"]) / (
        (big - small) / 1000
    )
    print(
        table(
            f"{args.nodes}-node durable network, all jobs queued at once",
            rows,
            ("jobs", "completed", "wall s", "jobs/s", "peak RSS MB", "growth MB"),
        )
    )
    print(f"memory per 1,000 extra queued jobs: {per_k:.1f} MB")
    out = {"nodes": args.nodes, "batches": data, "mb_per_1000_jobs": per_k}
    write("load", out)
    return out


if __name__ == "__main__":
    main()
