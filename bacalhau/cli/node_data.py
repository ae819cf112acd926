"""``bacalhau data ...`` through a node's API (the :class:`~bacalhau.api.client.Client`).

The ``data`` tree is built by :mod:`bacalhau.cli.data`, which works on a local
data directory. :func:`run_data` picks the mode:

* ``--data-dir DIR`` given: the local commands of :mod:`bacalhau.cli.data`
  (no node needed; safe beside a node using the same directory);
* ``add --only-hash``: computed locally, nothing stored, no node needed;
* otherwise: the node at ``--api`` / ``BACALHAU_API`` / ``127.0.0.1:1234``,
  so ``bacalhau data add file.txt`` next to ``bacalhau devstack`` stores the
  file where jobs can read it. Output is the same in both modes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..errors import ValidationError
from .jobs import EXIT_OK, client_from_args
from .progress import transfer_progress

__all__ = ["is_local", "run_data", "run_data_via_api"]


def is_local(ns: argparse.Namespace) -> bool:
    """Whether this ``data`` command runs without a node."""
    return bool(getattr(ns, "data_dir", None)) or (
        ns.data_command == "add" and bool(getattr(ns, "only_hash", False))
    )


def run_data_local(ns: argparse.Namespace) -> int:
    """The local-directory commands of :mod:`bacalhau.cli.data` (errors propagate)."""
    from . import data as d

    return d.dispatch_local(ns)


def run_data(ns: argparse.Namespace) -> int:
    """Run a parsed ``data`` command locally or through the node (see the module doc)."""
    if is_local(ns):
        return run_data_local(ns)
    return anyio.run(run_data_via_api, ns)


async def _stdin() -> AsyncIterator[bytes]:
    stream = sys.stdin.buffer
    while piece := await anyio.to_thread.run_sync(stream.read, 1 << 20):
        yield piece


def _check_add_paths(ns: argparse.Namespace) -> None:
    for path in ns.paths:
        if path != "-" and Path(path).is_dir() and not ns.recursive:
            raise ValidationError(f"{path} is a directory; use -r to add it recursively")


def _plain_file_add(ns: argparse.Namespace, path: str) -> bool:
    """A single file with Kubo's default layout can be streamed as is (no local DAG)."""
    return (
        path != "-"
        and Path(path).is_file()
        and not ns.wrap_with_directory
        and ns.raw_leaves is None
        and ns.chunk_size == 262144
    )


async def run_data_via_api(ns: argparse.Namespace) -> int:
    """The ``data`` commands on the node's store."""
    c = ns.data_command
    out = sys.stdout
    if c == "add" and not ns.pin:
        raise ValidationError(
            "--no-pin is only for a local --data-dir: the node pins what it "
            "is given so its garbage collection keeps it"
        )
    async with client_from_args(ns) as client:
        if c == "add":
            if not ns.paths:
                raise ValidationError("give at least one path (or - for stdin)")
            root = ""
            _check_add_paths(ns)
            for path in ns.paths:
                if path == "-":
                    root = (await client.add_bytes(_stdin(), cid_version=ns.cid_version)).cid
                    name = "-"
                elif _plain_file_add(ns, path):
                    name = Path(path).name
                    with transfer_progress(f"adding {name}") as progress:
                        added = await client.add_file(
                            path, cid_version=ns.cid_version, progress=progress
                        )
                    root = added.cid
                else:

                    def entry(rel: str, cid: str) -> None:
                        if not ns.quiet:
                            print(f"added {cid} {rel}".rstrip(), file=out)

                    with transfer_progress(f"adding {Path(path).name}") as progress:
                        root = await client.add_path(
                            path,
                            cid_version=ns.cid_version,
                            raw_leaves=ns.raw_leaves,
                            hidden=ns.hidden,
                            wrap_with_directory=ns.wrap_with_directory,
                            chunk_size=ns.chunk_size,
                            on_entry=entry,
                            progress=progress,
                        )
                    continue
                if not ns.quiet:
                    print(f"added {root} {name}", file=out)
            print(root, file=out)
        elif c == "get":
            dest = Path(ns.output) if ns.output else Path(ns.cid)
            with transfer_progress(f"getting {ns.cid[:12]}") as progress:
                await client.download(ns.cid, dest, progress=progress)
            print(f"Saved {ns.cid} to {dest}", file=out)
        elif c == "cat":
            out.flush()
            sink = sys.stdout.buffer
            async for piece in client.cat(ns.cid):
                sink.write(piece)
            sink.flush()
        elif c == "ls":
            for e in await client.ls(ns.cid):
                name = e.name + ("/" if e.type == "directory" else "")
                size = "-" if e.size is None else str(e.size)
                print(f"{e.cid} {size} {name}".rstrip(), file=out)
        elif c == "export":
            await client.export_car(ns.cid, ns.car)
            print(f"exported {ns.cid} to {ns.car}", file=out)
        elif c == "import":
            for path in ns.paths:
                for root in await client.import_car(path):
                    print(f"pinned root {root}", file=out)
        elif c == "pin":
            if not ns.cids:
                for cid, kind in sorted((await client.pins()).items()):
                    print(f"{cid} {kind}", file=out)
            elif ns.direct:
                raise ValidationError("--direct is only for a local --data-dir")
            for cid in ns.cids:
                await client.pin(cid)
                print(f"pinned {cid} recursively", file=out)
        elif c == "unpin":
            for cid in ns.cids:
                await client.unpin(cid)
                print(f"unpinned {cid}", file=out)
        elif c == "gc":
            print(f"removed {await client.gc()} blocks", file=out)
        else:
            raise ValidationError(f"unknown data command {c!r}")
    return EXIT_OK


def wire_data_parser(data_parser: Any) -> None:
    """Point the ``data`` tree at :func:`run_data` and explain the two modes in its help."""
    data_parser.description = (
        "Content-addressed data (IPFS-compatible CIDs). Commands talk to the node at --api "
        "(default $BACALHAU_API or 127.0.0.1:1234); with --data-dir they work on that local "
        "data directory instead, and 'add --only-hash' needs no node."
    )
    data_parser.set_defaults(func=run_data, sync=True)
