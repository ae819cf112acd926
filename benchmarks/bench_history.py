"""Job history with many finished jobs: listing and restart cost the page, not the history.

A durable node's store is filled with N finished jobs (100,000; ``--quick``: 10,000) and
20 live ones, written through :class:`~bacalhau.node.store.StateStore` as a node writes
them. Then, side by side in one run:

* listing: page 1 and page 100 (20 jobs a page, newest first; page 100 by keyset cursor
  and by offset) as the node's indexed query, against the reference a store without the
  index would need (read and decode every record, sort, slice) on the same data;
* restart: opening the store and loading what a node keeps in memory, in a fresh
  process, with N finished jobs against an empty store: time and peak RSS (``VmHWM``:
  ``ru_maxrss`` would carry the benchmark's own peak across ``exec``).

Goals (issue 23): page 1 and page 100 under 50 ms; a restart under 2 s at start-of-day RSS.

    python benchmarks/bench_history.py            # 100,000 finished jobs
    python benchmarks/bench_history.py --quick    # 10,000

Writes ``benchmarks/results/history.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

from bacalhau.models import JobEvent, JobSpec, JobState
from bacalhau.node.history import JobQuery
from bacalhau.node.store import StateStore
from bacalhau.protocol.requester import RequesterJob
from bacalhau.wire import unpack

RESTART = """
import json, sys, time
t0 = time.perf_counter()
from bacalhau.node.store import StateStore
t1 = time.perf_counter()
store = StateStore(__import__("pathlib").Path(sys.argv[1]))
live, compute, reputation = store.load()
t2 = time.perf_counter()
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"open_load_s": t2 - t1, "import_s": t1 - t0, "live": len(live),
                  "maxrss_mb": int(hwm.split()[1]) / 1024}))
"""


def _job(i: int, *, live: bool) -> RequesterJob:
    t = 1_700_000_000.0 + i
    spec = JobSpec.noop(stdout=f"job {i}", labels=(f"batch-{i % 10}",))
    job = RequesterJob(job_id=f"j-{i:08d}-bench", spec=spec, created_at=t)
    job.history = [
        JobEvent(time=t, kind="created", node_id="n", detail="concurrency=1"),
        JobEvent(time=t + 1, kind="bid", node_id="n"),
    ]
    if not live:
        job.state = JobState.COMPLETED
        job.history.append(JobEvent(time=t + 2, kind="completed", node_id="n"))
    return job


async def _fill(path: Path, finished: int, live: int) -> float:
    store = StateStore(path)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        for i in range(finished + live):
            store.save_requester(_job(i, live=i >= finished))
            if i % 5000 == 4999:
                await store.flush()
        await store.flush()
        tg.cancel_scope.cancel()
    return time.perf_counter() - started


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _reference_page(path: Path, page: int) -> list[str]:
    """Without the index: every record read and decoded, sorted, sliced."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = [
            unpack(r[0], max_size=1 << 30) for r in db.execute("SELECT record FROM requester_jobs")
        ]
    finally:
        db.close()
    rows.sort(key=lambda r: (r["created_at"], r["job_id"]), reverse=True)
    return [r["job_id"] for r in rows[page * 20 : page * 20 + 20]]


def _restart(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", RESTART, str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    finished = 10_000 if args.quick else 100_000
    live = 20
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        path = Path(tmp) / "state.db"
        fill_s = anyio.run(_fill, path, finished, live)
        empty = Path(tmp) / "empty.db"
        StateStore(empty).close()
        store = StateStore(path)
        try:
            page1 = _best(lambda: store.query(JobQuery(limit=20)), 5)
            cursor: str | None = None
            for _ in range(99):
                cursor = store.query(JobQuery(limit=20, after=cursor)).next
            page100_key = _best(lambda: store.query(JobQuery(limit=20, after=cursor)), 5)
            page100_offset = _best(lambda: store.query(JobQuery(limit=20, offset=1980)), 5)
            by_label = _best(lambda: store.query(JobQuery(limit=20, label="batch-3")), 3)
            ours = [r.job_id for r in store.query(JobQuery(limit=20, offset=1980)).rows]
        finally:
            store.close()
        reference = _best(lambda: _reference_page(path, 99), 1)
        assert _reference_page(path, 99) == ours, "the index and the records disagree"
        restart_full = _restart(path)
        restart_empty = _restart(empty)
    rows = [
        ("list page 1 (indexed)", f"{page1 * 1000:.2f} ms"),
        ("list page 100, keyset cursor", f"{page100_key * 1000:.2f} ms"),
        ("list page 100, offset", f"{page100_offset * 1000:.2f} ms"),
        ("list page 1, label filter", f"{by_label * 1000:.2f} ms"),
        ("reference: decode all, sort, slice", f"{reference * 1000:.0f} ms"),
        (
            "restart, empty store",
            f"{restart_empty['open_load_s'] * 1000:.1f} ms, "
            f"{restart_empty['maxrss_mb']:.0f} MB RSS",
        ),
        (
            f"restart, {finished:,} finished",
            f"{restart_full['open_load_s'] * 1000:.1f} ms, "
            f"{restart_full['maxrss_mb']:.0f} MB RSS, {restart_full['live']} live loaded",
        ),
    ]
    print(table(f"job history, {finished:,} finished jobs + {live} live", rows, ("what", "cost")))
    data = {
        "finished_jobs": finished,
        "live_jobs": live,
        "fill_s": fill_s,
        "list_page1_ms": page1 * 1000,
        "list_page100_keyset_ms": page100_key * 1000,
        "list_page100_offset_ms": page100_offset * 1000,
        "list_label_ms": by_label * 1000,
        "reference_decode_all_ms": reference * 1000,
        "speedup_page100_vs_reference": reference / page100_key,
        "restart_empty": restart_empty,
        "restart_full": restart_full,
        "restart_rss_ratio": restart_full["maxrss_mb"] / restart_empty["maxrss_mb"],
        "goals": {
            "list_under_ms": 50,
            "restart_under_s": 2,
            "met": max(page1, page100_key, page100_offset) < 0.05
            and restart_full["open_load_s"] < 2,
        },
        "headline": f"page 100 of {finished:,} jobs in {page100_key * 1000:.1f} ms "
        f"({reference / page100_key:.0f}x faster than decoding every record); restart "
        f"{restart_full['open_load_s']:.2f} s at {restart_full['maxrss_mb']:.0f} MB "
        f"(empty store: {restart_empty['maxrss_mb']:.0f} MB)",
    }
    print(write("history", data))
    return data


if __name__ == "__main__":
    main()
