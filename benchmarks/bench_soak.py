"""A bounded soak, as an operator would run one before trusting a node for months.

``--nodes`` ``bacalhau serve`` processes on loopback (the first is the submitting node,
requester and compute; the others compute nodes peered to it), ``--inflight`` small jobs
kept in flight against the first for ``--minutes``, while a compute node (never the
first) is killed with ``kill -9`` every ``--kill-every`` seconds and started again from
its data dir. Per window: jobs ended, failed, p50/p99 latency (submit to terminal, as a
client sees it), the submitting node's RSS, open files and disk (state store and block
store), and executions per node. At the end: jobs lost (submitted, never terminal within
the drain limit), jobs failed, and the last window against the first and the second
(RSS and p99 should plateau: a ratio near 1).

The submitting node runs with short retention (``--job-retention-s``, ``--pin-retention-s``,
``--disk-budget``), and every node with a short replay window (``--max-message-age``, 60 s:
how long message ids and compute nodes' ended-job records are kept), so that, within
minutes, what they keep is bounded by what is live. Per window the submitting node's
``state.db`` is shown apart from its write-ahead log, and what takes the room in it (KiB
and rows per table, free pages; a compute node's too).

    python benchmarks/bench_soak.py                 # 3 minutes, 4 nodes
    python benchmarks/bench_soak.py --quick         # ~30 s
    python benchmarks/bench_soak.py --minutes 10

Writes ``benchmarks/results/soak.json`` (``soak_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, table, write

from bacalhau.api.client import Client
from bacalhau.models import JobSpec, JobState
from bacalhau.testing.ports import PortClash, free_port, is_port_clash


class Serve:
    """One ``bacalhau serve`` process (started again from the same data dir on restart)."""

    def __init__(self, data_dir: Path, secret: str, extra: list[str]) -> None:
        self.data_dir, self.secret, self.extra = data_dir, secret, extra
        self.proc: subprocess.Popen[str] | None = None
        self.node_id = self.api = ""
        self.starts = 0

    async def start(self) -> Serve:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"serve-{self.starts}.log"
        self.starts += 1
        args = [
            *("serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1"),
            *("--api-port", "0", "--mdns-interface", "127.0.0.1", "--no-mdns"),
            *("--secret", self.secret),
            *self.extra,
        ]
        self.proc = self._spawn(args, log)
        stdout = self.proc.stdout
        assert stdout is not None
        with anyio.fail_after(90):
            while True:
                line = await anyio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
                if not line:
                    code, text = self.proc.wait(), log.read_text()
                    if is_port_clash(text):
                        raise PortClash(text[-300:])
                    raise RuntimeError(f"serve exited with {code}: {text[-1500:]}")
                if line.startswith("Node id: "):
                    self.node_id = line.split()[-1]
                elif line.startswith("API: "):
                    self.api = line.split()[-1]
                elif line.startswith("Ready."):
                    return self

    @staticmethod
    def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
        with log.open("w") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "bacalhau", "--log-level", "warning", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "BACALHAU_API_TOKEN": ""},
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def client(self) -> Client:
        return Client(self.api, timeout=60)

    def rss_mb(self) -> float:
        return _status(self.proc, "VmRSS")

    def open_files(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd")) if self.proc else 0
        except OSError:
            return 0


def _status(proc: subprocess.Popen[str] | None, key: str) -> float:
    if proc is None:
        return 0.0
    with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def store_tables(path: Path) -> dict[str, Any]:
    """What takes the room in a node's ``state.db``: KiB per table and index (SQLite's
    ``dbstat``), rows per table, free pages, and the write-ahead log, read from a
    read-only connection beside the running node."""
    out: dict[str, Any] = {}
    if not path.exists():
        return out
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return out
    try:
        kib = {
            name: round(size / 1024)
            for name, size in db.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            )
        }
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        out = {"kib": kib, "rows": rows, "free_pages": free, "pages": pages}
    except sqlite3.Error as exc:
        out = {"error": str(exc)}
    finally:
        db.close()
    wal = path.with_name(path.name + "-wal")
    out["wal_kib"] = round(wal.stat().st_size / 1024) if wal.exists() else 0
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


async def start_first(data_dir: Path, secret: str, extra: list[str]) -> tuple[Serve, int]:
    for attempt in range(8):  # a port another process took first: try a fresh one
        port = free_port()
        node = Serve(data_dir, secret, ["--port", str(port), *extra])
        try:
            return await node.start(), port
        except PortClash:
            node.kill()
            if attempt == 7:
                raise
    raise AssertionError("unreachable")


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.window = args.window
        self.t0 = 0.0
        self.deadline = 0.0
        self.windows: list[dict[str, Any]] = []
        self.ended: list[tuple[float, float, str, list[str]]] = []  # (at, latency, state, nodes)
        self.submitted = 0
        self.submit_errors = 0
        self.lost: list[str] = []
        self.kills: list[dict[str, Any]] = []
        self.failed_reasons: list[str] = []
        self.workers: list[Serve] = []

    def spec(self, i: int) -> JobSpec:
        delay = 0.3 if i % 3 == 0 else 0.0  # some jobs long enough to be caught by a kill
        return JobSpec.noop(stdout=f"soak {i}", delay=delay, publisher="ipfs", timeout=60)

    async def submitter(self, first: Serve, n: int) -> None:
        async with first.client() as c:
            i = n
            while time.monotonic() < self.deadline:
                i += self.args.inflight
                started = time.monotonic()
                try:
                    job_id = await c.submit(self.spec(i))
                except Exception:
                    self.submit_errors += 1
                    await anyio.sleep(0.2)
                    continue
                self.submitted += 1
                try:
                    result = await c.wait(job_id, timeout=self.args.drain)
                except TimeoutError:
                    self.lost.append(job_id)
                    continue
                now = time.monotonic()
                nodes = [e.node_id for e in result.accepted]
                self.ended.append((now, now - started, result.state.value, nodes))
                if result.state is not JobState.COMPLETED:
                    self.failed_reasons.append(result.reason[:200])

    async def churn(self, workers: list[Serve]) -> None:
        rng = random.Random(1)
        while True:
            await anyio.sleep(self.args.kill_every)
            if time.monotonic() > self.deadline - 5:
                return
            victim = rng.choice(workers)
            at = time.monotonic() - self.t0
            victim.kill()  # SIGKILL: no clean-up, no goodbye
            await anyio.sleep(1.0)
            started = time.monotonic()
            await victim.start()
            self.kills.append(
                {
                    "at_s": round(at, 1),
                    "node": victim.node_id[-8:],
                    "restart_s": time.monotonic() - started,
                }
            )

    async def sampler(self, first: Serve) -> None:
        index = 0
        while True:
            index += 1
            await anyio.sleep(max(0.0, self.t0 + index * self.window - time.monotonic()))
            self.close_window(first, index)
            if time.monotonic() >= self.deadline:
                return

    def close_window(self, first: Serve, index: int) -> None:
        start = self.t0 + (index - 1) * self.window
        end = self.t0 + index * self.window
        done = [e for e in self.ended if start <= e[0] < end]
        latencies = [e[1] for e in done]
        per_node: dict[str, int] = {}
        for _, _, _, nodes in done:
            for node in nodes:
                per_node[node[-8:]] = per_node.get(node[-8:], 0) + 1
        data = first.data_dir
        self.windows.append(
            {
                "window": index,
                "end_s": round(end - self.t0, 1),
                "jobs": len(done),
                "failed": sum(1 for e in done if e[2] != JobState.COMPLETED.value),
                "p50_ms": pct(latencies, 50) * 1000,
                "p99_ms": pct(latencies, 99) * 1000,
                "rss_mb": first.rss_mb(),
                "open_files": first.open_files(),
                "state_mb": sum(p.stat().st_size for p in data.glob("state.db*")) / 1e6,
                "db_mb": _size(data / "state.db") / 1e6,
                "wal_mb": _size(data / "state.db-wal") / 1e6,
                "blocks_mb": du(data / "blocks") / 1e6,
                "data_dir_mb": du(data) / 1e6,
                "executions_per_node": per_node,
                "store": store_tables(data / "state.db"),
                "worker_store": store_tables(self.workers[0].data_dir / "state.db")
                if self.workers
                else {},
            }
        )

    async def run(self) -> dict[str, Any]:
        a = self.args
        tmp = Path(tempfile.mkdtemp(prefix="bacalhau-soak-"))
        secret = os.urandom(8).hex()
        nodes: list[Serve] = []
        window = ["--max-message-age", repr(a.max_message_age)] if a.max_message_age else []
        retention = [
            *window,
            *("--job-retention", repr(a.job_retention_s / 86400)),
            *("--pin-retention", repr(a.pin_retention_s / 86400)),
            *("--disk-budget", a.disk_budget),
            *("--max-executions", "8"),
        ]
        try:
            first, port = await start_first(tmp / "n0", secret, retention)
            nodes.append(first)
            workers = [
                Serve(
                    tmp / f"n{i}", secret, ["--port", "0", "--peer", f"127.0.0.1:{port}", *window]
                )
                for i in range(1, a.nodes)
            ]
            for w in workers:
                nodes.append(await w.start())
            self.workers = workers
            await self.connected(nodes)
            base_rss = first.rss_mb()
            self.t0 = time.monotonic()
            self.deadline = self.t0 + a.minutes * 60
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.churn, workers)
                async with anyio.create_task_group() as load:
                    for n in range(a.inflight):
                        load.start_soon(self.submitter, first, n)
                    load.start_soon(self.sampler, first)
                tg.cancel_scope.cancel()
            wall = time.monotonic() - self.t0
            final_rss = first.rss_mb()
            peak_rss = _status(first.proc, "VmHWM")
        finally:
            for node in nodes:
                node.kill()
            if not a.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        return self.report(wall, base_rss, final_rss, peak_rss)

    async def connected(self, nodes: list[Serve]) -> None:
        with anyio.fail_after(60):
            while True:
                counts = []
                for node in nodes:
                    async with node.client() as c:
                        counts.append(len((await c.node_info()).peers))
                if min(counts) >= 1 and counts[0] == len(nodes) - 1:
                    return
                await anyio.sleep(0.25)

    def report(self, wall: float, base_rss: float, final_rss: float, peak: float) -> dict[str, Any]:
        w = [x for x in self.windows if x["jobs"]]
        first, second, last = w[0], w[min(1, len(w) - 1)], w[-1]
        latencies = [e[1] for e in self.ended]
        failed = sum(1 for e in self.ended if e[2] != JobState.COMPLETED.value)
        per_node: dict[str, int] = {}
        for x in self.windows:
            for node, count in x["executions_per_node"].items():
                per_node[node] = per_node.get(node, 0) + count

        def ratio(key: str, a: dict[str, Any], b: dict[str, Any]) -> float:
            return b[key] / a[key] if a[key] else float("nan")

        return {
            "config": dict(vars(self.args)),
            "wall_s": wall,
            "submitted": self.submitted,
            "ended": len(self.ended),
            "completed": len(self.ended) - failed,
            "failed": failed,
            "lost": len(self.lost),
            "submit_errors": self.submit_errors,
            "failed_reasons": sorted(set(self.failed_reasons))[:10],
            "kills": self.kills,
            "jobs_per_s": len(self.ended) / wall if wall else float("nan"),
            "p50_ms": pct(latencies, 50) * 1000,
            "p99_ms": pct(latencies, 99) * 1000,
            "rss_mb": {"before_load": base_rss, "end": final_rss, "peak": peak},
            "last_vs_first": {
                "rss": ratio("rss_mb", first, last),
                "p99": ratio("p99_ms", first, last),
                "data_dir": ratio("data_dir_mb", first, last),
                "state": ratio("state_mb", first, last),
                "db": ratio("db_mb", first, last),
            },
            "last_vs_second": {
                "rss": ratio("rss_mb", second, last),
                "p99": ratio("p99_ms", second, last),
                "data_dir": ratio("data_dir_mb", second, last),
                "state": ratio("state_mb", second, last),
                "db": ratio("db_mb", second, last),
            },
            "executions_per_node": per_node,
            "windows": self.windows,
        }


def summarise(result: dict[str, Any]) -> None:
    """Add the headline and the ratios against the second window (the issue's goals: RSS
    and p99 of the last minute within 1.2x of minute 2, and state.db level)."""
    second = result["last_vs_second"]
    result["headline"] = (
        f"{result['completed']} jobs in {result['wall_s']:.0f} s with {len(result['kills'])} "
        f"kill -9s: {result['lost']} lost, {result['failed']} failed; last window / second: "
        f"RSS {second['rss']:.2f}x, p99 {second['p99']:.2f}x, state.db {second['db']:.2f}x"
    )
    result["ratios"] = {
        f"{what}, last window / second": {
            "value": second[key],
            "better": "lower",
            "reference": "the second window",
        }
        for what, key in (("RSS", "rss"), ("p99 latency", "p99"), ("state.db", "db"))
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 30 s, 10 s windows")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=12)
    parser.add_argument("--kill-every", type=float, default=40.0, help="seconds between kills")
    parser.add_argument("--drain", type=float, default=180.0, help="most seconds a job may take")
    parser.add_argument("--job-retention-s", type=float, default=60.0)
    parser.add_argument("--pin-retention-s", type=float, default=60.0)
    parser.add_argument("--disk-budget", default="20MB")
    parser.add_argument(
        "--max-message-age",
        type=float,
        default=60.0,
        help="every node's replay window, which is also how long compute nodes keep ended "
        "jobs' records (seconds; default 60, so that memory and state.db reach their level "
        "within the soak; 0: the node default, 600)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.window, args.kill_every = 0.5, 10.0, 12.0
    if args.minutes <= 0 or args.minutes > 120 or args.nodes < 2 or args.inflight < 1:
        parser.error("--minutes in (0, 120], --nodes at least 2, --inflight at least 1")
    result = anyio.run(Soak(args).run)
    rows: list[tuple[str, ...]] = [
        (
            str(x["window"]),
            f"{x['end_s']:.0f}",
            str(x["jobs"]),
            str(x["failed"]),
            f"{x['p50_ms']:.0f}",
            f"{x['p99_ms']:.0f}",
            f"{x['rss_mb']:.1f}",
            str(x["open_files"]),
            f"{x['state_mb']:.2f}",
            f"{x['db_mb']:.2f}",
            f"{x['wal_mb']:.2f}",
            f"{x['blocks_mb']:.2f}",
        )
        for x in result["windows"]
    ]
    header = ("win", "end s", "jobs", "failed", "p50 ms", "p99 ms", "RSS MB", "fds", "state MB")
    header = (*header, "db MB", "WAL MB", "blocks MB")
    print(table("soak: the submitting node per window", rows, header))
    for key, who in (("store", "submitting node"), ("worker_store", "a compute node")):
        print(f"\nstate.db of the {who} per window: KiB by table/index, rows, free pages, WAL")
        for x in result["windows"]:
            st = x.get(key) or {}
            top = ", ".join(f"{k} {v}" for k, v in list(st.get("kib", {}).items())[:6])
            rows_ = ", ".join(f"{k} {v}" for k, v in st.get("rows", {}).items())
            print(
                f"  {x['window']}: {top}; rows: {rows_}; free {st.get('free_pages')}"
                f" of {st.get('pages')} pages; WAL {st.get('wal_kib')} KiB"
            )
    print(
        f"\nsubmitted {result['submitted']}, completed {result['completed']}, "
        f"failed {result['failed']}, lost {result['lost']}, kills {len(result['kills'])}; "
        f"last/first RSS {result['last_vs_first']['rss']:.2f}, "
        f"last/second RSS {result['last_vs_second']['rss']:.2f}, "
        f"last/second p99 {result['last_vs_second']['p99']:.2f}, "
        f"last/second state.db {result['last_vs_second']['db']:.2f} "
        f"(with its WAL {result['last_vs_second']['state']:.2f}); "
        f"executions per node {result['executions_per_node']}"
    )
    summarise(result)
    path = write("soak_quick" if args.quick else "soak", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
