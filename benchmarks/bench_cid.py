"""Content addressing benchmarks, ours and the reference side by side in one run.

1. ``bacalhau data add --only-hash FILE`` against one ``hashlib`` sha256 pass over the
   file, the fastest honest reference (as a command, ``python -c``, and in process
   against the library call alone); ``sha256sum FILE`` (coreutils, slower than hashlib
   here) is kept as a second row. The file is warm in the page cache for every side.
2. Fetching a DAG from a node in another process (gossip TCP on loopback, every block
   verified on receipt) against a raw TCP copy of the same bytes between two processes;
   fetch plus writing the file out (streaming) against the raw copy written to a file;
   fetching from 3 provider processes against from 1 (``_fetch_peers.py``). Beside
   them, the floor under any verifying fetch: the same raw copy with the receiver
   hashing each 256 KiB block (and writing it to a file, as a fetch stores what it
   gets); its ratio to the raw copy is the most a fetch can reach on this machine.
   Where its time goes (``_store_rx.py``): the block store's writes against appending
   the same bytes to one file, and anyio's receive loop against ``recv_into``.
3. Peak memory (max RSS of a fresh process) of add, and of fetch + write-out between
   two nodes of one process, for a small and a large file: flat as the file grows.

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


HASHLIB_COMMAND = (
    "import hashlib, sys\n"
    "with open(sys.argv[1], 'rb') as fh: print(hashlib.file_digest(fh, 'sha256').hexdigest())"
)


def hashlib_seconds(path: Path) -> float:
    """One in-process sha256 pass over the file (its bytes already in the page cache)."""
    start = time.perf_counter()
    file_digest(path)
    return time.perf_counter() - start


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

    async def compare() -> None:
        # ours and one hashlib stream alternating in one process, so both see the same
        # load; the median of the per-pair ratios, and each side's CPU seconds
        await add_path(None, path)  # warm: imports, thread pool
        pairs = []
        for _ in range(int(os.environ.get("BENCH_PAIRS", "5"))):
            wall, cpu = time.perf_counter(), time.process_time()
            hashlib_digest = await anyio.to_thread.run_sync(file_digest, path)
            ref = (time.perf_counter() - wall, time.process_time() - cpu)
            wall, cpu = time.perf_counter(), time.process_time()
            await add_path(None, path)
            ours = (time.perf_counter() - wall, time.process_time() - cpu)
            pairs.append((ref, ours))
        result["hashlib"] = hashlib_digest
        result["pairs"] = pairs

    async def fetch() -> None:
        from bacalhau.network import Network

        async with Network.in_memory(2, data_dir=workdir / "net") as net:
            a, b = net.nodes
            cid = await add_path(a.blockstore, path, pin=True)
            start = time.perf_counter()
            await b.get_data(cid, workdir / "exported")  # streaming: written as fetched
            result["seconds"] = time.perf_counter() - start
            result["blocks"] = b.blocks.stats["blocks_fetched"]

    anyio.run({"add": add, "compare": compare}.get(mode, fetch))
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


def peer_fetch(data: Path, root: Path, runs: int) -> dict[str, Any]:
    """Fetch from 1 and from 3 provider processes (gossip TCP on 127.0.0.1), with and
    without writing the file out, each run next to a raw TCP copy of the same bytes
    between two processes (kept in memory, or written to a file); medians of ``runs``."""
    sys.path.insert(0, str(HERE))
    import _fetch_peers as fp

    size = data.stat().st_size
    keys = ("raw", "raw_disk", "ver", "ver_disk", "f1", "g1", "f3")
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys if k != "f3"}
    rss: list[float] = []
    identical = True
    stats: dict[str, Any] = {}
    with fp.providers(data, root / "p1", 1) as one:
        for i in range(runs):
            seconds, used = fp.raw_copy(data, None)
            times["raw"].append(seconds)
            cpu["raw"].append(used)
            for key, out in (("ver", None), ("ver_disk", root / "verified.bin")):
                seconds, used = fp.raw_copy(data, out, verify=True)
                times[key].append(seconds)
                cpu[key].append(used)
            got = fp.fetch(one, root / f"f1-{i}", "fetch")
            times["f1"].append(got["seconds"])
            cpu["f1"].append(got["cpu_s"])
            stats = got["stats"]
            shutil.rmtree(root / f"f1-{i}")
            seconds, used = fp.raw_copy(data, root / "raw.bin")
            times["raw_disk"].append(seconds)
            cpu["raw_disk"].append(used)
            got = fp.fetch(one, root / f"g1-{i}", "get")
            times["g1"].append(got["seconds"])
            cpu["g1"].append(got["cpu_s"])
            rss.append(got["max_rss_mib"])
            identical = identical and file_digest(root / f"g1-{i}" / "out.bin") == file_digest(data)
            shutil.rmtree(root / f"g1-{i}")
    shutil.rmtree(root / "p1")
    with fp.providers(data, root / "p3", 3) as three:
        for i in range(runs):
            got = fp.fetch(three, root / f"f3-{i}", "fetch")
            times["f3"].append(got["seconds"])
            shutil.rmtree(root / f"f3-{i}")
    shutil.rmtree(root / "p3")
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "bytes": size,
        "runs": runs,
        "raw_tcp_copy_s": med["raw"],
        "raw_tcp_copy_to_file_s": med["raw_disk"],
        "fetch_1_provider_s": med["f1"],
        "fetch_and_write_1_provider_s": med["g1"],
        "fetch_3_providers_s": med["f3"],
        "fetch_vs_raw_copy": med["raw"] / med["f1"],
        "fetch_and_write_vs_raw_copy_to_file": med["raw_disk"] / med["g1"],
        "three_vs_one_provider": med["f1"] / med["f3"],
        "verified_copy_s": med["ver"],
        "verified_copy_to_file_s": med["ver_disk"],
        "verified_copy_vs_raw_copy": med["raw"] / med["ver"],
        "verified_copy_to_file_vs_raw_copy": med["raw"] / med["ver_disk"],
        "verified_copy_to_file_vs_raw_copy_to_file": med["raw_disk"] / med["ver_disk"],
        "fetch_vs_verified_copy_to_file": med["ver_disk"] / med["f1"],
        "fetch_mib_per_s": size / MIB / med["f1"],
        "raw_copy_mib_per_s": size / MIB / med["raw"],
        "goal_fetch_vs_raw_copy": 0.5,
        "goal_fetch_and_write_vs_raw_copy_to_file": 0.4,
        "receiver_cpu_s": {
            "raw_tcp_copy": cpu_med["raw"],
            "raw_tcp_copy_to_file": cpu_med["raw_disk"],
            "fetch": cpu_med["f1"],
            "fetch_and_write": cpu_med["g1"],
            "verified_copy": cpu_med["ver"],
            "verified_copy_to_file": cpu_med["ver_disk"],
        },
        "fetch_and_write_max_rss_mib": max(rss),
        "identical": identical,
        "fetcher_stats": stats,
        "all_runs_s": times,
    }


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
    report["load_average_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cid-", dir=where) as tmp:
        root = Path(tmp)
        data = root / "data.bin"
        make_file(data, size)
        warm(data)

        # 1. add --only-hash against hashlib (the fastest honest reference: one sha256 pass
        #    over the same bytes, as a command and in process) and coreutils sha256sum
        ours_cmd = [sys.executable, "-m", "bacalhau.cli.data", "data", "add", "-n", "-Q", str(data)]
        ours, out = timed(ours_cmd, args.runs)
        hashlib_cmd = [sys.executable, "-c", HASHLIB_COMMAND, str(data)]
        hashlib_cli, _ = timed(hashlib_cmd, args.runs)
        ref, _ = timed(["sha256sum", str(data)], args.runs)
        lib_s = statistics.median(
            run_worker("add", data, root)["seconds"] for _ in range(args.runs)
        )
        hashlib_s = statistics.median(hashlib_seconds(data) for _ in range(args.runs))
        os.environ["BENCH_PAIRS"] = str(max(3, 2 * args.runs))
        pairs = run_worker("compare", data, root)["pairs"]
        report["only_hash"] = {
            "bytes": size,
            "cid": out.strip(),
            "ours_cli_s": ours,
            "ours_library_s": lib_s,
            "hashlib_cli_s": hashlib_cli,
            "hashlib_s": hashlib_s,
            "sha256sum_s": ref,
            "cli_vs_hashlib": hashlib_cli / ours,
            "library_vs_hashlib": hashlib_s / lib_s,
            "alternating_in_one_process": {
                "pairs": len(pairs),
                "hashlib_s": statistics.median(r[0] for r, _ in pairs),
                "ours_s": statistics.median(o[0] for _, o in pairs),
                "hashlib_cpu_s": statistics.median(r[1] for r, _ in pairs),
                "ours_cpu_s": statistics.median(o[1] for _, o in pairs),
                "ratio_median": statistics.median(r[0] / o[0] for r, o in pairs),
                "ratio_min": min(r[0] / o[0] for r, o in pairs),
                "ratio_max": max(r[0] / o[0] for r, o in pairs),
            },
            "cli_vs_sha256sum": ref / ours,
            "library_vs_sha256sum": ref / lib_s,
        }

        # 2. fetch a DAG from peer processes against a raw TCP copy between two processes
        report["fetch"] = peer_fetch(data, root, args.runs)
        data.unlink()

        # 2b. where a fetch's time goes: the block store's writes against one appended
        #     file, and anyio's receive loop against recv_into
        sys.path.insert(0, str(HERE))
        import _store_rx

        report["store"] = _store_rx.store_costs(where, size, args.runs)
        report["receive"] = _store_rx.receive_costs(size, args.runs)

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

    report["load_average_end"] = os.getloadavg()
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_table(r: dict[str, Any]) -> None:
    h, f, m = r["only_hash"], r["fetch"], r["memory"]
    mib = h["bytes"] // MIB
    print(f"{'measurement':48} {'ours':>10} {'reference':>10} {'ratio':>7}")
    print(
        f"{f'add --only-hash {mib} MiB (CLI) vs hashlib command':48} {h['ours_cli_s']:9.3f}s "
        f"{h['hashlib_cli_s']:9.3f}s {h['cli_vs_hashlib']:6.2f}x"
    )
    print(
        f"{f'add_path(None, ...) {mib} MiB vs hashlib':48} {h['ours_library_s']:9.3f}s "
        f"{h['hashlib_s']:9.3f}s {h['library_vs_hashlib']:6.2f}x"
    )
    a = h["alternating_in_one_process"]
    print(
        f"{'  same, alternating in one process (median)':48} {a['ours_s']:9.3f}s "
        f"{a['hashlib_s']:9.3f}s {a['ratio_median']:6.2f}x"
    )
    print(
        f"{'  ... its CPU seconds: ours vs hashlib':48} {a['ours_cpu_s']:9.3f}s "
        f"{a['hashlib_cpu_s']:9.3f}s "
        f"  (ratios {a['ratio_min']:.2f}-{a['ratio_max']:.2f})"
    )
    print(
        f"{f'add --only-hash {mib} MiB (CLI) vs sha256sum':48} {h['ours_cli_s']:9.3f}s "
        f"{h['sha256sum_s']:9.3f}s {h['cli_vs_sha256sum']:6.2f}x"
    )
    print(
        f"{f'add_path(None, ...) {mib} MiB vs sha256sum':48} {h['ours_library_s']:9.3f}s "
        f"{h['sha256sum_s']:9.3f}s {h['library_vs_sha256sum']:6.2f}x"
    )
    print(
        f"{f'fetch {mib} MiB from a peer process vs raw TCP copy':48} "
        f"{f['fetch_1_provider_s']:9.3f}s {f['raw_tcp_copy_s']:9.3f}s "
        f"{f['fetch_vs_raw_copy']:6.2f}x"
    )
    print(
        f"{'  fetch + write the file vs raw copy to a file':48} "
        f"{f['fetch_and_write_1_provider_s']:9.3f}s {f['raw_tcp_copy_to_file_s']:9.3f}s "
        f"{f['fetch_and_write_vs_raw_copy_to_file']:6.2f}x"
    )
    print(
        f"{'  fetch vs raw copy + sha256 per block, to file':48} "
        f"{f['fetch_1_provider_s']:9.3f}s {f['verified_copy_to_file_s']:9.3f}s "
        f"{f['fetch_vs_verified_copy_to_file']:6.2f}x"
    )
    print(
        f"{'  floor: raw copy + sha256 per block vs raw':48} "
        f"{f['verified_copy_s']:9.3f}s {f['raw_tcp_copy_s']:9.3f}s "
        f"{f['verified_copy_vs_raw_copy']:6.2f}x"
    )
    print(
        f"{'  ... that floor written to a file, vs raw':48} "
        f"{f['verified_copy_to_file_s']:9.3f}s {f['raw_tcp_copy_s']:9.3f}s "
        f"{f['verified_copy_to_file_vs_raw_copy']:6.2f}x"
    )
    print(
        f"{'  fetch from 3 providers vs from 1':48} {f['fetch_3_providers_s']:9.3f}s "
        f"{f['fetch_1_provider_s']:9.3f}s {f['three_vs_one_provider']:6.2f}x"
    )
    c = f["receiver_cpu_s"]
    print(
        f"{'  receiving process CPU: fetch vs raw copy':48} {c['fetch']:9.3f}s "
        f"{c['raw_tcp_copy']:9.3f}s {c['raw_tcp_copy'] / max(c['fetch'], 1e-9):6.2f}x"
    )
    print(
        f"{'  ... fetch + write vs raw copy to a file':48} {c['fetch_and_write']:9.3f}s "
        f"{c['raw_tcp_copy_to_file']:9.3f}s "
        f"{c['raw_tcp_copy_to_file'] / max(c['fetch_and_write'], 1e-9):6.2f}x"
    )
    st, rx = r["store"], r["receive"]
    print(
        f"{'  store CPU: put_many (flatfs) vs one appended file':48} "
        f"{st['cpu_s']['put_many_flatfs']:9.3f}s {st['cpu_s']['append_one_file']:9.3f}s "
        f"{st['flatfs_vs_one_file']:6.2f}x"
    )
    print(
        f"{'  receive CPU: anyio receive vs recv_into':48} "
        f"{rx['receiver_cpu_s']['anyio_receive']:9.3f}s {rx['receiver_cpu_s']['recv_into']:9.3f}s "
        f"{rx['anyio_vs_recv_into']:6.2f}x"
    )
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
    la, lb = r["load_average_start"], r["load_average_end"]
    print(
        f"load average (1, 5, 15 min): start {la[0]:.1f} {la[1]:.1f} {la[2]:.1f},"
        f" end {lb[0]:.1f} {lb[1]:.1f} {lb[2]:.1f} on {r['cpus']} CPUs"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
