"""Gossip across three network namespaces: static peers, a partition, a heal.

Topology (made by the test, removed at the end)::

    ns1 (10.77.1.1) ==veth== ns2 (10.77.1.2 | 10.77.3.2, forwards) ==veth== ns3 (10.77.3.3)

One gossip node runs in each namespace (a child process of this file, driven
over stdin/stdout). Nodes 1 and 3 know only node 2's address; peer exchange
connects 1 and 3 directly, through ns2's routing. Taking the ns2-ns3 link down
cuts node 3 off; bringing it up heals the network and gossip converges again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.netns, pytest.mark.slow]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def can_make_namespaces() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = f"bgsprobe{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns add failed: {getattr(exc, 'stderr', '') or exc}"
    sh("ip", "netns", "del", probe)
    return None


class Namespaces:
    """ns1 - ns2 - ns3 joined by two veth pairs, ns2 routing between them."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = [f"bgs{tag}a", f"bgs{tag}b", f"bgs{tag}c"]
        self.link23 = (f"bg{tag}b3", f"bg{tag}c3")

    def up(self) -> None:
        n1, n2, n3 = self.ns
        (a1, b1), (b3, c3) = (f"bg{self.ns[0][-6:]}1", f"bg{self.ns[1][-6:]}1"), self.link23
        for ns in self.ns:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", a1, "netns", n1, "type", "veth", "peer", b1, "netns", n2)
        sh("ip", "link", "add", b3, "netns", n2, "type", "veth", "peer", c3, "netns", n3)
        for ns, dev, addr in (
            (n1, a1, "10.77.1.1/24"),
            (n2, b1, "10.77.1.2/24"),
            (n2, b3, "10.77.3.2/24"),
            (n3, c3, "10.77.3.3/24"),
        ):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "netns", "exec", n2, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh("ip", "-n", n1, "route", "add", "default", "via", "10.77.1.2")
        sh("ip", "-n", n3, "route", "add", "default", "via", "10.77.3.2")

    def set_link23(self, state: str) -> None:
        """Take ns2's end of the ns2-ns3 link down (or up): node 3 is cut off."""
        sh("ip", "-n", self.ns[1], "link", "set", self.link23[0], state)
        if state == "up":  # as a person would after fixing a cable: make sure routes are back
            sh("ip", "-n", self.ns[2], "route", "replace", "default", "via", "10.77.3.2")

    def down(self) -> None:
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class Worker:
    """A gossip node in a namespace: stdin takes commands, stdout reports as JSON lines."""

    def __init__(self, ns: str, host: str, peers: list[str]) -> None:
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__)), "--worker", host]
        self.proc = subprocess.Popen(
            [*cmd, *peers],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.heard: list[str] = []
        self.peers: list[str] = []
        self.node_id = ""

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await anyio.to_thread.run_sync(
            self.proc.stdout.readline, abandon_on_cancel=True
        ):
            msg = json.loads(line)
            if "ready" in msg:
                self.node_id = msg["ready"]
            if "heard" in msg:
                self.heard.append(msg["heard"])
            if "peers" in msg:
                self.peers = msg["peers"]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = can_make_namespaces()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    nets = Namespaces()
    try:
        nets.up()
        yield nets
    finally:
        nets.down()


async def until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.05)


async def test_partition_and_heal_across_namespaces(namespaces: Namespaces) -> None:
    ns1, ns2, ns3 = namespaces.ns
    port = 7946
    workers = [
        Worker(ns2, "0.0.0.0", []),  # node 2 listens on both links
        Worker(ns1, "10.77.1.1", [f"10.77.1.2:{port}"]),
        Worker(ns3, "10.77.3.3", [f"10.77.3.2:{port}"]),
    ]
    b, a, c = workers
    try:
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.read)

            def poll_peers() -> None:
                for w in workers:
                    w.send("peers")

            async def connected(want: dict[Worker, int]) -> None:
                with anyio.fail_after(30):
                    while any(len(w.peers) != n for w, n in want.items()):
                        poll_peers()
                        await anyio.sleep(0.2)

            await until(lambda: all(w.node_id for w in workers))
            await connected({a: 2, b: 2, c: 2})  # 1 and 3 met through peer exchange
            assert c.node_id in a.peers, "node 1 reaches node 3 directly, routed by ns2"
            a.send("broadcast before")
            await until(lambda: "before" in b.heard and "before" in c.heard)

            namespaces.set_link23("down")
            await connected({a: 1, b: 1, c: 0})
            a.send("broadcast during")
            await until(lambda: "during" in b.heard)
            await anyio.sleep(1.0)
            assert "during" not in c.heard, "the partition holds"

            namespaces.set_link23("up")
            await connected({a: 2, b: 2, c: 2})
            for w, text in ((a, "after-1"), (c, "after-3")):
                w.send(f"broadcast {text}")
            await until(lambda: {"after-1", "after-3"} <= set(b.heard))
            await until(lambda: "after-1" in c.heard and "after-3" in a.heard)
            tg.cancel_scope.cancel()
    finally:
        for w in workers:
            w.stop()


# --- the worker process ---------------------------------------------------------------------


async def _worker(host: str, peers: list[str]) -> None:
    from bacalhau.identity import Identity
    from bacalhau.testing.conformance import RecordingHandler
    from bacalhau.transport.gossip import GossipOptions, GossipTransport

    options = GossipOptions(
        heartbeat=0.2, idle_timeout=1.5, backoff_min=0.1, backoff_max=0.5, max_dial_failures=50
    )
    t = GossipTransport(Identity.generate(), host=host, port=7946, peers=peers, options=options)

    def say(**msg: object) -> None:
        print(json.dumps(msg), flush=True)

    class Handler(RecordingHandler):
        async def handle_broadcast(self, frame: bytes) -> bool:
            say(heard=frame.decode())
            return True

    async with anyio.create_task_group() as tg:
        await tg.start(t.run, Handler(t.node_id))
        say(ready=t.node_id)
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            command, _, arg = line.strip().partition(" ")
            if command == "broadcast":
                await t.broadcast(arg.encode())
            elif command == "peers":
                say(peers=sorted(t.peers()))
        tg.cancel_scope.cancel()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    anyio.run(_worker, sys.argv[2], sys.argv[3:])
