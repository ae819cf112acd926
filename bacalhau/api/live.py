"""API routes for watching a node: live logs, the event stream, the network and the
web dashboard (mounted by :func:`bacalhau.api.server.create_app`).

* ``GET /api/v1/jobs/{id}/logs/stream?follow=&tail=N&execution=NODE&format=`` - NDJSON
  of :class:`~bacalhau.live.node.LogChunkLive`: each execution's output as it is
  written; ``format=batch`` gives :class:`~bacalhau.live.frames.LogFrame` frames
  instead (the lines of each read in columns: no work a line for node or reader).
* ``GET /api/v1/events?follow=&tail=N&after=SEQ`` - the node's events as NDJSON of
  :class:`~bacalhau.live.NodeEvent` (``Accept: text/event-stream`` gives SSE).
* ``GET /api/v1/network`` - this node's info, then the live nodes of its requester's
  node table (their signed announcements); no peer is asked anything.
* ``GET /`` and ``/dashboard/*`` - the dashboard (static files shipped in the package).

Streams are written by a response of their own (not a generator), so a client that
stops reading holds up only its own follower, and one that goes away ends it at once.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import anyio
import anyio.abc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import ApiError
from ._http import bool_param, dumps, endpoint, int_param
from .schemas import API_PREFIX

__all__ = ["TOKEN_COOKIE", "LiveStream", "live_routes", "token_of"]

TOKEN_COOKIE = "bacalhau_token"
KEEPALIVE = 15.0
NDJSON = "application/x-ndjson"
LOG_FORMATS = ("ndjson", "batch")
"""``format`` of the live log stream: one LogChunkLive a read (the default), or one
LogFrame a read (columns; both are one JSON object a line)."""
SSE = "text/event-stream"
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def token_of(scope: Scope) -> bytes | None:
    """The token a request presents: a bearer header, or (for GET only, so a page cannot
    change anything with it) the dashboard's cookie, or ``?token=`` on ``/`` itself."""
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() == b"bearer" and value:
        return value.strip()
    if scope.get("method") not in ("GET", "HEAD"):
        return None
    if scope.get("path") == "/":
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return str(query["token"][0]).encode()
    for part in headers.get(b"cookie", b"").split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == TOKEN_COOKIE.encode() and value:
            return urllib.parse.unquote_to_bytes(value)
    return None


Produce = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]


class LiveStream(Response):
    """A streamed response driven by ``produce(write)``; ends when ``produce`` returns,
    the client goes away or ``stopping`` is set. Idle streams get a keep-alive line."""

    def __init__(self, produce: Produce, *, media_type: str, stopping: anyio.Event) -> None:
        super().__init__(media_type=media_type)
        self.produce = produce
        self.stopping = stopping
        self.headers["cache-control"] = "no-store"
        self.headers["x-accel-buffering"] = "no"
        del self.headers["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        chunks, pending = anyio.create_memory_object_stream[bytes](4)
        keepalive = b": keep-alive\n\n" if self.media_type == SSE else b"\n"
        gone = False

        async def write(chunk: bytes) -> None:
            await chunks.send(chunk)

        async def producer() -> None:
            async with chunks:
                await self.produce(write)

        async def watch(tg: anyio.abc.TaskGroup) -> None:
            nonlocal gone
            async with anyio.create_task_group() as inner:

                async def disconnect() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    inner.cancel_scope.cancel()

                async def stop() -> None:
                    await self.stopping.wait()
                    inner.cancel_scope.cancel()

                inner.start_soon(disconnect)
                inner.start_soon(stop)
            tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg)
                tg.start_soon(producer)
                async with pending:
                    while True:
                        with anyio.move_on_after(KEEPALIVE) as idle:
                            try:
                                chunk = await pending.receive()
                            except anyio.EndOfStream:
                                break
                        body = keepalive if idle.cancelled_caught else chunk
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                tg.cancel_scope.cancel()
        except OSError:
            gone = True
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _sse(kind: str, data: bytes, seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + data + b"\n\n"


def live_routes(api: Any) -> list[Route]:
    """The routes, around the server's ``_Api`` (node, limits, stopping)."""
    routes = _Routes(api)
    p = API_PREFIX
    return [
        Route("/", routes.index, methods=["GET"]),
        Route("/dashboard/{name}", routes.static, methods=["GET"]),
        Route(f"{p}/events", routes.events, methods=["GET"]),
        Route(f"{p}/network", routes.network, methods=["GET"]),
        Route(f"{p}/jobs/{{job_id}}/logs/stream", routes.log_stream, methods=["GET"]),
    ]


class _Routes:
    def __init__(self, api: Any) -> None:
        self.api = api

    @property
    def node(self) -> Any:
        return self.api.node

    # --- the dashboard ----------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            # Checked by the app already when a token is set; keep it as a cookie (GETs
            # only, never sent cross-site) and drop it from the address bar.
            response = RedirectResponse("/", status_code=303)
            if self.api.token_required:  # then the app has checked this very token
                response.set_cookie(
                    TOKEN_COOKIE,
                    urllib.parse.quote(given),
                    httponly=True,
                    samesite="strict",
                    path="/",
                )
            return response
        return self._file("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return self._file(name)

    def _file(self, name: str) -> Response:
        data = resources.files("bacalhau.api.dashboard").joinpath(name).read_bytes()
        return Response(
            data,
            media_type=STATIC[name],
            headers={
                "content-security-policy": CSP,
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
                "cache-control": "no-cache",
            },
        )

    # --- streams ----------------------------------------------------------------------------

    @endpoint
    async def events(self, request: Request) -> Response:
        self.api._check_started()
        hub = self.node.watch.events
        follow = bool_param(request, "follow")
        tail = int_param(request, "tail", -1, 0, 1_000_000)
        after = int_param(request, "after", -1, -1, 2**62)
        if after >= 0:
            cursor = after + 1
        elif tail >= 0:
            cursor = hub.tail_cursor(tail)
        else:
            cursor = 0
        sse = SSE in request.headers.get("accept", "") or request.query_params.get("format") == (
            "sse"
        )

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            nonlocal cursor
            while True:
                batch = hub.read(cursor)
                if batch.skipped:
                    note = json.dumps({"skipped": batch.skipped}).encode()
                    await write(_sse("skipped", note) if sse else note + b"\n")
                if batch.events:
                    if sse:
                        await write(b"".join(_sse("event", dumps(e), e.seq) for e in batch.events))
                    else:
                        await write(b"".join(dumps(e) + b"\n" for e in batch.events))
                cursor = batch.next
                if not follow:
                    return
                await hub.wait(cursor)

        return LiveStream(produce, media_type=SSE if sse else NDJSON, stopping=self.api.stopping)

    @endpoint
    async def log_stream(self, request: Request) -> Response:
        job_id = self.api._job(request)
        follow = bool_param(request, "follow")
        tail = int_param(request, "tail", -1, 0, 1_000_000)
        node_prefix = request.query_params.get("execution", "")
        if len(node_prefix) > 200:
            raise ApiError(
                "execution must be a node id, its start or its end (at most 200 characters)",
                status=400,
            )
        form = request.query_params.get("format", "ndjson")
        if form not in LOG_FORMATS:
            raise ApiError(
                f"format must be ndjson or batch, got {form[:40]!r}",
                status=400,
                code="bad_parameter",
            )
        watch = self.node.watch

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            async def emit(records: bytes) -> None:
                await write(records)

            await watch.follow_logs(
                job_id,
                emit,
                node_prefix=node_prefix,
                tail=tail if tail >= 0 else None,
                follow=follow,
                batch=form == "batch",
            )

        return LiveStream(produce, media_type=NDJSON, stopping=self.api.stopping)

    @endpoint
    async def network(self, request: Request) -> Response:
        self.api._check_started()
        infos = self.node.watch.network()
        return Response(dumps(infos), media_type="application/json")
