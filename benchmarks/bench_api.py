"""Jobs per second through the HTTP API against the in-process Python API, in one run.

Both sides submit the same noop jobs (publisher ``noop``) to a 1-node network:

* ours: :class:`bacalhau.api.client.Client` over HTTP/1.1 (keep-alive) to the API of a
  ``bacalhau devstack --nodes 1`` running in its own process, as a CLI or script would;
* reference: ``Node.submit`` / ``Node.run_job`` on an in-memory network in this process.

Measured: submissions per second one at a time and with 8 concurrent submitters, and
whole jobs per second (submit, follow to completion) with 8 in flight; and CPU time per
job, all work counted (client, server, the job's lifecycle), which a busy machine
disturbs far less than wall time. The two sides take turns in rounds.

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


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Side = tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]
"""One call, and a drain that waits until every job the side submitted has ended."""


async def rounds(
    n: int,
    concurrency: int,
    sides: dict[str, Side],
    server_pid: int,
    parts: int = 5,
) -> dict[str, dict[str, float]]:
    """Run each side's call n times (``concurrency`` in flight), in ``parts`` rounds taken
    in turn so both sides see the same load on a shared machine; after each round the side
    drains (its jobs end) so no work spills into the other side's round.

    Reports per side: rate and latency of the calls (wall clock), and CPU seconds per call
    over round and drain, in this process plus (for HTTP) the node's process: all the work
    a job costs, a measure a busy machine disturbs far less than wall time.
    """
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    wall = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    for part in range(parts):
        count = n // parts + (1 if part < n % parts else 0)
        for name, (one, drain) in sides.items():
            left = iter(range(count))

            async def worker(
                one: Callable[[], Awaitable[Any]] = one,
                done: list[float] = latencies[name],
                left: Any = left,
            ) -> None:
                for _ in left:
                    start = time.perf_counter()
                    await one()
                    done.append(time.perf_counter() - start)

            cpu0, server0, start = time.process_time(), proc_cpu(server_pid), time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
            wall[name] += time.perf_counter() - start
            await drain()
            cpu[name] += time.process_time() - cpu0
            if name == "http":
                cpu[name] += proc_cpu(server_pid) - server0
    out = {}
    for name in sides:
        out[name] = summary(latencies[name], wall[name])
        out[name]["cpu_ms_per_call"] = cpu[name] / n * 1000
    return out


def start_devstack(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "devstack.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bacalhau",
                "--log-level",
                "error",
                "devstack",
                "--nodes",
                "1",
                "--port",
                "0",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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


LIVE = ["bidding", "running", "verifying", "publishing"]


async def run(args: argparse.Namespace, api: str, server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Network.in_memory(1) as net, Client(api, timeout=60) as client:
        node = net.nodes[0]
        handles: list[Any] = []

        async def py_submit() -> None:
            handles.append(await node.submit(SPEC))

        async def py_drain() -> None:
            for handle in handles:
                await handle.wait(60)
            handles.clear()

        async def http_drain() -> None:
            # Wait until the node's process goes quiet (no HTTP polling, which would cost
            # CPU of its own), then check once that no job is live.
            while True:
                quiet, last = 0, proc_cpu(server_pid)
                while quiet < 3:
                    await anyio.sleep(0.1)
                    now = proc_cpu(server_pid)
                    quiet, last = (quiet + 1 if now == last else 0), now
                if not (await client.list_jobs(state=LIVE, limit=1)).total:
                    return

        await client.health()
        for _ in range(20):  # warm both paths (imports, connections, caches)
            await py_submit()
            await client.submit(SPEC)
        await py_drain()
        await http_drain()
        submit = {
            "http": (lambda: client.submit(SPEC), http_drain),
            "python": (py_submit, py_drain),
        }
        out["submit, 1 at a time"] = await rounds(args.submits, 1, submit, server_pid)
        out[f"submit, {args.concurrency} at a time"] = await rounds(
            args.submits, args.concurrency, submit, server_pid
        )
        whole = {
            "http": (lambda: client.run(SPEC, timeout=60), http_drain),
            "python": (lambda: node.run_job(SPEC, timeout=60), py_drain),
        }
        out[f"whole job, {args.concurrency} in flight"] = await rounds(
            args.jobs, args.concurrency, whole, server_pid
        )
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
            results = anyio.run(run, args, api, proc.pid)
        finally:
            stop(proc)
    rows = []
    for name, sides in results.items():
        http, py = sides["http"], sides["python"]
        sides["ratio_python_over_http"] = py["per_second"] / http["per_second"]
        sides["cpu_ratio_http_over_python"] = http["cpu_ms_per_call"] / py["cpu_ms_per_call"]
        rows.append(
            (
                name,
                f"{http['per_second']:.0f}/s",
                f"{http['median_ms']:.2f} ms",
                f"{http['cpu_ms_per_call']:.2f} ms",
                f"{py['per_second']:.0f}/s",
                f"{py['median_ms']:.3f} ms",
                f"{py['cpu_ms_per_call']:.3f} ms",
                f"{sides['ratio_python_over_http']:.1f}x",
                f"{sides['cpu_ratio_http_over_python']:.1f}x",
            )
        )
    print(
        table(
            f"bench_api: jobs through the HTTP API vs the in-process Python API "
            f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})",
            rows,
            (
                "what",
                "HTTP",
                "median",
                "CPU/job",
                "Python",
                "median",
                "CPU/job",
                "rate Py/HTTP",
                "CPU HTTP/Py",
            ),
        )
    )
    data = {
        "quick": args.quick,
        "concurrency": args.concurrency,
        "load_average": os.getloadavg()[0],
        "results": results,
    }
    print(f"wrote {write('api', data)}")
    return data


if __name__ == "__main__":
    main()
