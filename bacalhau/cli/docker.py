"""``bacalhau docker run``: command-line arguments to a Docker :class:`~bacalhau.models.JobSpec`.

The functions here know nothing of argparse except :func:`add_docker_parser`, so
the CLI, the HTTP client and tests can share them::

    bacalhau docker run [-i URI]... [-v CID:/path]... [-u URL]... [-o name:/path]...
                        [--env K=V]... [--cpu N|500m] [--memory SIZE] [--timeout S]
                        [--dry-run] [--download]
                        [--entrypoint CMD] [-w DIR] IMAGE [CMD...]

Options go before ``IMAGE``; everything after it is the container's command,
flags included (``IMAGE sh -c 'echo hi'``), as with ``docker run``. Without
``-o`` the job gets the output volume ``outputs:/outputs``.

>>> spec = build_docker_job("ubuntu", ["bash", "-c", "cat /file.txt > /out/file.txt"],
...     volumes=["QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u:/file.txt"],
...     outputs=["apples:/out"])
>>> spec.engine.params["image"], spec.outputs[0].name, spec.inputs[0].target
('ubuntu', 'apples', '/file.txt')
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..executor.docker import DockerParams
from ..models import JobSpec
from .common import DEFAULT_OUTPUT, add_job_options, job_kwargs, job_options_from_args

__all__ = [
    "DEFAULT_OUTPUT",
    "add_docker_parser",
    "build_docker_job",
    "spec_from_args",
]


def build_docker_job(
    image: str,
    cmd: Sequence[str] = (),
    *,
    entrypoint: str | Sequence[str] | None = None,
    workdir: str | None = None,
    **options: Any,
) -> JobSpec:
    """A docker JobSpec from CLI-style strings.

    Args:
        image: the image, e.g. ``ubuntu:22.04``.
        cmd: the container's command; empty means the image's ``CMD``.
        entrypoint: replaces the image's ``ENTRYPOINT``; a string is one program
            (as ``docker run --entrypoint`` takes it).
        options: as :func:`~bacalhau.cli.common.job_kwargs` takes them (``volumes``,
            ``outputs``, ``env``, ``timeout``, ``memory``, ``cpu``, the deal, ``verifier``,
            ``publisher``, ``labels``, ``retries``).

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    spec = JobSpec.docker(
        image,
        list(cmd),
        entrypoint=list(entrypoint) if entrypoint is not None else None,
        workdir=workdir,
        **job_kwargs(**options),
    )
    DockerParams.from_spec(spec)  # image, command and workdir checked here, not on a node
    return spec


def spec_from_args(ns: argparse.Namespace) -> JobSpec:
    """The JobSpec for a parsed ``bacalhau docker run`` command line.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    return build_docker_job(
        ns.image, ns.cmd, entrypoint=ns.entrypoint, workdir=ns.workdir, **job_options_from_args(ns)
    )


def add_docker_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``docker run`` on an argparse subparsers object; return the ``run`` parser.

    The parsed namespace has ``docker_command == "run"``; pass it to :func:`spec_from_args`.
    """
    docker = subparsers.add_parser("docker", help="run jobs in Docker containers")
    commands = docker.add_subparsers(dest="docker_command", required=True)
    run: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run a Docker image as a job",
        description="Run IMAGE as a job on a node with a Docker engine. Options come before "
        "IMAGE; everything after it is the container's command. The container has no "
        "network; inputs are read-only; write results to an output volume.",
    )
    run.add_argument("image", metavar="IMAGE", help="the image, e.g. ubuntu:22.04")
    run.add_argument(
        "cmd", metavar="CMD", nargs=argparse.REMAINDER, help="the command and its arguments"
    )
    run.add_argument("--entrypoint", default=None, metavar="CMD", help="replace ENTRYPOINT")
    run.add_argument("-w", "--workdir", default=None, metavar="DIR", help="working directory")
    run.add_argument(
        "--gpu",
        type=int,
        default=None,
        metavar="N",
        help="GPUs the container gets (only nodes offering that many are asked)",
    )
    add_job_options(run)
    return run
