"""Connection exhaustion, bounded in count and time, on loopback only.

* 20,000 idle connections to a node's API (a node in its own process, the
  connections from two helper processes: one process may hold at most 20,000
  descriptors here): the node keeps at most ``max_connections`` of them, still
  answers a normal client on a fresh connection (how fast is a benchmark's question,
  not this test's), its RSS stays under ``API_RSS_BOUND`` and its log under
  ``LOG_BOUND``.
* 500 idle connections to the gossip port: a real peer still connects and its
  broadcast arrives; pending handshakes stay within their bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from bacalhau.identity import Identity
from bacalhau.testing.conformance import RecordingHandler
from bacalhau.transport.gossip import GossipOptions, GossipTransport

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

API_RSS_BOUND = 256 * 1024 * 1024
"""The API node's resident memory after 20k connection attempts (documented in security.md)."""
LOG_BOUND = 64 * 1024
MAX_CONNECTIONS = 512

SERVER = textwrap.dedent(
    """
    import sys, anyio
    from functools import partial
    from bacalhau import Node
    from bacalhau.api.server import ApiLimits, serve_api
    from bacalhau.identity import Identity
    from bacalhau.transport.gossip import GossipTransport

    async def main() -> None:
        ident = Identity.generate()
        limits = ApiLimits(max_connections=MAX_CONNECTIONS, header_timeout=30.0)
        async with Node(transport=GossipTransport(ident), identity=ident) as node:
            async with anyio.create_task_group() as tg:
                address = await tg.start(partial(serve_api, node, port=0, limits=limits))
                print(address.port, flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)
                tg.cancel_scope.cancel()

    anyio.run(main)
    """
).replace("MAX_CONNECTIONS", str(MAX_CONNECTIONS))

OPENER = textwrap.dedent(
    """
    import resource, selectors, socket, sys
    port, count = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks, connected = [], 0
    sel = selectors.DefaultSelector()
    while len(socks) < count:  # in batches, so the listen backlog never overflows
        batch = []
        for _ in range(min(200, count - len(socks))):
            s = socket.socket()
            s.setblocking(False)
            # spread over source addresses: connect() slows down as one address's
            # ephemeral ports fill up (IP_BIND_ADDRESS_NO_PORT = 24)
            s.setsockopt(socket.IPPROTO_IP, 24, 1)
            n = len(socks) + len(batch)
            s.bind((f"127.0.{n % 200 // 100 + 1}.{n % 100 + 2}", 0))
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE)
            batch.append(s)
        socks += batch
        pending = len(batch)
        while pending:
            ready = sel.select(timeout=60)
            if not ready:
                break
            for key, _ in ready:
                sel.unregister(key.fileobj)
                pending -= 1
                connected += 1
    print(connected, flush=True)
    sys.stdin.read()
    """
)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_twenty_thousand_idle_api_connections(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(  # noqa: ASYNC220 - started once; its pipes are read on threads
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    openers: list[subprocess.Popen[bytes]] = []
    try:
        assert server.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(server.stdout.readline)
        port = int(line)
        base = rss(server.pid)
        for _ in range(2):
            openers.append(
                subprocess.Popen(  # noqa: ASYNC220 - as above
                    [sys.executable, "-c", OPENER, str(port), "10000"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        connected = 0
        for opener in openers:
            assert opener.stdout is not None
            with anyio.fail_after(120):
                connected += int(await anyio.to_thread.run_sync(opener.stdout.readline))
        assert connected == 20_000
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with anyio.fail_after(90):  # the backlog of refused connections drains first
                while True:
                    try:
                        if (await client.get("/api/v1/health", timeout=5)).status_code:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # a fresh connection, a normal request (the bound only catches a hang: a
            # loaded machine can stall either process for seconds)
            with anyio.fail_after(30):
                response = await client.get("/api/v1/health", timeout=30)
        assert response.status_code == 200
        assert open_fds(server.pid) <= MAX_CONNECTIONS + 64
        grown = rss(server.pid) - base
        assert rss(server.pid) < API_RSS_BOUND, (base, grown)
    finally:
        for proc in [*openers, server]:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in [*openers, server]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert log.stat().st_size < LOG_BOUND, log.read_text()[-2000:]


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.02)


async def test_five_hundred_idle_gossip_connections() -> None:
    opts = GossipOptions(heartbeat=0.1, backoff_min=0.05, backoff_max=0.2)
    victim = GossipTransport(Identity.generate(), options=opts)
    heard = RecordingHandler(victim.node_id)
    idle: list[anyio.abc.SocketStream] = []
    async with anyio.create_task_group() as tg:
        await tg.start(victim.run, heard)
        try:
            for _ in range(500):
                idle.append(await anyio.connect_tcp(*victim.address))
            await wait_until(lambda: victim._slots.evicted >= 500 - opts.max_handshakes_per_address)
            assert len(victim._slots) <= opts.max_handshakes_per_address
            peer = GossipTransport(Identity.generate(), options=opts, peers=[victim.address])
            peer_heard = RecordingHandler(peer.node_id)
            await tg.start(peer.run, peer_heard)
            await wait_until(lambda: peer.node_id in victim.peers())
            await peer.broadcast(b"still gossiping")
            await heard.wait_for(lambda: b"still gossiping" in heard.heard)
        finally:
            for stream in idle:
                await stream.aclose()
        tg.cancel_scope.cancel()
