"""Our jobs, executions, history and nodes in Bacalhau 1.x's JSON shapes.

State names (ours -> Bacalhau's):

====================  ==========================  ==================
our job state         Bacalhau ``JobStateType``
====================  ==========================  ==================
queued                Queued
bidding               Pending
running, verifying,   Running
publishing
completed             Completed
failed                Failed
cancelled             Stopped
====================  ==========================  ==================

Executions: ``bid`` is AskForBidAccepted, ``bid_rejected`` BidRejected, ``accepted`` /
``proposed`` / ``results_accepted`` BidAccepted (running), ``published`` Completed,
``failed`` / ``lost`` / ``results_rejected`` Failed, ``cancelled`` Cancelled.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from ..convert import from_data
from ..errors import ValidationError
from ..models import (
    ExecutionResult,
    ExecutionState,
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    NodeInfo,
    StorageSpec,
)
from .sources import input_to_v1, source_to_v1
from .units import format_bytes, format_cpu
from .v1 import META_PREFIX

__all__ = [
    "EXECUTION_STATES",
    "JOB_STATES",
    "execution_id",
    "execution_to_v1",
    "history_to_v1",
    "job_to_v1",
    "node_to_v1",
    "results_to_v1",
    "spec_to_v1",
    "version_info",
]

JOB_STATES: dict[str, str] = {
    "queued": "Queued",
    "bidding": "Pending",
    "running": "Running",
    "verifying": "Running",
    "publishing": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Stopped",
}
EXECUTION_STATES: dict[str, str] = {
    "bid": "AskForBidAccepted",
    "bid_rejected": "BidRejected",
    "accepted": "BidAccepted",
    "proposed": "BidAccepted",
    "results_accepted": "BidAccepted",
    "results_rejected": "Failed",
    "published": "Completed",
    "failed": "Failed",
    "lost": "Failed",
    "cancelled": "Cancelled",
}
_EVENT_STATES = {
    "bid": "AskForBidAccepted",
    "declined": "AskForBidRejected",
    "bid_accepted": "BidAccepted",
    "bid_rejected": "BidRejected",
    "proposed": "BidAccepted",
    "results_accepted": "BidAccepted",
    "results_rejected": "Failed",
    "published": "Completed",
    "execution_failed": "Failed",
    "execution_lost": "Failed",
}
_JOB_EVENTS = {
    "created": "Pending",
    "queued": "Queued",
    "recovered": None,
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Stopped",
}
_OPERATOR_NAMES = {"!exists": "!", ">": "gt", "<": "lt"}
"""Our selector operators Bacalhau (Kubernetes) spells differently."""
_NS = uuid.UUID("6f1c7c52-4d0b-4bde-9a55-2f1f0c0a7e11")


def execution_id(job_id: str, node_id: str) -> str:
    """A stable id for one node's execution of a job (Bacalhau's ``e-<uuid>``)."""
    return f"e-{uuid.uuid5(_NS, f'{job_id}/{node_id}')}"


def _nanos(t: float) -> int:
    return int(t * 1_000_000_000)


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _module(params: dict[str, Any]) -> StorageSpec | None:
    """The wasm module's source, or None when the params do not hold one (shown as they are)."""
    try:
        return from_data(params.get("module"), StorageSpec)
    except ValidationError:
        return None


def spec_to_v1(spec: JobSpec) -> dict[str, Any]:
    """The ``Task`` and job-level fields of ``spec`` (without server-set fields)."""
    params = dict(spec.engine.params)
    env = dict(spec.env)
    if spec.engine.type == "docker":
        engine: dict[str, Any] = {
            "Image": params.get("image", ""),
            "Parameters": list(params.get("cmd") or []),
        }
        if params.get("entrypoint") is not None:
            engine["Entrypoint"] = list(params["entrypoint"])
        if params.get("workdir"):
            engine["WorkingDirectory"] = params["workdir"]
    elif spec.engine.type == "wasm" and _module(params) is not None:
        module = _module(params)
        assert module is not None
        engine = {
            "EntryModule": {"Source": source_to_v1(module), "Target": "", "Alias": ""},
            "EntryPoint": params.get("entry_point", "_start"),
            "Parameters": list(params.get("args") or []),
        }
    else:
        engine = params
    meta: dict[str, str] = {}
    if spec.verifier != "noop":
        meta[f"{META_PREFIX}verifier"] = spec.verifier
    if spec.deal.confidence:
        meta[f"{META_PREFIX}confidence"] = str(spec.deal.confidence)
    if spec.deal.min_bids:
        meta[f"{META_PREFIX}min_bids"] = str(spec.deal.min_bids)
    if spec.retries != JobSpec.__attrs_attrs__.retries.default:
        meta[f"{META_PREFIX}retries"] = str(spec.retries)
    timeouts: dict[str, Any] = {"ExecutionTimeout": round(spec.timeout)}
    queue = getattr(spec, "queue_timeout", None)
    if queue is not None:
        timeouts["QueueTimeout"] = round(queue)
    labels: dict[str, str] = {}
    for label in spec.labels:
        key, _, value = label.partition("=")
        labels[key] = value
    constraints = [
        {
            "Key": s.key,
            "Operator": _OPERATOR_NAMES.get(s.operator, s.operator),
            "Values": list(s.values),
        }
        for s in getattr(spec, "selectors", ())
    ]
    r = spec.resources
    return {
        "Name": spec.name,
        "Namespace": "default",
        "Type": "ops" if getattr(spec, "target", "any") == "all" else "batch",
        "Priority": 0,
        "Count": spec.deal.concurrency,
        "Constraints": constraints,
        "Meta": meta,
        "Labels": labels,
        "Tasks": [
            {
                "Name": "main",
                "Engine": {"Type": spec.engine.type, "Params": engine},
                "Publisher": {"Type": spec.publisher, "Params": {}},
                "Env": env,
                "Meta": {},
                "InputSources": [input_to_v1(i) for i in spec.inputs],
                "ResultPaths": [{"Name": o.name, "Path": o.path} for o in spec.outputs],
                "Resources": {
                    "CPU": format_cpu(r.cpu),
                    "Memory": format_bytes(r.memory),
                    "Disk": format_bytes(r.disk) if r.disk else "",
                    "GPU": str(r.gpu) if r.gpu else "",
                },
                "Network": {"Type": "None"},
                "Timeouts": timeouts,
            }
        ],
    }


def job_to_v1(result: JobResult) -> dict[str, Any]:
    """A ``Job`` as Bacalhau's API shows it."""
    created = result.events[0].time if result.events else 0.0
    modified = result.events[-1].time if result.events else created
    job = spec_to_v1(result.spec)
    job["Name"] = job["Name"] or result.job_id
    job["Meta"] = {"bacalhau.org/requester.id": result.requester_id, **job["Meta"]}
    return {
        "ID": result.job_id,
        **job,
        "State": {
            "StateType": JOB_STATES.get(result.state.value, "Undefined"),
            "Message": result.reason,
        },
        "Version": 0,
        "Revision": len(result.events) + 1,
        "CreateTime": _nanos(created),
        "ModifyTime": _nanos(modified),
    }


def _execution_times(result: JobResult, node_id: str) -> tuple[float, float]:
    times = [e.time for e in result.events if e.node_id == node_id]
    if not times:
        start = result.events[0].time if result.events else 0.0
        return start, start
    return times[0], times[-1]


def execution_to_v1(result: JobResult, ex: ExecutionResult) -> dict[str, Any]:
    """One node's execution as Bacalhau's ``Execution``."""
    created, modified = _execution_times(result, ex.node_id)
    r = result.spec.resources
    published: dict[str, Any] | None = None
    if ex.published is not None:
        if ex.published.cid:
            published = {"Type": "ipfs", "Params": {"CID": ex.published.cid}}
        elif ex.published.path:
            published = {"Type": ex.published.type, "Params": {"URL": ex.published.path}}
        else:
            published = {"Type": ex.published.type, "Params": {}}
    desired = (
        "Stopped"
        if ex.state.terminal
        else ("Pending" if ex.state is ExecutionState.BID else "Running")
    )
    run_output = None
    if ex.exit_code is not None or ex.stdout or ex.stderr:
        run_output = {
            "Stdout": ex.stdout,
            "StdoutTruncated": False,
            "stderr": ex.stderr,
            "StderrTruncated": False,
            "ExitCode": ex.exit_code if ex.exit_code is not None else 0,
            "ErrorMsg": ex.reason if ex.state is ExecutionState.FAILED else "",
        }
    return {
        "ID": execution_id(result.job_id, ex.node_id),
        "Namespace": "default",
        "EvalID": "",
        "Name": "",
        "NodeID": ex.node_id,
        "JobID": result.job_id,
        "AllocatedResources": {
            "Tasks": {
                "main": {"CPU": r.cpu, "Memory": r.memory, "Disk": r.disk, "GPU": r.gpu, "GPUs": []}
            }
        },
        "DesiredState": {"StateType": desired, "Message": ""},
        "ComputeState": {
            "StateType": EXECUTION_STATES.get(ex.state.value, "Undefined"),
            "Message": ex.reason,
        },
        "PublishedResult": published,
        "RunOutput": run_output,
        "PreviousExecution": "",
        "NextExecution": "",
        "FollowupEvalID": "",
        "Revision": 1,
        "CreateTime": _nanos(created),
        "ModifyTime": _nanos(modified),
    }


def history_to_v1(result: JobResult) -> list[dict[str, Any]]:
    """The job's events as Bacalhau's ``JobHistory`` items, job level and execution level."""
    items: list[dict[str, Any]] = []
    job_state = "Undefined"
    exec_states: dict[str, str] = {}
    for revision, event in enumerate(result.events, start=1):
        items.append(_history_item(result, event, revision, job_state, exec_states))
        if _JOB_EVENTS.get(event.kind):
            job_state = _JOB_EVENTS[event.kind] or job_state
        elif event.kind == "bid_accepted" and job_state == "Pending":
            job_state = "Running"
        if event.node_id and event.kind in _EVENT_STATES:
            exec_states[event.node_id] = _EVENT_STATES[event.kind]
    return items


def _history_item(
    result: JobResult,
    event: JobEvent,
    revision: int,
    job_state: str,
    exec_states: dict[str, str],
) -> dict[str, Any]:
    message = event.kind.replace("_", " ") + (f": {event.detail}" if event.detail else "")
    base: dict[str, Any] = {
        "JobID": result.job_id,
        "NewRevision": revision,
        "Comment": message,
        "Time": _rfc3339(event.time),
        "Event": {
            "Message": message,
            "Topic": "Execution" if event.kind in _EVENT_STATES else "Job",
            "Timestamp": _rfc3339(event.time),
            "Details": {"kind": event.kind, **({"node": event.node_id} if event.node_id else {})},
        },
    }
    if event.kind in _EVENT_STATES and event.node_id:
        new = _EVENT_STATES[event.kind]
        return {
            "Type": "ExecutionLevel",
            **base,
            "NodeID": event.node_id,
            "ExecutionID": execution_id(result.job_id, event.node_id),
            "ExecutionState": {
                "Previous": exec_states.get(event.node_id, "New"),
                "New": new,
            },
        }
    new_job = _JOB_EVENTS.get(event.kind) or job_state
    if event.kind == "bid_accepted":
        new_job = "Running"
    return {
        "Type": "JobLevel",
        **base,
        "JobState": {"Previous": job_state, "New": new_job},
    }


def results_to_v1(result: JobResult) -> list[dict[str, Any]]:
    """The published results as ``SpecConfig`` items (``ipfs`` with a ``CID``)."""
    out = []
    for ex in result.accepted:
        if ex.published is None:
            continue
        if ex.published.cid:
            out.append({"Type": "ipfs", "Params": {"CID": ex.published.cid}})
        elif ex.published.path:
            out.append({"Type": ex.published.type, "Params": {"URL": ex.published.path}})
    return out


def version_info(version: str) -> dict[str, Any]:
    """Bacalhau's ``BuildVersionInfo`` for our version."""
    import platform

    parts = [*version.split("."), "0", "0"][:2]
    return {
        "Major": parts[0],
        "Minor": parts[1],
        "GitVersion": f"v{version}",
        "GitCommit": "",
        "BuildDate": "1970-01-01T00:00:00Z",
        "GOOS": platform.system().lower(),
        "GOARCH": platform.machine().lower(),
    }


def node_to_v1(info: NodeInfo | None, node_id: str, version: str) -> dict[str, Any]:
    """A ``NodeState`` (``Info``, ``Membership``, ``Connection``) for a node we know."""
    node: dict[str, Any] = {
        "NodeID": node_id,
        "NodeType": "Compute",
        "Labels": dict(getattr(info, "labels", {}) or {}),
        "BacalhauVersion": version_info(version),
    }
    if info is not None:
        cap = info.capacity
        maximum = (
            {"CPU": cap.cpu, "Memory": cap.memory, "Disk": cap.disk, "GPU": cap.gpu, "GPUs": []}
            if cap is not None
            else {}
        )
        node["ComputeNodeInfo"] = {
            "ExecutionEngines": list(info.executors),
            "Publishers": list(info.publishers),
            "StorageSources": [
                {"url": "urlDownload", "ipfs": "ipfs", "inline": "inline"}.get(s, s)
                for s in info.storage
            ],
            "MaxCapacity": maximum,
            "AvailableCapacity": maximum,
            "QueueCapacity": {},
            "MaxJobRequirements": maximum,
            "RunningExecutions": info.running,
            "EnqueuedExecutions": int(getattr(info, "queued", 0)),
        }
    return {
        "Info": node,
        "Membership": "APPROVED",
        "Connection": "CONNECTED",
    }


def job_state_of(name: str) -> JobState | None:
    """Our job state for a Bacalhau state name (``Stopped`` -> cancelled), if any."""
    low = name.lower()
    for ours, theirs in JOB_STATES.items():
        if theirs.lower() == low:
            return JobState(ours)
    return None
