"""Bacalhau 1.x jobs (``Type: batch``, ``Count``, ``Tasks``) to our :class:`~.models.JobSpec`.

The rules, one per field (``docs/bacalhau-users.md`` has the table):

- what maps is mapped (``Count`` is the concurrency, ``Engine`` docker/wasm/noop, the
  ``InputSources``, ``ResultPaths``, ``Resources`` in Bacalhau's units, ``Timeouts``,
  ``Constraints``, ``Labels``, ``Env``, ``Publisher``);
- what would change how the job runs and has no counterpart here (a ``service`` job, an
  ``s3`` source, network access, a non-zero ``Priority``, several tasks) is refused with a
  :class:`~bacalhau.errors.ValidationError` naming the field (``Tasks[0].Network.Type``);
- what only describes the job and cannot be kept (an input ``Alias``, foreign ``Meta``)
  is accepted with a warning, returned beside the spec and shown to the user;
- server-set fields a document may carry back (``ID``, ``State``, ``Revision``,
  ``CreateTime``, ...) are ignored, as Bacalhau ignores them on submission.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..convert import to_data
from ..errors import ValidationError
from ..models import Deal, EngineSpec, InputSpec, JobSpec, OutputSpec, Resources
from ._read import Doc, fail, message_of
from .sources import input_from_v1, source_from_v1
from .units import parse_bytes, parse_cpu

__all__ = [
    "META_PREFIX",
    "Translated",
    "job_from_v1",
    "parse_constraint",
]

META_PREFIX = "bacalhau-py/"
"""``Meta`` keys that carry our own settings through Bacalhau's format (verifier, ...)."""
RESERVED_META = "bacalhau.org/"
"""``Meta`` keys Bacalhau's servers set; ignored on submission."""
SERVER_SET = ("ID", "State", "Version", "Revision", "CreateTime", "ModifyTime")

_OPERATORS = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "in": "in",
    "notin": "notin",
    "exists": "exists",
    "!": "!exists",
    "!exists": "!exists",
    "gt": ">",
    ">": ">",
    "lt": "<",
    "<": "<",
}
"""Bacalhau's label selector operators (Kubernetes' names) -> ours."""


@attrs.frozen(kw_only=True)
class Translated:
    """A job translated from Bacalhau's format, with what could not be kept.

    ``source`` is the shape it was read from (see :data:`bacalhau.compat.FORMATS`)."""

    spec: JobSpec
    warnings: tuple[str, ...] = ()
    source: str = "bacalhau-v1"


def _has_field(name: str) -> bool:
    return any(f.name == name for f in attrs.fields(JobSpec))


def parse_constraint(doc: Doc) -> Any:
    """One ``LabelSelectorRequirement`` (``Key``, ``Operator``, ``Values``) as our selector."""
    key = doc.text("Key")
    op = doc.text("Operator")
    values = doc.texts("Values")
    doc.done()
    if not _has_field("selectors"):
        raise fail(doc.path, "constraints are not supported by this node's version")
    from ..selectors import Selector  # type: ignore[import-not-found,unused-ignore]

    ours = _OPERATORS.get(op.lower())
    if ours is None:
        raise fail(doc.at("Operator"), f"{op!r} is not one of {', '.join(sorted(_OPERATORS))}")
    try:
        return Selector(key=key, operator=ours, values=tuple(values))
    except ValidationError as exc:
        raise fail(doc.path, message_of(exc)) from None


def _engine(doc: Doc, env: dict[str, str], warnings: list[str]) -> EngineSpec:
    kind = doc.text("Type")
    params = doc.doc("Params")
    doc.done()
    low = kind.lower()
    if low == "docker":
        out: dict[str, Any] = {"image": params.text("Image")}
        if params.has("Entrypoint"):
            out["entrypoint"] = params.texts("Entrypoint")
        out["cmd"] = params.texts("Parameters")
        if params.text("WorkingDirectory"):
            out["workdir"] = params.text("WorkingDirectory")
        for item in params.texts("EnvironmentVariables"):
            name, sep, value = item.partition("=")
            if not sep:
                raise fail(params.at("EnvironmentVariables"), f"{item!r} is not NAME=value")
            env[name] = value
        params.done()
        if not out["image"]:
            raise fail(params.at("Image"), "a docker job needs an Image")
        return EngineSpec("docker", out)
    if low == "wasm":
        entry = params.doc("EntryModule")
        if entry.has("Source"):
            module = source_from_v1(entry.doc("Source"))
            entry.skip("Target", "Alias")
            entry.done()
        elif entry.has("Type"):
            module = source_from_v1(entry)  # a bare source, as some examples write it
        else:
            raise fail(entry.path, "a wasm job needs an EntryModule with a Source")
        out = {
            "module": to_data(module),
            "entry_point": params.text("EntryPoint") or "_start",
            "args": params.texts("Parameters"),
        }
        env.update(params.text_map("EnvironmentVariables"))
        if params.raw("ImportModules"):
            raise fail(params.at("ImportModules"), "import modules have no counterpart here")
        params.done()
        return EngineSpec("wasm", out)
    if low == "noop":
        return EngineSpec("noop", dict(params.data))
    if not low:
        raise fail(doc.at("Type"), "a task needs an engine Type (docker, wasm or noop)")
    # a plugin's executor: its params go through as they are
    try:
        return EngineSpec(low, dict(params.data))
    except ValidationError as exc:
        raise fail(doc.path, message_of(exc)) from None


def _resources(doc: Doc) -> Resources:
    defaults = Resources()
    cpu = doc.raw("CPU", "") or defaults.cpu
    memory = doc.raw("Memory", "") or defaults.memory
    disk = doc.raw("Disk", "") or 0
    gpu = doc.raw("GPU", "") or 0
    doc.done()
    try:
        gpus = int(gpu) if isinstance(gpu, str | int) and not isinstance(gpu, bool) else -1
    except ValueError:
        gpus = -1
    if gpus < 0:
        raise fail(doc.at("GPU"), f"expected a whole number of GPUs, got {gpu!r}")
    try:
        return Resources(
            cpu=parse_cpu(cpu, field=doc.at("CPU")),
            memory=parse_bytes(memory, field=doc.at("Memory")),
            disk=parse_bytes(disk, field=doc.at("Disk")),
            gpu=gpus,
        )
    except ValidationError as exc:
        raise fail(
            exc.field if exc.field and "." in exc.field else doc.path, message_of(exc)
        ) from None


def _meta(doc: Doc, name: str, settings: dict[str, Any], warnings: list[str]) -> None:
    for key, value in doc.text_map(name).items():
        if key.startswith(RESERVED_META):
            continue
        if key.startswith(META_PREFIX):
            setting = key.removeprefix(META_PREFIX)
            if setting not in ("verifier", "confidence", "min_bids", "retries"):
                raise fail(f"{doc.at(name)}.{key}", "not a setting (verifier, confidence, ...)")
            settings[setting] = value
            continue
        warnings.append(f"{doc.at(name)}.{key}: metadata is not kept")


def job_from_v1(data: Any, *, path: str = "") -> Translated:
    """Translate a Bacalhau 1.x ``Job`` (as parsed JSON or YAML).

    Raises:
        ValidationError: a field is wrong or has no counterpart; the message and
            ``field`` name it (``Tasks[0].Engine.Params.Image``).
    """
    job = Doc.of(data, path)
    warnings: list[str] = []
    job.skip(*SERVER_SET)
    kind = job.text("Type", "batch").lower() or "batch"
    target = "any"
    if kind == "ops":
        if not _has_field("target"):
            raise fail(job.at("Type"), "ops jobs are not supported by this node's version")
        target = "all"
    elif kind != "batch":
        raise fail(
            job.at("Type"),
            f"{kind!r} jobs have no counterpart here (batch and ops jobs run to completion)",
        )
    namespace = job.text("Namespace")
    if namespace not in ("", "default"):
        raise fail(job.at("Namespace"), f"namespaces have no counterpart here, got {namespace!r}")
    if job.integer("Priority"):
        raise fail(job.at("Priority"), "priorities have no counterpart here (use 0)")
    count = job.integer("Count", 1) or 1
    name = job.text("Name")
    labels = [k if v == "" else f"{k}={v}" for k, v in job.text_map("Labels").items()]
    settings: dict[str, Any] = {}
    _meta(job, "Meta", settings, warnings)
    selectors = [parse_constraint(c) for c in job.docs("Constraints")]
    tasks = list(job.docs("Tasks"))
    job.done()
    if len(tasks) != 1:
        raise fail(job.at("Tasks"), f"a job has exactly one task, got {len(tasks)}")
    task = tasks[0]
    task.skip("Name")
    env = task.text_map("Env")
    engine = _engine(task.doc("Engine"), env, warnings)
    publisher_doc = task.doc("Publisher")
    publisher = publisher_doc.text("Type").lower() or "ipfs"
    publisher_params = publisher_doc.doc("Params")
    if publisher not in ("ipfs", "local", "noop"):
        raise fail(
            publisher_doc.at("Type"), f"{publisher!r} has no counterpart (ipfs, local, noop)"
        )
    if publisher_params.data:
        raise fail(publisher_params.path, f"the {publisher} publisher takes no parameters")
    publisher_doc.skip("Params")
    publisher_doc.done()
    inputs: list[InputSpec] = [input_from_v1(i, warnings) for i in task.docs("InputSources")]
    outputs: list[OutputSpec] = []
    for r in task.docs("ResultPaths"):
        try:
            outputs.append(OutputSpec(r.text("Name"), r.text("Path")))
        except ValidationError as exc:
            raise fail(r.path, message_of(exc)) from None
        r.done()
    resources = _resources(task.doc("Resources"))
    network = task.doc("Network")
    net_type = network.raw("Type", "None")
    if str(net_type).lower() not in ("none", "", "0"):
        raise fail(network.at("Type"), f"jobs run without network access here, got {net_type!r}")
    if network.raw("Domains"):
        raise fail(network.at("Domains"), "jobs run without network access here")
    network.done()
    timeouts = task.doc("Timeouts")
    execution = timeouts.integer("ExecutionTimeout")
    total = timeouts.integer("TotalTimeout")
    queue = timeouts.integer("QueueTimeout")
    timeouts.done()
    _meta(task, "Meta", settings, warnings)
    task.done()
    kwargs: dict[str, Any] = {}
    if execution or total:
        kwargs["timeout"] = float(execution or total)
        if execution and total and total < execution:
            raise fail(timeouts.at("TotalTimeout"), "is shorter than ExecutionTimeout")
    if queue:
        if not _has_field("queue_timeout"):
            raise fail(timeouts.at("QueueTimeout"), "queueing is not supported by this node")
        kwargs["queue_timeout"] = float(queue)
    if selectors:
        kwargs["selectors"] = tuple(selectors)
    if target != "any":
        kwargs["target"] = target
    if "retries" in settings:
        kwargs["retries"] = _setting_int(settings, "retries", path)
    try:
        deal = Deal(
            concurrency=count,
            confidence=_setting_int(settings, "confidence", path),
            min_bids=_setting_int(settings, "min_bids", path),
        )
    except ValidationError as exc:
        raise fail(job.at("Count"), message_of(exc)) from None
    try:
        spec = JobSpec(
            engine=engine,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            env=env,
            resources=resources,
            deal=deal,
            verifier=str(settings.get("verifier", "noop")),
            publisher=publisher,
            labels=tuple(labels),
            name=name,
            **kwargs,
        )
    except ValidationError as exc:
        raise fail(_v1_field(exc.field, path), message_of(exc)) from None
    return Translated(spec=spec, warnings=tuple(warnings))


def _setting_int(settings: dict[str, Any], name: str, path: str) -> int:
    raw = settings.get(name, 0)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise fail(
            f"{path + '.' if path else ''}Meta.{META_PREFIX}{name}", "not a number"
        ) from None


_FIELDS = {
    "timeout": "Tasks[0].Timeouts.ExecutionTimeout",
    "env": "Tasks[0].Env",
    "inputs": "Tasks[0].InputSources",
    "outputs": "Tasks[0].ResultPaths",
    "labels": "Labels",
    "name": "Name",
    "retries": f"Meta.{META_PREFIX}retries",
    "verifier": f"Meta.{META_PREFIX}verifier",
}


def _v1_field(field: str | None, path: str) -> str:
    name = _FIELDS.get((field or "").split(".")[0], "Tasks[0]")
    return f"{path}.{name}" if path else name
