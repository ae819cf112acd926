"""Bacalhau's v1 API (``/api/v1/orchestrator/...``, ``/api/v1/agent/...``) beside ours,
so Bacalhau's own clients (the ``bacalhau-sdk`` Python package, scripts written against
Bacalhau's REST API) work against any bacalhau-py node unmodified.

Jobs arrive in Bacalhau's ``Job`` shape and are translated by :mod:`bacalhau.compat`
(an untranslatable field is a 422 naming it); answers are rendered in Bacalhau's
shapes by :mod:`bacalhau.compat.render`. Query booleans are read as Bacalhau's clients
send them (``True``/``False``, any case). Paging uses ``limit`` and an opaque
``next_token`` (a keyset cursor for the job listing, an offset elsewhere).

Authentication is the node's: with a token every route but ``agent/alive``,
``livez`` and ``healthz`` needs ``Authorization: Bearer TOKEN``. The Bacalhau Python
client sends no such header by itself; ``docs/bacalhau-users.md`` shows how to add it.

Mounted by :func:`bacalhau.api.server.create_app` after our own routes.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.types import Scope

from ..compat import render
from ..compat._read import Doc
from ..compat.v1 import job_from_v1
from ..errors import ApiError, ValidationError
from ..models import ExecutionResult, JobResult
from ..node.history import JobQuery
from ._http import bool_param, endpoint, int_param, parse_json, require_type

__all__ = ["OPEN_PATHS", "mount"]

PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{PREFIX}/agent/alive", f"{PREFIX}/livez", f"{PREFIX}/healthz"})
"""Bacalhau's health routes, served without the token as our own health route is."""
MAX_PAGE = 1000
FOLLOW_LIMIT = 3600.0
"""Seconds ``logs?follow=true`` waits for a job to end before answering what it has."""


def _page(request: Request, items: list[Any], default: int) -> tuple[list[Any], str]:
    """One page of ``items`` by ``limit`` and ``next_token``; the token of the next page."""
    limit = int_param(request, "limit", default, 0, MAX_PAGE) or default
    token = request.query_params.get("next_token", "") or "0"
    if not token.isdigit() or len(token) > 12:
        raise ApiError(
            f"next_token must be a token from a previous page, got {token!r}",
            status=400,
            code="bad_parameter",
        )
    start = int(token)
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, str(start + limit) if more else ""


def _order(request: Request, items: list[dict[str, Any]], keys: dict[str, str]) -> None:
    """Sort Bacalhau items in place by ``order_by`` (one of ``keys``) and ``reverse``."""
    name = request.query_params.get("order_by", "") or ""
    field = keys.get(name.lower().replace("_", "")) if name else keys[""]
    if field is None:
        raise ApiError(
            f"order_by must be one of {', '.join(k for k in keys if k)}, got {name!r}",
            status=400,
            code="bad_parameter",
        )
    items.sort(
        key=lambda i: (i.get(field), i.get("ID", "")), reverse=bool_param(request, "reverse")
    )


_TIME_AND_ID_KEYS = {
    "": "CreateTime",
    "createtime": "CreateTime",
    "createdat": "CreateTime",
    "modifytime": "ModifyTime",
    "modifiedat": "ModifyTime",
    "id": "ID",
}
"""``order_by`` values (lower-cased, ``_`` dropped) every listing sorts by."""

_HISTORY_SORTS = {
    "": "created",
    "createtime": "created",
    "createdat": "created",
    "modifytime": "updated",
    "modifiedat": "updated",
    "id": "id",
    "name": "name",
}
"""The same keys for the job listing, as :class:`~bacalhau.node.history.JobQuery` sorts."""


@attrs.define(eq=False)
class _Compat:
    api: Any
    """The server's ``_Api``: its node, limits, body reading and checks."""

    @property
    def node(self) -> Any:
        return self.api.node

    def _json(self, value: Any, status: int = 200) -> Response:
        return self.api._json(value, status)  # type: ignore[no-any-return]

    def _result(self, request: Request) -> JobResult:
        self.api._check_started()
        result: JobResult = self.node.describe(self.node.resolve(request.path_params["id"]))
        return result

    # --- jobs ------------------------------------------------------------------------------

    @endpoint
    async def put_job(self, request: Request) -> Response:
        self.api._check_started()
        body = self.api._body(request, self.api.limits.max_json_bytes)
        require_type(request, "application/json")
        doc = Doc.of(parse_json(await body.read()), "")
        job = doc.raw("Job")
        token = doc.text("IdempotencyToken")
        doc.skip("Namespace", "Credential")
        doc.done()
        if job is None:
            raise ValidationError("the body needs a Job", field="Job")
        translated = job_from_v1(job, path="Job")
        self.api._validate_engine(translated.spec)
        handle = await self.node.submit(translated.spec)
        warnings = list(translated.warnings)
        if token:
            warnings.append("IdempotencyToken: not kept; a repeated request submits again")
        return self._json({"JobID": handle.job_id, "EvaluationID": "", "Warnings": warnings})

    @endpoint
    async def list_jobs(self, request: Request) -> Response:
        """A page of the node's job history: an indexed query run off the event loop,
        paged by key (``next_token`` is the opaque cursor of the next page; a number, as
        earlier releases gave, is still read as an offset)."""
        self.api._check_started()
        name = request.query_params.get("order_by", "") or ""
        sort = _HISTORY_SORTS.get(name.lower().replace("_", ""))
        if sort is None:
            raise ApiError(
                f"order_by must be one of {', '.join(k for k in _HISTORY_SORTS if k)}, "
                f"got {name!r}",
                status=400,
                code="bad_parameter",
            )
        limit = int_param(request, "limit", 10, 0, MAX_PAGE) or 10
        token = request.query_params.get("next_token", "") or ""
        offset = 0
        if token.isdigit() and len(token) <= 12:
            offset, token = int(token), ""
        try:
            query = JobQuery(
                sort=sort,
                order="newest" if bool_param(request, "reverse") else "oldest",
                limit=limit,
                after=token or None,
                offset=offset,
            )
            found = await self.node.query_jobs(query)
        except ValidationError:
            raise ApiError(
                f"next_token must be a token from a previous page, got {token[:80]!r}",
                status=400,
                code="bad_parameter",
            ) from None
        results = await self.node.describe_rows(found.rows)
        items = [render.job_to_v1(r) for r in results]
        return self._json({"Items": items, "NextToken": found.next or ""})

    @endpoint
    async def get_job(self, request: Request) -> Response:
        result = self._result(request)
        include = {
            p.strip().lower()
            for p in request.query_params.get("include", "").split(",")
            if p.strip()
        }
        unknown = include - {"executions", "history"}
        if unknown:
            raise ApiError(
                f"include takes executions and history, got {', '.join(sorted(unknown))}",
                status=400,
                code="bad_parameter",
            )
        limit = int_param(request, "limit", MAX_PAGE, 0, MAX_PAGE) or MAX_PAGE
        out: dict[str, Any] = {"Job": render.job_to_v1(result)}
        if "executions" in include:
            items = [render.execution_to_v1(result, ex) for ex in result.executions]
            out["Executions"] = {"Items": items[:limit], "NextToken": ""}
        if "history" in include:
            out["History"] = {"Items": render.history_to_v1(result)[:limit], "NextToken": ""}
        return self._json(out)

    @endpoint
    async def stop_job(self, request: Request) -> Response:
        result = self._result(request)
        if result.state.terminal:
            raise ApiError(
                f"job {result.job_id} is already {render.JOB_STATES[result.state.value]}; "
                "nothing to stop",
                status=409,
                code="job_finished",
            )
        reason = request.query_params.get("reason") or "stopped by the user"
        await self.node.cancel(result.job_id, reason)
        return self._json({"EvaluationID": ""})

    @endpoint
    async def executions(self, request: Request) -> Response:
        result = self._result(request)
        items = [render.execution_to_v1(result, ex) for ex in result.executions]
        _order(
            request,
            items,
            {
                **_TIME_AND_ID_KEYS,
                "nodeid": "NodeID",
            },
        )
        page, token = _page(request, items, 10)
        return self._json({"Items": page, "NextToken": token})

    @endpoint
    async def history(self, request: Request) -> Response:
        result = self._result(request)
        items = render.history_to_v1(result)
        kind = (request.query_params.get("event_type") or "all").lower()
        levels = {"all": None, "job": "JobLevel", "execution": "ExecutionLevel"}
        if kind not in levels:
            raise ApiError(
                f"event_type must be all, job or execution, got {kind!r}",
                status=400,
                code="bad_parameter",
            )
        node = request.query_params.get("node_id", "")
        execution = request.query_params.get("execution_id", "")
        since = int_param(request, "since", 0, 0, 2**62)
        start = result.events[0].time if result.events else 0.0
        times = [e.time for e in result.events]
        items = [
            item
            for item, t in zip(items, times, strict=True)
            if (levels[kind] is None or item["Type"] == levels[kind])
            and (not node or item.get("NodeID", "").startswith(node))
            and (not execution or item.get("ExecutionID") == execution)
            and t >= (since if since else start)
        ]
        page, token = _page(request, items, MAX_PAGE)
        return self._json({"Items": page, "NextToken": token})

    @endpoint
    async def results(self, request: Request) -> Response:
        result = self._result(request)
        return self._json({"Items": render.results_to_v1(result), "NextToken": ""})

    @endpoint
    async def logs(self, request: Request) -> Response:
        result = self._result(request)
        execution = request.query_params.get("execution_id", "")
        tail = bool_param(request, "tail")
        if bool_param(request, "follow"):
            with anyio.move_on_after(FOLLOW_LIMIT):
                while not result.state.terminal:
                    changed = await self.api._wait_change(result.job_id)
                    if not changed and self.api.stopping.is_set():
                        break
                    result = self.node.describe(result.job_id)
        chosen = [
            ex
            for ex in result.executions
            if not execution or render.execution_id(result.job_id, ex.node_id) == execution
        ]
        if execution and not chosen:
            raise ApiError(
                f"job {result.job_id} has no execution {execution!r}", status=404, code="not_found"
            )
        text = "".join([await self._log_text(ex) for ex in chosen if ex.state.terminal])
        if tail:
            text = "\n".join(text.splitlines()[-10:]) + ("\n" if text else "")
        return PlainTextResponse(text)

    async def _log_text(self, ex: ExecutionResult) -> str:
        out = await self.api._log(ex, "stdout")
        err = await self.api._log(ex, "stderr")
        return str(out.data) + str(err.data)

    # --- nodes and the agent ---------------------------------------------------------------

    def _nodes(self) -> list[dict[str, Any]]:
        self.api._check_started()
        version = _version()
        # the requester's node table where the node keeps one (announced infos), else peers
        table = getattr(self.node, "known_nodes", None)
        known: dict[str, Any] = {i.node_id: i for i in (table() if callable(table) else [])}
        out = [render.node_to_v1(self.node.info(), self.node.node_id, version)]
        for peer in sorted(set(self.node.peers()) | set(known)):
            if peer != self.node.node_id:
                out.append(render.node_to_v1(known.get(peer), peer, version))
        return out

    @endpoint
    async def list_nodes(self, request: Request) -> Response:
        nodes = self._nodes()
        nodes.sort(key=lambda n: n["Info"]["NodeID"], reverse=bool_param(request, "reverse"))
        page, token = _page(request, nodes, 100)
        return self._json({"NextToken": token, "Nodes": page, "nodes": page})

    @endpoint
    async def get_node(self, request: Request) -> Response:
        wanted = request.path_params["id"]
        found = [n for n in self._nodes() if n["Info"]["NodeID"].startswith(wanted)]
        if len(found) != 1:
            raise ApiError(
                f"no node {wanted!r} is known here" if not found else f"{wanted!r} is ambiguous",
                status=404,
                code="not_found",
            )
        return self._json({"Node": found[0], "node": found[0]})

    @endpoint
    async def alive(self, request: Request) -> Response:
        return self._json({"Status": "OK"})

    @endpoint
    async def livez(self, request: Request) -> Response:
        return PlainTextResponse("OK")

    @endpoint
    async def agent_version(self, request: Request) -> Response:
        return self._json(render.version_info(_version()))

    @endpoint
    async def server_version(self, request: Request) -> Response:
        info = render.version_info(_version())
        return self._json({"build_version_info": info, "BuildVersionInfo": info})

    @endpoint
    async def agent_node(self, request: Request) -> Response:
        self.api._check_started()
        state = render.node_to_v1(self.node.info(), self.node.node_id, _version())
        return self._json(state["Info"])

    @endpoint
    async def node_id(self, request: Request) -> Response:
        self.api._check_started()
        return self._json(self.node.node_id)

    @endpoint
    async def healthz(self, request: Request) -> Response:
        def space(path: str) -> dict[str, int]:
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                return {"All": 0, "Free": 0, "Used": 0}
            return {"All": usage.total, "Free": usage.free, "Used": usage.used}

        root = str(getattr(self.node, "data_dir", None) or os.sep)
        free = await anyio.to_thread.run_sync(lambda: {"root": space(root), "tmp": space("/tmp")})
        return self._json({"FreeSpace": free})


def _version() -> str:
    from .server import _version as ours

    return ours()


class _BacalhauMount(Mount):
    """Matches Bacalhau's paths only, so ours keep their own 404 and 405 answers."""

    roots = ("orchestrator", "agent", "version", "id", "node_info", "livez", "healthz")
    methods: set[str] | None = None
    """A mount serves many methods; listed by its routes, not here (as a Route lists them)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = str(scope.get("path", ""))
        rest = path.removeprefix(PREFIX + "/")
        if rest == path or rest.split("/", 1)[0] not in self.roots:
            return Match.NONE, {}
        return super().matches(scope)


def mount(api: Any) -> Mount:
    """Bacalhau's routes (they share the ``/api/v1`` prefix with ours, not a path)."""
    c = _Compat(api)

    def route(path: str, fn: Any, *methods: str) -> Route:
        return Route(path, fn, methods=list(methods))

    o = "/orchestrator"
    return _BacalhauMount(
        PREFIX,
        routes=[
            route(f"{o}/jobs", c.put_job, "PUT"),
            route(f"{o}/jobs", c.list_jobs, "GET"),
            route(f"{o}/jobs/{{id}}", c.get_job, "GET"),
            route(f"{o}/jobs/{{id}}", c.stop_job, "DELETE"),
            route(f"{o}/jobs/{{id}}/executions", c.executions, "GET"),
            route(f"{o}/jobs/{{id}}/history", c.history, "GET"),
            route(f"{o}/jobs/{{id}}/results", c.results, "GET"),
            route(f"{o}/jobs/{{id}}/logs", c.logs, "GET"),
            route(f"{o}/nodes", c.list_nodes, "GET"),
            route(f"{o}/nodes/{{id}}", c.get_node, "GET"),
            route("/agent/alive", c.alive, "GET"),
            route("/agent/version", c.agent_version, "GET"),
            route("/agent/node", c.agent_node, "GET"),
            route("/version", c.server_version, "POST"),
            route("/version", c.agent_version, "GET"),
            route("/id", c.node_id, "GET"),
            route("/node_info", c.agent_node, "GET"),
            route("/livez", c.livez, "GET"),
            route("/healthz", c.healthz, "GET"),
        ],
    )
