"""What ``docker run``, ``wasm run`` and friends share: the job options and their parsing.

The functions know nothing of argparse except :func:`add_job_options`, so the
CLI, the HTTP client and tests can share them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..cid import validate_cid
from ..errors import ValidationError
from ..models import Deal, InputSpec, OutputSpec, Resources, StorageSpec, parse_size

__all__ = [
    "DEFAULT_OUTPUT",
    "add_job_options",
    "job_kwargs",
    "job_options_from_args",
    "parse_env",
    "parse_output",
    "parse_volume",
]

DEFAULT_OUTPUT = OutputSpec("outputs", "/outputs")
"""The output volume a job gets when no ``-o`` is given (as Bacalhau does)."""


def parse_volume(text: str) -> InputSpec:
    """``CID:/path`` (or ``CID/inner/path:/path``) -> an ipfs input volume at ``/path``.

    Raises:
        ValidationError: not of that form, or the CID or path is invalid.
    """
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise ValidationError(f"volume {text!r} must look like CID:/path", field="volume")
    cid, _, inner = source.partition("/")
    validate_cid(cid, field="volume")
    return InputSpec(StorageSpec.ipfs(cid, path=inner or None), target)


def parse_output(text: str) -> OutputSpec:
    """``name:/path`` -> an output volume.

    Raises:
        ValidationError: the name or path is invalid.
    """
    name, sep, path = text.partition(":")
    if not sep:
        raise ValidationError(f"output {text!r} must look like name:/path", field="output")
    return OutputSpec(name, path)


def parse_env(text: str) -> tuple[str, str]:
    """``K=V`` -> ``("K", "V")`` (``V`` may be empty or contain ``=``).

    Raises:
        ValidationError: there is no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValidationError(f"environment entry {text!r} must look like NAME=value", field="env")
    return key, value


def job_kwargs(
    *,
    volumes: Sequence[str] = (),
    outputs: Sequence[str] = (),
    env: Sequence[str] = (),
    timeout: float | None = None,
    memory: str | int | None = None,
    cpu: float | None = None,
    concurrency: int = 1,
    confidence: int = 0,
    min_bids: int = 0,
    verifier: str = "noop",
    publisher: str = "ipfs",
    labels: Sequence[str] = (),
    retries: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :class:`~bacalhau.models.JobSpec` (and its engine
    constructors) from CLI-style strings: ``-v``, ``-o`` and ``--env`` values, sizes
    such as ``512Mi``. Without ``outputs`` the job gets :data:`DEFAULT_OUTPUT` (unless
    an input sits at its path).

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    defaults = Resources()
    inputs = [parse_volume(v) for v in volumes]
    out = [parse_output(o) for o in outputs]
    if not out and all(i.target != DEFAULT_OUTPUT.path for i in inputs):
        out = [DEFAULT_OUTPUT]
    kwargs: dict[str, Any] = {
        "inputs": inputs,
        "outputs": out,
        "env": dict(parse_env(e) for e in env),
        "resources": Resources(
            cpu=defaults.cpu if cpu is None else cpu,
            memory=defaults.memory if memory is None else parse_size(memory),
        ),
        "deal": Deal(concurrency=concurrency, confidence=confidence, min_bids=min_bids),
        "verifier": verifier,
        "publisher": publisher,
        "labels": tuple(labels),
    }
    if timeout is not None:
        kwargs["timeout"] = timeout
    if retries is not None:
        kwargs["retries"] = retries
    return kwargs


_OPTION_NAMES = (
    "volumes",
    "outputs",
    "env",
    "timeout",
    "memory",
    "cpu",
    "concurrency",
    "confidence",
    "min_bids",
    "verifier",
    "publisher",
    "labels",
    "retries",
)


def job_options_from_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The raw options (as :func:`job_kwargs` takes them) of a namespace parsed with
    :func:`add_job_options`."""
    return {name: getattr(ns, name) for name in _OPTION_NAMES if hasattr(ns, name)}


def add_job_options(run: argparse.ArgumentParser) -> None:
    """Register the options every ``... run`` command takes, named as Bacalhau names them."""
    run.add_argument(
        "-v",
        "--input",
        dest="volumes",
        action="append",
        default=[],
        metavar="CID:/path",
        help="mount a CID read-only at /path (repeatable)",
    )
    run.add_argument(
        "-o",
        "--output-volumes",
        dest="outputs",
        action="append",
        default=[],
        metavar="name:/path",
        help="a writable output volume published as 'name' (default outputs:/outputs)",
    )
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable (repeatable)",
    )
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    run.add_argument("--memory", default=None, metavar="SIZE", help="memory limit, e.g. 512Mi")
    run.add_argument("--cpu", type=float, default=None, metavar="CORES", help="CPU limit")
    run.add_argument("--concurrency", type=int, default=1, help="how many nodes run it")
    run.add_argument("--confidence", type=int, default=0, help="how many must agree")
    run.add_argument(
        "--min-bids", type=int, default=0, help="bids to wait for before choosing among them"
    )
    run.add_argument(
        "--retries",
        type=int,
        default=None,
        help="replacements for failed or silent nodes (default 2)",
    )
    run.add_argument("--verifier", default="noop", help="noop or deterministic")
    run.add_argument("--publisher", default="ipfs", help="ipfs, local or noop")
    run.add_argument("-l", "--label", dest="labels", action="append", default=[])
