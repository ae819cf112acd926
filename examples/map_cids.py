"""Map one job over many CIDs and gather the results, with a progress bar.

Each CID is a text file; each job runs the WebAssembly word count on one of them
next to wherever the data is. The script submits every job (at most
``--in-flight`` at once), gathers results as they finish, shows progress on
stderr, and prints a summary (optionally every result as JSON with ``--out``).

    python examples/map_cids.py                   # 100 demo files, 3-node in-process network
    python examples/map_cids.py --jobs 500 --nodes 5
    python examples/map_cids.py --api 127.0.0.1:1234    # a running node (devstack or serve)
    python examples/map_cids.py --api HOST:PORT --cids cids.txt    # your CIDs, one per line

Exit status: 0 when every job completed, 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio

import bacalhau
from bacalhau import InputSpec, JobResult, JobSpec, OutputSpec, StorageSpec

WORDCOUNT = Path(__file__).parent / "wasm" / "prebuilt" / "wordcount.wasm"
WORDS = ("agua", "bacalhau", "cais", "saudade", "mar", "rio", "ponte", "sol", "vinho", "fado")

Add = Callable[[int, bytes], Awaitable[str]]
"""(index, bytes) -> CID: store one file somewhere on the network."""
Run = Callable[[JobSpec], Awaitable[JobResult]]
"""Submit one job and wait for its result."""


class Progress:
    """A one-line text progress bar on ``stream``: redrawn in place on a terminal,
    one line per tenth of the work otherwise (logs stay readable)."""

    def __init__(self, total: int, *, stream: IO[str] = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.done = self.failed = 0
        self.start = time.monotonic()
        self.tty = stream.isatty()
        self._last_tenth = -1

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        tenth = self.done * 10 // max(self.total, 1)
        if self.tty or tenth != self._last_tenth or self.done == self.total:
            self._last_tenth = tenth
            self._draw()

    def _draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (
            f"[{bar}] {self.done}/{self.total} jobs, {self.failed} failed, "
            f"{time.monotonic() - self.start:.1f}s"
        )
        end = "\n" if not self.tty or self.done == self.total else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()


def demo_files(count: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    return [
        (" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) + "\n").encode()
        for _ in range(count)
    ]


def word_count_job(module_cid: str, cid: str) -> JobSpec:
    return JobSpec.wasm(
        module_cid,
        args=["/inputs/text.txt", "/outputs"],
        inputs=[InputSpec(StorageSpec.ipfs(cid), "/inputs/text.txt")],
        outputs=[OutputSpec("counts", "/outputs")],
        labels=["map-cids"],
        timeout=60,
    )


def parse_counts(stdout: str) -> dict[str, int]:
    """``1 files, 4 lines, 22 words, 103 bytes`` -> {"files": 1, "lines": 4, ...}."""
    counts = {}
    for part in stdout.strip().split(","):
        number, _, unit = part.strip().partition(" ")
        if number.isdigit():
            counts[unit] = int(number)
    return counts


async def map_cids(
    cids: list[str], module_cid: str, run: Run, *, in_flight: int, progress: Progress
) -> list[dict[str, Any]]:
    """Run the job on every CID (at most ``in_flight`` at once); results in input order."""
    results: list[dict[str, Any]] = [{} for _ in cids]
    limit = anyio.Semaphore(in_flight)

    async def one(i: int, cid: str) -> None:
        async with limit:
            try:
                result = await run(word_count_job(module_cid, cid))
            except (bacalhau.BacalhauError, TimeoutError) as exc:
                results[i] = {"cid": cid, "state": "error", "reason": str(exc)}
            else:
                stdout = result.accepted[0].stdout if result.accepted else ""
                results[i] = {
                    "cid": cid,
                    "state": result.state.value,
                    "job_id": result.job_id,
                    "reason": result.reason,
                    "results_cid": result.cid,
                    **parse_counts(stdout),
                }
        progress.advance(results[i]["state"] == "completed")

    async with anyio.create_task_group() as tg:
        for i, cid in enumerate(cids):
            tg.start_soon(one, i, cid)
    return results


@asynccontextmanager
async def in_process(nodes: int) -> AsyncIterator[tuple[Add, Run]]:
    """A network in this process; files spread over its nodes, jobs sent to node 0."""
    async with bacalhau.Network.in_memory(nodes) as net:

        async def add(i: int, data: bytes) -> str:
            return await net.nodes[i % nodes].add_data(data)

        async def run(spec: JobSpec) -> JobResult:
            return await net.nodes[0].run_job(spec, timeout=300)

        yield add, run


@asynccontextmanager
async def through_api(address: str) -> AsyncIterator[tuple[Add, Run]]:
    """A running node's HTTP API (``bacalhau devstack`` or ``bacalhau serve``)."""
    async with bacalhau.Client(address) as client:

        async def add(i: int, data: bytes) -> str:
            return (await client.add_bytes(data)).cid

        async def run(spec: JobSpec) -> JobResult:
            return await client.run(spec, timeout=300)

        yield add, run


async def main(args: argparse.Namespace) -> int:
    backend = through_api(args.api) if args.api else in_process(args.nodes)
    async with backend as (add, run):
        module_cid = await add(0, await anyio.Path(WORDCOUNT).read_bytes())
        if args.cids:
            listed = await anyio.Path(args.cids).read_text()
            cids = [
                line.strip()
                for line in listed.splitlines()
                if line.strip() and not line.startswith("#")
            ]
        else:
            cids = [await add(i, data) for i, data in enumerate(demo_files(args.jobs))]
        print(f"mapping the word count over {len(cids)} CIDs", file=sys.stderr)
        progress = Progress(len(cids))
        results = await map_cids(cids, module_cid, run, in_flight=args.in_flight, progress=progress)
    completed = [r for r in results if r["state"] == "completed"]
    words = sum(r.get("words", 0) for r in completed)
    print(
        f"{len(completed)}/{len(results)} jobs completed in "
        f"{time.monotonic() - progress.start:.1f}s; {words} words in all"
    )
    for r in results:
        if r["state"] != "completed":
            print(f"  {r['cid']}: {r['state']} {r['reason']}")
    if args.out:
        await anyio.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"every result in {args.out}")
    return 0 if len(completed) == len(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100, help="demo files to make (default 100)")
    parser.add_argument("--nodes", type=int, default=3, help="in-process network size")
    parser.add_argument(
        "--api",
        default=None,
        metavar="HOST:PORT",
        help="use a running node instead of an in-process network",
    )
    parser.add_argument(
        "--cids",
        default=None,
        metavar="FILE",
        help="map over these CIDs (one per line) instead of demo files",
    )
    parser.add_argument("--in-flight", type=int, default=50, help="jobs in flight at once")
    parser.add_argument("--out", default=None, metavar="FILE", help="write every result as JSON")
    sys.exit(anyio.run(main, parser.parse_args()))
