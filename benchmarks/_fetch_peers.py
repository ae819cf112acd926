"""Processes for the peer-fetch part of ``bench_cid.py``: block exchange between
``bacalhau`` nodes in separate processes (gossip over TCP on 127.0.0.1) and, as the
reference, a raw TCP copy of the same bytes between two processes.

Each helper starts fresh processes, so every side pays its own interpreter and
nothing is shared through memory. Modes of this file run as a script:

    serve PATH DIR                   add PATH to a node's store, print its address, serve
    fetch DIR MODE CID ID@PORT...    fetch (MODE fetch) or fetch + write out (MODE get)
    rawserve PATH                    send PATH to the first client, 1 MiB at a time
    rawrecv PORT OUT [verify]        receive into memory (OUT "-") or a file; with
                                     ``verify``, in 256 KiB blocks, each hashed (sha256)
                                     before it is kept: the least a verifying fetch does
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
BLOCK = 256 * 1024
"""A DAG's leaf size (the default chunker's): the unit a verifying receiver hashes."""


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def providers(path: Path, workdir: Path, n: int) -> Iterator[list[dict[str, Any]]]:
    """``n`` provider processes, each holding ``path`` (added to its own store)."""
    procs = [_spawn("serve", str(path), str(workdir / f"provider{i}")) for i in range(n)]
    try:
        infos = []
        for proc in procs:
            assert proc.stdout is not None
            infos.append(json.loads(proc.stdout.readline()))
        yield infos
    finally:
        for proc in procs:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fetch(infos: list[dict[str, Any]], workdir: Path, mode: str) -> dict[str, Any]:
    """Fetch the DAG the providers hold into a fresh node in a new process."""
    peers = [f"{i['id']}@{i['port']}" for i in infos]
    out = subprocess.run(
        [sys.executable, __file__, "fetch", str(workdir), mode, infos[0]["cid"], *peers],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def raw_copy(path: Path, out: Path | None, *, verify: bool = False) -> tuple[float, float]:
    """Seconds to send ``path`` over loopback TCP from one process to another, which
    keeps it in memory (``out`` None) or writes it to ``out``; and the CPU seconds
    the receiving process spent. With ``verify`` the receiver takes the bytes in
    blocks of a DAG's leaf size and hashes each one (hashlib sha256) before keeping
    it: a verified copy with no framing, protocol or store, the floor under any fetch
    that checks every block it receives."""
    server = _spawn("rawserve", str(path))
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        result = subprocess.run(
            [sys.executable, __file__, "rawrecv", port, str(out) if out else "-"]
            + (["verify"] if verify else []),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        server.wait(timeout=60)
    if out is not None:
        out.unlink()
    seconds, cpu = result.split()
    return float(seconds), float(cpu)


# --- the processes ------------------------------------------------------------------------


def _serve(path: Path, workdir: Path) -> None:
    import anyio

    from bacalhau.identity import Identity
    from bacalhau.node.node import Node
    from bacalhau.storage.ipfs import add_path
    from bacalhau.transport.gossip import GossipTransport

    async def main() -> None:
        ident = Identity.generate()
        transport = GossipTransport(ident, host="127.0.0.1", port=0)
        async with Node(
            transport=transport, identity=ident, data_dir=workdir, compute=None, durable=False
        ) as node:
            cid = await add_path(node.blockstore, path, pin=True)
            info = {"port": transport.address[1], "cid": cid, "id": node.node_id}
            print(json.dumps(info), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin

    anyio.run(main)


def _fetch(workdir: Path, mode: str, cid: str, peers: list[str]) -> None:
    import anyio

    from bacalhau.identity import Identity
    from bacalhau.node.node import Node
    from bacalhau.transport.gossip import GossipTransport

    ids = [p.split("@")[0] for p in peers]
    addresses = [f"127.0.0.1:{p.split('@')[1]}" for p in peers]
    result: dict[str, Any] = {}

    async def main() -> None:
        ident = Identity.generate()
        transport = GossipTransport(ident, host="127.0.0.1", port=0, peers=addresses)
        async with Node(
            transport=transport, identity=ident, data_dir=workdir, compute=None, durable=False
        ) as node:
            for _ in range(600):  # until connected to every provider (30 s at most)
                if set(ids) <= node.peers():
                    break
                await anyio.sleep(0.05)
            else:
                raise SystemExit("could not connect to every provider")
            start = time.perf_counter()
            cpu = time.process_time()
            if mode == "fetch":
                result["blocks"] = await node.blocks.fetch_dag(cid)
            else:
                await node.blocks.export(cid, workdir / "out.bin")
            result["seconds"] = time.perf_counter() - start
            result["cpu_s"] = time.process_time() - cpu
            result["stats"] = dict(node.blocks.stats)

    anyio.run(main)
    result["max_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result), flush=True)


def _rawserve(path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        with conn, open(path, "rb") as fh:
            while chunk := fh.read(MIB):
                conn.sendall(chunk)


def _rawrecv(port: int, out: str, verify: bool) -> None:
    buf = bytearray(BLOCK if verify else MIB)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.perf_counter()
        cpu = time.process_time()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if out != "-" else -1
        try:
            if verify:
                while n := conn.recv_into(view, BLOCK, socket.MSG_WAITALL):
                    hashlib.sha256(view[:n]).digest()
                    if fd >= 0:
                        os.write(fd, view[:n])
            while n := conn.recv_into(view):
                if fd >= 0:
                    os.write(fd, view[:n])
        finally:
            if fd >= 0:
                os.close(fd)
        print(time.perf_counter() - start, time.process_time() - cpu, flush=True)


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "serve":
        _serve(Path(rest[0]), Path(rest[1]))
    elif mode == "fetch":
        _fetch(Path(rest[0]), rest[1], rest[2], rest[3:])
    elif mode == "rawserve":
        _rawserve(Path(rest[0]))
    elif mode == "rawrecv":
        _rawrecv(int(rest[0]), rest[1], rest[2:] == ["verify"])
