"""No-op jobs through a 3-node in-memory network vs the same work on Dask's LocalCluster.

Both sides run in this process, one after the other, with the same number of
jobs in flight: every job is submitted at once and each one's submit-to-result
latency is recorded. Prints median / p99 latency, jobs per second and the
ratios (ours / Dask's) and writes ``benchmarks/results/core.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import anyio

from _common import summary, table, write


async def bacalhau_side(jobs: int, nodes: int) -> dict[str, float]:
    import bacalhau

    spec = bacalhau.JobSpec.noop(publisher="noop")
    async with bacalhau.Network.in_memory(nodes, seed=1) as net:
        await net.nodes[0].run_job(spec, timeout=30)  # warm up
        latencies: list[float] = []
        start = time.perf_counter()

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            handle = await net.nodes[i % nodes].submit(spec)
            result = await handle.wait(300)
            assert result.ok, result.reason
            latencies.append(time.perf_counter() - t0)

        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(one, i)
        wall = time.perf_counter() - start
        stats = summary(latencies, wall)
        stats["signature_verifications"] = net.verify_cache.verifications
        stats["signature_cache_hits"] = net.verify_cache.hits
    return stats


def dask_side(jobs: int) -> dict[str, float]:
    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)

    def noop(i: int) -> int:
        return i

    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.submit(noop, -1, pure=False))  # warm up
        latencies: list[float] = []
        start = time.perf_counter()
        submitted: dict[Any, float] = {}
        futures = []
        for i in range(jobs):
            t0 = time.perf_counter()
            future = client.submit(noop, i, pure=False)
            submitted[future.key] = t0
            future.add_done_callback(
                lambda f: latencies.append(time.perf_counter() - submitted[f.key])
            )
            futures.append(future)
        client.gather(futures)
        while len(latencies) < jobs:
            time.sleep(0.001)
        wall = time.perf_counter() - start
    return summary(latencies, wall)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 jobs, for CI smoke runs")
    args = parser.parse_args(argv)
    jobs = 200 if args.quick else args.jobs
    ours = anyio.run(bacalhau_side, jobs, args.nodes)
    dask = dask_side(jobs)
    ratios = {
        "median_latency": ours["median_ms"] / dask["median_ms"],
        "p99_latency": ours["p99_ms"] / dask["p99_ms"],
        "throughput": ours["per_second"] / dask["per_second"],
    }
    rows = [
        (
            f"bacalhau {args.nodes}-node in-memory",
            f"{ours['median_ms']:.1f}",
            f"{ours['p99_ms']:.1f}",
            f"{ours['per_second']:.0f}",
        ),
        (
            "dask LocalCluster(processes=False)",
            f"{dask['median_ms']:.1f}",
            f"{dask['p99_ms']:.1f}",
            f"{dask['per_second']:.0f}",
        ),
        (
            "ratio bacalhau / dask",
            f"{ratios['median_latency']:.2f}x",
            f"{ratios['p99_latency']:.2f}x",
            f"{ratios['throughput']:.2f}x",
        ),
    ]
    print(table(f"no-op jobs, {jobs} in flight", rows, ("system", "median ms", "p99 ms", "jobs/s")))
    print(
        f"signature checks: {ours['signature_verifications']} verified, "
        f"{ours['signature_cache_hits']} served from the shared cache"
    )
    data = {"jobs": jobs, "nodes": args.nodes, "bacalhau": ours, "dask": dask, "ratios": ratios}
    write("core", data)
    return data


if __name__ == "__main__":
    main()
