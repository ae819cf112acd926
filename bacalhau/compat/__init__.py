"""Bacalhau compatibility: Bacalhau's job formats and its v1 API shapes, mapped onto ours.

- :func:`translate` reads a job document of any shape (ours, Bacalhau 1.x, Bacalhau 0.3),
  detected by its keys, into a :class:`~bacalhau.models.JobSpec` plus warnings;
- :mod:`bacalhau.compat.render` shows our jobs, executions, history and nodes the way
  Bacalhau's ``/api/v1/orchestrator`` API does (served by
  :mod:`bacalhau.api.bacalhau_v1`);
- :mod:`bacalhau.compat.units` reads Bacalhau's units (``500m`` CPU, ``1gb``, ``90s``).

See ``docs/bacalhau-users.md`` for what maps to what.
"""

from __future__ import annotations

from .files import FORMATS, detect, translate
from .legacy import spec_from_v03
from .render import job_to_v1, spec_to_v1
from .units import parse_bytes, parse_cpu, parse_duration
from .v1 import Translated, job_from_v1

__all__ = [
    "FORMATS",
    "Translated",
    "detect",
    "job_from_v1",
    "job_to_v1",
    "parse_bytes",
    "parse_cpu",
    "parse_duration",
    "spec_from_v03",
    "spec_to_v1",
    "translate",
]
