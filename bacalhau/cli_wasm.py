"""``bacalhau wasm run``: turn command-line arguments into a WASM :class:`~bacalhau.models.JobSpec`.

The functions here know nothing of argparse except :func:`add_wasm_parser`, so
the CLI, the HTTP client and tests can share them::

    bacalhau wasm run MODULE [ARGS...] [-v CID:/path]... [-o name:/path]...
                      [--entry-point NAME] [--env K=V]... [--timeout S] [--memory SIZE]

``MODULE`` is a local ``.wasm`` (or ``.wat``) file, added to the node's store
first when the caller can do that (else sent inline, at most 1 MiB), or a CID.
Arguments for the module that start with ``-`` go after ``--``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from .cid import validate_cid
from .errors import ValidationError
from .models import (
    MAX_INLINE_BYTES,
    Deal,
    InputSpec,
    JobSpec,
    OutputSpec,
    Resources,
    StorageSpec,
    parse_size,
)

__all__ = [
    "DEFAULT_OUTPUT",
    "add_wasm_parser",
    "build_wasm_job",
    "parse_env",
    "parse_output",
    "parse_volume",
    "resolve_module",
    "spec_from_args",
]

DEFAULT_OUTPUT = OutputSpec("outputs", "/outputs")
"""The output volume a job gets when no ``-o`` is given (as Bacalhau does)."""

AddFile = Callable[[Path], Awaitable[str]]
"""Adds a local file to the node's store and returns its CID."""


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


async def resolve_module(module: str, *, add_file: AddFile | None = None) -> StorageSpec:
    """Where the job's module comes from.

    A path to an existing file is added with ``add_file`` (giving an ``ipfs``
    source) or, without it, sent inline. Anything else must be a CID.

    Raises:
        ValidationError: no such file and not a CID, or a file too big to inline.
    """
    path = anyio.Path(module)
    if await path.is_file():
        if add_file is not None:
            return StorageSpec.ipfs(await add_file(Path(module)))
        data = await path.read_bytes()
        if len(data) > MAX_INLINE_BYTES:
            raise ValidationError(
                f"{module} is {len(data)} bytes, too big to send inline (1 MiB); "
                "add it to the node's store first (bacalhau data add) and pass its CID",
                field="module",
            )
        return StorageSpec.inline(data)
    try:
        validate_cid(module, field="module")
    except ValidationError:
        raise ValidationError(f"{module!r} is neither a file nor a CID", field="module") from None
    return StorageSpec.ipfs(module)


def build_wasm_job(
    module: StorageSpec,
    args: Sequence[str] = (),
    *,
    volumes: Sequence[str] = (),
    outputs: Sequence[str] = (),
    env: Sequence[str] = (),
    entry_point: str = "_start",
    timeout: float | None = None,
    memory: str | int | None = None,
    cpu: float | None = None,
    concurrency: int = 1,
    confidence: int = 0,
    min_bids: int = 0,
    verifier: str = "noop",
    publisher: str = "ipfs",
    labels: Sequence[str] = (),
) -> JobSpec:
    """A wasm JobSpec from CLI-style strings (``-v``, ``-o`` and ``--env`` values).

    Without ``outputs``, the job gets :data:`DEFAULT_OUTPUT`.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    resources = Resources()
    if memory is not None or cpu is not None:
        resources = Resources(
            cpu=resources.cpu if cpu is None else cpu,
            memory=resources.memory if memory is None else parse_size(memory),
        )
    extra: dict[str, Any] = {}
    if timeout is not None:
        extra["timeout"] = timeout
    return JobSpec.wasm(
        module,
        args=list(args),
        entry_point=entry_point,
        inputs=[parse_volume(v) for v in volumes],
        outputs=[parse_output(o) for o in outputs] or [DEFAULT_OUTPUT],
        env=dict(parse_env(e) for e in env),
        resources=resources,
        deal=Deal(concurrency=concurrency, confidence=confidence, min_bids=min_bids),
        verifier=verifier,
        publisher=publisher,
        labels=tuple(labels),
        **extra,
    )


async def spec_from_args(ns: argparse.Namespace, *, add_file: AddFile | None = None) -> JobSpec:
    """The JobSpec for a parsed ``bacalhau wasm run`` command line.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    module = await resolve_module(ns.module, add_file=add_file)
    return build_wasm_job(
        module,
        ns.args,
        volumes=ns.volumes,
        outputs=ns.outputs,
        env=ns.env,
        entry_point=ns.entry_point,
        timeout=ns.timeout,
        memory=ns.memory,
        cpu=ns.cpu,
        concurrency=ns.concurrency,
        confidence=ns.confidence,
        min_bids=ns.min_bids,
        verifier=ns.verifier,
        publisher=ns.publisher,
        labels=ns.labels,
    )


def add_wasm_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``wasm run`` on an argparse subparsers object; return the ``run`` parser.

    The parsed namespace has ``wasm_command == "run"``; pass it to :func:`spec_from_args`.
    """
    wasm = subparsers.add_parser("wasm", help="run WebAssembly (WASI) jobs")
    commands = wasm.add_subparsers(dest="wasm_command", required=True)
    run = commands.add_parser(
        "run",
        help="run a WASI module as a job",
        description="Run a WASI preview 1 module as a job. MODULE is a local .wasm file "
        "(added to the node's store first) or a CID. Module arguments that start with '-' "
        "go after '--'.",
    )
    run.add_argument("module", metavar="MODULE", help="a local .wasm file or a CID")
    run.add_argument("args", metavar="ARGS", nargs="*", help="module arguments")
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
    run.add_argument("--entry-point", default="_start", metavar="NAME", help="default _start")
    run.add_argument(
        "-e", "--env", action="append", default=[], metavar="K=V", help="environment variable"
    )
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    run.add_argument("--memory", default=None, metavar="SIZE", help="memory limit, e.g. 512Mi")
    run.add_argument("--cpu", type=float, default=None, metavar="CORES")
    run.add_argument("--concurrency", type=int, default=1, help="how many nodes run it")
    run.add_argument("--confidence", type=int, default=0, help="how many must agree")
    run.add_argument("--min-bids", type=int, default=0)
    run.add_argument("--verifier", default="noop", help="noop or deterministic")
    run.add_argument("--publisher", default="ipfs", help="ipfs, local or noop")
    run.add_argument("-l", "--label", dest="labels", action="append", default=[])
    return run  # type: ignore[no-any-return]
