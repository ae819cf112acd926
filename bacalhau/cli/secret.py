"""``bacalhau secret``: make and check network secrets."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..transport.secret import DEFAULT_NETWORK, new_secret, parse_secret

__all__ = ["add_secret_parser"]


def add_secret_parser(sub: Any) -> argparse.ArgumentParser:
    """``secret new`` and ``secret check``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "secret",
        help="make a network secret (a 256-bit key) or check one",
        description="A private network's nodes share one secret. `secret new` prints a "
        "fresh 256-bit key (no dictionary can find it); passphrases are accepted too, "
        "but stretched with scrypt and refused under 12 characters.",
    )
    secret_sub = p.add_subparsers(dest="secret_command", metavar="SUBCOMMAND")
    new = secret_sub.add_parser("new", help="print a fresh 256-bit network key")
    new.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="FILE",
        help="write it to FILE (mode 0600, refused if FILE exists) instead of printing it",
    )
    new.set_defaults(func=_new, sync=True)
    check = secret_sub.add_parser(
        "check", help="say what kind of secret $BACALHAU_NETWORK_SECRET (or stdin) is"
    )
    check.add_argument("--network", default=DEFAULT_NETWORK, help="the network name (salt)")
    check.set_defaults(func=_check, sync=True)
    return p


def _new(ns: argparse.Namespace) -> int:
    secret = new_secret()
    if ns.output is None:
        print(secret)
        return 0
    fd = os.open(ns.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    print(f"Wrote a new network key to {Path(ns.output)}", file=sys.stderr)
    return 0


def _check(ns: argparse.Namespace) -> int:
    text = os.environ.get("BACALHAU_NETWORK_SECRET")
    if text is None:
        text = sys.stdin.readline().rstrip("\n")
    parsed = parse_secret(text, network=ns.network)
    if parsed.kind == "key":
        print(f"a 256-bit key; network tag {parsed.tag}")
    else:
        print(f"a passphrase, stretched with scrypt for network {ns.network!r}; tag {parsed.tag}")
    return 0
