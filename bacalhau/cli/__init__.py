"""The ``bacalhau`` command.

Every command that talks to a node goes through :class:`bacalhau.api.client.Client`
(``--api HOST:PORT`` or ``BACALHAU_API`` picks the node; ``--api-token`` or
``BACALHAU_API_TOKEN`` the token). See ``docs/cli.md``.

Exit codes, for scripts:

=====  =====================================================================
0      success (a waited-for job completed)
1      a waited-for job failed or was cancelled; ``get`` of a job without results
2      bad input: arguments, job spec, unknown job id, node id or CID, a wrong token, any
       other request the node refused with a 4xx status
3      no node answered at the API address
4      any other error
130    interrupted (Ctrl-C)
=====  =====================================================================
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import (
    ApiError,
    BacalhauError,
    BlockNotFound,
    JobFailed,
    JobNotFound,
    NodeNotFound,
    NodeUnreachable,
    ValidationError,
)
from .jobs import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    add_api_options,
    add_job_parsers,
    add_submit_options,
    client_from_args,
    submit_and_follow,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "exit_code_for",
    "main",
]

EXIT_INTERRUPTED = 130

log = logging.getLogger("bacalhau.cli")


def exit_code_for(exc: BaseException) -> int:
    """The exit code an error stands for (see the module docstring)."""
    if isinstance(exc, NodeUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(exc, JobFailed):
        return EXIT_JOB_FAILED
    if isinstance(exc, ValidationError | JobNotFound | NodeNotFound | BlockNotFound):
        return EXIT_BAD_INPUT
    if isinstance(exc, ApiError) and 400 <= exc.status < 500:
        return EXIT_BAD_INPUT
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# --- glue for the engines' run commands --------------------------------------------------


async def _docker_run(ns: argparse.Namespace) -> int:
    from .docker import spec_from_args

    spec = spec_from_args(ns)
    async with client_from_args(ns) as client:
        return await submit_and_follow(client, spec, ns)


async def _wasm_run(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from .wasm import spec_from_args

    async with client_from_args(ns) as client:

        async def add_file(path: Path) -> str:
            return (await client.add_file(path)).cid

        spec = await spec_from_args(ns, add_file=add_file)
        return await submit_and_follow(client, spec, ns)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``bacalhau`` argument parser."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="bacalhau",
        description="Compute over data: run jobs on a bacalhau network. Commands that talk to "
        "a node use --api (default $BACALHAU_API or 127.0.0.1:1234).",
        epilog="exit codes: 0 ok, 1 job failed, 2 bad input, 3 node unreachable, 4 other error",
    )
    parser.add_argument(
        "--api",
        default=None,
        metavar="HOST:PORT",
        help="the node's API (default $BACALHAU_API or 127.0.0.1:1234)",
    )
    parser.add_argument(
        "--api-token",
        default=None,
        metavar="TOKEN",
        help="bearer token for the API (default $BACALHAU_API_TOKEN)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BACALHAU_LOG_LEVEL", "warning"),
        choices=("debug", "info", "warning", "error"),
        help="default warning",
    )
    parser.add_argument("-V", "--version", action="version", version=f"bacalhau-py {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .data import add_data_parser
    from .docker import add_docker_parser
    from .node_data import wire_data_parser
    from .secret import add_secret_parser
    from .serve import add_serve_parser, serve
    from .wasm import add_wasm_parser

    add_serve_parser(sub).set_defaults(func=serve)
    add_job_parsers(sub)
    for adder, run in ((add_docker_parser, _docker_run), (add_wasm_parser, _wasm_run)):
        p = adder(sub)
        add_submit_options(p)
        p.set_defaults(func=run)
    wire_data_parser(add_data_parser(sub))
    add_secret_parser(sub)
    from .verify import add_verify_parser
    from .watch import add_watch_parsers

    api = argparse.ArgumentParser(add_help=False)
    add_api_options(api)
    add_verify_parser(sub, api)
    add_watch_parsers(sub, api)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if ns.log_level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)
    func = getattr(ns, "func", None)
    if func is None:
        parser.error(f"'{ns.command}' needs a subcommand")
    try:
        if getattr(ns, "sync", False):
            code = func(ns)
        else:
            import anyio

            code = anyio.run(func, ns)
    except BaseException as raw:
        exc = _leaf(raw)
        if isinstance(exc, SystemExit):
            raise exc from None
        if isinstance(exc, KeyboardInterrupt):
            print("Interrupted.", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, BrokenPipeError):
            return EXIT_OK
        if isinstance(exc, BacalhauError | TimeoutError):
            print(f"Error: {exc}", file=sys.stderr)
            return exit_code_for(exc)
        if isinstance(exc, OSError):
            where = f": {exc.filename}" if exc.filename else ""
            print(f"Error: {exc.strerror or exc}{where}", file=sys.stderr)
            return EXIT_ERROR
        raise
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
