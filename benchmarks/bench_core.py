"""No-op jobs on in-memory networks vs the same work on Dask's LocalCluster, in one run.

Three parts, each measured side by side with Dask in this process:

- **burst**: 1,000 and 5,000 no-op jobs in flight on a 3-node network (every job
  submitted at once, round-robin over the nodes); failures, jobs per second and
  latency against Dask with the same jobs in flight. A job's latency runs from when
  the submitting loop handed it over (to its task; Dask's: its ``submit`` call, which
  returns at once) to its result. ``median_from_submit_call_ms`` counts from the task's
  own ``submit`` call only, leaving out the wait for the tasks before it to submit
  theirs (a job that finds room runs within its submit call).
- **scale**: one job at a time on 3, 100 and 1,000 in-memory nodes: median latency
  (against Dask's one-at-a-time latency) and the messages each job cost: frames the
  nodes sent for it, a broadcast counted once per node that hears it. Announcements
  (node info) are not per job and are counted apart; the scale runs use a long
  heartbeat so that none falls inside the measured jobs. Node 0 is the one requester
  (it also computes); the others are compute-only, as in Bacalhau's own deployments.
  ``frames_per_job`` counts frames actually sent (several messages to one node share a
  signed frame). 200 jobs a point by default: a fresh requester offers each job to a
  spare node too until it has seen enough bids without a decline (about 40), and on 3
  nodes a third of the jobs run on the requester itself, so the median of a few dozen
  jobs falls where those groups meet and swings from run to run.

Prints tables and writes ``benchmarks/results/core.json`` (``ratios`` is the
1,000-job burst, the headline ``run.py`` reports).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import anyio

from _common import summary, table, write


async def burst(jobs: int, nodes: int) -> dict[str, float]:
    import bacalhau

    spec = bacalhau.JobSpec.noop(publisher="noop")
    async with bacalhau.Network.in_memory(nodes, seed=1) as net:
        for _ in range(200):  # until every node knows every other (announcements)
            if all(len(n.known_nodes()) >= nodes for n in net.nodes):
                break
            await anyio.sleep(0.01)
        await net.nodes[0].run_job(spec, timeout=30)  # warm up
        latencies: list[float] = []
        failed = 0
        start = time.perf_counter()

        from_submit: list[float] = []

        async def one(i: int, handed: float) -> None:
            nonlocal failed
            t0 = time.perf_counter()
            handle = await net.nodes[i % nodes].submit(spec)
            result = await handle.wait(600)
            failed += not result.ok
            done = time.perf_counter()
            latencies.append(done - handed)
            from_submit.append(done - t0)

        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(one, i, time.perf_counter())
        wall = time.perf_counter() - start
        stats = summary(latencies, wall)
        stats["failed"] = failed
        # from the task's submit call only: a task starts once the tasks before it have
        # submitted theirs (a job that finds room runs within its submit call), so this
        # leaves out the wait behind them; the headline counts it
        stats["median_from_submit_call_ms"] = statistics.median(from_submit) * 1000
        stats["queued_events"] = sum(
            1
            for n in net.nodes
            for j in n.requester.jobs.values()
            for e in j.history
            if e.kind == "queued"
        )
    return stats


async def one_at_a_time(nodes: int, jobs: int) -> dict[str, float]:
    import bacalhau

    spec = bacalhau.JobSpec.noop(publisher="noop")
    started = time.perf_counter()
    quiet = bacalhau.RequesterConfig(node_ttl=7200)  # no heartbeat falls inside the run
    # one requester (node 0, which also computes) and compute-only nodes: Bacalhau's own
    # shape (few orchestrators, many compute nodes); only a requester keeps a node table
    compute_only: list[dict[str, Any]] = [{}] + [{"requester": None}] * (nodes - 1)
    async with bacalhau.Network.in_memory(
        nodes, seed=2, heartbeat=3600, requester=quiet, per_node_options=compute_only
    ) as net:
        first = net.nodes[0]
        with anyio.fail_after(600):
            while len(first.known_nodes()) < nodes:  # noqa: ASYNC110 (no event for a table)
                await anyio.sleep(0.05)
        join_s = time.perf_counter() - started
        await first.run_job(spec, timeout=60)  # warm up
        await anyio.sleep(0.3)  # let the warm-up's last frames land before counting

        def counts() -> tuple[int, int, int, int]:
            sent = sum(n.stats["job_sent"] for n in net.nodes)
            broadcast = sum(n.stats["job_broadcast"] for n in net.nodes)
            announced = sum(
                n.stats["announce_sent"] + n.stats["announce_broadcast"] for n in net.nodes
            )
            frames = sum(n.stats["frames_sent"] for n in net.nodes)
            return sent, broadcast, announced, frames

        before = counts()
        latencies = []
        for _ in range(jobs):
            t0 = time.perf_counter()
            result = await first.run_job(spec, timeout=60)
            latencies.append(time.perf_counter() - t0)
            assert result.ok, result.reason
        await anyio.sleep(0.3)  # the last job's completion notices
        after = counts()
        sent, broadcast, announced, frames = (a - b for a, b in zip(after, before, strict=True))
        heard = [sum(1 for n in net.nodes if j in n.compute.jobs) for j in first.requester.jobs]
    return {
        "nodes": nodes,
        "jobs": jobs,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000,
        "messages_per_job": (sent + broadcast * (nodes - 1)) / jobs,
        "broadcasts_per_job": broadcast / jobs,
        "frames_per_job": frames / jobs,
        "requesters": 1,
        "announcements_during": announced,
        "nodes_hearing_a_job": statistics.median(heard),
        "join_s": join_s,
    }


def dask_burst(jobs: int) -> dict[str, float]:
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


def dask_one_at_a_time(jobs: int) -> float:
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
        client.gather(client.submit(noop, -1, pure=False))
        latencies = []
        for i in range(jobs):
            t0 = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            latencies.append(time.perf_counter() - t0)
    return statistics.median(latencies) * 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--sizes", type=int, nargs="*", default=[3, 100, 1000])
    parser.add_argument("--sequential", type=int, default=200, help="jobs per scale point")
    parser.add_argument("--quick", action="store_true", help="200 jobs, 3 and 30 nodes (CI)")
    args = parser.parse_args(argv)
    bursts, sizes = args.bursts, args.sizes
    if args.quick:
        bursts, sizes, args.sequential = [200], [3, 30], 10
    data: dict[str, Any] = {"nodes": 3, "burst": {}, "scale": {}}
    for jobs in bursts:
        ours = anyio.run(burst, jobs, 3)
        dask = dask_burst(jobs)
        ratios = {
            "median_latency": ours["median_ms"] / dask["median_ms"],
            "p99_latency": ours["p99_ms"] / dask["p99_ms"],
            "throughput": ours["per_second"] / dask["per_second"],
            "median_latency_from_submit_call": ours["median_from_submit_call_ms"]
            / dask["median_ms"],
        }
        data["burst"][str(jobs)] = {"bacalhau": ours, "dask": dask, "ratios": ratios}
        rows = [
            (
                "bacalhau 3-node in-memory",
                f"{ours['failed']}",
                f"{ours['median_ms']:.0f}",
                f"{ours['p99_ms']:.0f}",
                f"{ours['per_second']:.0f}",
            ),
            (
                "dask LocalCluster",
                "0",
                f"{dask['median_ms']:.0f}",
                f"{dask['p99_ms']:.0f}",
                f"{dask['per_second']:.0f}",
            ),
            (
                "ratio bacalhau / dask",
                "",
                f"{ratios['median_latency']:.2f}x",
                f"{ratios['p99_latency']:.2f}x",
                f"{ratios['throughput']:.2f}x",
            ),
        ]
        header = ("system", "failed", "median ms", "p99 ms", "jobs/s")
        print(table(f"no-op jobs, {jobs} in flight", rows, header))
        print(
            f"median from the task's own submit call: "
            f"{ours['median_from_submit_call_ms']:.0f} ms "
            f"({ratios['median_latency_from_submit_call']:.2f}x Dask's median)"
        )
    if bursts:
        first = data["burst"][str(bursts[0])]
        data.update(jobs=bursts[0], bacalhau=first["bacalhau"], dask=first["dask"])
        data["ratios"] = first["ratios"]
    dask_ms = dask_one_at_a_time(args.sequential)
    data["scale"]["dask_median_ms"] = dask_ms
    rows = []
    for n in sizes:
        point = anyio.run(one_at_a_time, n, args.sequential)
        data["scale"][str(n)] = point
        rows.append(
            (
                f"{n} nodes",
                f"{point['median_ms']:.1f}",
                f"{point['p95_ms']:.1f}",
                f"{point['median_ms'] / dask_ms:.2f}x",
                f"{point['messages_per_job']:.1f}",
                f"{point['nodes_hearing_a_job']:g}",
                f"{point['join_s']:.1f}",
            )
        )
    if sizes:
        small, big = data["scale"][str(sizes[0])], data["scale"][str(sizes[-1])]
        data["scale"]["latency_growth"] = big["median_ms"] / small["median_ms"]
        data["scale"]["messages_growth"] = big["messages_per_job"] / small["messages_per_job"]
        header = ("network", "median ms", "p95 ms", "vs dask", "msgs/job", "heard by", "join s")
        print(table(f"one no-op job at a time (dask: {dask_ms:.1f} ms)", rows, header))
        print(
            f"{sizes[-1]}-node latency / {sizes[0]}-node: "
            f"{data['scale']['latency_growth']:.2f}x; messages per job "
            f"{data['scale']['messages_growth']:.2f}x"
        )
    write("core", data)
    return data


if __name__ == "__main__":
    main()
