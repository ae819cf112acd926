"""Live logs benchmark: a job printing 100,000 lines, with one follower attached vs none.

The job is a WASM module writing one 13-byte line per ``fd_write``; it runs on a compute
node and is submitted to a requester-only node (so every line the follower sees crosses
the transport). The follower is a separate process reading
``GET /api/v1/jobs/ID/logs/stream?follow=true`` from the requester's API, attached before
the job starts, as ``bacalhau logs -f`` would be. Runs alternate (none, follower, none,
...) in one process, side by side, after a warm-up of each; the headline is the ratio of
the median job times (submit to completed), goal <= 1.1. Also reported: the median of the
per-round ratios (each round's two runs are back to back, so a change in the machine's
load moves both) and the same two for this process's CPU time.

Usage::

    python benchmarks/bench_logs.py [--quick] [--lines N] [--repeat R]

Writes ``benchmarks/results/logs.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.models import JobSpec, JobState
from bacalhau.network import Network

try:
    from ._common import write
except ImportError:  # run as a script
    from _common import write  # type: ignore[no-redef]

GOAL = 1.1

FOLLOWER = r"""
import json, sys, httpx
print("ready", flush=True)
url, job = sys.argv[1], sys.stdin.readline().strip()
lines = skipped = 0
with httpx.stream("GET", f"{url}/api/v1/jobs/{job}/logs/stream",
                  params={"follow": "true"}, timeout=120) as r:
    for line in r.iter_lines():
        if line.strip():
            chunk = json.loads(line)
            lines += len(chunk["lines"])
            skipped += chunk["skipped"]
print(json.dumps({"lines": lines, "skipped": skipped}), flush=True)
"""


def lines_wat(n: int) -> str:
    """A module printing ``n`` numbered lines (``line 0000000``), one write each."""
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "line 0000000\\n")
  (func (export "_start") (local $i i32) (local $j i32) (local $v i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 13))
    (loop $l
      (local.set $v (local.get $i))
      (local.set $j (i32.const 75))
      (loop $d
        (i32.store8 (local.get $j)
          (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
        (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
        (local.set $j (i32.sub (local.get $j) (i32.const 1)))
        (br_if $d (i32.ge_u (local.get $j) (i32.const 69))))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))
"""


async def one_run(
    net: Network, address: ApiAddress, spec: JobSpec, follow: bool
) -> tuple[float, float, dict[str, Any]]:
    requester = net.nodes[0]
    follower = None
    if follow:  # started (and its imports done) before the clock starts
        follower = await anyio.open_process(
            [sys.executable, "-c", FOLLOWER, address.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert follower.stdout is not None
        said = b""
        while b"ready\n" not in said:
            said += await follower.stdout.receive()
    start, cpu = time.perf_counter(), time.process_time()
    handle = await requester.submit(spec)
    if follower is not None:
        assert follower.stdin is not None
        await follower.stdin.send(handle.job_id.encode() + b"\n")
    result = await handle.wait(600)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert result.state is JobState.COMPLETED, result.reason
    seen: dict[str, Any] = {}
    if follower is not None:
        assert follower.stdout is not None
        with anyio.fail_after(120):
            out = b"".join([chunk async for chunk in follower.stdout])
            await follower.wait()
        await follower.aclose()
        seen = json.loads(out)
    return took, cpu, seen


async def run(lines: int, repeat: int) -> dict[str, Any]:
    options: list[dict[str, Any]] = [{"compute": None}, {"requester": None}]
    spec = JobSpec.wasm(lines_wat(lines), publisher="noop", timeout=600)
    samples: dict[str, list[float]] = {"none": [], "follower": []}
    cpu: dict[str, list[float]] = {"none": [], "follower": []}
    pairs: list[float] = []
    cpu_pairs: list[float] = []
    followers: list[dict[str, Any]] = []
    async with (
        Network.in_memory(2, seed=1, per_node_options=options) as net,
        anyio.create_task_group() as tg,
    ):
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        # Warm-up, both ways: compile and cache the module, open the API's first stream.
        await one_run(net, address, spec, False)
        await one_run(net, address, spec, True)
        for i in range(repeat):
            order = ("none", "follower") if i % 2 == 0 else ("follower", "none")
            took: dict[str, float] = {}
            used: dict[str, float] = {}
            for mode in order:
                took[mode], used[mode], seen = await one_run(net, address, spec, mode == "follower")
                samples[mode].append(took[mode])
                cpu[mode].append(used[mode])
                if seen:
                    followers.append(seen)
                print(
                    f"  {mode:<9} {took[mode]:7.3f} s  cpu {used[mode]:7.3f} s  {seen or ''}",
                    flush=True,
                )
            # A pair ran back to back, so a change in the machine's load between rounds
            # shifts both of its runs: its ratio is steadier than any single time.
            pairs.append(took["follower"] / took["none"])
            cpu_pairs.append(used["follower"] / used["none"])
        tg.cancel_scope.cancel()
    none, follower = statistics.median(samples["none"]), statistics.median(samples["follower"])
    ratio = follower / none
    cpu_ratio = statistics.median(cpu["follower"]) / statistics.median(cpu["none"])
    return {
        "lines": lines,
        "repeat": repeat,
        "none_s": none,
        "follower_s": follower,
        "ratio": ratio,
        "ratio_median_of_pairs": statistics.median(pairs),
        "ratio_of_minimums": min(samples["follower"]) / min(samples["none"]),
        "pair_ratios": pairs,
        "cpu_none_s": statistics.median(cpu["none"]),
        "cpu_follower_s": statistics.median(cpu["follower"]),
        "cpu_ratio": cpu_ratio,
        "cpu_ratio_median_of_pairs": statistics.median(cpu_pairs),
        "cpu_per_line_us": (
            (statistics.median(cpu["follower"]) - statistics.median(cpu["none"])) / lines * 1e6
        ),
        "cpu_samples": cpu,
        "note": (
            "cpu is this process's CPU time (both nodes, the API and the job's thread; the "
            "follower process excluded): steadier than wall time on a loaded machine. "
            "Wall time also carries the follower process's own CPU (on the same cores)."
        ),
        "goal_ratio": GOAL,
        "met": ratio <= GOAL,
        "samples": samples,
        "followers": followers,
        "ratios": {
            "job with one live follower": {
                "value": ratio,
                "better": "lower",
                "reference": "the same job with no follower",
            },
            "node CPU with one live follower": {
                "value": cpu_ratio,
                "better": "lower",
                "reference": "the same job with no follower",
            },
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 lines, 3 rounds")
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    ns = parser.parse_args(argv)
    lines = ns.lines or (10_000 if ns.quick else 100_000)
    repeat = ns.repeat or (3 if ns.quick else 7)
    print(f"live logs: {lines} lines, {repeat} rounds of (no follower, one follower)")
    data = anyio.run(run, lines, repeat)
    data["quick"] = ns.quick
    path = write("logs", data)
    print(
        f"median job time: {data['none_s']:.3f} s without a follower, "
        f"{data['follower_s']:.3f} s with one: ratio {data['ratio']:.3f} (goal <= {GOAL}), "
        f"median of pairs {data['ratio_median_of_pairs']:.3f}; node CPU ratio "
        f"{data['cpu_ratio']:.3f} (pairs {data['cpu_ratio_median_of_pairs']:.3f}, "
        f"{data['cpu_per_line_us']:.2f} us a line)"
    )
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
