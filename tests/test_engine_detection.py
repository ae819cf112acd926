"""An engine is looked for when a job needs it: one that appears (or goes) after the node
started is seen by the next job once the last answer is older than ``recheck_after``."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import pytest

from bacalhau import Network
from bacalhau.compute.bidding import ENGINE_RECHECK_SECONDS, BidRequest, SupportStrategy
from bacalhau.executor.docker import DockerExecutor
from bacalhau.executor.noop import NoopExecutor
from bacalhau.executor.wasm import WasmExecutor
from bacalhau.models import JobSpec, NodeInfo
from bacalhau.node.clock import VirtualClock
from bacalhau.node.plugins import Plugins, default_plugins
from bacalhau.protocol.nodes import MIN_GAP
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.storage.inline import InlineStorage
from bacalhau.verifier.noop import NoopVerifier

pytestmark = pytest.mark.anyio


class SwitchedEngine(NoopExecutor):
    """A noop engine that can be 'installed' and 'removed' while the node runs."""

    def __init__(self) -> None:
        self.present = False
        self.asked = 0

    async def is_installed(self) -> bool:
        self.asked += 1
        return self.present


async def test_an_engine_started_after_the_node_is_seen() -> None:
    now = [100.0]
    engine = SwitchedEngine()
    support = SupportStrategy(
        executors={"noop": engine},
        storage={"inline": InlineStorage()},
        verifiers={"noop": NoopVerifier()},
        publishers={"noop": NoopPublisher()},
        recheck_after=5.0,
        clock=lambda: now[0],
    )
    request = BidRequest(job_id="j", spec=JobSpec.noop(), requester_id="requester", node_id="me")
    answer = await support.decide(request)
    assert not answer.bid
    assert "engine is not available" in answer.reason
    engine.present = True  # e.g. dockerd started after the devstack
    now[0] += 1.0
    assert not (await support.decide(request)).bid, "a recent answer is reused"
    assert engine.asked == 1
    now[0] += 5.0
    assert (await support.decide(request)).bid, "then the engine is asked again"
    engine.present = False  # and an engine that went away is noticed too
    now[0] += 5.0
    assert not (await support.decide(request)).bid
    assert engine.asked == 3


async def test_the_offered_engines_are_those_that_answered() -> None:
    """What a node lists and announces: executors whose engine answered when last asked;
    one not asked yet is not listed; a change is reported once."""
    now = [0.0]
    engine, changes = SwitchedEngine(), []
    support = SupportStrategy(
        executors={"noop-switched": engine, "wasm": WasmExecutor()},
        storage={},
        verifiers={},
        publishers={},
        clock=lambda: now[0],
        on_change=lambda: changes.append(now[0]),
    )
    assert support.offered() == ("wasm",)  # an engine that cannot be missing needs no asking
    assert support.unavailable() == ("noop-switched",)
    await support.refresh()
    assert (support.offered(), support.unavailable(), changes) == (
        ("wasm",),
        ("noop-switched",),
        [],
    )
    engine.present, now[0] = True, 5.0
    await support.refresh()
    assert support.offered() == ("noop-switched", "wasm") and support.unavailable() == ()
    assert changes == [5.0]
    await support.refresh()
    assert changes == [5.0], "no change, no report"


class FailingCheck(SwitchedEngine):
    async def is_installed(self) -> bool:
        raise RuntimeError("the plugin's check is broken")


async def test_an_engine_check_that_raises_means_not_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    support = SupportStrategy(
        executors={"noop": FailingCheck()}, storage={}, verifiers={}, publishers={}
    )
    await support.refresh()
    assert support.unavailable() == ("noop",)
    assert "the plugin's check is broken" in caplog.text


def without_docker_engine(node: Any) -> Plugins:
    plugins = default_plugins(node)
    plugins.executors["docker"] = DockerExecutor(
        node_id=node.node_id, base_url=f"unix://{node.data_dir}/docker.sock"
    )
    return plugins


async def test_a_node_lists_docker_only_while_an_engine_answers(tmp_path: Path) -> None:
    """No engine: `node info` and the announcement leave docker out (and name it
    unavailable). An engine that starts answering is listed at the node's next check
    (every ENGINE_RECHECK_SECONDS, on the node's clock) and announced."""
    clock = VirtualClock()
    async with Network.in_memory(2, clock=clock, plugins=without_docker_engine) as net:
        node, other = net.nodes
        assert "docker" not in node.info().executors
        assert node.info().unavailable == ("docker",)
        assert {"noop", "wasm"} <= set(node.info().executors)
        heard = await announced(other, node.node_id, lambda i: "docker" in i.unavailable)
        assert "docker" not in heard.executors

        with fake_docker_engine(node.data_dir / "docker.sock"):
            clock.advance(ENGINE_RECHECK_SECONDS)
            for _ in range(1000):
                if "docker" in node.info().executors:
                    break
                await anyio.sleep(0.01)
            assert node.info().unavailable == ()
            clock.advance(MIN_GAP)  # announcements of a change are this far apart at least
            heard = await announced(other, node.node_id, lambda i: "docker" in i.executors)
            assert heard.unavailable == ()


async def announced(node: Any, about: str, ok: Callable[[NodeInfo], bool]) -> NodeInfo:
    """What ``node`` knows of node ``about`` once ``ok`` holds (bounded wait)."""
    for _ in range(1000):
        for info in node.known_nodes():
            if info.node_id == about and ok(info):
                return info  # type: ignore[no-any-return]
        await anyio.sleep(0.01)
    raise AssertionError(f"{node} never heard the announcement it waited for")


@contextlib.contextmanager
def fake_docker_engine(path: Path) -> Iterator[None]:
    """A unix socket answering every request as an engine's ping does (``OK``), on a
    thread: enough for ``is_installed`` (docker SDK: connect, /version, /info, /_ping)."""
    from http.server import BaseHTTPRequestHandler
    from socketserver import ThreadingUnixStreamServer

    class Engine(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ApiVersion": "1.41", "NCPU": 2}' if "_ping" not in self.path else b"OK"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Api-Version", "1.41")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingUnixStreamServer):
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            conn, _ = self.socket.accept()
            return conn, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)

    server = Server(str(path), Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_node_info_says_which_engine_does_not_answer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bacalhau node` leaves docker out of the executors and says no engine answers."""
    from bacalhau import cli
    from bacalhau.api.server import serve_api

    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[Any] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            net = Network.in_memory(1, plugins=without_docker_engine)
            async with net, anyio.create_task_group() as tg:
                box.append(await tg.start(functools.partial(serve_api, net.nodes[0], port=0)))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            monkeypatch.setenv("BACALHAU_API", str(box[0]))
            monkeypatch.delenv("BACALHAU_API_TOKEN", raising=False)
            assert cli.main(["node"]) == 0
        finally:
            future.cancel()
    executors = [line for line in capsys.readouterr().out.splitlines() if "Executors" in line]
    assert executors == ["Executors noop, wasm  (no engine answers: docker)"]


@pytest.mark.anyio
async def test_executors_of_one_process_share_an_engines_ping_for_a_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thousand in-process nodes asking every few seconds ping a socket about once a
    second; an answer older than PING_REUSE is asked again, and so is one the asker
    got itself (an engine that started is seen at its next check)."""
    from bacalhau.executor import docker, docker_params

    now = [100.0]
    pings = docker._SharedPings(lambda: now[0])
    monkeypatch.setattr(docker, "_PINGS", pings)
    asked: list[str] = []
    real = docker_params.ping_unix_socket

    def counting(host: str) -> bool:
        asked.append(host)
        return real(host)

    monkeypatch.setattr(docker, "ping_unix_socket", counting)
    sock = tmp_path / "engine.sock"
    host = f"unix://{sock}"
    executors = [docker.DockerExecutor(base_url=host) for _ in range(5)]
    assert [await e.is_installed() for e in executors] == [False] * 5
    assert asked == [host]  # one ping for all five
    with fake_docker_engine(sock):
        assert not await executors[1].is_installed()  # another's answer of a moment ago
        assert await executors[0].is_installed()  # its own: asked again, it answers now
        assert len(asked) == 2
        now[0] += docker.PING_REUSE
        assert await executors[1].is_installed()  # too old: asked again
    assert len(asked) == 3
