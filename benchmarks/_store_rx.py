"""Two parts of ``bench_cid.py`` that say where a fetch's time goes, each side by side
in one run:

* ``store``: writing 256 KiB blocks into the block store (``BlockStore.put_many``, the
  flatfs layout, batches of 8 as the exchange writes them) against appending the same
  bytes to one file (what a packed layout could at best cost), and against not
  writing at all; CPU seconds of this process.
* ``receive``: a process receiving bytes over loopback TCP through anyio's
  ``SocketStream.receive`` (what the gossip transport uses) against ``recv_into`` a
  reused buffer; CPU seconds of the receiving process.

    python benchmarks/_store_rx.py [--mib 256]    # prints JSON
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
BLOCK = 256 * 1024


def store_costs(where: str | None, size: int, runs: int) -> dict[str, Any]:
    from bacalhau.cid import RAW, make_cid
    from bacalhau.storage.ipfs.blockstore import BlockStore

    rng = __import__("random").Random(size)
    blocks = [rng.randbytes(BLOCK) for _ in range(size // BLOCK)]
    cids = [make_cid(b, codec=RAW, version=1) for b in blocks]
    times: dict[str, list[float]] = {"put_many_flatfs": [], "append_one_file": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-store-", dir=where) as tmp:
            store = BlockStore(Path(tmp) / "s")
            cpu = time.process_time()
            for i in range(0, len(blocks), 8):
                store.put_many(
                    [(c, (b,)) for c, b in zip(cids[i : i + 8], blocks[i : i + 8], strict=True)]
                )
            times["put_many_flatfs"].append(time.process_time() - cpu)
            cpu = time.process_time()
            fd = os.open(Path(tmp) / "pack", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                for i in range(0, len(blocks), 8):
                    os.writev(fd, blocks[i : i + 8])
            finally:
                os.close(fd)
            times["append_one_file"].append(time.process_time() - cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": size,
        "runs": runs,
        "cpu_s": med,
        "flatfs_vs_one_file": med["append_one_file"] / med["put_many_flatfs"],
        "all_runs_cpu_s": times,
    }


def _send(port: int, size: int) -> None:
    data = os.urandom(MIB)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for _ in range(size // MIB):
            conn.sendall(data)


def _receive(mode: str, size: int) -> float:
    """CPU seconds this process spends receiving ``size`` bytes (``anyio`` or ``recv_into``)."""
    if mode == "recv_into":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            sender = subprocess.Popen([sys.executable, __file__, "--send", str(port), str(size)])
            conn, _ = listener.accept()
            with conn:
                cpu = time.process_time()
                buf = memoryview(bytearray(4 * MIB))
                got = 0
                while got < size and (n := conn.recv_into(buf)):
                    got += n
                used = time.process_time() - cpu
            sender.wait(timeout=60)
        return used

    import anyio
    import anyio.abc

    result: list[float] = []

    async def main() -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_address)[1]
        # started once, before anything is timed
        sender = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, __file__, "--send", str(port), str(size)]
        )
        try:
            async with listener:
                stream = await listener.listeners[0].accept()
                cpu = time.process_time()
                got = 0
                while got < size:
                    got += len(await stream.receive(4 * MIB))
                result.append(time.process_time() - cpu)
                await stream.aclose()
        finally:
            sender.wait(timeout=60)

    anyio.run(main)
    return result[0]


def receive_costs(size: int, runs: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"anyio_receive": [], "recv_into": []}
    for _ in range(runs):
        for mode, key in (("anyio", "anyio_receive"), ("recv_into", "recv_into")):
            out = subprocess.run(
                [sys.executable, __file__, "--receive", mode, str(size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            times[key].append(float(out.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": size,
        "runs": runs,
        "receiver_cpu_s": med,
        "anyio_vs_recv_into": med["recv_into"] / med["anyio_receive"],
        "all_runs_cpu_s": times,
    }


if __name__ == "__main__":
    if sys.argv[1] == "--send":
        _send(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "--receive":
        print(_receive(sys.argv[2], int(sys.argv[3])))
    else:
        mib = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--mib" else 256
        where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        report = {
            "store": store_costs(where, mib * MIB, 3),
            "receive": receive_costs(mib * MIB, 3),
        }
        print(json.dumps(report, indent=2))
