"""Live logs benchmark: a job printing 100,000 lines, with one follower attached vs none.

The job is a WASM module that prints ``waiting``, waits for a gate file, then writes one
13-byte line per ``fd_write``; it runs on a compute node and is submitted to a
requester-only node (so every line the follower sees crosses the transport). The
follower is a separate process reading
``GET /api/v1/jobs/ID/logs/stream?follow=true&format=batch`` from the requester's API
with the client's frames and printing them (to /dev/null), as ``bacalhau logs -f``
does; the gate opens once the job's first line has reached it (without a follower: once
the line is in the compute node's buffer), and the clock runs from the gate to the
job's completion.

Four ways, interleaved in rounds (order reversed every other round) in one process,
after a warm-up of each: no follower; a follower beside the node; the same follower at
nice 19 (a client elsewhere: it takes only CPU the node leaves idle); a reader of the
default NDJSON format (parsing only). Reported per
follower way: the ratio of the median times (the headline, goal <= 1.1, is the plain
follower's), the median of the per-round ratios (a round's runs are back to back, so a
change in the machine's load moves them all), this process's CPU ratio and the cost per
line, and how many lines the follower saw (a follower slower than the job misses lines:
the buffer is bounded and the job never waits for it; it is told how many it missed).

Usage::

    python benchmarks/bench_logs.py [--quick] [--lines N] [--repeat R]

Writes ``benchmarks/results/logs.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.models import JobSpec, JobState, OutputSpec
from bacalhau.network import Network

try:
    from ._common import write
except ImportError:  # run as a script
    from _common import write  # type: ignore[no-redef]

GOAL = 1.1

FOLLOWER = r"""
import json, os, sys, time
import anyio
from bacalhau.api.client import Client
from bacalhau.cli.watch import print_frame
url = sys.argv[1]
sink = open(os.devnull, "w")

async def main():
    lines = skipped = 0
    attached = 0.0
    async with Client(url, timeout=120) as client:  # its imports done before the job
        print("ready", flush=True)
        job = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
        async for frame in client.log_frames(job, follow=True):
            if lines == 0 and frame.count:
                attached = time.process_time()
                print("attached", flush=True)  # the job's first line came through
            lines += frame.count
            skipped += frame.skipped
            print_frame(frame, out=sink, err=sink)  # what `bacalhau logs -f` writes
    return lines, skipped, time.process_time() - attached

lines, skipped, cpu = anyio.run(main)
print(json.dumps({"lines": lines, "skipped": skipped, "cpu": cpu}), flush=True)
"""
"""The follower ``bacalhau logs -f`` is: the client's ``format=batch`` frames, each
checked and printed (to /dev/null) a run of lines at a time."""

FOLLOWER_NDJSON = r"""
import json, sys, time, httpx
print("ready", flush=True)
url, job = sys.argv[1], sys.stdin.readline().strip()
lines = skipped = 0
attached = 0.0
with httpx.stream("GET", f"{url}/api/v1/jobs/{job}/logs/stream",
                  params={"follow": "true"}, timeout=120) as r:
    for line in r.iter_lines():
        if line.strip():
            chunk = json.loads(line)
            if lines == 0 and chunk["lines"]:
                attached = time.process_time()
                print("attached", flush=True)  # the job's first line came through
            lines += len(chunk["lines"])
            skipped += chunk["skipped"]
cpu = time.process_time() - attached
print(json.dumps({"lines": lines, "skipped": skipped, "cpu": cpu}), flush=True)
"""
"""A reader of the default NDJSON format (a JSON array a line), parsing only."""

OUTPUTS = [OutputSpec(name="outputs", path="/outputs")]


def lines_wat(n: int) -> str:
    """A module that prints ``waiting``, waits until ``/outputs/go`` exists, then prints
    ``n`` numbered lines (``line 0000000``), one write each."""
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "line 0000000\\n")
  (data (i32.const 100) "waiting\\n")
  (data (i32.const 120) "go")
  (func (export "_start") (local $i i32) (local $j i32) (local $v i32)
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $wait  ;; fd 3 is /outputs
      (br_if $wait (call $path_open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 2)
                      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))))
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


async def _started(net: Network, job_id: str) -> None:
    """Until the job's module has printed its first line (it then waits for the gate)."""
    logs = net.nodes[1].runner.logs
    while (buffer := logs.get(job_id)) is None:
        await logs.wait_opened()
    await buffer.wait(0)


async def one_run(
    net: Network, address: ApiAddress, spec: JobSpec, mode: str
) -> tuple[float, float, dict[str, Any]]:
    """One job: the clock runs from opening its gate (the follower, if any, already
    reading its output) to the job's completion."""
    requester, compute = net.nodes[0], net.nodes[1]
    follower = None
    if mode != "none":  # started (and its imports done) before the job
        nice = ["nice", "-n", "19"] if mode == "follower_nice" else []
        script = FOLLOWER_NDJSON if mode == "follower_ndjson" else FOLLOWER
        follower = await anyio.open_process(
            [*nice, sys.executable, "-c", script, address.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert follower.stdout is not None
        said = b""
        while b"ready\n" not in said:
            said += await follower.stdout.receive()
    handle = await requester.submit(spec)
    with anyio.fail_after(120):
        if follower is not None:
            assert follower.stdin is not None
            assert follower.stdout is not None
            await follower.stdin.send(handle.job_id.encode() + b"\n")
            said = b""
            while b"attached\n" not in said:
                said += await follower.stdout.receive()
        else:
            await _started(net, handle.job_id)
    gate = compute.runner.folder(handle.job_id) / "results" / "outputs" / "go"
    start, cpu = time.perf_counter(), time.process_time()
    gate.write_bytes(b"")
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
        seen = json.loads(out.split(b"attached\n")[-1])
    return took, cpu, seen


MODES = ("none", "follower", "follower_nice", "follower_ndjson")
"""No follower; one follower process beside the node (``format=batch``, as ``bacalhau
logs -f``); the same follower at nice 19 (it then takes only CPU the node leaves idle,
as a client on another machine would); a reader of the default NDJSON format."""


async def run(lines: int, repeat: int) -> dict[str, Any]:
    options: list[dict[str, Any]] = [{"compute": None}, {"requester": None}]
    spec = JobSpec.wasm(lines_wat(lines), outputs=OUTPUTS, publisher="noop", timeout=600)
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    pairs: dict[str, list[float]] = {m: [] for m in MODES[1:]}
    seen_by: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES[1:]}
    async with (
        Network.in_memory(2, seed=1, per_node_options=options) as net,
        anyio.create_task_group() as tg,
    ):
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        # Warm-up, each way: compile and cache the module, open the API's first stream.
        for mode in MODES:
            await one_run(net, address, spec, mode)
        for i in range(repeat):
            took: dict[str, float] = {}
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                took[mode], used, seen = await one_run(net, address, spec, mode)
                samples[mode].append(took[mode])
                cpu[mode].append(used)
                if seen:
                    seen_by[mode].append(seen)
                print(
                    f"  {mode:<13} {took[mode]:7.3f} s  cpu {used:7.3f} s  {seen or ''}", flush=True
                )
            # One round's runs are back to back, so a change in the machine's load between
            # rounds shifts all of them: a round's ratio is steadier than any single time.
            for mode in MODES[1:]:
                pairs[mode].append(took[mode] / took["none"])
        tg.cancel_scope.cancel()
    med = {m: statistics.median(samples[m]) for m in MODES}
    cpu_med = {m: statistics.median(cpu[m]) for m in MODES}
    out: dict[str, Any] = {
        "lines": lines,
        "repeat": repeat,
        "none_s": med["none"],
        "cpu_none_s": cpu_med["none"],
        "samples": samples,
        "cpu_samples": cpu,
        "goal_ratio": GOAL,
        "note": (
            "time: from opening the job's gate (the follower already reading its first line) "
            "to completed. cpu: this process's CPU time (both nodes, the API, the job's "
            "threads; not the follower process), steadier than wall time on a loaded machine"
        ),
        "ratios": {},
    }
    for mode in MODES[1:]:
        lines_seen = [s["lines"] for s in seen_by[mode]]
        follower_cpu = [s["cpu"] for s in seen_by[mode]]
        out[mode] = {
            "median_s": med[mode],
            "ratio": med[mode] / med["none"],
            "ratio_median_of_rounds": statistics.median(pairs[mode]),
            "round_ratios": pairs[mode],
            "cpu_median_s": cpu_med[mode],
            "cpu_ratio": cpu_med[mode] / cpu_med["none"],
            "cpu_per_line_us": (cpu_med[mode] - cpu_med["none"]) / lines * 1e6,
            "lines_seen_median": statistics.median(lines_seen) if lines_seen else 0,
            "follower_cpu_median_s": statistics.median(follower_cpu) if follower_cpu else 0,
            "followers": seen_by[mode],
        }
        out["ratios"][f"job with one live follower ({mode})"] = {
            "value": med[mode] / med["none"],
            "better": "lower",
            "reference": "the same job with no follower",
        }
    out["ratio"] = out["follower"]["ratio"]
    out["load_average"] = os.getloadavg()
    out["met"] = out["ratio"] <= GOAL
    return out


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
    for mode in MODES[1:]:
        r = data[mode]
        print(
            f"{mode}: median {r['median_s']:.3f} s vs {data['none_s']:.3f} s without: ratio "
            f"{r['ratio']:.3f} (goal <= {GOAL}), median of rounds "
            f"{r['ratio_median_of_rounds']:.3f}; node CPU ratio {r['cpu_ratio']:.3f} "
            f"({r['cpu_per_line_us']:.2f} us a line); lines seen (median) "
            f"{r['lines_seen_median']:.0f} of {data['lines']}; follower process CPU "
            f"{r['follower_cpu_median_s']:.3f} s (from the first line to the end)"
        )
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
