"""Jobs per second through the HTTP API against the in-process Python API, in one run.

Both sides submit the same noop jobs (publisher ``noop``) to a 1-node network:

* ours: :class:`bacalhau.api.client.Client` over HTTP/1.1 (keep-alive) to the API of a
  ``bacalhau devstack --nodes 1`` running in its own process, as a CLI or script would;
* reference: ``Node.submit`` / ``Node.run_job`` on an in-memory network in this process.

Measured: submissions per second one at a time and with 8 concurrent submitters, and
whole jobs per second (submit, follow to completion) with 8 in flight.

    python benchmarks/bench_api.py            # 2000 submissions, 400 whole jobs per side
    python benchmarks/bench_api.py --quick    # 200 and 40 (CI smoke test)

Writes ``benchmarks/results/api.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary, table, write

from bacalhau.api.client import Client
from bacalhau.models import JobSpec
from bacalhau.network import Network

SPEC = JobSpec.noop(stdout="bench\n")


async def measure(n: int, concurrency: int, one: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """Run ``one()`` n times with ``concurrency`` in flight; latency of each and the rate."""
    latencies: list[float] = []
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return summary(latencies, time.perf_counter() - start)


def start_devstack(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "devstack.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bacalhau", "--log-level", "error", "devstack", "--nodes", "1",
             "--port", "0"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not (found := re.search(r"export BACALHAU_API=(\S+)", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"devstack did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, found.group(1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(args: argparse.Namespace, api: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Network.in_memory(1) as net, Client(api, timeout=60) as client:
        node = net.nodes[0]
        await client.health()
        for _ in range(20):  # warm both paths (imports, connections, caches)
            await node.submit(SPEC)
            await client.submit(SPEC)
        for name, n, conc in (("submit, 1 at a time", args.submits, 1),
                              (f"submit, {args.concurrency} at a time", args.submits,
                               args.concurrency)):
            out[name] = {
                "http": await measure(n, conc, lambda: client.submit(SPEC)),
                "python": await measure(n, conc, lambda: node.submit(SPEC)),
            }
        name = f"whole job, {args.concurrency} in flight"
        out[name] = {
            "http": await measure(args.jobs, args.concurrency,
                                  lambda: client.run(SPEC, timeout=60)),
            "python": await measure(args.jobs, args.concurrency,
                                    lambda: node.run_job(SPEC, timeout=60)),
        }
        await net.wait_idle()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke test)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    args.submits = 200 if args.quick else 2000
    args.jobs = 40 if args.quick else 400
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        proc, api = start_devstack(Path(tmp))
        try:
            results = anyio.run(run, args, api)
        finally:
            stop(proc)
    rows = []
    for name, sides in results.items():
        http, py = sides["http"], sides["python"]
        sides["ratio_python_over_http"] = py["per_second"] / http["per_second"]
        rows.append((name, f"{http['per_second']:.0f}/s", f"{http['median_ms']:.2f} ms",
                     f"{py['per_second']:.0f}/s", f"{py['median_ms']:.3f} ms",
                     f"{sides['ratio_python_over_http']:.1f}x"))
    print(table(
        f"bench_api: jobs through the HTTP API vs the in-process Python API "
        f"({os.cpu_count()} CPUs)",
        rows,
        ("what", "HTTP API", "median", "Python API", "median", "Python/HTTP"),
    ))
    data = {"quick": args.quick, "concurrency": args.concurrency, "results": results}
    print(f"wrote {write('api', data)}")
    return data


if __name__ == "__main__":
    main()
