"""Docker executor benchmark: a docker job on a 1-node network vs ``docker run --rm``.

Measured side by side in one run, interleaved per repetition so all see the same load:

- **1 s command** (``sleep 1`` in the test image): reference ``docker run --rm
  --network none`` with the same CPU and memory limits the job gets (the docker CLI);
  ours: the same image and command as a job on a 1-node in-memory network
  (``run_job`` wall time, publisher ``noop``), and ``DockerExecutor.run`` alone.
  Goal: job / docker run <= 1.10.
- **trivial command** (``true``): the fixed overhead of a job (and of the
  executor alone) over ``docker run --rm``, in ms.

Needs a Docker engine at DOCKER_HOST with the test image
(``eval "$(scripts/docker-engine.sh start)"`` as root provides both).

Usage::

    python benchmarks/bench_docker.py [--quick] [--repeat N] [--out PATH]

Writes JSON to ``benchmarks/results/docker.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bacalhau.executor.base import ExecutionContext
from bacalhau.executor.docker import DockerExecutor
from bacalhau.models import JobSpec, JobState, Resources
from bacalhau.network import Network
from bacalhau.testing.docker import DockerEngine, probe_docker_engine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "docker.json"
RESOURCES = Resources(cpu=1.0, memory=256 * 1024 * 1024)


def docker_run(image: str, cmd: list[str]) -> float:
    """Reference: the docker CLI's ``docker run --rm`` with the job's limits; wall seconds."""
    argv = [
        "docker", "run", "--rm", "--network", "none",
        "--cpus", f"{RESOURCES.cpu:g}",
        "--memory", str(RESOURCES.memory), "--memory-swap", str(RESOURCES.memory),
        "--security-opt", "no-new-privileges",
        image, *cmd,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


async def measure(
    engine: DockerEngine, cases: list[tuple[str, list[str], int]]
) -> dict[str, dict[str, list[float]]]:
    """For each case (name, command, repeat): docker run, job, executor.run; interleaved,
    after one untimed warm-up of each."""
    samples: dict[str, dict[str, list[float]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    executor = DockerExecutor(node_id="bench-" + secrets.token_hex(4))
    try:
        async with Network.in_memory(1) as net:
            node = net.nodes[0]
            for name, cmd, repeat in cases:
                spec = JobSpec.docker(
                    engine.image, cmd, publisher="noop", resources=RESOURCES, timeout=600
                )

                async def job(spec: JobSpec = spec) -> float:
                    start = time.perf_counter()
                    result = await node.run_job(spec, timeout=600)
                    took = time.perf_counter() - start
                    assert result.state is JobState.COMPLETED, result.reason
                    return took

                async def run(spec: JobSpec = spec) -> float:
                    folder = tmp / secrets.token_hex(4)
                    (folder / "results").mkdir(parents=True)
                    (folder / "work").mkdir()
                    ctx = ExecutionContext(
                        job_id="bench",
                        execution_id="bench/" + folder.name,
                        spec=spec,
                        volumes=(),
                        outputs={},
                        results_dir=folder / "results",
                        work_dir=folder / "work",
                    )
                    start = time.perf_counter()
                    assert (await executor.run(ctx)).exit_code == 0
                    return time.perf_counter() - start

                async def reference(cmd: list[str] = cmd) -> float:
                    return await anyio.to_thread.run_sync(docker_run, engine.image, cmd)

                await reference()
                await job()
                await run()
                times: dict[str, list[float]] = {"docker_run": [], "job": [], "executor": []}
                for _ in range(repeat):
                    times["docker_run"].append(await reference())
                    times["job"].append(await job())
                    times["executor"].append(await run())
                samples[name] = times
    finally:
        await executor.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return samples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for CI smoke tests")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)
    repeat = opts.repeat or (2 if opts.quick else 7)
    trivial_repeat = 3 if opts.quick else 15

    found = probe_docker_engine()
    if not isinstance(found, DockerEngine):
        print(f"docker benchmark skipped: {found}")
        return {"benchmark": "docker", "skipped": found}
    if shutil.which("docker") is None:
        print("docker benchmark skipped: the docker CLI (the reference) is not installed")
        return {"benchmark": "docker", "skipped": "no docker CLI"}

    samples = anyio.run(
        measure, found, [("sleep1", ["sleep", "1"], repeat), ("trivial", ["true"], trivial_repeat)]
    )
    med = statistics.median
    slow, triv = samples["sleep1"], samples["trivial"]
    report: dict[str, Any] = {
        "benchmark": "docker",
        "quick": opts.quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "engine": {"host": found.host, "version": found.version, "image": found.image},
        "resources": {"cpu": RESOURCES.cpu, "memory": RESOURCES.memory},
        "sleep1": {
            "docker_run_s": med(slow["docker_run"]),
            "job_s": med(slow["job"]),
            "executor_s": med(slow["executor"]),
            "job_ratio": med(slow["job"]) / med(slow["docker_run"]),
            "executor_ratio": med(slow["executor"]) / med(slow["docker_run"]),
            "job_ratio_of_minimums": min(slow["job"]) / min(slow["docker_run"]),
            "goal_ratio": 1.10,
            "repeat": repeat,
            "samples": slow,
        },
        "trivial": {
            "docker_run_ms": med(triv["docker_run"]) * 1000,
            "job_ms": med(triv["job"]) * 1000,
            "executor_ms": med(triv["executor"]) * 1000,
            "job_overhead_ms": (med(triv["job"]) - med(triv["docker_run"])) * 1000,
            "executor_overhead_ms": (med(triv["executor"]) - med(triv["docker_run"])) * 1000,
            "job_overhead_of_minimums_ms": (min(triv["job"]) - min(triv["docker_run"])) * 1000,
            "executor_overhead_of_minimums_ms": (min(triv["executor"]) - min(triv["docker_run"]))
            * 1000,
            "repeat": trivial_repeat,
            "samples": triv,
        },
    }
    s, t = report["sleep1"], report["trivial"]
    print(f"Docker benchmark (engine {found.version}, {found.image}, medians)")
    print(f"{'case':<30}{'docker run':>12}{'ours':>12}{'ratio':>9}")
    print(
        f"{'sleep 1: job (1 node)':<30}{s['docker_run_s']:>11.3f}s{s['job_s']:>11.3f}s"
        f"{s['job_ratio']:>9.3f}"
    )
    print(
        f"{'sleep 1: executor.run':<30}{s['docker_run_s']:>11.3f}s{s['executor_s']:>11.3f}s"
        f"{s['executor_ratio']:>9.3f}"
    )
    print(
        f"{'true: job (1 node)':<30}{t['docker_run_ms']:>10.1f}ms{t['job_ms']:>10.1f}ms"
        f"{t['job_ms'] / t['docker_run_ms']:>9.3f}"
    )
    print(
        f"{'true: executor.run':<30}{t['docker_run_ms']:>10.1f}ms{t['executor_ms']:>10.1f}ms"
        f"{t['executor_ms'] / t['docker_run_ms']:>9.3f}"
    )
    print(
        f"fixed overhead over docker run (medians): job {t['job_overhead_ms']:+.1f} ms,"
        f" executor {t['executor_overhead_ms']:+.1f} ms; (minimums): job"
        f" {t['job_overhead_of_minimums_ms']:+.1f} ms, executor"
        f" {t['executor_overhead_of_minimums_ms']:+.1f} ms"
    )
    print(
        f"sleep-1 job ratio of minimums {s['job_ratio_of_minimums']:.3f}"
        f" (goal: job ratio <= {s['goal_ratio']:.2f})"
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
