"""Run every benchmark and report them together (``nox -s bench``).

    python benchmarks/run.py                 # every benchmarks/bench_*.py, full size
    python benchmarks/run.py --quick         # small sizes (CI smoke run)
    python benchmarks/run.py --only core wasm
    python benchmarks/run.py --report-only   # rebuild the report from benchmarks/results/*.json

Each ``bench_<name>.py`` has ``main(argv) -> dict`` and writes
``benchmarks/results/<name>.json``; this runner calls it in a child process of its
own (``--quick`` passed on), streams its output, and then:

* prints one table: for every benchmark, its headline ratios against the reference it
  measured side by side (Dask, ``hashlib``, ``docker run``, a direct wasmtime call, ...),
  normalised to a *cost ratio*: our time (or memory, or 1/throughput) divided by the
  reference's, so below 1 means ours is faster or leaner;
* writes ``benchmarks/results/summary.json``, a bar chart of the cost ratios
  (``docs/benchmark-ratios.png``, matplotlib) and the page ``docs/benchmarks.md``.

A benchmark that fails, times out or reports ``{"skipped": reason}`` shows up in the
table with the reason; the others still run. Exit status: 0 if every benchmark ran,
1 if any failed. Without ``DOCKER_HOST``, as root, a private Docker engine is started
for the docker benchmark (``scripts/docker-engine.sh``) and stopped afterwards.

Which ratios are headlines comes from :data:`HEADLINES` for the benchmarks that exist;
a new benchmark gets into the table by putting a ``ratios`` mapping in its JSON:
``{"name": value}`` (direction unknown) or
``{"name": {"value": v, "better": "lower"|"higher", "reference": "..."}}``.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

SELF = Path(__file__).resolve()
BENCHMARKS = SELF.parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
SUMMARY = RESULTS / "summary.json"
PLOT = ROOT / "docs" / "benchmark-ratios.png"
PAGE = ROOT / "docs" / "benchmarks.md"

Key = str | int
"""A step into the JSON: a mapping key, or an index (lists, and mappings in order)."""


@attrs.frozen
class Headline:
    """One ratio worth a row: ``ours`` (a ratio, or a figure divided by ``ref``)."""

    metric: str
    reference: str
    ours: tuple[Key, ...]
    ref: tuple[Key, ...] | None = None
    better: str = "lower"  # of the raw value: "lower" (times, ratios of times) or "higher"
    kind: str = "time"  # "time" (and rates) or "memory": only changes the words used
    goal: tuple[Key, ...] | None = None  # a cost-ratio goal the benchmark records


H = Headline
HEADLINES: dict[str, list[Headline]] = {
    "core": [
        H(
            "no-op job latency, median",
            "Dask LocalCluster",
            ("ratios", "median_latency"),
            goal=("goals", "median_latency"),
        ),
        H("no-op job latency, p99", "Dask LocalCluster", ("ratios", "p99_latency")),
        H(
            "no-op jobs per second",
            "Dask LocalCluster",
            ("ratios", "throughput"),
            better="higher",
            goal=("goals", "throughput_cost"),
        ),
        H(
            "one no-op job at a time, largest network (1,000 nodes; node 0 only requests)",
            "the same, smallest network (3 nodes)",
            ("scale", "latency_growth"),
            goal=("goals", "latency_growth"),
        ),
        H(
            "the same with a requester that computes too (1,000 nodes)",
            "the same, 3 nodes (a third of the jobs local)",
            ("scale", "requester_computes", "latency_growth"),
            goal=("goals", "latency_growth"),
        ),
        H(
            "messages per job, largest network (1,000 nodes)",
            "the same, smallest network (3 nodes)",
            ("scale", "messages_growth"),
            goal=("goals", "messages_growth"),
        ),
    ],
    "cid": [
        H(
            "`data add --only-hash` (CLI)",
            "hashlib sha256 as a command",
            ("only_hash", "cli_vs_hashlib"),
            better="higher",
        ),
        H(
            "CID of a file (library)",
            "hashlib.file_digest",
            ("only_hash", "library_vs_hashlib"),
            better="higher",
        ),
        H(
            "CID of a file (library), alternating with hashlib in one process",
            "hashlib.file_digest",
            ("only_hash", "alternating_in_one_process", "ratio_median"),
            better="higher",
        ),
        H(
            "`data add --only-hash` (CLI)",
            "sha256sum",
            ("only_hash", "cli_vs_sha256sum"),
            better="higher",
        ),
        H(
            "CID of a file (library)",
            "sha256sum",
            ("only_hash", "library_vs_sha256sum"),
            better="higher",
        ),
        H(
            "fetch a DAG from a peer process",
            "raw TCP copy between two processes",
            ("fetch", "fetch_vs_raw_copy"),
            better="higher",
        ),
        H(
            "fetch from a peer process, write out the file",
            "raw TCP copy written to a file",
            ("fetch", "fetch_and_write_vs_raw_copy_to_file"),
            better="higher",
        ),
        H(
            "fetch a DAG from a peer process",
            "raw TCP copy, receiver hashing each block, to a file (the floor)",
            ("fetch", "fetch_vs_verified_copy_to_file"),
            better="higher",
        ),
        H(
            "raw TCP copy, receiver hashing each block (the floor)",
            "raw TCP copy between two processes",
            ("fetch", "verified_copy_vs_raw_copy"),
            better="higher",
        ),
        H(
            "fetch from 3 provider processes",
            "fetch from 1",
            ("fetch", "three_vs_one_provider"),
            better="higher",
        ),
        H(
            "peak memory of add, big file / small",
            "flat (1.0)",
            ("memory", "add_growth"),
            kind="memory",
        ),
        H(
            "peak memory of fetch, big file / small",
            "flat (1.0)",
            ("memory", "fetch_growth"),
            kind="memory",
        ),
    ],
    "docker": [
        H(
            "1 s container as a job",
            "docker run --rm",
            ("sleep1", "job_ratio"),
            goal=("sleep1", "goal_ratio"),
        ),
        H("1 s container, executor alone", "docker run --rm", ("sleep1", "executor_ratio")),
        H(
            "trivial container as a job",
            "docker run --rm",
            ("trivial", "job_ms"),
            ("trivial", "docker_run_ms"),
        ),
    ],
    "wasm": [
        H(
            "CPU-bound module as a job",
            "wasmtime call",
            ("cpu", "job_ratio"),
            goal=("cpu", "goal_ratio"),
        ),
        H("CPU-bound module, executor alone", "wasmtime call", ("cpu", "executor_ratio")),
        H(
            "trivial module as a job",
            "wasmtime call",
            ("trivial", "job_ms"),
            ("trivial", "direct_ms"),
        ),
        H(
            "trivial module as a job",
            "no-op job",
            ("trivial", "job_ms"),
            ("trivial", "noop_job_ms"),
        ),
    ],
    "gossip": [
        H(
            "broadcast latency p50, most nodes",
            "direct TCP, as many processes",
            ("latency", -1, "gossip", "p50_ms"),
            ("latency", -1, "tcp", "p50_ms"),
        ),
        H(
            "broadcast messages/s, most nodes",
            "direct TCP, as many processes",
            ("throughput", -1, "gossip", "msgs_per_s"),
            ("throughput", -1, "tcp", "msgs_per_s"),
            better="higher",
        ),
        H(
            "broadcast latency p50, most nodes",
            "in-memory transport, one process",
            ("latency", -1, "gossip", "p50_ms"),
            ("latency", -1, "memory", "p50_ms"),
        ),
        H(
            "broadcast messages/s, most nodes",
            "in-memory transport, one process",
            ("throughput", -1, "gossip", "msgs_per_s"),
            ("throughput", -1, "memory", "msgs_per_s"),
            better="higher",
        ),
    ],
    "nats": [
        H(
            "broadcast latency p50, most nodes",
            "gossip transport",
            ("latency", -1, "nats", "p50_ms"),
            ("latency", -1, "gossip", "p50_ms"),
        ),
        H(
            "broadcast latency p50, most nodes",
            "in-memory transport",
            ("latency", -1, "nats", "p50_ms"),
            ("latency", -1, "memory", "p50_ms"),
        ),
        H(
            "jobs per second",
            "in-memory network",
            ("jobs", "nats", "jobs_per_s"),
            ("jobs", "memory", "jobs_per_s"),
            better="higher",
        ),
    ],
    "api": [
        H(
            "submit over HTTP, 1 at a time",
            "Node.submit in process",
            ("results", "submit, 1 at a time", "ratio_python_over_http"),
        ),
        H(
            "submit over HTTP, 8 at a time",
            "Node.submit in process",
            ("results", "submit, 8 at a time", "ratio_python_over_http"),
        ),
        H(
            "whole jobs over HTTP, 8 in flight",
            "Node.run_job in process",
            ("results", "whole job, 8 in flight", "ratio_python_over_http"),
        ),
    ],
    "load": [
        H(
            "jobs/s with 4x the queue",
            "the small batch",
            ("batches", -1, "per_second"),
            ("batches", 0, "per_second"),
            better="higher",
        ),
    ],
    "verify": [
        H("hash a results folder, large files", "hashlib", ("hashing", 0, "ratio_vs_hashlib")),
        H("hash a results folder, small files", "hashlib", ("hashing", 1, "ratio_vs_hashlib")),
        H("hash a results folder, large files", "sha256sum", ("hashing", 0, "ratio_vs_sha256sum")),
        H("hash a results folder, small files", "sha256sum", ("hashing", 1, "ratio_vs_sha256sum")),
        H(
            "seal a proposal",
            "libsodium sealed box",
            ("sealing", "seal_us"),
            ("sealing", "nacl", "seal_us"),
        ),
        H(
            "open a proposal",
            "libsodium sealed box",
            ("sealing", "open_us"),
            ("sealing", "nacl", "open_us"),
        ),
        H(
            "seal a node's first proposal for a requester",
            "libsodium sealed box",
            ("sealing", "seal_first_us"),
            ("sealing", "nacl", "seal_us"),
        ),
        H(
            "open a sender's first proposal",
            "libsodium sealed box",
            ("sealing", "open_first_us"),
            ("sealing", "nacl", "open_us"),
        ),
    ],
}


@attrs.frozen
class Ratio:
    """A headline's value. ``cost``: ours / reference as a cost (< 1: ours is better)."""

    metric: str
    reference: str
    value: float
    better: str  # "lower", "higher" or "?" (the benchmark did not say)
    kind: str = "time"
    goal: float | None = None

    @property
    def cost(self) -> float | None:
        if self.better == "lower":
            return self.value
        if self.better == "higher":
            return 1 / self.value if self.value else math.inf
        return None

    def verdict(self) -> str:
        cost = self.cost
        if cost is None:
            return f"{self.value:.3g} (direction not stated)"
        if self.kind == "memory":
            return "flat" if cost <= 1.1 else f"grows {cost:.3g}x"
        if 0.95 <= cost <= 1.05:
            return "on par"
        return f"{1 / cost:.3g}x faster" if cost < 1 else f"{cost:.3g}x slower"


@attrs.define
class Outcome:
    """What became of one benchmark in this run."""

    name: str
    status: str  # "ok", "failed", "skipped" or "not run"
    seconds: float = 0.0
    reason: str = ""
    description: str = ""
    ratios: list[Ratio] = attrs.Factory(list)
    when: str = ""
    fresh: bool = True  # measured in this run (False: read from an earlier run's results)


# --- reading results ---------------------------------------------------------------------


def lookup(data: Any, path: Sequence[Key]) -> Any:
    """Follow ``path`` into ``data``; None when any step is missing."""
    for key in path:
        if isinstance(key, int):
            if isinstance(data, dict):
                data = list(data.values())
            if not isinstance(data, list) or not -len(data) <= key < len(data):
                return None
            data = data[key]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return None
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def extract_ratios(name: str, data: dict[str, Any]) -> list[Ratio]:
    """The benchmark's headline ratios: :data:`HEADLINES`, else its own ``ratios``
    mapping, else every number under a key naming a ratio (direction unknown)."""
    out: list[Ratio] = []
    for h in HEADLINES.get(name, []):
        ours = _number(lookup(data, h.ours))
        ref = _number(lookup(data, h.ref)) if h.ref is not None else 1.0
        if ours is None or not ref:
            continue
        goal = _number(lookup(data, h.goal)) if h.goal is not None else None
        out.append(Ratio(h.metric, h.reference, ours / ref, h.better, h.kind, goal))
    if out:
        return out
    declared = data.get("ratios")
    if isinstance(declared, dict):
        for metric, entry in declared.items():
            if isinstance(entry, dict):
                value, better = _number(entry.get("value")), str(entry.get("better", "?"))
                reference = str(entry.get("reference", data.get("reference", "reference")))
            else:
                value, better, reference = _number(entry), "?", "reference"
            if value is not None:
                out.append(
                    Ratio(
                        str(metric),
                        reference,
                        value,
                        better if better in ("lower", "higher") else "?",
                    )
                )
        return out
    for path, value in _walk(data, ()):
        last = str(path[-1])
        if ("ratio" in last or "_vs_" in last) and not last.startswith("goal"):
            out.append(Ratio(".".join(map(str, path)), "reference", value, "?"))
    return out


def _walk(data: Any, path: tuple[Key, ...]) -> Iterator[tuple[tuple[Key, ...], float]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key != "samples":
                yield from _walk(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _walk(value, (*path, i))
    elif path and (number := _number(data)) is not None:
        yield path, number


def description(bench: Path) -> str:
    """The first line of a benchmark's docstring (read, not imported)."""
    try:
        doc = ast.get_docstring(ast.parse(bench.read_text()))
    except (OSError, SyntaxError):
        return ""
    return (doc or "").strip().splitlines()[0].rstrip(".") if doc else ""


def result_name(bench: Path) -> str:
    return bench.stem.removeprefix("bench_")


def discover(only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Path]:
    benches = sorted(BENCHMARKS.glob("bench_*.py"))
    names = {result_name(b) for b in benches}
    unknown = sorted((set(only) | set(skip)) - names)
    if unknown:
        raise SystemExit(
            f"no such benchmark: {', '.join(unknown)} (there are: {', '.join(sorted(names))})"
        )
    return [
        b for b in benches if (not only or result_name(b) in only) and result_name(b) not in skip
    ]


def load_results(name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- running -----------------------------------------------------------------------------


def worker(bench: Path, out: Path, argv: list[str]) -> int:
    """In the child process: import the benchmark, call ``main(argv)``, save what it returns."""
    sys.path.insert(0, str(bench.parent))
    spec = importlib.util.spec_from_file_location(bench.stem, bench)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {bench}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[bench.stem] = module
    spec.loader.exec_module(module)
    returned = module.main(argv)
    out.write_text(json.dumps(returned if isinstance(returned, dict) else {}, default=str))
    return 0


async def run_one(bench: Path, *, quick: bool, timeout: float, env: dict[str, str]) -> Outcome:
    """Run one benchmark in a child process (its own session, so a timeout kills every
    process it started), echoing its output; never raises for the benchmark's failures."""
    name = result_name(bench)
    outcome = Outcome(name, "failed", description=description(bench))
    tail: collections.deque[str] = collections.deque(maxlen=40)
    started_at = time.time()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        returned = Path(tmp) / "returned.json"
        argv = [
            sys.executable,
            "-u",
            str(SELF),
            "--worker",
            str(bench),
            str(returned),
            *(["--quick"] if quick else []),
        ]
        print(f"\n=== {name}: {outcome.description}", flush=True)
        t0 = time.perf_counter()
        process = await anyio.open_process(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        timed_out = False
        try:
            with anyio.move_on_after(timeout) as scope:
                assert process.stdout is not None
                pending = b""
                async for chunk in process.stdout:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        line = raw.decode(errors="replace")
                        tail.append(line)
                        print(f"  {name} | {line}", flush=True)
                await process.wait()
            timed_out = scope.cancelled_caught
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()
        outcome.seconds = time.perf_counter() - t0
        if timed_out:
            outcome.reason = f"timed out after {timeout:g} s"
            return outcome
        if process.returncode != 0:
            last = next((line.strip() for line in reversed(tail) if line.strip()), "")
            outcome.reason = f"exit status {process.returncode}: {last}"[:300]
            return outcome
        try:
            data = json.loads(returned.read_text())
        except (OSError, ValueError):
            data = {}
    if isinstance(data, dict) and data.get("skipped"):
        outcome.status, outcome.reason = "skipped", str(data["skipped"])[:300]
        return outcome
    saved = load_results(name)
    path = RESULTS / f"{name}.json"
    if saved is not None and path.stat().st_mtime >= started_at - 1:
        data = saved  # the file has the machine and time stamps
    if not data:
        outcome.reason = f"main() returned nothing and {path.name} was not written"
        return outcome
    outcome.status = "ok"
    outcome.when = str(data.get("when", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    outcome.ratios = extract_ratios(name, data)
    return outcome


@contextlib.contextmanager
def docker_engine(env: dict[str, str], wanted: bool) -> Iterator[None]:
    """Without DOCKER_HOST, as root: a private engine for the run (as scripts/test.sh does)."""
    script = ROOT / "scripts" / "docker-engine.sh"
    if not wanted or env.get("DOCKER_HOST") or os.geteuid() != 0 or not script.exists():
        yield
        return
    state = tempfile.mkdtemp(prefix="bacalhau-bench-docker-")
    proc = subprocess.run(
        ["bash", str(script), "start", state], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(
            f"run.py: no Docker engine could be started: {proc.stderr.strip()[-300:]}",
            file=sys.stderr,
        )
        yield
        return
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    try:
        yield
    finally:
        subprocess.run(["bash", str(script), "stop", state], capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


# --- reporting ---------------------------------------------------------------------------


def render_table(outcomes: Sequence[Outcome]) -> str:
    rows = [("benchmark", "measurement", "reference", "cost ratio", "ours")]
    for o in outcomes:
        if o.status != "ok":
            rows.append((o.name, o.status.upper(), "", "", o.reason[:70]))
            continue
        if not o.ratios:
            rows.append((o.name, "(no ratios reported)", "", "", ""))
        for r in o.ratios:
            cost = r.cost
            shown = f"{cost:.3g}" if cost is not None else f"{r.value:.3g}?"
            if r.goal is not None:
                shown += f" (goal {r.goal:g})"
            rows.append((o.name, r.metric.replace("`", ""), r.reference, shown, r.verdict()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()}",
    }


def summary_data(outcomes: Sequence[Outcome], *, quick: bool, ran: bool) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "ran": ran,
        "machine": machine(),
        "benchmarks": [
            {
                "name": o.name,
                "status": o.status,
                "seconds": round(o.seconds, 1),
                "reason": o.reason,
                "description": o.description,
                "when": o.when,
                "fresh": o.fresh,
                "ratios": [
                    {**attrs.asdict(r), "cost": r.cost, "verdict": r.verdict()} for r in o.ratios
                ],
            }
            for o in outcomes
        ],
    }


def plot(outcomes: Sequence[Outcome], path: Path) -> Path | None:
    """A horizontal bar per cost ratio (log scale; the line at 1 is parity)."""
    bars = [
        (f"{o.name}: {r.metric.replace('`', '')} vs {r.reference}", r.cost, r.kind)
        for o in outcomes
        for r in o.ratios
        if r.cost is not None and r.cost > 0
    ]
    if not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars.reverse()  # matplotlib draws from the bottom up
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(bars) + 1.4), dpi=110)
    costs = [c for _, c, _ in bars]
    colors = ["#2e7d32" if c <= 1.05 else ("#f9a825" if c <= 2 else "#c62828") for c in costs]
    # bars grow from parity: left for "ours better", right for "ours costs more"
    ax.barh(range(len(bars)), [c - 1 for c in costs], left=1, color=colors)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(bars)), [label for label, _, _ in bars], fontsize=8)
    for i, cost in enumerate(costs):
        right = cost >= 1
        ax.text(
            cost * (1.06 if right else 0.94),
            i,
            f"{cost:.3g}",
            va="center",
            ha="left" if right else "right",
            fontsize=7,
        )
    lo, hi = min(*costs, 0.5), max(*costs, 2.0)
    ax.set_xlim(lo / 4, hi * 4)  # room for the value labels
    ax.set_xlabel(
        "cost ratio: ours / reference (time, memory or 1/throughput; left of 1 = ours better)"
    )
    ax.set_title("bacalhau-py against side-by-side references")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def render_page(summary: dict[str, Any], plotted: bool) -> str:
    m = summary["machine"]
    mode = "quick (CI smoke sizes)" if summary["quick"] else "full"
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by benchmarks/run.py; do not edit by hand. -->",
        "",
        "Every benchmark measures bacalhau-py and a reference side by side, in one run on the",
        "same machine. This page shows each one's headline **cost ratio**: our time (or memory,",
        "or 1/throughput) divided by the reference's. Below 1, ours is faster or leaner; above 1,",
        "it costs more. The references are the fastest honest way to do the same work: Dask for",
        "scheduling tasks, Python's `hashlib` for hashing (`sha256sum` as a second row), a file",
        "copy for data, `docker run` and a direct wasmtime call for execution, and plain TCP",
        "between as many processes for networking (the in-memory transport as a second row).",
        "",
        f"Run: {summary['when']}, {mode}, on {m['cpus']} CPUs ({m['cpu']}), Python {m['python']},",
        f"{m['system']}.",
        "",
    ]
    if plotted:
        lines += ["![Cost ratios of every benchmark](benchmark-ratios.png)", ""]
    lines += [
        "| benchmark | measurement | reference | cost ratio | ours |",
        "| --- | --- | --- | ---: | --- |",
    ]
    problems = []
    for b in summary["benchmarks"]:
        if b["status"] != "ok":
            problems.append(b)
            continue
        for r in b["ratios"]:
            cost = f"{r['cost']:.3g}" if r["cost"] is not None else f"{r['value']:.3g} (?)"
            if r["goal"] is not None:
                cost += f" (goal &le; {r['goal']:g})"
            lines.append(
                f"| {b['name']} | {r['metric']} | {r['reference']} | {cost} | {r['verdict']} |"
            )
    if problems:
        lines += ["", "## Not measured in this run", ""]
        lines += [
            f"- **{b['name']}** ({b['status']}): {b['reason'] or 'no reason given'}"
            for b in problems
        ]
    lines += ["", "## The benchmarks", ""]
    for b in summary["benchmarks"]:
        took = f", {b['seconds']:g} s" if b["seconds"] else ""
        when = "" if b.get("fresh", True) or not b["when"] else f", measured {b['when']}"
        lines.append(
            f"- **{b['name']}** (`benchmarks/bench_{b['name']}.py`{took}{when}): "
            f"{b['description'] or 'no description'}. Full figures: "
            f"`benchmarks/results/{b['name']}.json`."
        )
    lines += [
        "",
        "## Running them",
        "",
        "```console",
        "$ nox -s bench                        # every benchmark, full size; rewrites this page",
        "$ nox -s bench -- --quick             # small sizes, a few minutes",
        "$ python benchmarks/run.py --only core wasm",
        "$ python benchmarks/bench_core.py     # one benchmark alone, with its own table",
        "```",
        "",
        'The docker benchmark needs a Docker engine (`eval "$(scripts/docker-engine.sh start)"`'
        " as root;",
        "the runner starts a private one itself when run as root without `DOCKER_HOST`), and the",
        "NATS one `nats-server` (`scripts/nats-server.sh`). A benchmark that fails is listed above",
        "with the reason; the rest still run.",
        "",
        "Timings on a small shared machine vary between runs: ratios have moved by up to 2x when",
        "other work (a test suite) ran beside a benchmark. Each ratio's two sides run in one",
        "process within the same minutes, so they share the conditions; rerun before drawing",
        "fine conclusions, and compare ratios rather than absolute times.",
        "",
        "A new `benchmarks/bench_<name>.py` is picked up by the runner. To choose its headline",
        "ratios, add them to `HEADLINES` in `benchmarks/run.py`, or put a `ratios` mapping in its",
        'JSON: `{"name": {"value": 1.2, "better": "lower", "reference": "what"}}`.',
        "",
    ]
    return "\n".join(lines)


def report(
    outcomes: list[Outcome],
    *,
    quick: bool,
    ran: bool,
    plot_path: Path = PLOT,
    page_path: Path = PAGE,
    summary_path: Path = SUMMARY,
) -> dict[str, Any]:
    print("\n" + render_table(outcomes))
    summary = summary_data(outcomes, quick=quick, ran=ran)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    plotted = plot(outcomes, plot_path) is not None
    page_path.write_text(render_page(summary, plotted))
    print(f"\nwrote {summary_path}, {page_path}" + (f", {plot_path}" if plotted else ""))
    return summary


async def run_all(benches: list[Path], *, quick: bool, timeout: float) -> list[Outcome]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    outcomes = []
    with docker_engine(env, any(result_name(b) == "docker" for b in benches)):
        for bench in benches:
            outcomes.append(await run_one(bench, quick=quick, timeout=timeout, env=env))
    return outcomes


def previous(bench: Path) -> Outcome:
    """A benchmark as its last results file has it (not run now)."""
    name = result_name(bench)
    data = load_results(name)
    if data is None:
        return Outcome(
            name, "not run", reason=f"no results/{name}.json", description=description(bench)
        )
    when = str(
        data.get("when")
        or time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime((RESULTS / f"{name}.json").stat().st_mtime)
        )
    )
    return Outcome(
        name,
        "ok",
        description=description(bench),
        fresh=False,
        ratios=extract_ratios(name, data),
        when=when,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"]:
        raise SystemExit(worker(Path(args[1]), Path(args[2]), args[3:]))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these (core, cid, wasm, ...)",
    )
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these out")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark (default 900, 300 with --quick)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing; rebuild the table, plot and page from the results",
    )
    opts = parser.parse_args(args)
    benches = discover(opts.only, opts.skip)
    if opts.report_only:
        outcomes = [previous(bench) for bench in benches]
        quick = any(bool((load_results(o.name) or {}).get("quick")) for o in outcomes)
        return report(outcomes, quick=quick, ran=False)
    timeout = opts.timeout or (300.0 if opts.quick else 900.0)
    outcomes = anyio.run(lambda: run_all(benches, quick=opts.quick, timeout=timeout))
    if opts.only or opts.skip:  # the report still covers every benchmark: the rest as last run
        fresh = {o.name: o for o in outcomes}
        outcomes = [fresh.get(result_name(b)) or previous(b) for b in discover()]
    return report(outcomes, quick=opts.quick, ran=True)


if __name__ == "__main__":
    result = main()
    failed = [b["name"] for b in result["benchmarks"] if b["status"] == "failed"]
    sys.exit(1 if failed else 0)
