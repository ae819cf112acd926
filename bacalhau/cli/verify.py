"""``bacalhau verify RECEIPT``: check a job's receipt offline by re-running the job here;
``bacalhau receipt JOB``: fetch a completed job's receipt from its requester node.

Exit codes of ``verify``: 0 the re-run matches the receipt; 1 mismatch (or a changed
receipt); 2 the receipt cannot be checked here (not a receipt, or a job that cannot
re-run here: the reason says what is missing, such as an input's blocks or a Docker
engine).

Inputs by CID come from ``--car FILE`` (``bacalhau data export CID``) or, with
``--inputs-from NODE``, from a node's API (every block is checked against its CID, so
the node need not be trusted). URL inputs are fetched; ``--allow-url-network`` opens a
private range to them. A Docker job marked deterministic re-runs on the engine at
``DOCKER_HOST``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_verify_parser", "receipt_command", "verify_command"]

EXIT_MATCH, EXIT_MISMATCH, EXIT_UNCHECKED = 0, 1, 2


def add_verify_parser(subparsers: Any, api: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``verify`` and ``receipt`` (``api``: the parent parser of the API options)."""
    r = subparsers.add_parser(
        "receipt",
        help="fetch a completed job's signed receipt (check it with 'bacalhau verify')",
        description="Print the receipt of a completed job this node requested (JSON), or "
        "write it to FILE. 'bacalhau verify FILE' then checks it offline.",
        parents=[api],
    )
    r.add_argument("job", metavar="JOB", help="job id or unique prefix")
    r.add_argument("-o", "--output", default=None, metavar="FILE", help="write it to FILE")
    r.set_defaults(func=receipt_command)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="check a job receipt offline by re-running the job (WASM, noop, deterministic Docker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("receipt", help="the receipt file (JSON), or - for standard input")
    p.add_argument(
        "--car",
        dest="cars",
        action="append",
        default=[],
        metavar="FILE",
        help="a CAR file holding inputs the job reads by CID (repeatable)",
    )
    p.add_argument(
        "--inputs-from",
        default=None,
        metavar="HOST:PORT",
        help="fetch inputs by CID missing from the CAR files from this node's API "
        "(token: --api-token or $BACALHAU_API_TOKEN)",
    )
    p.add_argument(
        "--api-token",
        default=None,
        metavar="TOKEN",
        help="bearer token for --inputs-from (default $BACALHAU_API_TOKEN)",
    )
    p.add_argument(
        "--allow-url-network",
        dest="allow_url_networks",
        action="append",
        default=[],
        metavar="CIDR",
        help="let URL inputs reach this non-public network (repeatable)",
    )
    p.set_defaults(func=verify_command)
    return p


async def verify_command(ns: argparse.Namespace) -> int:
    import contextlib

    import anyio.to_thread

    from ..errors import BacalhauError
    from ..limits import JobLimits
    from ..node.receipt import Receipt, verify_receipt
    from ..node.rerun import Sources, car_fetcher

    try:
        if ns.receipt == "-":
            text = sys.stdin.read()
        else:
            text = await anyio.to_thread.run_sync(Path(ns.receipt).read_text)
        receipt = Receipt.from_json(text)
        async with contextlib.AsyncExitStack() as stack:
            fetch = None
            limits = JobLimits(url_allow_networks=tuple(ns.allow_url_networks))
            if ns.inputs_from:
                from ..api.client import Client

                client = await stack.enter_async_context(Client(ns.inputs_from, token=ns.api_token))
                # the node may stream without end: bounded as a download of the DAG is
                most = limits.dag.max_size + limits.dag.max_size // 64 + (1 << 20)
                fetch = car_fetcher(client, max_bytes=most)
            sources = Sources(cars=tuple(Path(c) for c in ns.cars), fetch=fetch, limits=limits)
            ok, what = await verify_receipt(receipt, sources)
    except (BacalhauError, OSError, UnicodeDecodeError) as exc:
        print(f"cannot check {ns.receipt}: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    print(f"{receipt.job_id}: {what}")
    return EXIT_MATCH if ok else EXIT_MISMATCH


async def receipt_command(ns: argparse.Namespace) -> int:
    import anyio.to_thread

    from .jobs import client_from_args

    async with client_from_args(ns) as client:
        receipt = await client.receipt(ns.job)
    text = receipt.to_json()
    if ns.output is None:
        sys.stdout.write(text)
        return EXIT_MATCH
    await anyio.to_thread.run_sync(Path(ns.output).write_text, text)
    print(f"receipt of {receipt.job_id} written to {ns.output}", file=sys.stderr)
    return EXIT_MATCH
