"""Content addressing benchmarks, ours and the reference side by side in one run.

1. ``bacalhau data add --only-hash FILE`` against ``sha256sum FILE`` (both as commands,
   the file warm in the page cache); also the library call alone.
2. Fetching a DAG from another node of an in-process network (block exchange, every
   block verified, then exported to a file) against a plain copy of the same bytes.
3. Peak memory (max RSS of a fresh process) of add and fetch for a small and a large
   file: it should stay flat as the file grows.

    python benchmarks/bench_cid.py            # 256 MiB timings, 64 MiB vs 1 GiB memory
    python benchmarks/bench_cid.py --quick    # 32 MiB, 16 vs 64 MiB (CI smoke test)

Writes ``benchmarks/results/cid.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
HERE = Path(__file__).resolve().parent


def make_file(path: Path, size: int) -> None:
    """Incompressible bytes in which every chunk is distinct (no deduplication)."""
    rng = random.Random(size)
    with open(path, "wb") as fh:
        for _ in range(size // MIB):
            fh.write(rng.randbytes(MIB))
        fh.write(rng.randbytes(size % MIB))
        fh.flush()
        os.fsync(fh.fileno())  # no writeback competing with the measurements


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def warm(path: Path) -> None:
    """Read the file once so both sides find it in the page cache (1 MiB at a time)."""
    with open(path, "rb") as fh:
        while fh.read(MIB):
            pass


def timed(cmd: list[str], runs: int) -> tuple[float, str]:
    times = []
    out = ""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout
    return statistics.median(times), out


def worker(mode: str, path: Path, workdir: Path) -> dict[str, Any]:
    """Runs in a fresh process: one add or one fetch; reports time and peak RSS."""
    import anyio

    from bacalhau.storage.ipfs import add_path

    result: dict[str, Any] = {}

    async def add() -> None:
        start = time.perf_counter()
        result["cid"] = await add_path(None, path)
        result["seconds"] = time.perf_counter() - start

    async def fetch() -> None:
        from bacalhau.network import Network
        from bacalhau.storage.ipfs import export_to_path

        async with Network.in_memory(2, data_dir=workdir / "net") as net:
            a, b = net.nodes
            cid = await add_path(a.blockstore, path, pin=True)
            start = time.perf_counter()
            fetched = await b.blocks.fetch_dag(cid)
            result["fetch_seconds"] = time.perf_counter() - start
            await export_to_path(b.blockstore, cid, workdir / "exported")
            result["seconds"] = time.perf_counter() - start
            result["blocks"] = fetched

    anyio.run(add if mode == "add" else fetch)
    if mode == "fetch":
        result["identical"] = file_digest(workdir / "exported") == file_digest(path)
    result["max_rss_mib"] = peak_rss_mib()
    return result


def peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited from
    the parent across fork and exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(mode: str, path: Path, workdir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(path), str(workdir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def baseline_rss() -> float:
    """Peak RSS of a process that only imports the package (what flat memory rises from)."""
    code = (
        "import sys, bacalhau.storage.ipfs, bacalhau.network;"
        f"sys.path.insert(0, {str(HERE)!r}); import bench_cid; print(bench_cid.peak_rss_mib())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cid.json")
    parser.add_argument(
        "--dir",
        default=None,
        help="where files and block stores go (default: /dev/shm when writable, so both"
        " sides measure software rather than this machine's disk)",
    )
    args = parser.parse_args(argv)
    where = args.dir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    size = 32 * MIB if args.quick else 256 * MIB
    small, large = (16 * MIB, 64 * MIB) if args.quick else (64 * MIB, 1024 * MIB)
    report: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count(), "dir": where}
    with tempfile.TemporaryDirectory(prefix="bench-cid-", dir=where) as tmp:
        root = Path(tmp)
        data = root / "data.bin"
        make_file(data, size)
        warm(data)

        # 1. add --only-hash against sha256sum
        ours_cmd = [sys.executable, "-m", "bacalhau.cli.data", "data", "add", "-n", "-Q", str(data)]
        ours, out = timed(ours_cmd, args.runs)
        ref, _ = timed(["sha256sum", str(data)], args.runs)
        lib_s = statistics.median(
            run_worker("add", data, root)["seconds"] for _ in range(args.runs)
        )
        report["only_hash"] = {
            "bytes": size,
            "cid": out.strip(),
            "ours_cli_s": ours,
            "ours_library_s": lib_s,
            "sha256sum_s": ref,
            "cli_vs_sha256sum": ref / ours,
            "library_vs_sha256sum": ref / lib_s,
        }

        # 2. fetch a DAG from another node against a plain copy
        fetched = run_worker("fetch", data, root / "fetch")
        start = time.perf_counter()
        shutil.copyfile(data, root / "copy.bin")
        copy_s = time.perf_counter() - start
        (root / "copy.bin").unlink()
        shutil.rmtree(root / "fetch", ignore_errors=True)
        report["fetch"] = {
            "bytes": size,
            "blocks": fetched["blocks"],
            "fetch_dag_s": fetched["fetch_seconds"],
            "fetch_and_export_s": fetched["seconds"],
            "plain_copy_s": copy_s,
            "copy_vs_fetch": copy_s / fetched["fetch_seconds"],
            "fetch_mib_per_s": size / MIB / fetched["fetch_seconds"],
            "identical": fetched["identical"],
        }
        data.unlink()

        # 3. peak memory, small vs large file
        base = baseline_rss()
        memory: dict[str, Any] = {"baseline_import_mib": base}
        for label, n in (("small", small), ("large", large)):
            path = root / f"{label}.bin"
            make_file(path, n)
            add = run_worker("add", path, root)
            fetch = run_worker("fetch", path, root / f"fetch-{label}")
            shutil.rmtree(root / f"fetch-{label}", ignore_errors=True)
            path.unlink()
            memory[label] = {
                "bytes": n,
                "add_max_rss_mib": add["max_rss_mib"],
                "fetch_max_rss_mib": fetch["max_rss_mib"],
            }
        memory["add_growth"] = (
            memory["large"]["add_max_rss_mib"] / memory["small"]["add_max_rss_mib"]
        )
        memory["fetch_growth"] = (
            memory["large"]["fetch_max_rss_mib"] / memory["small"]["fetch_max_rss_mib"]
        )
        report["memory"] = memory

    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_table(r: dict[str, Any]) -> None:
    h, f, m = r["only_hash"], r["fetch"], r["memory"]
    mib = h["bytes"] // MIB
    print(f"{'measurement':48} {'ours':>10} {'reference':>10} {'ratio':>7}")
    print(
        f"{f'add --only-hash {mib} MiB (CLI) vs sha256sum':48} {h['ours_cli_s']:9.3f}s "
        f"{h['sha256sum_s']:9.3f}s {h['cli_vs_sha256sum']:6.2f}x"
    )
    print(
        f"{f'add_path(None, ...) {mib} MiB vs sha256sum':48} {h['ours_library_s']:9.3f}s "
        f"{h['sha256sum_s']:9.3f}s {h['library_vs_sha256sum']:6.2f}x"
    )
    print(
        f"{f'fetch_dag {mib} MiB from a peer vs file copy':48} {f['fetch_dag_s']:9.3f}s "
        f"{f['plain_copy_s']:9.3f}s {f['copy_vs_fetch']:6.2f}x"
    )
    print(f"{'  fetch + export to a file':48} {f['fetch_and_export_s']:9.3f}s")
    s, lg = m["small"], m["large"]
    sm, lm = s["bytes"] // MIB, lg["bytes"] // MIB
    print(
        f"peak RSS (import alone {m['baseline_import_mib']:.0f} MiB): "
        f"{'':20} {f'{sm} MiB':>10} {f'{lm} MiB':>10} {'growth':>7}"
    )
    print(
        f"{'  add --only-hash':48} {s['add_max_rss_mib']:8.0f}Mi {lg['add_max_rss_mib']:8.0f}Mi "
        f"{m['add_growth']:6.2f}x"
    )
    print(
        f"{'  fetch from a peer + export':48} {s['fetch_max_rss_mib']:8.0f}Mi "
        f"{lg['fetch_max_rss_mib']:8.0f}Mi {m['fetch_growth']:6.2f}x"
    )
    print("ratio: reference time / our time (>1: we are faster); growth: large / small peak RSS")
    print(f"files and block stores in {r['dir'] or 'the temp dir'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
