"""Frozen values: job specs, deals, volumes, states, results.

Every value validates itself at construction and raises
:class:`~bacalhau.errors.ValidationError` naming the field that is wrong, so a
bad spec fails where it is written, not on a node three hops away.

Values convert to plain data with :func:`bacalhau.convert.to_data` and back with
:func:`bacalhau.convert.from_data` (unknown fields are refused); the wire uses msgpack and the
HTTP API JSON over the same plain data.
"""

from __future__ import annotations

import base64
import enum
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from .errors import ValidationError
from .selectors import Selector, check_labels, matches

__all__ = [
    "Deal",
    "EngineSpec",
    "ExecutionResult",
    "ExecutionState",
    "GpuInfo",
    "InputSpec",
    "JobEvent",
    "JobResult",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "OutputSpec",
    "Resources",
    "Selector",
    "StorageRef",
    "StorageSpec",
    "matches",
    "parse_size",
]

T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}(=[A-Za-z0-9_.\-:]{0,63})?$")
"""A job label: a name (``gpu``) or ``key=value`` (``env=prod``, Bacalhau's label maps)."""
MAX_NAME = 256

DEFAULT_QUEUE_TIMEOUT = 600.0
"""Seconds a job may wait for a node to take it (busy network, no matching node yet)."""

MAX_INLINE_BYTES = 1 << 20
"""Inline volumes and inline modules travel inside the job; keep them small."""


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(message, field=field)


def check_abs_path(field: str, path: str) -> None:
    """Refuse relative paths, ``..`` components, NULs and empty names."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise _fail(field, f"must be an absolute path, got {path!r}")
    if "\x00" in path:
        raise _fail(field, "must not contain NUL")
    parts = [p for p in path.split("/") if p]
    if any(p in ("..", ".") for p in parts):
        raise _fail(field, f"must not contain '.' or '..' components, got {path!r}")
    if not parts:
        raise _fail(field, "must not be the root directory '/'")


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str | int) -> int:
    """Parse ``512Mi``, ``1GB``, ``1.5g`` or a plain byte count into bytes.

    ``Ki``/``Mi``/``Gi`` and lower-case ``kb``/``mb``/``gb`` are binary (as Docker
    reads ``--memory 1g``); ``KB``/``MB``/``GB`` are decimal.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValidationError(f"size must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValidationError(f"not a size: {text!r} (try 512Mi, 2GB or a byte count)")
    number, unit = float(m.group(1)), (m.group(2) or "")
    binary = "i" in unit.lower() or (unit[:1].islower() and unit[:1] != "b")
    base = unit.lower().rstrip("ib") or ""
    scale = 1024 ** "bkmgt".index(base) if binary and base else _SIZE_UNITS[base]
    return int(number * scale)


@attrs.frozen(kw_only=True)
class StorageSpec:
    """Where a piece of data comes from.

    Args:
        type: ``ipfs`` (by ``cid``), ``url`` (``url``, optional ``checksum``
            ``sha256:HEX``), ``inline`` (``data``, at most 1 MiB) or a plugin's name.
        path: for ``ipfs``, an optional path inside the CID's DAG.
    """

    type: str
    cid: str | None = None
    url: str | None = None
    data: bytes | None = None
    checksum: str | None = None
    path: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.type, str) or not _TYPE_RE.match(self.type):
            raise _fail("type", f"not a storage type name: {self.type!r}")
        if self.type == "ipfs":
            if not self.cid:
                raise _fail("cid", "an ipfs source needs a cid")
            from .cid import validate_cid

            validate_cid(self.cid, field="cid")
        elif self.type == "url":
            if not self.url or not re.match(r"^https?://", self.url):
                raise _fail("url", f"a url source needs an http(s) url, got {self.url!r}")
        elif self.type == "inline":
            if self.data is None:
                raise _fail("data", "an inline source needs data")
            if len(self.data) > MAX_INLINE_BYTES:
                raise _fail("data", f"inline data is {len(self.data)} bytes; at most 1 MiB")
        if self.checksum is not None and not re.match(r"^sha256:[0-9a-f]{64}$", self.checksum):
            raise _fail("checksum", "must be 'sha256:' and 64 lower-case hex digits")

    @classmethod
    def ipfs(cls, cid: str, *, path: str | None = None) -> StorageSpec:
        return cls(type="ipfs", cid=cid, path=path)

    @classmethod
    def inline(cls, data: bytes | str) -> StorageSpec:
        return cls(type="inline", data=data.encode() if isinstance(data, str) else data)

    @classmethod
    def from_url(cls, url: str, *, checksum: str | None = None) -> StorageSpec:
        return cls(type="url", url=url, checksum=checksum)


@attrs.frozen
class InputSpec:
    """An input volume: ``source`` presented read-only at absolute ``target``."""

    source: StorageSpec
    target: str

    def __attrs_post_init__(self) -> None:
        check_abs_path("target", self.target)


@attrs.frozen
class OutputSpec:
    """A named output volume, writable at absolute ``path`` inside the job."""

    name: str
    path: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise _fail(
                "name",
                f"output name {self.name!r} must be 1-64 letters, digits, '_', '-' or '.'"
                " (no '/' or '..') and not start with '.'",
            )
        if self.name in ("stdout", "stderr", "exitCode"):
            raise _fail("name", f"output name {self.name!r} is reserved for the job's own files")
        check_abs_path("path", self.path)


@attrs.frozen(kw_only=True)
class Resources:
    """What a job asks for. ``cpu`` in cores, ``memory``/``disk`` in bytes."""

    cpu: float = 0.1
    memory: int = 256 * 1024 * 1024
    disk: int = 0
    gpu: int = 0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.cpu, int | float) or not math.isfinite(self.cpu) or self.cpu <= 0:
            raise _fail("cpu", f"must be a positive number of cores, got {self.cpu!r}")
        if self.cpu > 1_000_000:
            raise _fail("cpu", f"must be at most 1000000 cores, got {self.cpu!r}")
        for name, most in (("memory", 2**62), ("disk", 2**62), ("gpu", 1024)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _fail(name, f"must be a non-negative integer, got {value!r}")
            if value > most:
                raise _fail(name, f"must be at most {most}, got {value}")
        if self.memory < 1024 * 1024:
            raise _fail("memory", f"must be at least 1 MiB, got {self.memory} bytes")


@attrs.frozen(kw_only=True)
class Deal:
    """How many nodes run a job and how many must agree.

    Args:
        concurrency: how many nodes run the job (>= 1).
        confidence: how many agreeing proposals accept the result; 0 means the
            verifier's own rule (for ``noop``, every proposal is accepted).
        min_bids: how many bids to wait for before choosing among them.
        audit: with the ``audit`` verifier, the probability (0 to 1) that another
            node, chosen at random after the worker has committed to its results,
            re-runs the job to check them (see docs/verification.md). The requester
            audits at least as often as its own setting and always a node's first jobs.
    """

    concurrency: int = 1
    confidence: int = 0
    min_bids: int = 0
    audit: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("concurrency", "confidence", "min_bids"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise _fail(name, f"must be an integer, got {value!r}")
        audit = self.audit
        if isinstance(audit, bool) or not isinstance(audit, int | float) or not 0 <= audit <= 1:
            raise _fail("audit", f"must be a probability from 0 to 1, got {audit!r}")
        if self.concurrency < 1:
            raise _fail("concurrency", f"must be at least 1, got {self.concurrency}")
        if self.concurrency > 100:
            raise _fail("concurrency", f"must be at most 100, got {self.concurrency}")
        if self.confidence < 0:
            raise _fail("confidence", f"must not be negative, got {self.confidence}")
        if self.confidence > self.concurrency:
            raise _fail(
                "confidence",
                f"{self.confidence} agreeing results can never come from "
                f"concurrency {self.concurrency} (use confidence <= concurrency)",
            )
        if not 0 <= self.min_bids <= 10_000:
            raise _fail("min_bids", f"must be from 0 to 10000, got {self.min_bids}")


@attrs.frozen
class EngineSpec:
    """Which executor runs the job and its parameters (the executor validates them).

    ``noop``: ``stdout``, ``stderr``, ``exit_code``, ``files`` ({output/name: text}),
    ``delay`` (seconds), ``error`` (fail the execution with this message).
    ``wasm``: ``module`` (a StorageSpec as data), ``entry_point``, ``args``.
    ``docker``: ``image``, ``entrypoint``, ``cmd``, ``workdir``.
    """

    type: str
    params: dict[str, Any] = attrs.field(factory=dict, eq=True, hash=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.type, str) or not _TYPE_RE.match(self.type):
            raise _fail("type", f"not an engine name: {self.type!r}")
        if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
            raise _fail("params", "must be a mapping with string keys")
        object.__setattr__(self, "params", _json_safe(self.params))


_INT_RANGE = (-(2**63), 2**64 - 1)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Params travel as JSON and msgpack alike: bytes inside them become base64 text
    (read them back with ``from_data``, which accepts either). Anything neither can
    carry (huge integers, NaN, deep nesting, other types) is refused here."""
    if depth > 16:
        raise _fail("params", "nested more than 16 levels deep")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _fail("params", "mapping keys must be strings")
        return {k: _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise _fail("params", f"integer {value} is out of the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("params", f"number {value} is not finite")
        return value
    raise _fail("params", f"values must be JSON-like, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class JobSpec:
    """Everything a node needs to run a job.

    Build one with :meth:`noop`, :meth:`wasm` or :meth:`docker`, or directly.
    ``labels`` are names or ``key=value`` pairs; ``name`` is a free-text name for
    people (Bacalhau's job ``Name``), not an identifier.
    """

    engine: EngineSpec
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    """Environment variables; read-only once the spec is built."""
    resources: Resources = Resources()
    timeout: float = 300.0
    deal: Deal = Deal()
    verifier: str = "noop"
    publisher: str = "ipfs"
    network: str = "none"
    retries: int = 2
    labels: tuple[str, ...] = ()
    name: str = ""
    deterministic: bool = False
    """The submitter's promise that the job's results depend only on its spec and inputs
    (the same results folder on every run), so that it can be audited by re-running it.
    WASM jobs are deterministic by construction; a Docker job is only when marked so."""
    selectors: tuple[Selector, ...] = ()
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    target: str = "any"

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "selectors", tuple(self.selectors))
        if not all(isinstance(s, Selector) for s in self.selectors):
            raise _fail("selectors", "must be Selector values (see bacalhau.parse_selectors)")
        if len(self.selectors) > 32:
            raise _fail("selectors", "at most 32 selectors")
        qt = self.queue_timeout
        if isinstance(qt, bool) or not isinstance(qt, int | float) or not 0 <= qt <= 7 * 86400:
            raise _fail("queue_timeout", f"must be from 0 to 7 days in seconds, got {qt!r}")
        if self.target not in ("any", "all"):
            raise _fail("target", f"must be 'any' or 'all', got {self.target!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "labels", tuple(self.labels))
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout <= 7 * 86400:
            raise _fail("timeout", f"must be between 0 and 7 days in seconds, got {self.timeout!r}")
        for name in ("verifier", "publisher"):
            if not isinstance(getattr(self, name), str) or not _TYPE_RE.match(getattr(self, name)):
                raise _fail(name, f"not a {name} name: {getattr(self, name)!r}")
        if self.network != "none":
            raise _fail("network", f"jobs run without network access, got {self.network!r}")
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 20:
            raise _fail("retries", f"must be an integer from 0 to 20, got {self.retries!r}")
        if not isinstance(self.env, Mapping):
            raise _fail("env", "must be a mapping of names to strings")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        for key, value in self.env.items():
            if not isinstance(key, str) or not _ENV_RE.match(key):
                raise _fail("env", f"not an environment variable name: {key!r}")
            if not isinstance(value, str) or "\x00" in value:
                raise _fail(f"env.{key}", "must be a string without NUL")
        names = [o.name for o in self.outputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _fail("outputs", f"duplicate output names: {', '.join(dupes)}")
        targets = [i.target for i in self.inputs] + [o.path for o in self.outputs]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise _fail("inputs", f"two volumes at the same path: {', '.join(dupes)}")
        for label in self.labels:
            if not isinstance(label, str) or not _LABEL_RE.match(label):
                raise _fail("labels", f"not a label (NAME or KEY=VALUE): {label!r}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME:
            raise _fail("name", f"must be text of at most {MAX_NAME} characters")
        if any(ord(c) < 32 for c in self.name):
            raise _fail("name", "must not contain control characters")
        if not isinstance(self.deterministic, bool):
            raise _fail("deterministic", f"must be true or false, got {self.deterministic!r}")
        if self.verifier == "audit" and not self.rerunnable:
            raise _fail(
                "verifier",
                f"an audit re-runs the job and compares results, so it needs a job that re-runs "
                f"to the same results: WASM jobs, or jobs marked deterministic (the submitter's "
                f"promise); this {self.engine.type} job is not marked deterministic",
            )
        if self.verifier == "audit" and self.deal.concurrency != 1:
            raise _fail(
                "deal.concurrency",
                f"the audit verifier runs the job on one node (and re-runs it only to "
                f"audit it), so concurrency must be 1, got {self.deal.concurrency}",
            )
        if self.deal.audit and self.verifier != "audit":
            raise _fail(
                "deal.audit",
                f"an audit probability needs verifier 'audit', not {self.verifier!r}",
            )

    @property
    def rerunnable(self) -> bool:
        """Whether re-running the job gives the same results (WASM, noop, or marked
        ``deterministic`` by the submitter): only such jobs can be audited."""
        return self.deterministic or self.engine.type in ("wasm", "noop")

    @property
    def min_bids(self) -> int:
        return self.deal.min_bids

    @classmethod
    def noop(
        cls,
        *,
        stdout: str = "",
        stderr: str = "",
        exit_code: int = 0,
        files: Mapping[str, str] | None = None,
        delay: float = 0.0,
        error: str | None = None,
        **kwargs: Any,
    ) -> JobSpec:
        """A job for the ``noop`` executor, which pretends to run and writes what it is told."""
        params: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "exit_code": exit_code}
        if files:
            params["files"] = dict(files)
        if delay:
            params["delay"] = delay
        if error is not None:
            params["error"] = error
        kwargs.setdefault("publisher", "noop")
        return cls(engine=EngineSpec("noop", params), **kwargs)

    @classmethod
    def wasm(
        cls,
        module: StorageSpec | bytes | str,
        *,
        args: tuple[str, ...] | list[str] = (),
        entry_point: str = "_start",
        **kwargs: Any,
    ) -> JobSpec:
        """A WASI job. ``module`` is a StorageSpec, a CID string, or module bytes/WAT text."""
        if isinstance(module, str) and not module.lstrip().startswith("("):
            source = StorageSpec.ipfs(module)
        elif isinstance(module, str | bytes):
            source = StorageSpec.inline(module)
        else:
            source = module
        params = {"module": attrs.asdict(source), "entry_point": entry_point, "args": list(args)}
        return cls(engine=EngineSpec("wasm", params), **kwargs)

    @classmethod
    def docker(
        cls,
        image: str,
        cmd: tuple[str, ...] | list[str] = (),
        *,
        entrypoint: tuple[str, ...] | list[str] | None = None,
        workdir: str | None = None,
        **kwargs: Any,
    ) -> JobSpec:
        """A job for the Docker executor."""
        params: dict[str, Any] = {"image": image, "cmd": list(cmd)}
        if entrypoint is not None:
            params["entrypoint"] = list(entrypoint)
        if workdir is not None:
            params["workdir"] = workdir
        return cls(engine=EngineSpec("docker", params), **kwargs)


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle, as its requester sees it.

    ``queued``: no node can take it right now (busy, or none matches yet); it waits
    for capacity until its ``queue_timeout``. ``bidding``: nodes have been asked.
    """

    BIDDING = "bidding"
    QUEUED = "queued"
    RUNNING = "running"
    VERIFYING = "verifying"
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class ExecutionState(enum.StrEnum):
    """One node's part in a job, as the requester sees it."""

    BID = "bid"
    BID_REJECTED = "bid_rejected"
    ACCEPTED = "accepted"
    PROPOSED = "proposed"
    RESULTS_ACCEPTED = "results_accepted"
    RESULTS_REJECTED = "results_rejected"
    PUBLISHED = "published"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (
            ExecutionState.BID_REJECTED,
            ExecutionState.RESULTS_REJECTED,
            ExecutionState.PUBLISHED,
            ExecutionState.FAILED,
            ExecutionState.LOST,
            ExecutionState.CANCELLED,
        )


@attrs.frozen(kw_only=True)
class StorageRef:
    """Where published results are: ``ipfs`` with ``cid``, ``local`` with ``path``, ``noop``."""

    type: str
    cid: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return self.cid or self.path or self.type


@attrs.frozen(kw_only=True)
class JobEvent:
    """One line of a job's history: ``kind`` happened at ``time`` (unix seconds)."""

    time: float
    kind: str
    node_id: str | None = None
    detail: str = ""


@attrs.frozen(kw_only=True)
class ExecutionResult:
    """One node's execution of a job."""

    node_id: str
    state: ExecutionState
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    published: StorageRef | None = None
    reason: str = ""
    verified: bool = False
    """The publication matched what the node committed to in its accepted proposal."""


@attrs.frozen(kw_only=True)
class JobResult:
    """What a job came to: its terminal state, executions and whole history."""

    job_id: str
    state: JobState
    reason: str
    spec: JobSpec
    requester_id: str
    executions: tuple[ExecutionResult, ...]
    events: tuple[JobEvent, ...]

    @property
    def ok(self) -> bool:
        return self.state is JobState.COMPLETED

    @property
    def accepted(self) -> tuple[ExecutionResult, ...]:
        """Executions whose results were accepted and published."""
        return tuple(e for e in self.executions if e.state is ExecutionState.PUBLISHED)

    @property
    def cid(self) -> str | None:
        """The published results CID of the first accepted execution, if any."""
        for execution in self.accepted:
            if execution.published and execution.published.cid:
                return execution.published.cid
        return None

    def raise_for_state(self) -> JobResult:
        """Return self if completed, else raise :class:`~bacalhau.errors.JobFailed`."""
        from .errors import JobFailed

        if not self.ok:
            raise JobFailed(f"job {self.job_id} {self.state.value}: {self.reason}")
        return self


@attrs.frozen(kw_only=True)
class GpuInfo:
    """One GPU a node offers (vendor and model where known)."""

    vendor: str = ""
    model: str = ""
    memory: int = 0


@attrs.frozen(kw_only=True)
class NodeInfo:
    """What a node tells about itself (``GET /node``, ``node describe``, and signed on the
    wire to every requester as its announcement).

    ``capacity`` is the total offered to jobs; ``free_cpu`` / ``free_memory`` /
    ``free_gpu`` what is not in use; ``free_slots`` how many more jobs it would take
    now (bids reserve one each); ``queued`` its queue depth. ``labels`` are matched by
    job selectors. ``seq`` orders one node's announcements.
    """

    node_id: str
    executors: tuple[str, ...]
    verifiers: tuple[str, ...]
    publishers: tuple[str, ...]
    storage: tuple[str, ...]
    peers: tuple[str, ...] = ()
    capacity: Resources | None = None
    running: int = 0
    version: str = ""
    transport: dict[str, Any] = attrs.field(factory=dict, hash=False)
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    free_cpu: float = 0.0
    free_memory: int = 0
    free_gpu: int = 0
    free_slots: int = 0
    queued: int = 0
    max_executions: int = 0
    gpus: tuple[GpuInfo, ...] = ()
    compute: bool = True
    seq: int = 0
    data: tuple[str, ...] = ()
    """Root CIDs this node holds (a bounded sample), for data-locality ranking."""
    unavailable: tuple[str, ...] = ()
    """Engines this node has but that do not answer now (a Docker executor with no engine
    running): not in ``executors``, named so a requester can say why."""

    def __attrs_post_init__(self) -> None:
        check_labels(self.labels)
