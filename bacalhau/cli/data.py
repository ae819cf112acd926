"""``bacalhau data ...``: add, get, cat, ls, CAR import/export, pin, unpin, gc.

The ``cmd_*`` functions take plain arguments (no argparse) and return an exit
code; :func:`add_data_parser` registers the ``data`` subcommand tree on an
argparse subparsers object and :func:`run_data_command` runs a parsed namespace.

``add --only-hash`` needs nothing but the files. The other commands work on
the local node's data directory (``--data-dir``, else ``$BACALHAU_DIR``, else
``~/.bacalhau``); they are safe to run while a node uses the same directory.
Fetching from other nodes needs a running node (``get`` through the node's API
is not wired yet: ``--api`` is refused with a message saying so).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import anyio

from ..cid import cid_str, to_cid
from ..errors import BacalhauError, StorageError, ValidationError
from ..storage.ipfs import (
    BlockStore,
    add_bytes,
    add_path,
    blockstore_path,
    cat,
    export_car,
    export_to_path,
    import_car,
    ls,
)
from ..storage.ipfs.exporter import as_source, decode_block
from ..storage.ipfs.unixfs import DataType
from .progress import Progress, Tally, transfer_progress, tree_bytes

__all__ = [
    "add_data_parser",
    "cmd_add",
    "cmd_cat",
    "cmd_export",
    "cmd_gc",
    "cmd_get",
    "cmd_import",
    "cmd_ls",
    "cmd_pin",
    "cmd_unpin",
    "default_data_dir",
    "main",
    "run_data_command",
]


def default_data_dir() -> Path:
    """``$BACALHAU_DIR`` if set, else ``~/.bacalhau``."""
    env = os.environ.get("BACALHAU_DIR")
    return Path(env) if env else Path.home() / ".bacalhau"


def _store(data_dir: str | os.PathLike[str] | None) -> BlockStore:
    return BlockStore(blockstore_path(Path(data_dir) if data_dir else default_data_dir()))


def _out(out: IO[str] | None) -> IO[str]:
    return out if out is not None else sys.stdout


def cmd_add(
    paths: Sequence[str],
    *,
    recursive: bool = False,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    wrap_with_directory: bool = False,
    hidden: bool = False,
    only_hash: bool = False,
    quiet: bool = False,
    chunk_size: int = 262144,
    pin: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    out: IO[str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Add files (``-`` reads stdin) and print ``added CID NAME`` lines, then the root CID
    alone on the last line. ``only_hash`` computes CIDs without storing anything.
    ``progress(done, total)`` is told the bytes of file data added as they go (the
    total is None when reading stdin)."""
    write = _out(out)
    store = None if only_hash else _store(data_dir)
    opts: dict[str, Any] = {
        "cid_version": cid_version,
        "raw_leaves": raw_leaves,
        "chunk_size": chunk_size,
    }
    if not paths:
        raise ValidationError("give at least one path (or - for stdin)")
    for path in paths:
        if path != "-" and Path(path).is_dir() and not recursive:
            raise ValidationError(f"{path} is a directory; use -r to add it recursively")

    def entry(rel: str, cid: str) -> None:
        if not quiet:
            print(f"added {cid} {rel}".rstrip(), file=write)

    async def run() -> str:
        tally = None
        if progress is not None:
            total = await anyio.to_thread.run_sync(lambda: tree_bytes(paths, hidden=hidden))
            tally = Tally(progress, total)
        root = ""
        for path in paths:
            if path == "-":
                root = await add_bytes(
                    store, _stdin_chunks(), pin=pin and store is not None, on_bytes=tally, **opts
                )
                entry("-", root)
                continue
            root = await add_path(
                store,
                path,
                wrap_with_directory=wrap_with_directory,
                hidden=hidden,
                pin=pin and store is not None,
                on_entry=entry,
                on_bytes=tally,
                **opts,
            )
        if tally is not None:
            tally.finish()
        return root

    root = anyio.run(run)
    print(root, file=write)
    return 0


def _stdin_chunks() -> Any:
    async def gen() -> Any:
        stream = sys.stdin.buffer
        while True:
            piece = await anyio.to_thread.run_sync(stream.read, 1 << 20)
            if not piece:
                return
            yield piece

    return gen()


async def dag_bytes(blocks: Any, cid: str) -> int | None:
    """The bytes of file data under ``cid`` by its root block alone: a file's size, or
    the sum of a directory's links' sizes (which also count the blocks' own bytes, so a
    little over); None when the root is not local or sizes are missing."""
    root = to_cid(cid)
    try:
        (block,) = await as_source(blocks).get_many([root])
        node = decode_block(root, block)
    except StorageError:  # not local, or not UnixFS
        return None  # the export itself says what is wrong
    if node.kind in (DataType.FILE, DataType.RAW):
        return node.size
    sizes = [size for _, _, size in node.links]
    return sum(s for s in sizes if s is not None) if None not in sizes else None


def cmd_get(
    cid: str,
    *,
    output: str | None = None,
    data_dir: Any = None,
    out: IO[str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the file or tree at ``cid`` to ``output`` (default ``./CID``).
    ``progress(done, total)`` is told the bytes of file data written as they go (the
    total of a tree is estimated from its links' sizes; the last call says done)."""
    store = _store(data_dir)
    dest = Path(output) if output else Path(cid_str(to_cid(cid)))

    async def run() -> None:
        if progress is None:
            await export_to_path(store, cid, dest)
            return
        tally = Tally(progress, await dag_bytes(store, cid))
        await export_to_path(store, cid, dest, on_bytes=tally)
        tally.finish()

    anyio.run(run)
    print(f"Saved {cid} to {dest}", file=_out(out))
    return 0


def cmd_cat(cid: str, *, data_dir: Any = None, out: IO[bytes] | None = None) -> int:
    """Stream the file at ``cid`` to stdout (binary)."""
    store = _store(data_dir)
    if out is None:
        sys.stdout.flush()
    sink = out if out is not None else sys.stdout.buffer

    async def run() -> None:
        async for piece in cat(store, cid):
            sink.write(piece)
        sink.flush()

    anyio.run(run)
    return 0


def cmd_ls(cid: str, *, data_dir: Any = None, out: IO[str] | None = None) -> int:
    """List a directory: ``CID SIZE NAME`` (``-`` for sizes of non-files, ``/`` after dirs)."""
    store = _store(data_dir)
    for entry in anyio.run(lambda: ls(store, cid)):
        name = entry.name + ("/" if entry.type == "directory" else "")
        size = "-" if entry.size is None else str(entry.size)
        print(f"{entry.cid} {size} {name}".rstrip(), file=_out(out))
    return 0


def cmd_export(cid: str, *, car: str, data_dir: Any = None, out: IO[str] | None = None) -> int:
    """Write the DAG under ``cid`` to the CARv1 file ``car``."""
    count = anyio.run(lambda: export_car(_store(data_dir), cid, Path(car)))
    print(f"exported {count} blocks of {cid} to {car}", file=_out(out))
    return 0


def cmd_import(
    paths: Sequence[str], *, pin: bool = True, data_dir: Any = None, out: IO[str] | None = None
) -> int:
    """Import CAR files (every block hash-checked) and pin their roots."""
    store = _store(data_dir)
    for path in paths:
        roots = anyio.run(lambda p=path: import_car(store, Path(p), pin=pin))  # type: ignore[misc]
        for root in roots:
            print(f"{'pinned' if pin else 'imported'} root {root}", file=_out(out))
    return 0


def cmd_pin(
    cids: Sequence[str], *, direct: bool = False, data_dir: Any = None, out: IO[str] | None = None
) -> int:
    """Pin CIDs (their whole DAG must be local unless ``direct``); no CIDs: list the pins."""
    store = _store(data_dir)
    write = _out(out)
    if not cids:
        for cid, kind in sorted(store.pins().items()):
            print(f"{cid} {kind}", file=write)
        return 0
    for cid in cids:
        if not direct:
            missing = store.missing(cid, limit=1000)
            if missing:
                raise StorageError(
                    f"cannot pin {cid}: {len(missing)}{'+' if len(missing) == 1000 else ''} of its"
                    " blocks are not local (fetch it through a running node first)"
                )
        store.pin(cid, recursive=not direct)
        print(f"pinned {cid} {'directly' if direct else 'recursively'}", file=write)
    return 0


def cmd_unpin(cids: Sequence[str], *, data_dir: Any = None, out: IO[str] | None = None) -> int:
    """Remove pins; unpinning something not pinned is an error."""
    store = _store(data_dir)
    for cid in cids:
        if not store.unpin(cid):
            raise StorageError(f"{cid} is not pinned")
        print(f"unpinned {cid}", file=_out(out))
    return 0


def cmd_gc(*, data_dir: Any = None, out: IO[str] | None = None) -> int:
    """Remove every block not reachable from a pin."""
    removed = _store(data_dir).gc()
    print(f"removed {removed} blocks", file=_out(out))
    return 0


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands on ``subparsers``; return the ``data`` parser.

    The namespace gets ``data_command`` (the subcommand name); run it with
    :func:`run_data_command`.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="node data dir (default $BACALHAU_DIR or ~/.bacalhau)",
    )
    common.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="the node's API (default $BACALHAU_API or 127.0.0.1:1234); ignored with --data-dir",
    )
    data = subparsers.add_parser("data", help="content-addressed data (IPFS-compatible)")
    commands = data.add_subparsers(dest="data_command", required=True)

    add = commands.add_parser("add", parents=[common], help="add files; print their CIDs")
    add.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (- for stdin)")
    add.add_argument("-r", "--recursive", action="store_true", help="add directories recursively")
    add.add_argument("--cid-version", type=int, choices=(0, 1), default=0)
    add.add_argument("--raw-leaves", action=argparse.BooleanOptionalAction, default=None)
    add.add_argument("-w", "--wrap-with-directory", action="store_true")
    add.add_argument(
        "-H", "--hidden", action="store_true", help="include files whose names start with '.'"
    )
    add.add_argument(
        "-n", "--only-hash", action="store_true", help="only compute CIDs; store nothing"
    )
    add.add_argument("-Q", "--quiet", action="store_true", help="print only the root CID")
    add.add_argument("--chunk-size", type=int, default=262144, metavar="BYTES")
    add.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)

    get = commands.add_parser("get", parents=[common], help="write a CID's file or tree to disk")
    get.add_argument("cid", metavar="CID")
    get.add_argument("-o", "--output", default=None, metavar="PATH", help="default ./CID")

    catp = commands.add_parser("cat", parents=[common], help="print a file's bytes")
    catp.add_argument("cid", metavar="CID")

    lsp = commands.add_parser("ls", parents=[common], help="list a directory")
    lsp.add_argument("cid", metavar="CID")

    exp = commands.add_parser("export", parents=[common], help="write a DAG to a CAR file")
    exp.add_argument("cid", metavar="CID")
    exp.add_argument("--car", required=True, metavar="FILE")

    imp = commands.add_parser(
        "import", parents=[common], help="import CAR files and pin their roots"
    )
    imp.add_argument("paths", nargs="+", metavar="FILE.car")
    imp.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)

    pinp = commands.add_parser("pin", parents=[common], help="pin CIDs (none: list pins)")
    pinp.add_argument("cids", nargs="*", metavar="CID")
    pinp.add_argument("--direct", action="store_true", help="pin only the root block")

    unpin = commands.add_parser("unpin", parents=[common], help="remove pins")
    unpin.add_argument("cids", nargs="+", metavar="CID")

    commands.add_parser("gc", parents=[common], help="remove blocks no pin reaches")
    return data  # type: ignore[no-any-return]


def dispatch_local(ns: argparse.Namespace) -> int:
    """Run a parsed ``data`` command on the local data dir (errors propagate)."""
    command = ns.data_command
    dd = ns.data_dir
    if command == "add":
        what = Path(ns.paths[0]).name if len(ns.paths) == 1 else f"{len(ns.paths)} paths"
        with transfer_progress(f"adding {what}") as progress:
            return cmd_add(
                ns.paths,
                recursive=ns.recursive,
                cid_version=ns.cid_version,
                raw_leaves=ns.raw_leaves,
                wrap_with_directory=ns.wrap_with_directory,
                hidden=ns.hidden,
                only_hash=ns.only_hash,
                quiet=ns.quiet,
                chunk_size=ns.chunk_size,
                pin=ns.pin,
                data_dir=dd,
                progress=progress,
            )
    if command == "get":
        with transfer_progress(f"getting {ns.cid[:12]}") as progress:
            return cmd_get(ns.cid, output=ns.output, data_dir=dd, progress=progress)
    if command == "cat":
        return cmd_cat(ns.cid, data_dir=dd)
    if command == "ls":
        return cmd_ls(ns.cid, data_dir=dd)
    if command == "export":
        return cmd_export(ns.cid, car=ns.car, data_dir=dd)
    if command == "import":
        return cmd_import(ns.paths, pin=ns.pin, data_dir=dd)
    if command == "pin":
        return cmd_pin(ns.cids, direct=ns.direct, data_dir=dd)
    if command == "unpin":
        return cmd_unpin(ns.cids, data_dir=dd)
    if command == "gc":
        return cmd_gc(data_dir=dd)
    raise ValidationError(f"unknown data command {command!r}")


def run_data_command(ns: argparse.Namespace) -> int:
    """Run a namespace parsed by :func:`add_data_parser`; print errors; return the exit code."""
    try:
        if getattr(ns, "api", None):
            raise ValidationError(
                "the node API does not serve data commands yet; omit --api to use the local"
                " data dir (--data-dir)"
            )
        return dispatch_local(ns)
    except BacalhauError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bacalhau.cli.data data add ...`` (the ``bacalhau`` CLI wires the same tree)."""
    parser = argparse.ArgumentParser(prog="bacalhau")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    return run_data_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
