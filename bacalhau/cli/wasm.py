"""``bacalhau wasm run``: turn command-line arguments into a WASM :class:`~bacalhau.models.JobSpec`.

The functions here know nothing of argparse except :func:`add_wasm_parser`, so
the CLI, the HTTP client and tests can share them::

    bacalhau wasm run MODULE [ARGS...] [-i URI]... [-v CID:/path]... [-u URL]... [-o name:/path]...
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

from ..cid import validate_cid
from ..errors import ValidationError
from ..models import MAX_INLINE_BYTES, JobSpec, StorageSpec
from .common import (
    DEFAULT_OUTPUT,
    add_job_options,
    job_kwargs,
    job_options_from_args,
    parse_env,
    parse_output,
    parse_volume,
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

AddFile = Callable[[Path], Awaitable[str]]
"""Adds a local file to the node's store and returns its CID."""


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
    entry_point: str = "_start",
    **options: Any,
) -> JobSpec:
    """A wasm JobSpec from CLI-style strings; ``options`` as :func:`~bacalhau.cli.common.job_kwargs`
    takes them (``volumes``, ``outputs``, ``env``, ``timeout``, ``memory``, ``cpu``, the deal,
    ``verifier``, ``publisher``, ``labels``, ``retries``).

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    return JobSpec.wasm(module, args=list(args), entry_point=entry_point, **job_kwargs(**options))


async def spec_from_args(ns: argparse.Namespace, *, add_file: AddFile | None = None) -> JobSpec:
    """The JobSpec for a parsed ``bacalhau wasm run`` command line.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    if getattr(ns, "dry_run", False):
        add_file = None  # a dry run sends nothing to the node: the module goes inline
    module = await resolve_module(ns.module, add_file=add_file)
    return build_wasm_job(module, ns.args, entry_point=ns.entry_point, **job_options_from_args(ns))


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
    run.add_argument("--entry-point", default="_start", metavar="NAME", help="default _start")
    add_job_options(run)
    return run  # type: ignore[no-any-return]
