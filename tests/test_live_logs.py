"""Live logs and the event stream over the API, from a job running on another node.

The jobs print a first line, then wait for a file the test creates in their output
folder, then print more: the tests see the first line while the job is still waiting
(synchronised on the line arriving, never on time).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from bacalhau.api.client import Client
from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.cli.watch import follow_logs
from bacalhau.convert import from_json_data
from bacalhau.identity import Identity
from bacalhau.live import EventHub, LogChunkLive, LogRecord
from bacalhau.live.logs import LINE_OVERHEAD
from bacalhau.models import JobSpec, JobState, NodeInfo, OutputSpec, Resources
from bacalhau.network import Network
from bacalhau.node.node import Node

pytestmark = pytest.mark.anyio

GATE_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "first line\\n")
  (data (i32.const 120) "second line\\n")
  (data (i32.const 140) "to stderr\\n")
  (data (i32.const 160) "go")
  (func $say (param $fd i32) (param $at i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; print, wait until /outputs/go exists (fd 3 is /outputs), print again
  (func (export "_start")
    (call $say (i32.const 1) (i32.const 100) (i32.const 11))
    (loop $wait
      (br_if $wait (call $path_open (i32.const 3) (i32.const 0) (i32.const 160) (i32.const 2)
                      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64))))
    (call $say (i32.const 2) (i32.const 140) (i32.const 10))
    (call $say (i32.const 1) (i32.const 120) (i32.const 12))))
"""

OUTPUTS = [OutputSpec("outputs", "/outputs")]


def lines_wat(n: int, width: int = 12) -> str:
    """A module printing ``n`` lines of ``width`` characters (one write per line)."""
    text = "x" * (width - 1) + "\\n"
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{text}")
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {width}))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))
"""


def numbered_wat(n: int) -> str:
    """A module printing ``line 0000000`` to ``line n-1`` (one write each)."""
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "line 0000000\\n")
  (func (export "_start") (local $i i32) (local $j i32) (local $v i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 13))
    (loop $l
      (local.set $v (local.get $i))
      (local.set $j (i32.const 75))
      (loop $d
        (i32.store8 (local.get $j)
          (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
        (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
        (local.set $j (i32.sub (local.get $j) (i32.const 1)))
        (br_if $d (i32.ge_u (local.get $j) (i32.const 69))))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))
"""


class Stack:
    """Node 0 (requester only, with the API) and node 1 (compute only): every log line
    crosses the transport."""

    def __init__(self, net: Network, address: ApiAddress) -> None:
        self.net = net
        self.address = address
        self.requester: Node = net.nodes[0]
        self.compute: Node = net.nodes[1]

    def gate(self, job_id: str) -> Path:
        return self.compute.runner.folder(job_id) / "results" / "outputs" / "go"


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    options: list[dict[str, Any]] = [{"compute": None}, {"requester": None}]
    async with (
        Network.in_memory(2, seed=3, per_node_options=options) as net,
        anyio.create_task_group() as tg,
    ):
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        yield Stack(net, address)
        tg.cancel_scope.cancel()


async def records(http: httpx.AsyncClient, path: str, **params: Any) -> AsyncIterator[LogRecord]:
    """The raw NDJSON stream, one chunk per line, as records."""
    async with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.strip():
                for record in from_json_data(json.loads(line), LogChunkLive).records():
                    yield record


async def test_wasm_lines_arrive_while_the_job_runs_and_stay_for_late_followers(
    stack: Stack,
) -> None:
    handle = await stack.requester.submit(JobSpec.wasm(GATE_WAT, outputs=OUTPUTS, timeout=60))
    seen: list[tuple[str, str]] = []
    ended = False
    with anyio.fail_after(60):
        async with httpx.AsyncClient(base_url=stack.address.url, timeout=30) as http:
            path = f"/api/v1/jobs/{handle.job_id}/logs/stream"
            async for record in records(http, path, follow="true"):
                if record.end:
                    ended = True
                    assert record.node_id == stack.compute.node_id
                    continue
                seen.append((record.stream, record.text))
                if record.text == "first line":
                    assert seen == [("stdout", "first line")]  # nothing after it yet
                    assert not handle.result().state.terminal
                    stack.gate(handle.job_id).write_bytes(b"")
        result = await handle.wait(30)
    assert result.state is JobState.COMPLETED, result.reason
    assert ended
    assert seen == [("stdout", "first line"), ("stderr", "to stderr"), ("stdout", "second line")]

    async with Client(str(stack.address)) as client:  # a late reader, with --tail
        late = [r async for r in client.log_stream(handle.job_id, follow=False)]
        assert [r.text for r in late if not r.end] == ["first line", "to stderr", "second line"]
        last = [r async for r in client.log_stream(handle.job_id, follow=False, tail=1)]
        assert [r.text for r in last if not r.end] == ["second line"]
        none = [r async for r in client.log_stream(handle.job_id, execution="zzz")]
        assert none == []


async def test_a_follower_that_never_reads_does_not_stall_the_job(stack: Stack) -> None:
    # 20,000 lines of 1,000 characters: 20 MB of NDJSON, far beyond the socket buffers
    # of loopback (a few MB) and the node's 1 MiB buffer. The follower asks, then reads
    # nothing until the job has ended.
    spec = JobSpec.wasm(lines_wat(20_000, 1000), publisher="noop", timeout=120)
    handle = await stack.requester.submit(spec)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A fixed receive buffer (no autotuning): whatever the machine's TCP settings, far
    # less than the 20 MB the job prints is in flight.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.connect((stack.address.host, stack.address.port))
    try:
        sock.sendall(
            f"GET /api/v1/jobs/{handle.job_id}/logs/stream?follow=true HTTP/1.1\r\n"
            f"Host: {stack.address}\r\n\r\n".encode()
        )
        result = await handle.wait(120)
        assert result.state is JobState.COMPLETED, result.reason
        # Now read it all: the follower missed lines (they were dropped for it, the job
        # never waited), was told so, and still got the end of the output.
        sock.setblocking(False)
        data = bytearray()
        with anyio.fail_after(60):
            while b'"end":true' not in data[-4096:]:
                await anyio.wait_readable(sock)
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed the stream early"
                data += chunk
    finally:
        sock.close()
    text = data.decode("utf-8", "replace")
    assert re.search(r'"skipped":[1-9]', text)
    assert '[19999,"stdout",' in text


async def test_the_event_stream_shows_a_job_and_a_node_joining(stack: Stack) -> None:
    kinds: list[tuple[str, str | None]] = []
    with anyio.fail_after(60):
        async with Client(str(stack.address)) as client:
            handle = await stack.requester.submit(JobSpec.noop(publisher="noop"))
            last = -1
            async for event in client.node_events(follow=True):
                last = event.seq
                if event.job_id == handle.job_id:
                    kinds.append((event.kind, event.state))
                    if event.state == "completed":
                        break
            assert kinds[0] == ("created", "bidding")
            assert {"bid", "bid_accepted"} <= {k for k, _ in kinds}

            newcomer = await stack.net.add_node()
            async for event in client.node_events(follow=True, after=last):  # no gap
                if event.kind == "NodeJoined" and event.node_id == newcomer.node_id:
                    break
            network = await client.network()
            assert {i.node_id for i in network} >= {
                stack.requester.node_id,
                stack.compute.node_id,
            }


async def _until_known(node: Node, node_id: str) -> None:
    """Until ``node``'s table has ``node_id``'s announcement (announcements are sent as
    nodes start; there is no event to await, so look, boundedly)."""
    for _ in range(1000):
        if node_id in {i.node_id for i in node.known_nodes()}:
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"{node_id} never announced itself to {node.node_id}")


async def test_the_network_view_is_the_requesters_node_table(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    requester, compute = stack.requester, stack.compute
    await _until_known(requester, compute.node_id)
    # A node heard only through its announcement (no transport peer of that id): the
    # view shows it, with what it announced, because it reads the node table.
    far = NodeInfo(
        node_id=Identity.from_seed(b"\x07" * 32).node_id,
        executors=("wasm",),
        verifiers=("noop",),
        publishers=("noop",),
        storage=("inline",),
        capacity=Resources(cpu=8, memory=2**34),
        running=3,
        queued=2,
        free_slots=1,
        max_executions=4,
        labels={"zone": "far"},
        seq=1,
    )
    assert far.node_id not in requester.peers()
    requester.requester.nodes.update(far, requester.clock.now())

    asked: list[str] = []
    real_request = requester.request

    async def counted(peer: str, protocol: str, payload: bytes, *, timeout: float = 10.0) -> bytes:
        asked.append(protocol)
        return await real_request(peer, protocol, payload, timeout=timeout)

    monkeypatch.setattr(requester, "request", counted)
    async with Client(str(stack.address)) as client:
        network = await client.network()
    assert asked == []  # no peer was asked anything
    ids = [i.node_id for i in network]
    assert ids[0] == requester.node_id  # this node first
    assert set(ids[1:]) == {compute.node_id, far.node_id}
    assert ids[1:] == sorted(ids[1:])
    seen = {i.node_id: i for i in network}
    assert seen[far.node_id].labels == {"zone": "far"}
    assert (seen[far.node_id].running, seen[far.node_id].queued) == (3, 2)
    assert seen[far.node_id].capacity == Resources(cpu=8, memory=2**34)
    assert seen[compute.node_id].executors == compute.announcement().executors
    assert seen[compute.node_id].compute
    me = seen[requester.node_id]
    assert not me.compute and compute.node_id in me.peers  # its own, with its peers

    # It leaves the view (and the event stream says so) once the table forgets it.
    requester.requester.nodes.forget(far.node_id)
    assert far.node_id not in {i.node_id for i in requester.watch.network()}
    assert far.node_id not in requester.watch.members()


async def test_cli_logs_follow_shows_lines_before_the_job_ends(stack: Stack) -> None:
    handle = await stack.requester.submit(JobSpec.wasm(GATE_WAT, outputs=OUTPUTS, timeout=60))
    command = [sys.executable, "-m", "bacalhau", "logs", "-f", handle.job_id[:12]]
    command += ["--api", str(stack.address)]
    with anyio.fail_after(60):
        async with await anyio.open_process(command) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            out = b""
            while b"first line\n" not in out:
                chunk = await proc.stdout.receive()
                out += chunk
            assert b"second line" not in out
            assert not handle.result().state.terminal
            stack.gate(handle.job_id).write_bytes(b"")
            async for chunk in proc.stdout:
                out += chunk
            err = b"".join([c async for c in proc.stderr])
            assert await proc.wait() == 0, err
    assert out == b"first line\nsecond line\n"
    assert b"to stderr" in err


async def test_a_late_cli_follower_gets_the_kept_tail_in_order_and_what_it_missed(
    stack: Stack,
) -> None:
    stack.compute.runner.logs.max_bytes = 100 * (13 + LINE_OVERHEAD)  # keeps about 100 lines
    handle = await stack.requester.submit(JobSpec.wasm(numbered_wat(1000), publisher="noop"))
    assert (await handle.wait(60)).state is JobState.COMPLETED
    out, err = io.StringIO(), io.StringIO()
    with anyio.fail_after(60), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        async with Client(str(stack.address)) as client:
            missing = await follow_logs(client, handle.job_id)
    assert missing == set()
    lines = out.getvalue().splitlines(keepends=True)
    first = 1000 - len(lines)
    assert 50 < len(lines) < 150
    assert lines == [f"line {i:07d}\n" for i in range(first, 1000)]
    short = stack.compute.node_id[-8:]
    assert err.getvalue() == (
        f"[{first} line(s) of {short} not kept: written before this reader caught up]\n"
    )
    # The same from the frames themselves, and a wrong format is refused naming it.
    async with Client(str(stack.address)) as client:
        frames = [f async for f in client.log_frames(handle.job_id, follow=False, tail=3)]
        assert [x for f in frames for x in f.lines()] == [f"line {i:07d}" for i in (997, 998, 999)]
        assert frames[-1].end
    async with httpx.AsyncClient(base_url=stack.address.url) as http:
        path = f"/api/v1/jobs/{handle.job_id}/logs/stream"
        response = await http.get(path, params={"format": "columns"})
        assert response.status_code == 400
        assert "format must be ndjson or batch" in response.text


async def test_the_dashboard_is_behind_the_token_and_the_cookie_only_reads() -> None:
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(
            functools.partial(serve_api, net.nodes[0], port=0, token="s3cret-token")
        )
        async with httpx.AsyncClient(base_url=address.url, timeout=30) as http:
            assert (await http.get("/")).status_code == 401
            assert (await http.get("/", params={"token": "wrong"})).status_code == 401
            login = await http.get("/", params={"token": "s3cret-token"})
            assert login.status_code == 303
            assert login.headers["location"] == "/"
            cookie = login.headers["set-cookie"].lower()
            assert "bacalhau_token=s3cret-token" in cookie
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            jar = {"cookie": "bacalhau_token=s3cret-token"}
            page = await http.get("/", headers=jar)
            assert page.status_code == 200
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert (await http.get("/dashboard/app.js", headers=jar)).status_code == 200
            events = await http.get("/api/v1/events", params={"tail": 0}, headers=jar)
            assert events.status_code == 200
            submit = await http.post(
                "/api/v1/jobs", json={"spec": {"engine": {"type": "noop"}}}, headers=jar
            )
            assert submit.status_code == 401  # the cookie reads, never writes
            assert (await http.get("/dashboard/nope.js", headers=jar)).status_code == 404
        tg.cancel_scope.cancel()


async def test_a_late_event_reader_is_told_what_the_node_no_longer_keeps(stack: Stack) -> None:
    hub = stack.requester.watch.events = EventHub(keep=3)  # nothing else publishes here
    first = hub.next_seq
    for i in range(8):
        hub.publish("NodeJoined", node_id=f"n{i}", detail="joined")
    skipped: list[int] = []
    async with Client(str(stack.address)) as client:
        events = [
            e
            async for e in client.node_events(
                follow=False, after=first - 1, on_skipped=skipped.append
            )
        ]
    assert [e.node_id for e in events] == ["n5", "n6", "n7"]
    assert skipped == [5]
