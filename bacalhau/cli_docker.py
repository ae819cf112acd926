"""``bacalhau docker run``: command-line arguments to a Docker :class:`~bacalhau.models.JobSpec`.

The functions here know nothing of argparse except :func:`add_docker_parser`, so
the CLI, the HTTP client and tests can share them::

    bacalhau docker run [-v CID:/path]... [-o name:/path]... [--env K=V]...
                        [--cpu N] [--memory SIZE] [--timeout S]
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

from .cli_wasm import DEFAULT_OUTPUT, parse_env, parse_output, parse_volume
from .executor.docker import DockerParams
from .models import Deal, JobSpec, Resources, parse_size

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
    volumes: Sequence[str] = (),
    outputs: Sequence[str] = (),
    env: Sequence[str] = (),
    entrypoint: str | Sequence[str] | None = None,
    workdir: str | None = None,
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
    """A docker JobSpec from CLI-style strings (``-v``, ``-o`` and ``--env`` values).

    Args:
        image: the image, e.g. ``ubuntu:22.04``.
        cmd: the container's command; empty means the image's ``CMD``.
        entrypoint: replaces the image's ``ENTRYPOINT``; a string is one program
            (as ``docker run --entrypoint`` takes it).
        memory: a size such as ``512Mi`` or ``1g``; cpu: cores (``0.5``).
        Other arguments as :meth:`JobSpec.docker` and :class:`Deal` take them.

    Without ``outputs``, the job gets :data:`DEFAULT_OUTPUT`.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    defaults = Resources()
    resources = Resources(
        cpu=defaults.cpu if cpu is None else cpu,
        memory=defaults.memory if memory is None else parse_size(memory),
    )
    inputs = [parse_volume(v) for v in volumes]
    out = [parse_output(o) for o in outputs]
    if not out and all(i.target != DEFAULT_OUTPUT.path for i in inputs):
        out = [DEFAULT_OUTPUT]
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    extra: dict[str, Any] = {}
    if timeout is not None:
        extra["timeout"] = timeout
    spec = JobSpec.docker(
        image,
        list(cmd),
        entrypoint=list(entrypoint) if entrypoint is not None else None,
        workdir=workdir,
        inputs=inputs,
        outputs=out,
        env=dict(parse_env(e) for e in env),
        resources=resources,
        deal=Deal(concurrency=concurrency, confidence=confidence, min_bids=min_bids),
        verifier=verifier,
        publisher=publisher,
        labels=tuple(labels),
        **extra,
    )
    DockerParams.from_spec(spec)  # image, command and workdir checked here, not on a node
    return spec


def spec_from_args(ns: argparse.Namespace) -> JobSpec:
    """The JobSpec for a parsed ``bacalhau docker run`` command line.

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    return build_docker_job(
        ns.image,
        ns.cmd,
        volumes=ns.volumes,
        outputs=ns.outputs,
        env=ns.env,
        entrypoint=ns.entrypoint,
        workdir=ns.workdir,
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
        "-e", "--env", action="append", default=[], metavar="K=V", help="environment variable"
    )
    run.add_argument("--entrypoint", default=None, metavar="CMD", help="replace ENTRYPOINT")
    run.add_argument("-w", "--workdir", default=None, metavar="DIR", help="working directory")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    run.add_argument("--memory", default=None, metavar="SIZE", help="memory limit, e.g. 512Mi")
    run.add_argument("--cpu", type=float, default=None, metavar="CORES", help="CPU limit")
    run.add_argument("--concurrency", type=int, default=1, help="how many nodes run it")
    run.add_argument("--confidence", type=int, default=0, help="how many must agree")
    run.add_argument("--min-bids", type=int, default=0)
    run.add_argument("--verifier", default="noop", help="noop or deterministic")
    run.add_argument("--publisher", default="ipfs", help="ipfs, local or noop")
    run.add_argument("-l", "--label", dest="labels", action="append", default=[])
    return run
