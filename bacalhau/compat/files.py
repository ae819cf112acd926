"""Job documents in any of three shapes, told apart by their keys.

- ours: the fields of :class:`~bacalhau.models.JobSpec` (``engine: {type: ...}``), bare,
  under ``spec:``, or a whole ``bacalhau describe`` output (which has ``job_id`` and
  ``spec``), so ``describe --output yaml`` can be fed back to ``job run``;
- Bacalhau 1.x: a ``Job`` with ``Tasks`` (``Type: batch``, ``Count``, ...), bare or under
  ``Job:`` as Bacalhau's ``describe`` shows it;
- Bacalhau 0.3: ``APIVersion: V1beta1`` with ``Spec: {Engine: Docker, ...}``, or the bare
  ``Spec`` (``Engine`` is a name there, not a mapping).

>>> detect({"Type": "batch", "Tasks": []}), detect({"engine": {"type": "noop"}})
('bacalhau-v1', 'ours')
>>> detect({"APIVersion": "V1beta1", "Spec": {"Engine": "Docker"}})
'bacalhau-v0.3'
"""

from __future__ import annotations

from typing import Any

import attrs

from ..convert import from_json_data
from ..errors import ValidationError
from ..models import JobSpec
from .legacy import spec_from_v03
from .v1 import Translated, job_from_v1

__all__ = ["FORMATS", "detect", "translate"]

FORMATS = ("ours", "bacalhau-v1", "bacalhau-v0.3")


def _lower(data: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): k for k in data if isinstance(k, str)}


def detect(data: Any) -> str:
    """Which shape ``data`` has: one of :data:`FORMATS`.

    Raises:
        ValidationError: not a mapping, or none of the shapes.
    """
    if not isinstance(data, dict):
        raise ValidationError(
            f"a job document is a mapping, got {type(data).__name__}", field="file"
        )
    keys = _lower(data)
    if "tasks" in keys:
        return "bacalhau-v1"
    if set(keys) == {"job"} or ("job" in keys and "executions" in keys):
        inner = data[keys["job"]]
        if isinstance(inner, dict) and "tasks" in _lower(inner):
            return "bacalhau-v1"
    if "apiversion" in keys:
        return "bacalhau-v0.3"
    inner = data.get("spec")
    if isinstance(inner, dict) and isinstance(inner.get("engine"), dict):
        return "ours"
    if isinstance(data.get("engine"), dict):
        return "ours"
    if "spec" in keys and isinstance(data[keys["spec"]], dict):
        return "bacalhau-v0.3"
    if "engine" in keys and isinstance(data[keys["engine"]], str):
        return "bacalhau-v0.3"
    raise ValidationError(
        "not a job: expected our spec (engine: {type: ...}), a Bacalhau 1.x job "
        "(Type, Count, Tasks) or a Bacalhau 0.3 spec (APIVersion: V1beta1, Spec)",
        field="file",
    )


def translate(data: Any) -> Translated:
    """A JobSpec (and warnings) from a document of any of the three shapes.

    Raises:
        ValidationError: naming the offending key.
    """
    kind = detect(data)
    if kind == "bacalhau-v1":
        keys = _lower(data)
        if "tasks" not in keys:
            return job_from_v1(data[keys["job"]], path=keys["job"])
        return job_from_v1(data)
    if kind == "bacalhau-v0.3":
        return attrs.evolve(spec_from_v03(data), source=kind)
    if "spec" in data and ("job_id" in data or set(data) == {"spec"}):
        data = data["spec"]
    elif "spec" in data:
        raise ValidationError(
            f"unknown field(s) beside spec: {', '.join(sorted(k for k in data if k != 'spec'))}",
            field="file",
        )
    return Translated(spec=from_json_data(data, JobSpec, what="$"), source=kind)
