"""HTTP plumbing of the API server: errors as JSON, bounded bodies, query parameters."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import Response

from ..convert import to_json_data
from ..errors import (
    ApiError,
    BacalhauError,
    BlockNotFound,
    CorruptBlock,
    DecodeError,
    JobNotFound,
    NodeNotFound,
    StorageError,
    ValidationError,
)
from .schemas import ErrorBody, ErrorDetail

__all__ = [
    "Body",
    "bool_param",
    "cid_param",
    "dumps",
    "endpoint",
    "error_response",
    "int_param",
    "parse_json",
    "require_type",
    "without_paths",
]

log = logging.getLogger("bacalhau.api")

DRAIN_CAP = 64 * 1024 * 1024
"""After refusing a body as too large, read (and drop) at most this much more of it so
the client can read the 413 before the connection closes."""

# --- errors ------------------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The first BacalhauError inside (nested) exception groups, else the first leaf."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if _has_bacalhau(e)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _has_bacalhau(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_has_bacalhau(e) for e in exc.exceptions)
    return isinstance(exc, BacalhauError)


def _status_of(exc: BaseException) -> tuple[int, str, str | None]:
    """(HTTP status, error code, field) for an exception."""
    if isinstance(exc, ApiError):
        return exc.status or 400, exc.code, None
    if isinstance(exc, ValidationError):
        return 422, "validation_error", exc.field
    if isinstance(exc, JobNotFound):
        return 404, "job_not_found", None
    if isinstance(exc, BlockNotFound):
        return 404, "block_not_found", None
    if isinstance(exc, NodeNotFound):
        return 404, "node_not_found", None
    if isinstance(exc, DecodeError):
        return 400, "malformed_data", None
    if isinstance(exc, CorruptBlock | StorageError):
        return 422, "storage_error", None
    if isinstance(exc, BacalhauError):
        return 409, "refused", None
    return 500, "internal_error", None


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = ErrorBody(ErrorDetail(code=code, message=message, field=field))
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def dumps(value: Any) -> bytes:
    return json.dumps(to_json_data(value), separators=(",", ":")).encode()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            f"the body is not valid JSON: {exc}", status=400, code="malformed_json"
        ) from None


# --- request helpers ---------------------------------------------------------------------


@attrs.define(kw_only=True)
class Body:
    """Reads a request body from the raw ASGI ``receive``, enforcing a size limit."""

    request: Request
    limit: int
    size: int = 0
    complete: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        length = self.request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(f"bad Content-Length {length!r}", status=400, code="bad_request")
            if int(length) > self.limit:
                raise self._too_large(int(length))
        while not self.complete:
            message = await self.request.receive()
            if message["type"] == "http.disconnect":
                raise ApiError("the client went away mid-body", status=400, code="bad_request")
            body = message.get("body", b"")
            self.complete = not message.get("more_body", False)
            self.size += len(body)
            if self.size > self.limit:
                raise self._too_large(self.size)
            if body:
                yield body

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def drain(self) -> None:
        """Read and drop what is left (bounded), so the client sees our answer."""
        dropped = 0
        with anyio.move_on_after(10):
            while not self.complete and dropped < DRAIN_CAP:
                message = await self.request.receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)

    def _too_large(self, size: int) -> ApiError:
        return ApiError(
            f"the body is {'at least ' if not self.complete else ''}{size} bytes; "
            f"this node accepts at most {self.limit} here",
            status=413,
            code="body_too_large",
        )


def require_type(request: Request, *expected: str) -> None:
    got = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if got not in expected:
        raise ApiError(
            f"the body must be {' or '.join(expected)}, got {got or 'no Content-Type'}",
            status=415,
            code="unsupported_media_type",
        )


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            f"{name} must be an integer, got {raw!r}", status=400, code="bad_parameter"
        ) from None
    if not low <= value <= high:
        raise ApiError(
            f"{name} must be from {low} to {high}, got {value}", status=400, code="bad_parameter"
        )
    return value


def bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(f"{name} must be true or false, got {raw!r}", status=400, code="bad_parameter")


def cid_param(request: Request) -> bytes:
    from ..cid import to_cid

    text = request.path_params["cid"]
    try:
        return to_cid(text)
    except ValidationError:
        raise ApiError(
            f"{text!r} is not a CID (expected Qm... or b...)", status=400, code="invalid_cid"
        ) from None


Handler = Callable[[Any, Request], Awaitable[Response]]


def without_paths(message: str, api: Any) -> str:
    """``message`` without the node's data dir or the temp dir in it (a client needs
    to know what was wrong, not where the node keeps its files)."""
    import tempfile

    try:
        data_dir = str(api.node.data_dir)
    except Exception:  # no node, or not started
        data_dir = ""
    for root, name in ((data_dir, "<data>"), (tempfile.gettempdir(), "<tmp>")):
        if root and root != "/":
            message = message.replace(root, name)
    return message


def endpoint(fn: Handler) -> Handler:
    """Turn any exception into a JSON error response (draining an unread body first)."""

    @functools.wraps(fn)
    async def wrapper(api: Any, request: Request) -> Response:
        try:
            return await fn(api, request)
        except Exception as raw:
            exc = _leaf(raw)
            status, code, field = _status_of(exc)
            if status >= 500:
                log.error("internal error on %s %s", request.method, request.url.path, exc_info=raw)
                message = f"internal error ({type(exc).__name__}); see the node's log"
            else:
                message = without_paths(str(exc), api)
            body = request.scope.get("bacalhau.body")
            if isinstance(body, Body) and not body.complete:
                await body.drain()
            return error_response(status, code, message, field)

    return wrapper
