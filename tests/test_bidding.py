"""Bidding and bid acceptance: every strategy, hooks that misbehave, queueing, capacity."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bacalhau import ComputeConfig, Deal, JobSpec, JobState, Network, RequesterConfig, Resources
from bacalhau.compute.bidding import (
    BidRequest,
    BidResponse,
    CapacityStrategy,
    SupportStrategy,
    decide,
)
from bacalhau.compute.capacity import Capacity
from bacalhau.compute.hooks import ExecHook, HttpHook, parse_hook_reply
from bacalhau.executor.noop import NoopExecutor
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.selectors import parse_selectors
from bacalhau.storage.inline import InlineStorage
from bacalhau.verifier.noop import NoopVerifier

pytestmark = pytest.mark.anyio

REQ = BidRequest(job_id="j-1", spec=JobSpec.noop(), requester_id="requester", node_id="node")


# --- the built-in strategies --------------------------------------------------------------------


async def test_support_strategy_names_what_is_missing() -> None:
    s = SupportStrategy(
        executors={"noop": NoopExecutor()},
        storage={"inline": InlineStorage()},
        verifiers={"noop": NoopVerifier()},
        publishers={"noop": NoopPublisher()},
    )
    assert (await s.decide(REQ)).bid
    cases = {
        "no 'wasm' executor": JobSpec.wasm(b"\0asm\1\0\0\0", publisher="noop"),
        "no 'deterministic' verifier": JobSpec.noop(verifier="deterministic"),
        "no 'ipfs' publisher": JobSpec.noop(publisher="ipfs"),
        "invalid noop job": JobSpec.noop(exit_code=300),
    }
    for words, spec in cases.items():
        answer = await s.decide(BidRequest(job_id="j", spec=spec, requester_id="r", node_id="n"))
        assert not answer.bid and words in answer.reason, answer


async def test_capacity_strategy() -> None:
    cap = Capacity(Resources(cpu=2, memory=2**30), max_executions=1, queue_size=0)
    s = CapacityStrategy(cap)
    big = JobSpec.noop(resources=Resources(cpu=4))
    answer = await s.decide(BidRequest(job_id="j", spec=big, requester_id="r", node_id="n"))
    assert not answer.bid and "needs 4 CPUs, node has 2" in answer.reason
    await cap.acquire(Resources())
    answer = await s.decide(REQ)
    assert not answer.bid and "queue is full" in answer.reason


async def test_capacity_strategy_declines_a_job_its_labels_do_not_match() -> None:
    cap = Capacity(Resources(cpu=2, memory=2**30), max_executions=1, queue_size=1)
    s = CapacityStrategy(cap, labels={"zone": "a", "gpu": "no"})

    async def answer(selectors: str) -> BidResponse:
        spec = JobSpec.noop(selectors=parse_selectors(selectors))
        return await s.decide(BidRequest(job_id="j", spec=spec, requester_id="r", node_id="n"))

    assert (await answer("zone=a")).bid
    assert (await answer("zone in (a, b), gpu!=yes")).bid
    no = await answer("zone=b")
    assert not no.bid and not no.busy and no.reason == "labels do not match (zone=b)"
    assert not (await answer("region")).bid  # exists


async def test_capacity_is_exact_under_concurrency() -> None:
    cap = Capacity(Resources(cpu=1, memory=2**30), max_executions=10, queue_size=100)
    want = Resources(cpu=0.3, memory=2**28)
    live = peak = 0

    async def job() -> None:
        nonlocal live, peak
        await cap.acquire(want)
        live += 1
        peak = max(peak, live)
        await anyio.sleep(0.01)
        live -= 1
        cap.release(want)

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(job)
    assert peak == 3  # 3 x 0.3 CPU fit in 1 CPU; 4 would not
    assert (cap.running, cap.memory, cap.queued) == (0, 0, 0)
    assert cap.cpu == pytest.approx(0)


# --- hooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "bid", "words"),
    [
        (b'{"shouldBid": true, "reason": "fine"}', True, "fine"),
        (b'{"shouldBid": false, "reason": "not today"}', False, "not today"),
        (b"yes please", False, "garbage"),
        (b'{"shouldBid": "yes"}', False, "lacks a boolean shouldBid"),
        (b"[]", False, "lacks a boolean"),
        (b"x" * 100_000, False, "too large"),
    ],
)
def test_parse_hook_reply(raw: bytes, bid: bool, words: str) -> None:
    answer = parse_hook_reply(raw)
    assert answer.bid is bid and words in answer.reason


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


async def test_exec_hook_answers(tmp_path: Path) -> None:
    yes = script(
        tmp_path,
        "import sys, json; job = json.load(sys.stdin)\n"
        "sys.exit(0 if job['spec']['engine']['type'] == 'noop' else 1)\n",
    )
    assert (await ExecHook(command=yes, timeout=60).decide(REQ)).bid
    no = script(tmp_path, 'print(\'{"shouldBid": false, "reason": "policy"}\')\n')
    answer = await ExecHook(command=no, timeout=60).decide(REQ)
    assert not answer.bid and answer.reason == "policy"


@pytest.mark.parametrize(
    ("body", "timeout", "words"),
    [
        # A generous timeout where the hook must finish: a Python start on a loaded
        # machine can take more than a second, and then the answer would be "timed out".
        ("import sys; sys.exit(3)", 60, "exited with 3"),
        ("print('not json at all')", 60, "garbage"),
        ("import time; time.sleep(30)", 1, "timed out after 1s"),
        ("raise SystemExit('crashed')", 60, "exited with 1"),
    ],
)
async def test_exec_hook_failures_mean_no(
    tmp_path: Path, body: str, timeout: float, words: str
) -> None:
    answer = await ExecHook(command=script(tmp_path, body), timeout=timeout).decide(REQ)
    assert not answer.bid and words in answer.reason, answer


async def test_exec_hook_missing_program() -> None:
    answer = await ExecHook(command="/nonexistent/hook --flag", timeout=2).decide(REQ)
    assert not answer.bid


async def serve(app: Starlette, tg: anyio.abc.TaskGroup) -> tuple[str, object]:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    tg.start_soon(server.serve, [sock])
    while not server.started:
        await anyio.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


async def test_http_hooks_yes_no_garbage_hang_and_crash() -> None:
    seen: list[dict[str, Any]] = []

    async def decide_(request: Request) -> JSONResponse:
        job = await request.json()
        seen.append(job)
        ok = job["spec"]["engine"]["params"].get("stdout") != "refuse me"
        return JSONResponse({"shouldBid": ok, "reason": "" if ok else "refused by policy"})

    async def garbage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("<html>oops</html>")

    released = anyio.Event()

    async def hang(request: Request) -> PlainTextResponse:
        await released.wait()  # answers only after the test is done with it
        return PlainTextResponse("late")

    async def crash(request: Request) -> PlainTextResponse:
        raise RuntimeError("hook bug")

    app = Starlette(
        routes=[
            Route("/decide", decide_, methods=["POST"]),
            Route("/garbage", garbage, methods=["POST"]),
            Route("/hang", hang, methods=["POST"]),
            Route("/crash", crash, methods=["POST"]),
        ]
    )
    async with anyio.create_task_group() as tg:
        base, server = await serve(app, tg)
        # Generous timeouts where an answer must come (a loaded machine can stall this
        # process for seconds); the hanging route never answers while it is asked.
        assert (await HttpHook(url=f"{base}/decide", timeout=60).decide(REQ)).bid
        assert seen[0]["job_id"] == "j-1" and seen[0]["node_id"] == "node"
        refused = BidRequest(
            job_id="j", spec=JobSpec.noop(stdout="refuse me"), requester_id="r", node_id="n"
        )
        answer = await HttpHook(url=f"{base}/decide", timeout=60).decide(refused)
        assert not answer.bid and answer.reason == "refused by policy"
        for path, timeout, words in [
            ("garbage", 60, "garbage"),
            ("hang", 1, "ReadTimeout"),
            ("crash", 60, "HTTP 500"),
            ("missing", 60, "HTTP 404"),
        ]:
            answer = await HttpHook(url=f"{base}/{path}", timeout=timeout).decide(REQ)
            assert not answer.bid and words in answer.reason, (path, answer)
        answer = await HttpHook(url="http://127.0.0.1:9/none", timeout=60).decide(REQ)
        assert not answer.bid and "ConnectError" in answer.reason
        released.set()
        server.should_exit = True  # type: ignore[attr-defined]


async def test_decide_chain_first_no_wins() -> None:
    class Yes:
        async def decide(self, request: BidRequest):  # type: ignore[no-untyped-def]
            from bacalhau.compute.bidding import BidResponse

            return BidResponse(bid=True)

    class No(Yes):
        async def decide(self, request: BidRequest):  # type: ignore[no-untyped-def]
            from bacalhau.compute.bidding import BidResponse

            return BidResponse(bid=False, reason="second says no")

    answer = await decide([Yes(), No(), Yes()], REQ)
    assert not answer.bid and answer.reason == "second says no"


# --- on a network ------------------------------------------------------------------------------


async def test_hook_decisions_show_in_the_job_history() -> None:
    # A shell one-liner, not a Python script: the decline must reach the requester
    # before the job (1.5 s) completes, and a Python start on a loaded machine can
    # take that long.
    refuse = """echo '{"shouldBid": false, "reason": "night shift"}'; exit 1"""
    refuser_config = ComputeConfig(probe_exec=refuse, probe_timeout=60)
    async with Network.in_memory(
        3,
        seed=31,
        requester=RequesterConfig(bid_timeout=1),
        per_node_options=[{}, {"compute": refuser_config}, {}],
    ) as net:
        r = await net.nodes[0].run_job(
            JobSpec.noop(delay=1.5, deal=Deal(concurrency=2)), timeout=10
        )
        refuser = net.nodes[1].node_id
    assert r.state is JobState.COMPLETED
    declined = [e for e in r.events if e.kind == "declined"]
    assert [(e.node_id, e.detail) for e in declined] == [(refuser, "night shift")]
    assert refuser not in {e.node_id for e in r.accepted}


async def test_requester_acceptance_hook(tmp_path: Path) -> None:
    async with Network.in_memory(3, seed=32) as net:
        banned = net.nodes[2].node_id
        hook = script(
            tmp_path,
            "import sys, json\n"
            f"job = json.load(sys.stdin)\nbad = job['node_id'] == {banned!r}\n"
            "reason = 'banned' if bad else ''\n"
            "print(json.dumps({'shouldBid': not bad, 'reason': reason}))\n",
        )
        requester = await net.add_node(
            requester=RequesterConfig(acceptance_probe_exec=hook, acceptance_probe_timeout=60),
            compute=None,
        )
        r = await requester.run_job(JobSpec.noop(deal=Deal(concurrency=2, min_bids=3)), timeout=20)
    assert r.state is JobState.COMPLETED, r.reason
    assert banned not in {e.node_id for e in r.accepted}
    refused = [e for e in r.events if e.kind == "bid_rejected" and e.node_id == banned]
    assert refused and "bid refused: banned" in refused[0].detail


async def test_twenty_jobs_on_nodes_that_run_two_at_once() -> None:
    two = ComputeConfig(capacity=Resources(cpu=2, memory=2**31), max_executions=2, queue_size=20)
    async with Network.in_memory(3, seed=33, compute=two) as net:
        handles = [await net.nodes[i % 3].submit(JobSpec.noop(delay=0.1)) for i in range(20)]
        results = [await h.wait(60) for h in handles]
        peaks = [n.capacity.peak_running for n in net.nodes]
    assert all(r.ok for r in results)
    assert max(peaks) <= 2
    assert sum(peaks) > 2, "work spread over more than one node"


async def test_full_node_queues_the_job_until_it_has_room() -> None:
    tiny = ComputeConfig(max_executions=1, queue_size=0)
    async with Network.in_memory(
        1, compute=tiny, requester=RequesterConfig(bid_timeout=0.5)
    ) as net:
        node = net.nodes[0]
        # The first job holds the only slot until the second one is queued, then gives
        # it up (a first job with a short delay could end before the second one is
        # offered on a loaded machine, and the second would never queue).
        first = await node.submit(JobSpec.noop(delay=120, timeout=300))
        with anyio.fail_after(60):
            while node.capacity.running == 0:
                await anyio.sleep(0.01)
        second = await node.submit(JobSpec.noop())
        with anyio.fail_after(60):
            async for event in second.events():
                if event.kind == "queued":
                    break
        assert second.result().state is JobState.QUEUED
        assert not second.result().executions
        await first.cancel("make room")
        done = await second.wait(60)
        assert (await first.wait(60)).state is JobState.CANCELLED
    assert done.ok, done.reason
    kinds = [e.kind for e in done.events]
    assert "queued" in kinds and "execution_failed" not in kinds
    assert len(done.executions) == 1


async def test_heterogeneous_network_places_jobs_where_they_can_run() -> None:
    big = ComputeConfig(capacity=Resources(cpu=8, memory=2**34, gpu=1))
    small = ComputeConfig(capacity=Resources(cpu=1, memory=2**30))
    big_no_gpu = ComputeConfig(capacity=Resources(cpu=8, memory=2**34))
    from bacalhau.node.plugins import Plugins

    def noop_only(**_: object) -> Plugins:
        plugins = Plugins()
        for p in (NoopExecutor(), InlineStorage(), NoopVerifier(), NoopPublisher()):
            plugins.add(p)
        return plugins

    options: list[dict[str, Any]] = [
        {"compute": big},
        {"compute": small},
        {"compute": small, "plugins": noop_only()},
        {"compute": big_no_gpu, "plugins": noop_only()},
        {"compute": None},
        {"compute": small},
    ]
    async with Network.in_memory(
        6, seed=34, per_node_options=options, requester=RequesterConfig(bid_timeout=1)
    ) as net:
        ids = [n.node_id for n in net.nodes]
        gpu_jobs = [JobSpec.noop(resources=Resources(gpu=1), publisher="noop") for _ in range(5)]
        cpu_jobs = [JobSpec.noop(resources=Resources(cpu=4), publisher="noop") for _ in range(5)]
        local_jobs = [JobSpec.noop(publisher="local") for _ in range(5)]
        placed: Counter[str] = Counter()
        for spec, allowed in (
            [(s, {ids[0]}) for s in gpu_jobs]
            + [(s, {ids[0], ids[3]}) for s in cpu_jobs]
            + [(s, {ids[0], ids[1], ids[5]}) for s in local_jobs]
        ):
            r = await net.nodes[4].run_job(spec, timeout=20)
            assert r.ok, r.reason
            ran = {e.node_id for e in r.accepted}
            assert ran <= allowed, (spec.resources, spec.publisher)
            placed.update(ran)
        assert ids[4] not in placed, "a requester-only node never runs jobs"


def test_hook_payload_is_json() -> None:
    from bacalhau.compute.hooks import _payload

    assert json.loads(json.dumps(_payload(REQ)))["spec"]["engine"]["type"] == "noop"
