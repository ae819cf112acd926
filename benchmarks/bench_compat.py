"""Job submission through Bacalhau's v1 API against our own API, in one run.

One node, one HTTP server (``serve_api``), one keep-alive HTTP client; both sides submit
the same noop job (publisher ``noop``):

* compat: ``PUT /api/v1/orchestrator/jobs`` with a Bacalhau 1.x ``Job`` (``Type: batch``,
  ``Tasks`` with an engine, resources in Bacalhau's units, timeouts), as the official
  ``bacalhau-sdk`` sends it, translated by :mod:`bacalhau.compat`;
* reference: ``POST /api/v1/jobs`` with our ``JobSpec``.

The sides take turns in rounds (each drains its jobs before the other's round), and
each is measured as wall time per submission and CPU time per submission (client,
server and the job's lifecycle, all in this process). The headline is the CPU ratio
compat / ours, which a busy machine disturbs far less than wall time; the goal is at
most 1.2.

    python benchmarks/bench_compat.py            # 2000 submissions per side
    python benchmarks/bench_compat.py --quick    # 200

Writes ``benchmarks/results/compat.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary, table, write

from bacalhau.api.server import serve_api
from bacalhau.compat import spec_to_v1
from bacalhau.models import JobSpec
from bacalhau.convert import to_json_data
from bacalhau.network import Network

GOAL = 1.2
SPEC = JobSpec.noop(stdout="bench\n", timeout=60)


def bodies() -> dict[str, tuple[str, str, bytes]]:
    ours = json.dumps({"spec": to_json_data(SPEC)}).encode()
    job = spec_to_v1(SPEC)
    job["Tasks"][0]["Resources"] = {"CPU": "100m", "Memory": "256Mi"}
    theirs = json.dumps({"Job": job}).encode()
    return {
        "ours": ("POST", "/api/v1/jobs", ours),
        "compat": ("PUT", "/api/v1/orchestrator/jobs", theirs),
    }


async def measure(n: int, parts: int = 5) -> dict[str, Any]:
    sides = bodies()
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    wall = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        node = net.nodes[0]
        address = await tg.start(functools.partial(serve_api, node, port=0))
        async with httpx.AsyncClient(base_url=address.url, timeout=60) as client:
            for method, path, body in sides.values():  # warm up both
                response = await client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
            await net.wait_idle()
            for part in range(parts):
                count = n // parts + (1 if part < n % parts else 0)
                for name, (method, path, body) in sides.items():
                    cpu0, start = time.process_time(), time.perf_counter()
                    for _ in range(count):
                        t0 = time.perf_counter()
                        response = await client.request(
                            method,
                            path,
                            content=body,
                            headers={"content-type": "application/json"},
                        )
                        latencies[name].append(time.perf_counter() - t0)
                        if response.status_code >= 300:
                            raise SystemExit(f"{name}: {response.status_code} {response.text}")
                    wall[name] += time.perf_counter() - start
                    await net.wait_idle()
                    cpu[name] += time.process_time() - cpu0
        tg.cancel_scope.cancel()
    out: dict[str, Any] = {}
    for name in sides:
        out[name] = summary(latencies[name], wall[name])
        out[name]["cpu_ms_per_call"] = cpu[name] / n * 1000
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 submissions per side")
    parser.add_argument("-n", type=int, default=None, help="submissions per side")
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)
    sides = anyio.run(measure, n)
    cpu_ratio = sides["compat"]["cpu_ms_per_call"] / sides["ours"]["cpu_ms_per_call"]
    latency_ratio = sides["compat"]["median_ms"] / sides["ours"]["median_ms"]
    data: dict[str, Any] = {
        "quick": args.quick,
        "submissions": n,
        "sides": sides,
        "cpu_ratio": cpu_ratio,
        "median_latency_ratio": latency_ratio,
        "goal_ratio": GOAL,
        "within_goal": cpu_ratio <= GOAL,
        "ratios": {
            "submission CPU, Bacalhau API / ours": {
                "value": cpu_ratio,
                "better": "lower",
                "reference": "our own submit API",
            },
            "submission latency (median), Bacalhau API / ours": {
                "value": latency_ratio,
                "better": "lower",
                "reference": "our own submit API",
            },
        },
    }
    rows = [
        (
            name,
            f"{s['median_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
            f"{s['per_second']:.0f}",
            f"{s['cpu_ms_per_call']:.2f}",
        )
        for name, s in sides.items()
    ]
    print(
        table(
            f"Submission, {n} per side (noop jobs, one node, keep-alive HTTP)",
            rows,
            ("side", "median ms", "p99 ms", "per s", "CPU ms/job"),
        )
    )
    print(f"CPU ratio compat/ours {cpu_ratio:.3f} (goal <= {GOAL}); median {latency_ratio:.3f}")
    print(f"wrote {write('compat', data)}")
    return data


if __name__ == "__main__":
    main()
