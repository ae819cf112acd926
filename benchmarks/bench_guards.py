"""Guards benchmark: the same WASM and Docker jobs with the per-job guards on and off.

What the guards of issue #16 cost a job: the runner's guard, the input timeout and
disk watch, isolated compilation and host-side store limits (WASM), the realpath bind
checks and container hardening (Docker). Two 1-node in-memory networks, identical but
for ``JobLimits(guards=...)`` (an internal switch that exists for this benchmark only),
run the same job alternately (on, off, then off, on, ...), one warm-up each first;
each ratio is the median over rounds of (time with guards on) / (time with guards
off) in the same round, which is robust to the machine's load drifting during the
run. Goal: <= 1.05.

Cases: a trivial WASM module (the fixed cost of a job), a CPU-bound WASM module
(about 0.5 s), a WASM module larger than the in-process compile threshold (compiled
once in a child process, then cached, as on a real node), and ``echo`` in a container
(when a Docker engine answers).

Usage::

    python benchmarks/bench_guards.py [--quick] [--repeat N]

Writes JSON to ``benchmarks/results/guards.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import table, write

from bacalhau.compute.capacity import ComputeConfig
from bacalhau.limits import JobLimits
from bacalhau.models import JobSpec, JobState
from bacalhau.network import Network
from bacalhau.testing.docker import DockerEngine, probe_docker_engine

GOAL = 1.05
TRIVIAL = '(module (memory (export "memory") 1) (func (export "_start")))'
CPU = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (local $x i64) (local $i i64)
    (local.set $x (i64.const 0x9E3779B97F4A7C15))
    (loop $l
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const ITERATIONS))))))
"""


def big_module() -> bytes:
    """A 300 KB module (above the in-process compile threshold) of 40 small functions."""

    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def section(kind: int, payload: bytes) -> bytes:
        return bytes([kind]) + leb(len(payload)) + payload

    funcs = 40
    body = b"\x00" + b"\x41\x01\x1a" * 2500 + b"\x0b"
    return (
        b"\0asm\x01\0\0\0"
        + section(1, leb(1) + b"\x60\x00\x00")
        + section(3, leb(funcs) + b"\x00" * funcs)
        + section(5, leb(1) + b"\x00\x01")
        + section(7, leb(2) + leb(6) + b"_start\x00" + leb(0) + leb(6) + b"memory\x02\x00")
        + section(10, leb(funcs) + (leb(len(body)) + body) * funcs)
    )


async def _time(run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def measure(
    cases: list[tuple[str, JobSpec, int]], config: dict[str, Any]
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {}
    on = ComputeConfig(limits=JobLimits(guards=True), **config)
    off = ComputeConfig(limits=JobLimits(guards=False), **config)
    async with (
        Network.in_memory(1, compute=on) as net_on,
        Network.in_memory(1, compute=off) as net_off,
    ):
        nodes = {"on": net_on.nodes[0], "off": net_off.nodes[0]}
        for name, spec, repeat in cases:

            def job(which: str, spec: JobSpec = spec) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    result = await nodes[which].run_job(spec, timeout=600)
                    assert result.state is JobState.COMPLETED, result.reason

                return run

            for which in ("on", "off"):  # warm-up: compile, caches, images
                await job(which)()
            got: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(repeat):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for which in order:
                    got[which].append(await _time(job(which)))
            samples[name] = got
    return samples


def calibrate_cpu(target: float) -> int:
    """Iterations of the CPU loop that take about ``target`` seconds on wasmtime."""
    import wasmtime

    from bacalhau.executor.wasm_compile import engine_config

    engine = wasmtime.Engine(engine_config())
    n = 1_000_000
    while True:
        module = wasmtime.Module(engine, CPU.replace("ITERATIONS", str(n)))
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1 << 40)
        instance = wasmtime.Instance(store, module, [])
        start = time.perf_counter()
        instance.exports(store)["_start"](store)  # type: ignore[operator]
        took = time.perf_counter() - start
        if took > 0.1:
            return max(1, int(n * target / took))
        n *= 4


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for CI smoke tests")
    parser.add_argument("--repeat", type=int, default=None)
    opts = parser.parse_args(argv)
    repeat = opts.repeat or (3 if opts.quick else 15)
    iterations = calibrate_cpu(0.5)
    wasm_cases = [
        ("wasm trivial", JobSpec.wasm(TRIVIAL, publisher="noop", timeout=600), repeat * 2),
        (
            "wasm cpu",
            JobSpec.wasm(CPU.replace("ITERATIONS", str(iterations)), publisher="noop", timeout=600),
            repeat,
        ),
        ("wasm 300 KB module", JobSpec.wasm(big_module(), publisher="noop", timeout=600), repeat),
    ]
    samples = anyio.run(measure, wasm_cases, {})
    found = probe_docker_engine()
    docker_note = ""
    if isinstance(found, DockerEngine):
        spec = JobSpec.docker(found.image, ["echo", "hi"], publisher="noop", timeout=600)
        samples.update(
            anyio.run(measure, [("docker echo", spec, repeat)], {"docker_local_images_only": True})
        )
    else:
        docker_note = f"docker cases skipped: {found}"
        print(docker_note)
    cases: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    rows = []
    for name, got in samples.items():
        on, off = statistics.median(got["on"]), statistics.median(got["off"])
        ratio = statistics.median(a / b for a, b in zip(got["on"], got["off"], strict=True))
        cases[name] = {
            "on_s": got["on"],
            "off_s": got["off"],
            "median_on_s": on,
            "median_off_s": off,
            "median_ratio_of_rounds": ratio,
        }
        ratios[f"{name}: guards on / off"] = {
            "value": ratio,
            "better": "lower",
            "reference": "the same job with the guards off",
            "goal": GOAL,
        }
        rows.append((name, f"{on * 1000:.1f}", f"{off * 1000:.1f}", f"{ratio:.3f}"))
    print(table("Guards cost (medians, ms)", rows, ("case", "on", "off", "on/off")))
    return {
        "benchmark": "guards",
        "goal": GOAL,
        "cases": cases,
        "ratios": ratios,
        "notes": docker_note,
        "path": str(write("guards", {"goal": GOAL, "cases": cases, "ratios": ratios})),
    }


if __name__ == "__main__":
    main()
