"""The HTTP API's bodies as frozen values, and their JSON Schemas for ``/openapi.json``.

Every request and response body is one of the ``@attrs.frozen`` classes here
(or a model from :mod:`bacalhau.models`), converted with
:func:`~bacalhau.models.to_json_data` / :func:`~bacalhau.models.from_json_data`,
so the server, the client and the OpenAPI document cannot drift apart: the
schemas are generated from the same classes (:func:`schema_for`).
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from typing import Any, Union

import attrs

from ..live.events import NodeEvent
from ..live.frames import LogFrame
from ..live.node import LogChunkLive
from ..models import (
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    NodeInfo,
    StorageRef,
)

__all__ = [
    "API_PREFIX",
    "CancelRequest",
    "CarImported",
    "DataAdded",
    "DataEntry",
    "ErrorBody",
    "ErrorDetail",
    "EventLine",
    "GcResult",
    "Health",
    "JobList",
    "JobSummary",
    "LogChunk",
    "NodeList",
    "PinList",
    "PublishedResult",
    "ResultsList",
    "SubmitRequest",
    "SubmitResponse",
    "component_schemas",
    "schema_for",
    "summarize",
]

API_PREFIX = "/api/v1"


@attrs.frozen
class SubmitRequest:
    """``POST /api/v1/jobs``: the job to run, with this node as its requester."""

    spec: JobSpec


@attrs.frozen
class SubmitResponse:
    """The new job's id (use it, or a unique prefix of it, everywhere else)."""

    job_id: str
    state: JobState


@attrs.frozen
class CancelRequest:
    """``POST /api/v1/jobs/{job_id}/cancel``: why (shown in the job's history)."""

    reason: str = "cancelled by the user"


@attrs.frozen(kw_only=True)
class JobSummary:
    """One line of ``GET /api/v1/jobs``."""

    job_id: str
    state: JobState
    engine: str
    created_at: float
    reason: str
    labels: tuple[str, ...]
    executions: int
    cid: str | None = None


@attrs.frozen
class NodeList:
    """``GET /api/v1/nodes``: the nodes this requester knows from their signed
    announcements, each with ``last_seen`` (unix seconds)."""

    nodes: tuple[NodeInfo, ...]
    last_seen: dict[str, float]


@attrs.frozen(kw_only=True)
class JobList:
    """A page of jobs, newest first. ``total`` counts every job matching the filters."""

    jobs: tuple[JobSummary, ...]
    total: int
    offset: int
    limit: int
    next: str | None = None
    """Pass as ``after`` for the next page (None: this is the last page)."""


@attrs.frozen
class EventLine:
    """One line of the NDJSON event stream: an event, and the job's state when the line
    was sent (history lines sent together carry the same, current, state)."""

    event: JobEvent
    state: JobState


@attrs.frozen(kw_only=True)
class LogChunk:
    """One line of the NDJSON log stream: a piece of one execution's ``stdout``/``stderr``.

    ``complete`` is False when ``data`` is only the head the node was told of
    (16 KiB) because the full log could not be read from the published results.
    """

    node_id: str
    stream: str
    data: str
    complete: bool = True


@attrs.frozen
class PublishedResult:
    """Where one accepted execution's results were published."""

    node_id: str
    ref: StorageRef


@attrs.frozen(kw_only=True)
class ResultsList:
    """``GET /api/v1/jobs/{job_id}/results``."""

    job_id: str
    state: JobState
    results: tuple[PublishedResult, ...]


@attrs.frozen(kw_only=True)
class DataAdded:
    """``POST /api/v1/data``: the root CID of what was stored (pinned) and its size.

    With ``?name=`` the file is wrapped in a folder under that name (as ``ipfs add -w``):
    ``cid`` is then the folder's CID and ``file_cid`` the file's own.
    """

    cid: str
    size: int
    file_cid: str | None = None


@attrs.frozen
class CarImported:
    """``POST /api/v1/data/car``: the archive's roots, now stored and pinned."""

    roots: tuple[str, ...]


@attrs.frozen(kw_only=True)
class DataEntry:
    """One entry of ``GET /api/v1/data/{cid}/ls`` (a file lists itself with name ``""``)."""

    name: str
    cid: str
    type: str
    size: int | None = None


@attrs.frozen
class PinList:
    """The node's pins: root CID -> ``recursive``."""

    pins: dict[str, str]


@attrs.frozen
class GcResult:
    """How many unpinned blocks ``POST /api/v1/data/gc`` removed."""

    removed: int


@attrs.frozen(kw_only=True)
class Health:
    """``GET /api/v1/health``: the node is up."""

    status: str
    node_id: str
    version: str


@attrs.frozen(kw_only=True)
class ErrorDetail:
    """What went wrong: a stable ``code``, a ``message`` for people, the ``field`` to fix."""

    code: str
    message: str
    field: str | None = None


@attrs.frozen
class ErrorBody:
    """Every 4xx/5xx answer of the API has this body."""

    error: ErrorDetail


def summarize(result: JobResult) -> JobSummary:
    """The list line for a job."""
    return JobSummary(
        job_id=result.job_id,
        state=result.state,
        engine=result.spec.engine.type,
        created_at=result.events[0].time if result.events else 0.0,
        reason=result.reason,
        labels=result.spec.labels,
        executions=len(result.executions),
        cid=result.cid,
    )


# --- JSON Schema from attrs classes ------------------------------------------------------

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    bytes: {"type": "string", "format": "byte"},
    Any: {},
}


def _ref(cls: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{cls.__name__}"}


def _type_schema(tp: Any, found: dict[str, type]) -> dict[str, Any]:
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = (
            _type_schema(members[0], found)
            if len(members) == 1
            else {"anyOf": [_type_schema(m, found) for m in members]}
        )
        if len(members) < len(args):
            return {"anyOf": [inner, {"type": "null"}]} if "$ref" in inner else _nullable(inner)
        return inner
    if origin in (tuple, list):
        item = args[0] if args else Any
        return {"type": "array", "items": _type_schema(item, found)}
    if origin in (dict, collections.abc.Mapping):
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": _type_schema(value, found)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        found.setdefault(tp.__name__, tp)
        return _ref(tp)
    if isinstance(tp, type) and attrs.has(tp):
        found.setdefault(tp.__name__, tp)
        return _ref(tp)
    raise TypeError(f"no JSON Schema for {tp!r}")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_TYPE = r"^[a-z][a-z0-9_\-]{0,31}$"
_ABS = r"^/"
CID_PATTERN = r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,200}|[zfFmMuU][0-9A-Za-z+/=_-]{10,300})$"
"""CIDv0 (base58btc ``Qm...``) or CIDv1 in a multibase (``b...`` base32 is canonical)."""

FIELD_CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    ("JobSpec", "timeout"): {"exclusiveMinimum": 0, "maximum": 7 * 86400},
    ("JobSpec", "verifier"): {"pattern": _TYPE},
    ("JobSpec", "publisher"): {"pattern": _TYPE},
    ("JobSpec", "network"): {"enum": ["none"]},
    ("JobSpec", "retries"): {"minimum": 0, "maximum": 20},
    ("JobSpec", "labels"): {
        "items": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}(=[A-Za-z0-9_.\-:]{0,63})?$",
        }
    },
    ("JobSpec", "name"): {"maxLength": 256, "pattern": r"^[^\x00-\x1f]*$"},
    ("JobSpec", "env"): {"propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"}},
    ("EngineSpec", "type"): {"pattern": _TYPE},
    ("StorageSpec", "type"): {"pattern": _TYPE},
    ("StorageSpec", "cid"): {"pattern": CID_PATTERN},
    ("StorageSpec", "checksum"): {"pattern": r"^sha256:[0-9a-f]{64}$"},
    ("InputSpec", "target"): {"pattern": _ABS},
    ("OutputSpec", "name"): {"pattern": _NAME},
    ("OutputSpec", "path"): {"pattern": _ABS},
    ("Deal", "concurrency"): {"minimum": 1, "maximum": 100},
    ("Deal", "confidence"): {"minimum": 0, "maximum": 100},
    ("Deal", "min_bids"): {"minimum": 0},
    ("Resources", "cpu"): {"exclusiveMinimum": 0},
    ("Resources", "memory"): {"minimum": 1024 * 1024},
    ("Resources", "disk"): {"minimum": 0},
    ("Resources", "gpu"): {"minimum": 0},
}
"""What the values check beyond their types, stated in the schema where JSON Schema can
(cross-field rules, such as confidence <= concurrency, are only in the server's 422s)."""


def schema_for(cls: type, found: dict[str, type] | None = None) -> dict[str, Any]:
    """The JSON Schema of an attrs class or enum (nested classes as ``$ref``s into ``found``)."""
    found = {} if found is None else found
    if issubclass(cls, enum.Enum):
        return {"type": "string", "enum": [m.value for m in cls]}
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):  # type: ignore[arg-type]  # attrs.has(cls) by contract
        properties[field.name] = {
            **_type_schema(hints[field.name], found),
            **FIELD_CONSTRAINTS.get((cls.__name__, field.name), {}),
        }
        if field.default is attrs.NOTHING:
            required.append(field.name)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        schema["description"] = " ".join(doc.split())
    if required:
        schema["required"] = required
    return schema


def component_schemas(roots: list[type]) -> dict[str, Any]:
    """Schemas of ``roots`` and every class they reach, by class name."""
    found: dict[str, type] = {cls.__name__: cls for cls in roots}
    out: dict[str, Any] = {}
    while len(out) < len(found):
        for name, cls in list(found.items()):
            if name not in out:
                out[name] = schema_for(cls, found)
    return dict(sorted(out.items()))


API_MODELS: list[type] = [
    SubmitRequest,
    SubmitResponse,
    CancelRequest,
    JobSummary,
    JobList,
    JobResult,
    EventLine,
    LogChunk,
    ResultsList,
    DataAdded,
    CarImported,
    DataEntry,
    PinList,
    GcResult,
    Health,
    NodeInfo,
    NodeList,
    ErrorBody,
    LogChunkLive,
    LogFrame,
    NodeEvent,
]
