"""The HTTP API and the async Client against a live server on an in-memory network."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.routing import Route

from bacalhau.api.client import Client, api_url
from bacalhau.api.schemas import ErrorBody
from bacalhau.api.server import ApiAddress, ApiLimits, create_app, is_loopback, serve_api
from bacalhau.convert import from_json_data, to_json_data
from bacalhau.errors import (
    ApiError,
    BacalhauError,
    CorruptBlock,
    JobNotFound,
    NodeUnreachable,
    ValidationError,
)
from bacalhau.models import JobSpec, JobState
from bacalhau.network import Network
from bacalhau.node.node import Node
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.storage.ipfs.car import export_car
from bacalhau.storage.ipfs.importer import add_bytes

HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # "hello world\n", as ipfs add


def store_of(node: Node) -> BlockStore:
    """The node's block store (every node in these tests has one)."""
    assert node.blockstore is not None
    return node.blockstore


class Api:
    """A 2-node network with node 0's API on a free port, and clients for it."""

    def __init__(self, net: Network, address: ApiAddress, client: Client) -> None:
        self.net = net
        self.address = address
        self.client = client

    def raw(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.address.url, headers=headers, timeout=30)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with Network.in_memory(2, seed=7) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        async with Client(str(address)) as client:
            yield Api(net, address, client)
        await net.wait_idle()
        tg.cancel_scope.cancel()


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = from_json_data(response.json(), ErrorBody)
    return response.status_code, body.error.code, body.error.message


# --- node and jobs -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_health_and_node_info(api: Api) -> None:
    health = await api.client.health()
    assert health.status == "ok"
    assert health.node_id == api.net.nodes[0].node_id
    info = await api.client.node_info()
    assert info.node_id == api.net.nodes[0].node_id
    assert info.peers == (api.net.nodes[1].node_id,)
    assert "noop" in info.executors
    assert "ipfs" in info.publishers
    assert info.capacity is not None
    assert info.capacity.cpu > 0


@pytest.mark.anyio
async def test_submit_wait_describe_list_and_results(api: Api) -> None:
    seen: list[str] = []
    job_id = await api.client.submit(
        JobSpec.noop(stdout="hi\n", publisher="ipfs", labels=("demo",))
    )
    result = await api.client.wait(job_id, timeout=30, on_event=lambda e: seen.append(e.event.kind))
    assert result.state is JobState.COMPLETED
    assert result.cid is not None
    assert result.cid.startswith("Qm")
    assert seen[0] == "created"
    assert seen[-1] == "completed"
    assert {"bid", "bid_accepted", "proposed", "results_accepted", "published"} <= set(seen)
    # by unique prefix, as in Bacalhau
    described = await api.client.describe(job_id[:8])
    assert described.job_id == job_id
    assert described.cid == result.cid
    assert described.spec.labels == ("demo",)
    results = await api.client.results(job_id[:8])
    assert [r.ref.cid for r in results.results] == [result.cid]
    listed = await api.client.list_jobs(label="demo")
    assert [j.job_id for j in listed.jobs] == [job_id]
    assert listed.jobs[0].cid == result.cid
    assert listed.jobs[0].engine == "noop"


@pytest.mark.anyio
async def test_list_filters_and_pages_newest_first(api: Api) -> None:
    ids = [await api.client.submit(JobSpec.noop(labels=(f"n{i}",))) for i in range(5)]
    failing = await api.client.submit(JobSpec.noop(error="boom", retries=0))
    for job_id in [*ids, failing]:
        await api.client.wait(job_id, timeout=30)
    everything = await api.client.list_jobs()
    assert everything.total == 6
    assert [j.job_id for j in everything.jobs] == [failing, *reversed(ids)]
    page = await api.client.list_jobs(limit=2, offset=1)
    assert [j.job_id for j in page.jobs] == [ids[4], ids[3]]
    assert page.total == 6
    failed = await api.client.list_jobs(state="failed")
    assert [j.job_id for j in failed.jobs] == [failing]
    done = await api.client.list_jobs(state=[JobState.COMPLETED, JobState.CANCELLED])
    assert done.total == 5
    assert (await api.client.list_jobs(engine="wasm")).total == 0
    async with api.raw() as raw:
        bad = await raw.get("/api/v1/jobs", params={"state": "sleeping"})
        assert error_of(bad)[:2] == (400, "bad_parameter")
        assert "sleeping" in error_of(bad)[2]
        bad = await raw.get("/api/v1/jobs", params={"limit": "0"})
        assert error_of(bad)[:2] == (400, "bad_parameter")


@pytest.mark.anyio
async def test_events_stream_follows_until_the_job_ends(api: Api) -> None:
    job_id = await api.client.submit(JobSpec.noop(stdout="x", delay=0.3))
    lines = [line async for line in api.client.events(job_id, follow=True)]
    kinds = [line.event.kind for line in lines]
    assert kinds[0] == "created"
    assert kinds[-1] == "completed"
    assert lines[-1].state is JobState.COMPLETED
    # without follow: the history so far, at once
    again = [line.event.kind async for line in api.client.events(job_id, follow=False)]
    assert again == kinds


@pytest.mark.anyio
async def test_logs_come_whole_from_the_published_results(api: Api) -> None:
    big = "line of output\n" * 3000  # 45 kB: more than the 16 KiB head the requester hears
    job_id = await api.client.submit(JobSpec.noop(stdout=big, stderr="oops\n", publisher="ipfs"))
    chunks = [c async for c in api.client.logs(job_id, follow=True)]
    by_stream = {c.stream: c for c in chunks}
    assert by_stream["stdout"].data == big
    assert by_stream["stdout"].complete
    assert by_stream["stderr"].data == "oops\n"
    only = [c async for c in api.client.logs(job_id, stream="stderr")]
    assert [c.stream for c in only] == ["stderr"]
    # the noop publisher keeps nothing: the head is all there is, and it says so
    job_id = await api.client.submit(JobSpec.noop(stdout=big))
    await api.client.wait(job_id, timeout=30)
    head = [c async for c in api.client.logs(job_id, stream="stdout")]
    assert not head[0].complete
    assert big.startswith(head[0].data)
    assert len(head[0].data) < len(big)


@pytest.mark.anyio
async def test_cancel_a_running_job_and_refuse_a_finished_one(api: Api) -> None:
    job_id = await api.client.submit(JobSpec.noop(delay=30))
    with anyio.fail_after(10):
        async for line in api.client.events(job_id):
            if line.event.kind == "bid_accepted":
                break
    assert await api.client.cancel(job_id, "changed my mind") is JobState.CANCELLED
    result = await api.client.wait(job_id, timeout=10)
    assert result.state is JobState.CANCELLED
    assert result.reason == "changed my mind"
    with pytest.raises(ApiError, match="already cancelled") as info:
        await api.client.cancel(job_id)
    assert (info.value.status, info.value.code) == (409, "job_finished")


@pytest.mark.anyio
async def test_unknown_job_is_a_404_and_the_client_raises_job_not_found(api: Api) -> None:
    with pytest.raises(JobNotFound, match="no job 'j-nope'"):
        await api.client.describe("j-nope")
    async with api.raw() as raw:
        response = await raw.get("/api/v1/jobs/j-nope/events")
    assert error_of(response)[:2] == (404, "job_not_found")


# --- data --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_add_cat_ls_pin_unpin_gc(api: Api) -> None:
    added = await api.client.add_bytes(b"hello world\n")
    assert (added.cid, added.size) == (HELLO_CID, 12)  # the CID `ipfs add` prints
    assert b"".join([p async for p in api.client.cat(HELLO_CID)]) == b"hello world\n"
    wrapped = await api.client.add_bytes(b"hello world\n", name="hello.txt")
    entries = await api.client.ls(wrapped.cid)
    assert [(e.name, e.cid, e.type, e.size) for e in entries] == [
        ("hello.txt", HELLO_CID, "file", 12)
    ]
    cat_by_path = [p async for p in api.client.cat(wrapped.cid, path="hello.txt")]
    assert b"".join(cat_by_path) == b"hello world\n"
    pins = await api.client.pins()
    assert pins[HELLO_CID] == "recursive"
    assert wrapped.cid in pins
    assert HELLO_CID not in await api.client.unpin(HELLO_CID)
    with pytest.raises(ApiError, match="not pinned") as info:
        await api.client.unpin(HELLO_CID)
    assert info.value.status == 404
    await api.client.unpin(wrapped.cid)
    assert await api.client.gc() >= 2
    with pytest.raises(BacalhauError):
        await api.client.ls(wrapped.cid)  # gone from every node


@pytest.mark.anyio
async def test_files_move_through_the_node_by_block_exchange(api: Api, tmp_path: Path) -> None:
    # The data lives only on node 1; the API of node 0 fetches it from its peer.
    other = api.net.nodes[1]
    cid = await add_bytes(other.blockstore, b"remote bytes " * 50_000, pin=True)
    assert not store_of(api.net.nodes[0]).has(cid)
    data = b"".join([p async for p in api.client.cat(cid)])
    assert data == b"remote bytes " * 50_000
    await api.client.pin(cid)
    assert store_of(api.net.nodes[0]).is_pinned(cid)
    dest = await api.client.download(cid, tmp_path / "file")
    assert dest.read_bytes() == data


@pytest.mark.anyio
async def test_directories_go_up_as_car_and_come_back_verified(api: Api, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 2000)
    seen: list[tuple[str, str]] = []
    cid = await api.client.add_path(src, on_entry=lambda rel, c: seen.append((rel, c)))
    assert cid == await _local_cid(src)
    assert seen[-1] == ("tree", cid)
    out = await api.client.download(cid, tmp_path / "back")
    assert (out / "a.txt").read_text() == "alpha\n"
    assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 2000
    car = await api.client.export_car(cid, tmp_path / "tree.car")
    assert await api.client.import_car(car) == (cid,)


async def _local_cid(path: Path) -> str:
    from bacalhau.storage.ipfs.importer import add_path

    return await add_path(None, path)


@pytest.mark.anyio
async def test_download_refuses_a_tampered_archive(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    cid = await add_bytes(store, b"genuine results\n")
    await export_car(store, cid, tmp_path / "good.car")
    car = bytearray((tmp_path / "good.car").read_bytes())
    car[car.index(b"genuine")] = ord("G")  # one byte flipped inside the block

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v1/data/{cid}/car"
        return httpx.Response(200, content=bytes(car))

    async with Client("127.0.0.1:9", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(CorruptBlock):
            await client.download(cid, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- bad input: clear 4xx, and the node keeps working ------------------------------------


async def _still_works(api: Api) -> None:
    assert (await api.client.health()).status == "ok"
    result = await api.client.run(JobSpec.noop(stdout="still here"), timeout=30)
    assert result.ok


def _submit_body(**spec_changes: object) -> dict[str, object]:
    spec = to_json_data(JobSpec.noop(stdout="x"))
    spec.update(spec_changes)
    return {"spec": spec}


@pytest.mark.anyio
async def test_bad_requests_get_clear_4xx_answers(api: Api) -> None:
    docker = to_json_data(JobSpec.docker("busybox", ["true"]))
    no_image = {**docker, "engine": {"type": "docker", "params": {"cmd": ["true"]}}}
    bad_volume = to_json_data(JobSpec.noop())
    bad_volume["inputs"] = [{"source": {"type": "ipfs", "cid": "not-a-cid"}, "target": "/in"}]
    cases = [
        # (body bytes, content type) -> (status, code, words in the message)
        ((b'{"spec": {', "application/json"), (400, "malformed_json", "not valid JSON")),
        ((b'{"spec": NaN}', "application/json"), (400, "malformed_json", "NaN")),
        ((b"[" * 100_000, "application/json"), (400, "malformed_json", "JSON")),
        (
            (json.dumps(_submit_body(colour="red")).encode(), "application/json"),
            (422, "validation_error", "unknown field(s): colour"),
        ),
        (
            (json.dumps({"spec": no_image}).encode(), "application/json"),
            (422, "validation_error", "image"),
        ),
        (
            (json.dumps({"spec": bad_volume}).encode(), "application/json"),
            (422, "validation_error", "not a CID"),
        ),
        (
            (json.dumps(_submit_body(deal={"concurrency": 0})).encode(), "application/json"),
            (422, "validation_error", "concurrency"),
        ),
        (
            (json.dumps(_submit_body()).encode(), "text/plain"),
            (415, "unsupported_media_type", "application/json"),
        ),
    ]
    async with api.raw() as raw:
        for (body, ctype), (status, code, words) in cases:
            response = await raw.post("/api/v1/jobs", content=body, headers={"content-type": ctype})
            got = error_of(response)
            assert got[:2] == (status, code), (body[:60], got)
            assert words in got[2], got
        bad_cid = await raw.get("/api/v1/data/QmNotACid/cat")
        assert error_of(bad_cid)[:2] == (400, "invalid_cid")
        assert error_of(await raw.get("/api/v1/nowhere"))[:2] == (404, "not_found")
        assert error_of(await raw.delete("/api/v1/jobs"))[:2] == (405, "method_not_allowed")
        evil = await raw.get("/api/v1/node", headers={"host": "evil.example:1234"})
        assert error_of(evil)[:2] == (403, "forbidden_host")
    await _still_works(api)


@pytest.mark.anyio
async def test_too_large_bodies_get_413_and_the_node_keeps_working() -> None:
    limits = ApiLimits(max_json_bytes=10_000, max_upload_bytes=100_000)
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0, limits=limits))
        async with httpx.AsyncClient(base_url=address.url) as raw, Client(str(address)) as c:
            body = json.dumps(_submit_body(env={"A": "x" * 20_000})).encode()
            got = error_of(
                await raw.post(
                    "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
                )
            )
            assert got[:2] == (413, "body_too_large")
            assert "at most 10000" in got[2]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
                for _ in range(30):
                    yield b"z" * 10_000

            response = await raw.post(
                "/api/v1/data",
                content=chunks(),
                headers={"content-type": "application/octet-stream"},
            )
            assert error_of(response)[:2] == (413, "body_too_large")
            assert (await c.add_bytes(b"small")).size == 5
            assert (await c.run(JobSpec.noop(stdout="ok"), timeout=30)).ok
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_token_is_required_and_checked() -> None:
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0, token="s3cret"))
        async with httpx.AsyncClient(base_url=address.url) as raw:
            assert (await raw.get("/api/v1/health")).status_code == 200  # open
            assert (await raw.get("/openapi.json")).status_code == 200
            missing = await raw.get("/api/v1/node")
            assert error_of(missing)[:2] == (401, "unauthorized")
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await raw.get("/api/v1/node", headers={"authorization": "Bearer nope"})
            assert error_of(wrong) == (401, "unauthorized", "the bearer token is wrong")
        async with Client(str(address), token="nope") as bad:
            with pytest.raises(ApiError) as info:
                await bad.submit(JobSpec.noop())
            assert info.value.status == 401
        async with Client(str(address), token="s3cret") as good:
            assert (await good.run(JobSpec.noop(stdout="ok"), timeout=30)).ok
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listening_beyond_loopback_needs_a_token() -> None:
    async with Network.in_memory(1) as net:
        with pytest.raises(ValidationError, match="beyond loopback"):
            await serve_api(net.nodes[0], host="0.0.0.0", port=0)
    assert is_loopback("127.0.0.5")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")


@pytest.mark.anyio
async def test_a_taken_port_is_a_clear_error() -> None:
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        with pytest.raises(BacalhauError, match=f"cannot listen on 127.0.0.1:{address.port}"):
            await serve_api(net.nodes[0], port=address.port)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_unreachable_node_is_node_unreachable() -> None:
    async with Client("127.0.0.1:9") as client:  # the discard port: nothing listens
        with pytest.raises(NodeUnreachable, match="bacalhau devstack"):
            await client.health()


def test_api_addresses() -> None:
    assert api_url("10.0.0.2:99") == "http://10.0.0.2:99"
    assert api_url(":4000") == "http://127.0.0.1:4000"
    assert api_url("example.com") == "http://example.com:1234"
    assert api_url("https://node.example/") == "https://node.example"
    assert api_url("[::1]:8") == "http://[::1]:8"
    with pytest.raises(ValidationError, match="not an API address"):
        api_url("host:port")


# --- the OpenAPI document ----------------------------------------------------------------


@pytest.mark.anyio
async def test_openapi_document_lists_every_route(api: Api) -> None:
    async with api.raw() as raw:
        doc = (await raw.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    app = create_app(api.net.nodes[0])
    routes = {
        (r.path, m)
        for r in app.inner.routes
        if isinstance(r, Route)
        for m in (r.methods or ())
        if m != "HEAD"
    }
    dashboard = {("/", "GET"), ("/dashboard/{name}", "GET")}  # pages, not API
    assert dashboard <= routes
    routes -= dashboard
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert routes - {("/openapi.json", "GET"), ("/api/v1/openapi.json", "GET")} == documented
    async with api.raw() as raw:
        assert (await raw.get("/api/v1/openapi.json")).json() == doc
    spec = doc["components"]["schemas"]["JobSpec"]
    assert spec["additionalProperties"] is False
    assert spec["required"] == ["engine"]
    assert doc["components"]["schemas"]["JobState"]["enum"][0] == "bidding"


PRINTER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "one\\ntwo\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def test_sync_client_from_a_script(tmp_path: Path) -> None:
    from bacalhau.api.client import SyncClient

    with anyio.from_thread.start_blocking_portal() as portal:
        ready: list[ApiAddress] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
                ready.append(await tg.start(functools.partial(serve_api, net.nodes[0], port=0)))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            with SyncClient(str(ready[0])) as client:
                result = client.run(JobSpec.noop(stdout="sync\n", publisher="ipfs"), timeout=30)
                assert result.ok
                kinds = [line.event.kind for line in client.events(result.job_id)]
                assert kinds[-1] == "completed"
                assert client.cat(client.add_bytes(b"hello world\n").cid) == b"hello world\n"
                _, out = client.get_results(result.job_id, tmp_path / "res")
                assert (out / "stdout").read_text() == "sync\n"
                printed = client.run(JobSpec.wasm(PRINTER_WAT, publisher="noop"), timeout=30)
                frames = list(client.log_frames(printed.job_id, follow=False))
                assert [x for f in frames for x in f.lines()] == ["one", "two"]
                records = list(client.log_stream(printed.job_id, follow=False))
                assert [r.text for r in records if not r.end] == ["one", "two"]
        finally:
            future.cancel()


@pytest.mark.anyio
async def test_stopping_the_server_ends_open_streams() -> None:
    async with Network.in_memory(1) as net:
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            stopped = anyio.Event()

            async def serve(*, task_status: anyio.abc.TaskStatus[ApiAddress]) -> None:
                try:
                    with scope:
                        await serve_api(net.nodes[0], port=0, task_status=task_status)
                finally:
                    stopped.set()

            address = await tg.start(serve)
            async with Client(str(address)) as client:
                job_id = await client.submit(JobSpec.noop(delay=120))
                kinds: list[str] = []
                with anyio.fail_after(20):  # a hang guard: the stream must end, not time out
                    async for line in client.events(job_id, follow=True):
                        kinds.append(line.event.kind)
                        if line.event.kind == "bid_accepted":
                            scope.cancel()  # stop the server mid-stream
                    await stopped.wait()
            assert kinds[-1] == "bid_accepted"
            with pytest.raises(NodeUnreachable):
                async with Client(str(address)) as client:
                    await client.health()
            await net.nodes[0].cancel(job_id)
        await net.wait_idle()


@pytest.mark.anyio
async def test_stopping_the_server_closes_a_connection_whose_request_outlived_the_grace() -> None:
    """A request still waiting for its body when the server stops is cancelled after the
    graceful time, and its connection closes: the client is not left waiting (the
    server also closes, itself, any connection uvicorn leaves open)."""
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def serve(*, task_status: anyio.abc.TaskStatus[ApiAddress]) -> None:
            with scope:
                await serve_api(net.nodes[0], port=0, graceful=1, task_status=task_status)

        address = await tg.start(serve)
        stream = await anyio.connect_tcp(address.host, address.port)
        async with stream:
            # a request whose body never comes: the app waits for it past the grace time
            await stream.send(
                b"POST /api/v1/jobs HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\n"
                b"expect: 100-continue\r\ncontent-length: 1000\r\n\r\n"
            )
            with anyio.fail_after(30):  # the app asked for the body: the request is in
                assert b"100 Continue" in await stream.receive()
            scope.cancel()
            received = b""
            with anyio.fail_after(30):  # a hang guard: the connection must close, not wait
                while True:
                    try:
                        chunk = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    received += chunk
        assert b"201" not in received  # the request was not served; the connection ended
