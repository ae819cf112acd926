"""The node's JSON-over-HTTP API: Starlette routes served by uvicorn.

Run it beside a node::

    async with bacalhau.Node(...) as node, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, node, port=1234))
        print("API on", address.url)

or mount :func:`create_app` in any ASGI server. Every route is under
``/api/v1`` (see ``docs/api.md`` and ``/openapi.json``). Errors are JSON
(:class:`~bacalhau.api.schemas.ErrorBody`) with a stable ``code``, a message a
person can act on and the status that fits: 400 malformed, 401 token, 404 no
such job/CID, 409 conflict, 413 too large, 415 wrong content type, 422 invalid
field. A 5xx is a bug.

Security: without a token the API serves only loopback clients, and checks the
``Host`` header so a web page cannot reach it through DNS rebinding; JSON
bodies must be ``application/json``, so browsers cannot post them cross-site
without a preflight. Listening beyond loopback requires a bearer token.

The server runs uvicorn on the asyncio event loop (anyio's default backend).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from ..convert import from_json_data
from ..errors import ApiError, BacalhauError, ValidationError
from ..ids import names_node
from ..models import ExecutionResult, ExecutionState, JobSpec, JobState
from ..node.history import JobQuery
from . import bacalhau_v1
from ._guard import ConnectionGuard, guarded_protocol
from ._http import (
    Body,
    bool_param,
    cid_param,
    dumps,
    endpoint,
    error_response,
    int_param,
    parse_json,
    require_type,
)
from ._listen import ApiAddress, QuietServer, bind_listener, is_loopback
from .live import live_routes, token_of
from .openapi import openapi_document
from .receipts import receipt_routes
from .schemas import (
    API_PREFIX,
    CancelRequest,
    CarImported,
    DataAdded,
    DataEntry,
    EventLine,
    GcResult,
    Health,
    JobList,
    JobSummary,
    LogChunk,
    NodeList,
    PinList,
    PublishedResult,
    ResultsList,
    SubmitRequest,
    SubmitResponse,
)

if TYPE_CHECKING:
    from ..storage.base import DataServices

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiAddress",
    "ApiApp",
    "ApiLimits",
    "create_app",
    "is_loopback",
    "serve_api",
]

log = logging.getLogger("bacalhau.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
NDJSON = "application/x-ndjson"
CAR = "application/vnd.ipld.car"
KEEPALIVE = 15.0
"""Seconds between keep-alive blank lines on an idle event or log stream."""
OPEN_PATHS = (
    frozenset({f"{API_PREFIX}/health", "/openapi.json", f"{API_PREFIX}/openapi.json"})
    | bacalhau_v1.OPEN_PATHS
)
"""Routes served without the bearer token."""

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class ApiLimits:
    """Request limits.

    Args:
        max_json_bytes: largest JSON body (a job spec with 1 MiB of inline data fits).
        max_upload_bytes: largest data upload (``POST /api/v1/data`` and ``/data/car``).
        max_page: largest ``limit`` of ``GET /api/v1/jobs``.
        max_connections: most open connections; past it the oldest idle one is closed
            (see :mod:`bacalhau.api._guard`).
        header_timeout: seconds a connection has to send complete request headers.
        body_timeout: seconds a request body has to arrive after its headers.
        keep_alive: seconds an idle keep-alive connection stays open.
    """

    max_json_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 4 * 1024 * 1024 * 1024
    max_page: int = 1000
    max_connections: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 300.0
    keep_alive: float = 5.0


# --- the routes --------------------------------------------------------------------------


@attrs.define(eq=False)
class _Api:
    node: Any
    limits: ApiLimits
    token_required: bool
    stopping: anyio.Event = attrs.Factory(anyio.Event)

    def _check_started(self) -> None:
        if not self.node.started.is_set():
            raise ApiError("the node is not running yet", status=503, code="not_ready")

    def _body(self, request: Request, limit: int) -> Body:
        body = Body(request=request, limit=limit)
        request.scope["bacalhau.body"] = body
        return body

    async def _json_body(self, request: Request, cls: type[T], *, optional: bool = False) -> T:
        body = self._body(request, self.limits.max_json_bytes)
        if (
            optional
            and request.headers.get("content-length") in (None, "0")
            and "content-type" not in request.headers
        ):
            await body.read()
            return cls()
        require_type(request, "application/json")
        data = parse_json(await body.read())
        if optional and data is None:
            return cls()
        return from_json_data(data, cls)

    def _job(self, request: Request) -> str:
        self._check_started()
        return str(self.node.resolve(request.path_params["job_id"]))

    def _data(self) -> DataServices:
        """The node's data services (409 when it has none)."""
        self._check_started()
        data: DataServices | None = self.node.data
        if data is None:
            raise ApiError("this node has no block store", status=409, code="no_block_store")
        return data

    def _store(self) -> Any:
        return self._data().blockstore

    def _json(self, value: Any, status: int = 200) -> Response:
        return Response(dumps(value), status_code=status, media_type="application/json")

    async def _wait_change(self, job_id: str) -> bool:
        """Wait until the job changes (True), the server stops or a keep-alive is due (False)."""
        changed = self.node.changed(job_id)
        with anyio.move_on_after(KEEPALIVE):
            async with anyio.create_task_group() as tg:

                async def wait(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(wait, changed)
                tg.start_soon(wait, self.stopping)
        return changed.is_set() and not self.stopping.is_set()

    # --- node ------------------------------------------------------------------------------

    @endpoint
    async def health(self, request: Request) -> Response:
        self._check_started()
        return self._json(Health(status="ok", node_id=self.node.node_id, version=_version()))

    @endpoint
    async def node_info(self, request: Request) -> Response:
        self._check_started()
        return self._json(self.node.info())

    @endpoint
    async def list_nodes(self, request: Request) -> Response:
        self._check_started()
        known = self.node.requester.nodes.live(self.node.clock.now())
        return self._json(
            NodeList(
                tuple(k.info for k in sorted(known, key=lambda k: k.info.node_id)),
                {k.info.node_id: k.seen for k in known},
            )
        )

    @endpoint
    async def describe_node(self, request: Request) -> Response:
        self._check_started()
        return self._json(self.node.known_node(request.path_params["node_id"]))

    async def openapi(self, request: Request) -> Response:
        doc = openapi_document(version=_version(), token_required=self.token_required)
        return Response(json.dumps(doc).encode(), media_type="application/json")

    # --- jobs ------------------------------------------------------------------------------

    @endpoint
    async def submit(self, request: Request) -> Response:
        self._check_started()
        req = await self._json_body(request, SubmitRequest)
        self._validate_engine(req.spec)
        handle = await self.node.submit(req.spec)
        return self._json(SubmitResponse(handle.job_id, handle.result().state), 201)

    def _validate_engine(self, spec: JobSpec) -> None:
        """Check the engine's params here when this node has that executor, so a bad spec
        (a docker job without an image) is a 422 now rather than a failed job later."""
        executor = self.node.plugins.executors.get(spec.engine.type)
        if executor is None:
            return
        try:
            executor.validate(spec)
        except ValidationError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ValidationError(
                f"invalid {spec.engine.type} params: {exc!r}", field="engine.params"
            ) from None

    @endpoint
    async def list_jobs(self, request: Request) -> Response:
        self._check_started()
        states = {s.strip() for s in request.query_params.get("state", "").split(",") if s.strip()}
        unknown = states - {s.value for s in JobState}
        if unknown:
            raise ApiError(
                f"unknown state(s) {', '.join(sorted(unknown))}; one of "
                f"{', '.join(s.value for s in JobState)}",
                status=400,
                code="bad_parameter",
            )
        params = request.query_params
        limit = int_param(request, "limit", min(100, self.limits.max_page), 1, self.limits.max_page)
        offset = int_param(request, "offset", 0, 0, 2**62)
        try:
            query = JobQuery(
                states=frozenset(JobState(s) for s in states),
                label=params.get("label"),
                engine=params.get("engine"),
                node=params.get("node"),
                since=float(params["since"]) if "since" in params else None,
                until=float(params["until"]) if "until" in params else None,
                sort=params.get("sort", "created"),
                order=params.get("order", "newest"),
                limit=limit,
                after=params.get("after"),
                offset=offset,
            )
            found = await self.node.query_jobs(query)
        except ValueError as exc:  # ValidationError included: it names the parameter
            raise ApiError(str(exc), status=400, code="bad_parameter") from None
        page = tuple(
            JobSummary(
                job_id=r.job_id,
                state=r.state,
                engine=r.engine,
                created_at=r.created_at,
                reason=r.reason,
                labels=r.labels,
                executions=r.executions,
                cid=r.cid,
            )
            for r in found.rows
        )
        return self._json(
            JobList(jobs=page, total=found.total, offset=offset, limit=limit, next=found.next)
        )

    @endpoint
    async def describe(self, request: Request) -> Response:
        return self._json(self.node.describe(self._job(request)))

    @endpoint
    async def results(self, request: Request) -> Response:
        result = self.node.describe(self._job(request))
        published = tuple(
            PublishedResult(e.node_id, e.published) for e in result.accepted if e.published
        )
        return self._json(ResultsList(job_id=result.job_id, state=result.state, results=published))

    @endpoint
    async def cancel(self, request: Request) -> Response:
        job_id = self._job(request)
        req = await self._json_body(request, CancelRequest, optional=True)
        state = self.node.describe(job_id).state
        if state.terminal:
            raise ApiError(
                f"job {job_id} already {state.value}; nothing to cancel",
                status=409,
                code="job_finished",
            )
        await self.node.cancel(job_id, req.reason)
        return self._json(SubmitResponse(job_id, self.node.describe(job_id).state), 202)

    @endpoint
    async def events(self, request: Request) -> Response:
        job_id = self._job(request)
        follow = bool_param(request, "follow")

        async def lines() -> AsyncIterator[bytes]:
            seen = 0
            while True:
                result = self.node.describe(job_id)
                fresh = result.events[seen:]
                seen = len(result.events)
                if fresh:
                    yield b"".join(dumps(EventLine(e, result.state)) + b"\n" for e in fresh)
                if not follow or result.state.terminal or self.stopping.is_set():
                    return
                if not await self._wait_change(job_id):
                    if self.stopping.is_set():
                        return
                    yield b"\n"

        return _stream(lines())

    @endpoint
    async def logs(self, request: Request) -> Response:
        job_id = self._job(request)
        follow = bool_param(request, "follow")
        node_prefix = request.query_params.get("node", "")
        stream = request.query_params.get("stream")
        if stream not in (None, "stdout", "stderr"):
            raise ApiError(
                f"stream must be stdout or stderr, got {stream!r}", status=400, code="bad_parameter"
            )
        streams = (stream,) if stream else ("stdout", "stderr")

        async def lines() -> AsyncIterator[bytes]:
            done: set[str] = set()
            while True:
                result = self.node.describe(job_id)
                for ex in result.executions:
                    if ex.node_id in done or not names_node(ex.node_id, node_prefix):
                        continue
                    if not (ex.state.terminal or result.state.terminal):
                        continue
                    done.add(ex.node_id)
                    for name in streams:
                        chunk = await self._log(ex, name)
                        if chunk.data:
                            yield dumps(chunk) + b"\n"
                if not follow or result.state.terminal or self.stopping.is_set():
                    return
                if not await self._wait_change(job_id):
                    if self.stopping.is_set():
                        return
                    yield b"\n"

        return _stream(lines())

    async def _log(self, ex: ExecutionResult, stream: str) -> LogChunk:
        """The whole log from the published results when readable, else the node's head."""
        from ..compute.runner import SUMMARY_BYTES
        from ..executor.base import MAX_LOG_BYTES

        head = ex.stdout if stream == "stdout" else ex.stderr
        ref = ex.published
        if (
            ex.state is ExecutionState.PUBLISHED
            and ref is not None
            and ref.cid
            and self.node.data is not None
        ):
            from ..storage.ipfs.exporter import read_all, resolve

            blocks = self.node.data.blocks
            try:
                with anyio.fail_after(30):
                    cid = await resolve(blocks, ref.cid, stream)
                    data = await read_all(blocks, cid, max_size=MAX_LOG_BYTES)
                return LogChunk(
                    node_id=ex.node_id, stream=stream, data=data.decode("utf-8", "replace")
                )
            except (BacalhauError, TimeoutError) as exc:
                log.info(
                    "full %s of %s not readable from %s: %s", stream, ex.node_id[-8:], ref.cid, exc
                )
        complete = len(head.encode()) < SUMMARY_BYTES - 4
        return LogChunk(node_id=ex.node_id, stream=stream, data=head, complete=complete)

    # --- data ------------------------------------------------------------------------------

    @endpoint
    async def add_data(self, request: Request) -> Response:
        from ..storage.ipfs.importer import add_bytes

        store = self._store()
        require_type(request, "application/octet-stream")
        version = int_param(request, "cid_version", 0, 0, 1)
        name = request.query_params.get("name")
        body = self._body(request, self.limits.max_upload_bytes)
        cid = await add_bytes(store, body.chunks(), cid_version=version, name=name, pin=True)
        if not name:
            return self._json(DataAdded(cid=cid, size=body.size), 201)
        # With a name the file is wrapped in a folder under that name (``ipfs add -w``):
        # ``cid`` is the folder, ``file_cid`` the file itself, so neither is a surprise.
        from ..cid import cid_str
        from ..storage.ipfs.exporter import LocalBlocks, resolve

        file_cid = cid_str(await resolve(LocalBlocks(store), cid, name))
        return self._json(DataAdded(cid=cid, size=body.size, file_cid=file_cid), 201)

    @endpoint
    async def import_car(self, request: Request) -> Response:
        from ..storage.ipfs.car import import_car

        store = self._store()
        require_type(request, CAR, "application/octet-stream")
        body = self._body(request, self.limits.max_upload_bytes)
        with self._tempfile(".car") as path:
            async with await anyio.open_file(path, "wb") as fh:
                async for chunk in body.chunks():
                    await fh.write(chunk)
            roots = await import_car(store, path, pin=True)
        if not roots:
            raise ApiError("the archive names no root", status=422, code="storage_error")
        return self._json(CarImported(tuple(roots)), 201)

    @contextlib.contextmanager
    def _tempfile(self, suffix: str) -> Iterator[Path]:
        folder = Path(self.node.data_dir) / "tmp"
        folder.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=suffix, dir=folder)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    @endpoint
    async def cat(self, request: Request) -> Response:
        from ..storage.ipfs.exporter import cat, resolve

        self._store()
        cid = await resolve(
            self._data().blocks, cid_param(request), request.query_params.get("path")
        )
        pieces = cat(self._data().blocks, cid)
        try:
            first = await pieces.__anext__()  # errors before the status line is sent
        except StopAsyncIteration:
            first = b""

        async def rest() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for piece in pieces:
                yield piece

        return StreamingResponse(rest(), media_type="application/octet-stream")

    @endpoint
    async def ls(self, request: Request) -> Response:
        from ..storage.ipfs.exporter import ls, resolve

        self._store()
        cid = await resolve(
            self._data().blocks, cid_param(request), request.query_params.get("path")
        )
        found = await ls(self._data().blocks, cid)
        entries = [DataEntry(name=e.name, cid=e.cid, type=e.type, size=e.size) for e in found]
        return self._json(entries)

    @endpoint
    async def export_car(self, request: Request) -> Response:
        from ..storage.ipfs.car import export_car

        self._store()
        cid = cid_param(request)
        with self._tempfile(".car") as path:
            await export_car(self._data().blocks, cid, path)
            kept = path.with_suffix(".out")
            path.replace(kept)
        return FileResponse(
            kept, media_type=CAR, background=BackgroundTask(kept.unlink, missing_ok=True)
        )

    @endpoint
    async def pins(self, request: Request) -> Response:
        store = self._store()
        return self._json(PinList(await anyio.to_thread.run_sync(store.pins)))

    @endpoint
    async def pin(self, request: Request) -> Response:
        store = self._store()
        await self._data().blocks.pin(cid_param(request))
        return self._json(PinList(await anyio.to_thread.run_sync(store.pins)))

    @endpoint
    async def unpin(self, request: Request) -> Response:
        store = self._store()
        cid = cid_param(request)
        if not await anyio.to_thread.run_sync(store.unpin, cid):
            raise ApiError(
                f"{request.path_params['cid']} is not pinned on this node",
                status=404,
                code="not_pinned",
            )
        return self._json(PinList(await anyio.to_thread.run_sync(store.pins)))

    @endpoint
    async def gc(self, request: Request) -> Response:
        store = self._store()
        return self._json(GcResult(await anyio.to_thread.run_sync(store.gc)))


def _stream(lines: AsyncIterator[bytes]) -> Response:
    return StreamingResponse(
        lines, media_type=NDJSON, headers={"cache-control": "no-store", "x-accel-buffering": "no"}
    )


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bacalhau-py")
    except PackageNotFoundError:
        return "0+unknown"


# --- the application ---------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class ApiApp:
    """The ASGI application: authentication and host checks around the routes.

    Call :meth:`close` when the server stops, to end open event and log streams.
    """

    inner: Starlette
    api: _Api
    token: str | None = attrs.field(default=None, repr=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.inner(scope, receive, send)

    def _refuse(self, scope: Scope) -> Response | None:
        headers = dict(scope.get("headers") or [])
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host and not is_loopback(name):
                return error_response(
                    403,
                    "forbidden_host",
                    f"this node's API serves loopback clients only (Host: {host}); start it "
                    "with a token to serve others",
                )
            return None
        if scope.get("path") in OPEN_PATHS:
            return None
        value = token_of(scope)
        if not value:
            return error_response(
                401,
                "unauthorized",
                "this node needs 'Authorization: Bearer TOKEN' (--api-token or BACALHAU_API_TOKEN)",
                headers={"www-authenticate": "Bearer"},
            )
        if not hmac.compare_digest(value.strip(), self.token.encode()):
            return error_response(
                401,
                "unauthorized",
                "the bearer token is wrong",
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )
        return None

    def close(self) -> None:
        """End open streams (the server is stopping)."""
        self.api.stopping.set()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {
        404: f"no route {request.url.path}; see /openapi.json",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, headers=exc.headers)


def create_app(node: Any, *, token: str | None = None, limits: ApiLimits = ApiLimits()) -> ApiApp:
    """The API of ``node`` as an ASGI application.

    Args:
        node: a :class:`~bacalhau.node.node.Node` (running, or started later).
        token: if set, every route but health and ``/openapi.json`` needs it as a
            bearer token; if None, only loopback ``Host`` headers are served.
        limits: body size and paging limits.
    """
    api = _Api(node=node, limits=limits, token_required=token is not None)
    p = API_PREFIX

    def route(path: str, fn: Callable[[Request], Awaitable[Response]], *methods: str) -> Route:
        return Route(path, fn, methods=list(methods))

    routes: list[Route | Mount] = [
        route("/openapi.json", api.openapi, "GET"),
        route(f"{API_PREFIX}/openapi.json", api.openapi, "GET"),  # where clients look first
        route(f"{p}/health", api.health, "GET"),
        route(f"{p}/node", api.node_info, "GET"),
        route(f"{p}/nodes", api.list_nodes, "GET"),
        route(f"{p}/nodes/{{node_id}}", api.describe_node, "GET"),
        route(f"{p}/jobs", api.list_jobs, "GET"),
        route(f"{p}/jobs", api.submit, "POST"),
        route(f"{p}/jobs/{{job_id}}", api.describe, "GET"),
        route(f"{p}/jobs/{{job_id}}/events", api.events, "GET"),
        route(f"{p}/jobs/{{job_id}}/logs", api.logs, "GET"),
        route(f"{p}/jobs/{{job_id}}/results", api.results, "GET"),
        route(f"{p}/jobs/{{job_id}}/cancel", api.cancel, "POST"),
        route(f"{p}/data", api.add_data, "POST"),
        route(f"{p}/data/car", api.import_car, "POST"),
        route(f"{p}/data/pins", api.pins, "GET"),
        route(f"{p}/data/gc", api.gc, "POST"),
        route(f"{p}/data/{{cid}}/cat", api.cat, "GET"),
        route(f"{p}/data/{{cid}}/ls", api.ls, "GET"),
        route(f"{p}/data/{{cid}}/car", api.export_car, "GET"),
        route(f"{p}/data/{{cid}}/pin", api.pin, "POST"),
        route(f"{p}/data/{{cid}}/pin", api.unpin, "DELETE"),
        *live_routes(api),
        *receipt_routes(api),
        bacalhau_v1.mount(api),  # Bacalhau's v1 API, after ours (same prefix)
    ]
    inner = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return ApiApp(inner=inner, api=api, token=token)


# --- serving -----------------------------------------------------------------------------


async def serve_api(
    node: Any,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    limits: ApiLimits = ApiLimits(),
    graceful: int = 5,
    task_status: anyio.abc.TaskStatus[ApiAddress] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``node``'s API on ``host:port`` until cancelled.

    Start it with ``address = await tg.start(partial(serve_api, node, port=0))``:
    ``task_status.started`` reports the :class:`ApiAddress` (the real port when
    ``port`` is 0) once the socket listens. On cancellation, open streams end,
    in-flight requests get ``graceful`` seconds, then every connection still open is
    closed, and so is the socket.

    Raises:
        ValidationError: ``host`` is beyond loopback and no ``token`` is given.
        BacalhauError: the address cannot be listened on (e.g. the port is taken).
    """
    if token is None and not is_loopback(host):
        raise ValidationError(
            f"the API would listen on {host}, beyond loopback, without a token; give one "
            "(serve --token-file FILE, --api-token TOKEN or BACALHAU_API_TOKEN) or listen "
            "on 127.0.0.1",
            field="token",
        )
    if token is not None and not token.strip():
        raise ValidationError("the API token must not be empty", field="token")
    app = create_app(node, token=token, limits=limits)
    sock = bind_listener(host, port)
    address = ApiAddress(host, sock.getsockname()[1])
    guard = ConnectionGuard(
        max_connections=limits.max_connections,
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
    )
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, graceful),
        h11_max_incomplete_event_size=64 * 1024,
        http=guarded_protocol(guard),
        timeout_keep_alive=max(1, int(limits.keep_alive)),
    )
    server = QuietServer(config)
    stopped = anyio.Event()
    failure: list[BaseException] = []

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            except BaseException as exc:  # SystemExit from a failed uvicorn startup
                failure.append(exc)
            finally:
                guard.close_all()
                sock.close()
                stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        task_status.started(address)
        log.info("API of %s on %s", node.node_id, address.url)
        try:
            await stopped.wait()
        finally:
            app.close()
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(graceful + 5):
                    await stopped.wait()
                if not stopped.is_set():
                    server.force_exit = True
                    await stopped.wait()
    if failure:
        raise BacalhauError(f"the API server on {address} failed: {failure[0]!r}")
    raise BacalhauError(f"the API server on {address} stopped by itself")
