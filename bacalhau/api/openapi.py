"""The OpenAPI 3.1 document of the node's HTTP API, served at ``/openapi.json``.

Body schemas are generated from the value classes in :mod:`bacalhau.api.schemas`
and :mod:`bacalhau.models`, so the document describes exactly what the server
parses and returns.
"""

from __future__ import annotations

from typing import Any

from .schemas import API_MODELS, API_PREFIX, CID_PATTERN, component_schemas

__all__ = ["openapi_document"]

_P = API_PREFIX
_NDJSON = "application/x-ndjson"
_CAR = "application/vnd.ipld.car"
_OCTETS = "application/octet-stream"


def _json(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorBody", description)


def _stream(media: str, item: str | None, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if media in (_OCTETS, _CAR):
        schema = {"type": "string", "format": "binary"}
    out: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if item is not None:
        out["content"][media]["x-item-schema"] = {"$ref": f"#/components/schemas/{item}"}
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "A job id or a unique prefix of one (at least 3 characters).",
}
_CID = {
    "name": "cid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": CID_PATTERN},
    "description": "A CIDv0 (Qm...) or CIDv1 string.",
}
_FOLLOW = _query(
    "follow", {"type": "boolean", "default": False}, "Keep streaming until the job ends."
)
_PATH = _query(
    "path", {"type": "string", "maxLength": 4096}, "A path inside the CID's directory tree."
)

_TAIL = _query(
    "tail",
    {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "Start with the last N kept (default: all kept).",
)

_COMMON_ERRORS = {
    "401": _error("A bearer token is required, or the one given is wrong."),
    "404": _error("No such job, CID or route."),
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    op_id: str,
    secure: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": op_id, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    if not secure:
        op["security"] = []
    return op


def _paths() -> dict[str, Any]:
    bad_json = {
        "400": _error("The body is not JSON, or a parameter is malformed."),
        "413": _error("The body is larger than the node accepts."),
        "415": _error("The body must be application/json."),
        "422": _error("The JSON is well formed but a field is invalid (named in 'field')."),
    }
    return {
        f"{_P}/health": {
            "get": _op(
                "The node is up",
                {"200": _json("Health", "The node is up.")},
                op_id="health",
                secure=False,
            ),
        },
        f"{_P}/node": {
            "get": _op(
                "Node info: id, peers, capacity, executors",
                {"200": _json("NodeInfo", "What the node tells about itself."), **_COMMON_ERRORS},
                op_id="nodeInfo",
            ),
        },
        f"{_P}/nodes": {
            "get": _op(
                "The nodes this requester knows (from their signed announcements)",
                {
                    "200": _json("NodeList", "Live nodes, with when each was last heard."),
                    **_COMMON_ERRORS,
                },
                op_id="listNodes",
            ),
        },
        f"{_P}/nodes/{{node_id}}": {
            "get": _op(
                "One known node's announcement, by id or unique prefix",
                {"200": _json("NodeInfo", "What the node announced."), **_COMMON_ERRORS},
                params=[
                    {
                        "name": "node_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "A node id or a unique prefix of one.",
                    }
                ],
                op_id="describeNode",
            ),
        },
        f"{_P}/jobs": {
            "get": _op(
                "List jobs, newest first",
                {
                    "200": _json("JobList", "A page of jobs."),
                    "400": _error("A filter or paging parameter is malformed."),
                    **_COMMON_ERRORS,
                },
                params=[
                    _query(
                        "state",
                        {"type": "string", "maxLength": 200},
                        "Only jobs in these states (comma-separated).",
                    ),
                    _query(
                        "label", {"type": "string", "maxLength": 64}, "Only jobs with this label."
                    ),
                    _query(
                        "engine",
                        {"type": "string", "maxLength": 32},
                        "Only jobs for this executor.",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "Page size.",
                    ),
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "default": 0},
                        "How many matching jobs to skip.",
                    ),
                ],
                op_id="listJobs",
            ),
            "post": _op(
                "Submit a job (this node becomes its requester)",
                {
                    "201": _json("SubmitResponse", "The job was accepted."),
                    **bad_json,
                    **_COMMON_ERRORS,
                },
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SubmitRequest"}
                        }
                    },
                },
                op_id="submitJob",
            ),
        },
        f"{_P}/jobs/{{job_id}}": {
            "get": _op(
                "Describe a job: spec, state, executions, events",
                {"200": _json("JobResult", "The job as it stands."), **_COMMON_ERRORS},
                params=[_JOB_ID],
                op_id="describeJob",
            ),
        },
        f"{_P}/jobs/{{job_id}}/events": {
            "get": _op(
                "Stream the job's events (NDJSON, one EventLine per line)",
                {
                    "200": _stream(_NDJSON, "EventLine", "Events; blank lines are keep-alives."),
                    "400": _error("A parameter is malformed."),
                    **_COMMON_ERRORS,
                },
                params=[_JOB_ID, _FOLLOW],
                op_id="jobEvents",
            ),
        },
        f"{_P}/jobs/{{job_id}}/logs": {
            "get": _op(
                "Stream the executions' stdout and stderr (NDJSON, one LogChunk per line)",
                {
                    "200": _stream(_NDJSON, "LogChunk", "Log chunks; blank lines are keep-alives."),
                    "400": _error("A parameter is malformed."),
                    **_COMMON_ERRORS,
                },
                params=[
                    _JOB_ID,
                    _FOLLOW,
                    _query(
                        "node",
                        {"type": "string", "maxLength": 200},
                        "Only executions on nodes whose id starts with this.",
                    ),
                    _query(
                        "stream",
                        {"type": "string", "enum": ["stdout", "stderr"]},
                        "Only this stream.",
                    ),
                ],
                op_id="jobLogs",
            ),
        },
        f"{_P}/jobs/{{job_id}}/logs/stream": {
            "get": _op(
                "Stream the executions' output live, line by line (NDJSON: one "
                "LogChunkLive per read of one execution's output; with format=batch one "
                "LogFrame per read, the lines in columns)",
                {
                    "200": _stream(
                        _NDJSON,
                        "LogChunkLive",
                        "Lines as they are written, what a reader missed (skipped) and the "
                        "end of each execution's output; blank lines are keep-alives. With "
                        "format=batch each line is a LogFrame instead.",
                    ),
                    "400": _error("A parameter is malformed."),
                    **_COMMON_ERRORS,
                },
                params=[
                    _JOB_ID,
                    _FOLLOW,
                    _TAIL,
                    _query(
                        "execution",
                        {"type": "string", "maxLength": 200},
                        "Only executions on nodes whose id starts with this.",
                    ),
                    _query(
                        "format",
                        {"type": "string", "enum": ["ndjson", "batch"], "default": "ndjson"},
                        "ndjson: one LogChunkLive per read (a JSON array per line); batch: one "
                        "LogFrame per read (the texts joined by newlines in one string, the "
                        "streams and partial flags one character a line, the times base64 of "
                        "little-endian float64s).",
                    ),
                ],
                op_id="jobLogStream",
            ),
        },
        f"{_P}/jobs/{{job_id}}/results": {
            "get": _op(
                "Where the job's accepted results were published",
                {"200": _json("ResultsList", "Published results."), **_COMMON_ERRORS},
                params=[_JOB_ID],
                op_id="jobResults",
            ),
        },
        f"{_P}/jobs/{{job_id}}/receipt": {
            "get": _op(
                "The completed job's signed receipt (check it with 'bacalhau verify')",
                {
                    "200": _json("Receipt", "The receipt, signed by this node."),
                    "409": _error("The job is not completed, or has no committed results."),
                    **_COMMON_ERRORS,
                },
                params=[_JOB_ID],
                op_id="jobReceipt",
            ),
        },
        f"{_P}/jobs/{{job_id}}/cancel": {
            "post": _op(
                "Cancel a job",
                {
                    "202": _json("SubmitResponse", "Cancellation requested; the state after it."),
                    **bad_json,
                    **_COMMON_ERRORS,
                },
                params=[_JOB_ID],
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CancelRequest"}
                        }
                    },
                },
                op_id="cancelJob",
            ),
        },
        f"{_P}/events": {
            "get": _op(
                "Stream the node's events: every job's events, peers joining and leaving "
                "(NDJSON of NodeEvent; text/event-stream when asked for)",
                {
                    "200": _stream(
                        _NDJSON, "NodeEvent", "Events in order; blank lines are keep-alives."
                    ),
                    "400": _error("A parameter is malformed."),
                    **_COMMON_ERRORS,
                },
                params=[
                    _FOLLOW,
                    _TAIL,
                    _query(
                        "after",
                        {"type": "integer", "minimum": -1, "maximum": 2**62},
                        "Only events after this sequence number (to resume a stream).",
                    ),
                ],
                op_id="nodeEvents",
            ),
        },
        f"{_P}/network": {
            "get": _op(
                "This node's info, then each live node of its requester's node table",
                {
                    "200": {
                        "description": "One NodeInfo per node, this node first.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/NodeInfo"},
                                }
                            }
                        },
                    },
                    **_COMMON_ERRORS,
                },
                op_id="network",
            ),
        },
        f"{_P}/data": {
            "post": _op(
                "Add one file's bytes to the node's store (pinned); returns its CID",
                {
                    "201": _json("DataAdded", "Stored and pinned."),
                    "400": _error("A parameter is malformed."),
                    "413": _error("The upload is larger than the node accepts."),
                    "415": _error("The body must be application/octet-stream."),
                    "422": _error("An import option is invalid."),
                    **_COMMON_ERRORS,
                },
                params=[
                    _query(
                        "name",
                        {"type": "string", "maxLength": 255},
                        "Wrap the file in a directory under this name.",
                    ),
                    _query(
                        "cid_version",
                        {"type": "integer", "enum": [0, 1], "default": 0},
                        "0 gives Qm... CIDs as 'ipfs add'; 1 gives bafy... with raw leaves.",
                    ),
                ],
                body={
                    "required": True,
                    "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
                },
                op_id="addData",
            ),
        },
        f"{_P}/data/car": {
            "post": _op(
                "Import a CARv1 archive (every block hash-checked; roots pinned)",
                {
                    "201": _json("CarImported", "Imported."),
                    "400": _error("The body is not a valid CAR archive."),
                    "413": _error("The upload is larger than the node accepts."),
                    "415": _error("The body must be application/vnd.ipld.car."),
                    "422": _error("A block does not match its CID, or a root is missing."),
                    **_COMMON_ERRORS,
                },
                body={
                    "required": True,
                    "content": {_CAR: {"schema": {"type": "string", "format": "binary"}}},
                },
                op_id="importCar",
            ),
        },
        f"{_P}/data/pins": {
            "get": _op(
                "The node's pinned roots",
                {"200": _json("PinList", "Pins."), **_COMMON_ERRORS},
                op_id="listPins",
            ),
        },
        f"{_P}/data/gc": {
            "post": _op(
                "Remove unpinned blocks",
                {"200": _json("GcResult", "Done."), **_COMMON_ERRORS},
                op_id="gc",
            ),
        },
        f"{_P}/data/{{cid}}/cat": {
            "get": _op(
                "The bytes of a file (fetched from peers when not held here)",
                {
                    "200": _stream(_OCTETS, None, "The file's bytes."),
                    "400": _error("Not a CID."),
                    "422": _error("Not a file, or the DAG is inconsistent."),
                    **_COMMON_ERRORS,
                },
                params=[_CID, _PATH],
                op_id="catData",
            ),
        },
        f"{_P}/data/{{cid}}/ls": {
            "get": _op(
                "The entries of a directory",
                {
                    "200": {
                        "description": "Entries.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/DataEntry"},
                                }
                            }
                        },
                    },
                    "400": _error("Not a CID."),
                    "422": _error("The DAG is inconsistent."),
                    **_COMMON_ERRORS,
                },
                params=[_CID, _PATH],
                op_id="lsData",
            ),
        },
        f"{_P}/data/{{cid}}/car": {
            "get": _op(
                "The whole DAG under a CID as a CARv1 archive (fetched from peers as needed)",
                {
                    "200": _stream(_CAR, None, "The archive."),
                    "400": _error("Not a CID."),
                    "422": _error("The DAG is damaged."),
                    **_COMMON_ERRORS,
                },
                params=[_CID],
                op_id="exportCar",
            ),
        },
        f"{_P}/data/{{cid}}/pin": {
            "post": _op(
                "Fetch and pin the DAG under a CID",
                {
                    "200": _json("PinList", "The pins after."),
                    "400": _error("Not a CID."),
                    "422": _error("The DAG is damaged."),
                    **_COMMON_ERRORS,
                },
                params=[_CID],
                op_id="pin",
            ),
            "delete": _op(
                "Unpin a CID",
                {
                    "200": _json("PinList", "The pins after."),
                    "400": _error("Not a CID."),
                    **_COMMON_ERRORS,
                },
                params=[_CID],
                op_id="unpin",
            ),
        },
    }


def openapi_document(*, version: str, token_required: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (a fresh dict each call).

    Args:
        version: the node's version, shown as the API's.
        token_required: whether the bearer token is mandatory (else optional).
    """
    from ..node.receipt import Receipt

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bacalhau-py node API",
            "version": version,
            "description": (
                "JSON over HTTP to one bacalhau node. Jobs submitted here have this node as "
                "their requester. Errors are JSON ErrorBody objects. When the node was started "
                "with a token, every route but /api/v1/health and /openapi.json needs "
                "'Authorization: Bearer TOKEN'."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}] if token_required else [{"bearer": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": component_schemas([*API_MODELS, Receipt]),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
