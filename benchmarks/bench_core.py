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
  (against Dask's one-at-a-time latency) and the messages each job cost: the messages
  the nodes sent for it (a node's messages to itself too), a broadcast counted once per
  node that hears it. Announcements
  (node info) are not per job and are counted apart; the scale runs use a long
  heartbeat so that none falls inside the measured jobs. Node 0 is the one requester
  and the others are compute-only, as in Bacalhau's own deployments (few
  orchestrators, many compute nodes). ``frames_per_job`` counts frames actually sent
  (several messages to one node share a signed frame). 200 jobs a point by default; a
  fresh requester offers each job to a spare node too until it has seen enough bids
  without a decline (about 40).

  Each scale round builds a network of every size (seed ``--seed`` plus the round, a
  random first seed by default, recorded) and then runs 10 timed jobs on each in turn,
  each block after one untimed job that brings that network back into the caches, the
  order rotated block by block, so a drift of the machine weighs on every size alike
  (run one after another, the rounds of one run gave 0.81x to 2.46x for 1,000 nodes
  against 3). It does so in two shapes, the first alternating from round to round.
  The headline: node 0 only requests, so every job goes to another node at every
  size. Beside it (``requester_computes``): node 0 computes too, and on 3 nodes it
  runs about a third of the jobs itself (about 1.0 ms, against 1.8-2.7 ms for a job
  sent to another node), so that median falls where the two groups meet and moves
  with the share each round draws (``rounds_remote_jobs``); on 1,000 nodes
  almost no job is local. ``remote_median_ms`` and ``remote_latency_growth`` compare
  the jobs sent to another node alone.

Every measurement runs ``--rounds`` times (3 by default): each burst round is ours and
then Dask's, and each scale round measures the sizes interleaved as above. A burst's
figures are the medians of its rounds (its ratios: the median of the rounds' ratios,
each measured side by side; ``failed``: all rounds together); a scale point's latencies
are pooled over its rounds, and the growth from the smallest network to the largest is
the median of the rounds' ratios (``latency_growth_pooled``: the ratio of the pooled
medians). One round alone swings with the machine (a 1,000-job burst's median latency
was 0.37-0.56x Dask's over six single-round runs of the same code).

Prints tables and writes ``benchmarks/results/core.json`` (``ratios`` is the
1,000-job burst, the headline ``run.py`` reports).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import random
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


BLOCK = 10
"""Timed jobs a scale round runs on one network before the next size's turn, after one
untimed job that brings the network back into the caches: short enough (about 25 ms)
that a drift of the machine hits every size alike. Switching networks costs the first
job after the switch: a 3-node job interleaved job by job with a 1,000-node network's
took 13% longer than alone (8% beside another 3-node network), and that cost falls
mostly on the small network, whose jobs would otherwise find warm caches."""


async def scale_round(
    sizes: list[int], jobs: int, *, seed: int, requester_computes: bool
) -> dict[int, dict[str, Any]]:
    """One job at a time on networks of each size, all built first and then measured
    interleaved: :data:`BLOCK` jobs on each network in turn (the order rotated each
    block), so a drift of the machine weighs on every size alike."""
    import bacalhau

    spec = bacalhau.JobSpec.noop(publisher="noop")
    quiet = bacalhau.RequesterConfig(node_ttl=7200)  # no heartbeat falls inside the run
    # one requester (node 0) and compute-only nodes: Bacalhau's own shape (few
    # orchestrators, many compute nodes); only a requester keeps a node table
    nets: dict[int, Any] = {}
    joins: dict[int, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        for n in sizes:
            started = time.perf_counter()
            first_options: dict[str, Any] = {} if requester_computes else {"compute": None}
            options = [first_options] + [{"requester": None}] * (n - 1)
            net = await stack.enter_async_context(
                bacalhau.Network.in_memory(
                    n, seed=seed, heartbeat=3600, requester=quiet, per_node_options=options
                )
            )
            with anyio.fail_after(600):  # every node, node 0 too, is in its table
                while len(net.nodes[0].known_nodes()) < n:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            joins[n] = time.perf_counter() - started
            await net.nodes[0].run_job(spec, timeout=60)  # warm up
            nets[n] = net
        await anyio.sleep(0.3)  # let the warm-ups' last frames land before counting

        def counts(net: Any) -> tuple[int, int, int, int]:
            sent = sum(n.stats["job_sent"] for n in net.nodes)
            broadcast = sum(n.stats["job_broadcast"] for n in net.nodes)
            announced = sum(
                n.stats["announce_sent"] + n.stats["announce_broadcast"] for n in net.nodes
            )
            frames = sum(n.stats["frames_sent"] for n in net.nodes)
            return sent, broadcast, announced, frames

        before = {n: counts(net) for n, net in nets.items()}
        latencies: dict[int, list[float]] = {n: [] for n in sizes}
        remote: dict[int, list[float]] = {n: [] for n in sizes}  # run on another node
        ran = dict.fromkeys(sizes, 0)  # jobs in the counted window, the untimed ones too
        for b, start in enumerate(range(0, jobs, BLOCK)):
            for n in sizes[b % len(sizes) :] + sizes[: b % len(sizes)]:
                first = nets[n].nodes[0]
                switch_in = await first.run_job(spec, timeout=60)  # untimed: see BLOCK
                assert switch_in.ok, switch_in.reason
                ran[n] += 1 + min(BLOCK, jobs - start)
                for _ in range(min(BLOCK, jobs - start)):
                    t0 = time.perf_counter()
                    result = await first.run_job(spec, timeout=60)
                    latencies[n].append(time.perf_counter() - t0)
                    assert result.ok, result.reason
                    if all(e.node_id != first.node_id for e in result.executions):
                        remote[n].append(latencies[n][-1])
        await anyio.sleep(0.3)  # the last jobs' completion notices
        out: dict[int, dict[str, Any]] = {}
        for n, net in nets.items():
            after = counts(net)
            sent, broadcast, announced, frames = (
                a - b for a, b in zip(after, before[n], strict=True)
            )
            first = net.nodes[0]
            heard = [sum(1 for m in net.nodes if j in m.compute.jobs) for j in first.requester.jobs]
            out[n] = {
                "nodes": n,
                "jobs": jobs,
                "median_ms": statistics.median(latencies[n]) * 1000,
                "p95_ms": sorted(latencies[n])[int(0.95 * (jobs - 1))] * 1000,
                "messages_per_job": (sent + broadcast * (n - 1)) / ran[n],
                "broadcasts_per_job": broadcast / ran[n],
                "frames_per_job": frames / ran[n],
                "requesters": 1,
                "announcements_during": announced,
                "nodes_hearing_a_job": statistics.median(heard),
                "join_s": joins[n],
                "seed": seed,
                "remote_jobs": len(remote[n]),
                "latencies": latencies[n],
                "remote": remote[n],
            }
    return out


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


GOALS = {
    "median_latency": 0.5,
    "throughput_cost": 0.5,
    "latency_growth": 1.5,
    "messages_growth": 1.0,
}
"""Issue #18's goals as cost ratios (lower is better): a burst's median latency at most
0.5x Dask's, its jobs/s at least 2x Dask's (cost 0.5), the largest network's latency
within 1.5x the smallest's, and messages per job that do not grow with the network."""


def _median_of(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (``failed``: the total)."""
    out: dict[str, Any] = {
        key: statistics.median(p[key] for p in points)
        for key, value in points[0].items()
        if isinstance(value, int | float) and key != "failed"
    }
    if "failed" in points[0]:
        out["failed"] = sum(p["failed"] for p in points)
    return out


def _burst_ratios(ours: dict[str, Any], dask: dict[str, Any]) -> dict[str, float]:
    return {
        "median_latency": ours["median_ms"] / dask["median_ms"],
        "p99_latency": ours["p99_ms"] / dask["p99_ms"],
        "throughput": ours["per_second"] / dask["per_second"],
        "median_latency_from_submit_call": ours["median_from_submit_call_ms"] / dask["median_ms"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--sizes", type=int, nargs="*", default=[3, 100, 1000])
    parser.add_argument("--sequential", type=int, default=200, help="jobs per scale point")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of each measurement, ours and Dask's (or the network sizes) in turn",
    )
    parser.add_argument("--quick", action="store_true", help="200 jobs, 3 and 30 nodes (CI)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the scale rounds' first seed (default: a random one, recorded in the JSON)",
    )
    args = parser.parse_args(argv)
    bursts, sizes, rounds = args.bursts, args.sizes, max(1, args.rounds)
    if args.quick:
        bursts, sizes, args.sequential, rounds = [200], [3, 30], 10, 1
    data: dict[str, Any] = {"nodes": 3, "rounds": rounds, "burst": {}, "scale": {}}
    data["goals"] = GOALS
    for jobs in bursts:
        ours_rounds, dask_rounds, ratio_rounds = [], [], []
        for _ in range(rounds):  # ours, then Dask's, then ours again: a drift hits both
            ours_rounds.append(anyio.run(burst, jobs, 3))
            dask_rounds.append(dask_burst(jobs))
            ratio_rounds.append(_burst_ratios(ours_rounds[-1], dask_rounds[-1]))
        ours, dask = _median_of(ours_rounds), _median_of(dask_rounds)
        ratios = _median_of(ratio_rounds)
        data["burst"][str(jobs)] = {
            "bacalhau": ours,
            "dask": dask,
            "ratios": ratios,
            "rounds": ratio_rounds,
        }
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
        title = f"no-op jobs, {jobs} in flight (medians of {rounds} rounds; failed: all rounds)"
        print(table(title, rows, header))
        print(
            "rounds' ratios, median latency: "
            + ", ".join(f"{r['median_latency']:.2f}x" for r in ratio_rounds)
            + "; jobs/s: "
            + ", ".join(f"{r['throughput']:.2f}x" for r in ratio_rounds)
        )
        print(
            f"median from the task's own submit call: "
            f"{ours['median_from_submit_call_ms']:.1f} ms "
            f"({ratios['median_latency_from_submit_call']:.3f}x Dask's median)"
        )
    if bursts:
        first = data["burst"][str(bursts[0])]
        data.update(jobs=bursts[0], bacalhau=first["bacalhau"], dask=first["dask"])
        data["ratios"] = first["ratios"]
    if sizes:
        seed = args.seed if args.seed is not None else random.randrange(1, 1 << 20)
        data["scale"] = scale(sizes, args.sequential, rounds, seed)
    write("core", data)
    return data


def scale(sizes: list[int], jobs: int, rounds: int, seed: int) -> dict[str, Any]:
    """One job at a time on each size, ``rounds`` times over, in two shapes: a
    requester that only orchestrates (the headline: every job goes to another node, at
    every size) and one that also computes (on 3 nodes it then runs about a third of
    the jobs itself). Each round builds fresh networks (seed ``seed + round``, the
    shapes in turn, the first shape alternating from round to round) and measures the
    sizes interleaved; a size's latencies are pooled over its rounds."""
    dask_ms = dask_one_at_a_time(jobs)
    shapes: dict[str, dict[int, list[dict[str, Any]]]] = {
        "orchestrator": {n: [] for n in sizes},
        "requester_computes": {n: [] for n in sizes},
    }
    for r in range(rounds):
        order = list(shapes) if r % 2 == 0 else list(reversed(shapes))
        for shape in order:
            points = shapes[shape]
            computes = shape == "requester_computes"
            measure = functools.partial(
                scale_round, sizes, jobs, seed=seed + r, requester_computes=computes
            )
            got = anyio.run(measure)
            for n in sizes:
                points[n].append(got[n])
    out = _scale_shape(shapes["orchestrator"], sizes, dask_ms, rounds, jobs, computes=False)
    out["requester_computes"] = _scale_shape(
        shapes["requester_computes"], sizes, dask_ms, rounds, jobs, computes=True
    )
    out.update(dask_median_ms=dask_ms, rounds=rounds, interleaved=True, seed=seed)
    return out


def _scale_shape(
    points: dict[int, list[dict[str, Any]]],
    sizes: list[int],
    dask_ms: float,
    rounds: int,
    jobs: int,
    *,
    computes: bool,
) -> dict[str, Any]:
    """One shape's figures: each size's latencies pooled over the rounds, and the
    growth from the smallest network to the largest (the median of the rounds')."""
    out: dict[str, Any] = {"shape": "requester_computes" if computes else "orchestrator"}
    rows = []
    for n in sizes:
        pooled = [x for p in points[n] for x in p.pop("latencies")]
        remote = [x for p in points[n] for x in p.pop("remote")]
        point = _median_of(points[n])
        point.pop("seed", None)
        point.update(
            nodes=n,
            jobs=len(pooled),
            median_ms=statistics.median(pooled) * 1000,
            p95_ms=sorted(pooled)[int(0.95 * (len(pooled) - 1))] * 1000,
            rounds_median_ms=[p["median_ms"] for p in points[n]],
            rounds_remote_jobs=[p["remote_jobs"] for p in points[n]],
            rounds_seed=[p["seed"] for p in points[n]],
            remote_jobs=len(remote),
            remote_median_ms=statistics.median(remote) * 1000 if remote else None,
        )
        out[str(n)] = point
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
    small, big = out[str(sizes[0])], out[str(sizes[-1])]
    # each round's ratio is measured side by side (the sizes interleaved in blocks);
    # their median is the headline, as a burst's is
    out["latency_growth_rounds"] = [
        b / s for b, s in zip(big["rounds_median_ms"], small["rounds_median_ms"], strict=True)
    ]
    out["latency_growth"] = statistics.median(out["latency_growth_rounds"])
    out["latency_growth_pooled"] = big["median_ms"] / small["median_ms"]
    if small["remote_median_ms"] and big["remote_median_ms"]:
        out["remote_latency_growth"] = big["remote_median_ms"] / small["remote_median_ms"]
    out["messages_growth"] = big["messages_per_job"] / small["messages_per_job"]
    shape = (
        "node 0 requests and computes" if computes else "node 0 only requests, the others compute"
    )
    header = ("network", "median ms", "p95 ms", "vs dask", "msgs/job", "heard by", "join s")
    title = (
        f"one no-op job at a time, {shape}: {jobs} jobs x {rounds} rounds, the sizes "
        f"interleaved (dask: {dask_ms:.1f} ms)"
    )
    print(table(title, rows, header))
    print(
        f"{sizes[-1]}-node latency / {sizes[0]}-node: {out['latency_growth']:.2f}x, the "
        "median of the rounds' ("
        + ", ".join(f"{g:.2f}x" for g in out["latency_growth_rounds"])
        + f"; pooled: {out['latency_growth_pooled']:.2f}x); messages per job "
        f"{out['messages_growth']:.2f}x"
    )
    if computes and "remote_latency_growth" in out:
        print(
            f"jobs run on another node than the requester: {sizes[-1]} nodes "
            f"{big['remote_median_ms']:.1f} ms, {sizes[0]} nodes "
            f"{small['remote_median_ms']:.1f} ms ({small['remote_jobs']} of "
            f"{small['jobs']}): {out['remote_latency_growth']:.2f}x"
        )
    return out


if __name__ == "__main__":
    main()
