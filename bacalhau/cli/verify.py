"""``bacalhau verify RECEIPT``: check a job's receipt offline by re-running the job here.

Exit codes: 0 the re-run matches the receipt; 1 mismatch (or a changed receipt);
2 the receipt cannot be checked here (not a receipt, or a job that cannot re-run
offline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_verify_parser", "verify_command"]

EXIT_MATCH, EXIT_MISMATCH, EXIT_UNCHECKED = 0, 1, 2


def add_verify_parser(subparsers: Any) -> argparse.ArgumentParser:
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
