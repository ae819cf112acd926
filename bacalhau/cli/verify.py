"""``bacalhau verify RECEIPT``: check a job's receipt offline by re-running the job here;
``bacalhau receipt JOB``: fetch a completed job's receipt from its requester node.

Exit codes: 0 the re-run matches the receipt; 1 mismatch (or a changed receipt);
2 the receipt cannot be checked here (not a receipt, or a job that cannot re-run
offline).
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
        help="check a job receipt offline by re-running the job (WASM)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("receipt", help="the receipt file (JSON), or - for standard input")
    p.set_defaults(func=verify_command)
    return p


async def verify_command(ns: argparse.Namespace) -> int:
    import anyio.to_thread

    from ..errors import BacalhauError
    from ..node.receipt import Receipt, verify_receipt

    try:
        if ns.receipt == "-":
            text = sys.stdin.read()
        else:
            text = await anyio.to_thread.run_sync(Path(ns.receipt).read_text)
        receipt = Receipt.from_json(text)
        ok, what = await verify_receipt(receipt)
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
