"""Watching from the CLI: ``bacalhau logs -f`` (live output), ``bacalhau events -f`` (the
node's event stream) and ``--follow`` on ``docker run`` / ``wasm run``.

Job output goes to stdout and stderr as the job wrote it; notes (lines a slow reader
missed, an execution's output ending) go to stderr in brackets.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # (imported where used: the CLI builds its parser from this module)
    from ..api.client import Client
    from ..live.events import NodeEvent
    from ..live.frames import LogFrame
    from ..live.node import LogRecord

__all__ = ["add_watch_parsers", "cmd_events", "follow_logs", "print_frame", "print_record"]


def _short(node_id: str) -> str:
    return node_id[-8:] if node_id else "?"


def print_record(
    record: LogRecord, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> None:
    """Print one live log record: a line to the stream it was written to, a note to stderr."""
    out = out or sys.stdout
    err = err or sys.stderr
    if record.skipped:
        print(
            f"[{record.skipped} line(s) of {_short(record.node_id)} not kept: "
            "written before this reader caught up]",
            file=err,
            flush=True,
        )
    elif record.end:
        if record.detail:
            print(f"[{_short(record.node_id)}: {record.detail}]", file=err, flush=True)
    else:
        sink = out if record.stream == "stdout" else err
        sink.write(record.text + ("" if record.partial else "\n"))
        sink.flush()


def print_frame(
    frame: LogFrame,
    *,
    stream: str | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> None:
    """Print one frame of live output: its lines to the streams they were written to, one
    write per run of lines of one stream (only ``stream``'s when given), notes to stderr."""
    from ..live.node import LogRecord

    out = out or sys.stdout
    err = err or sys.stderr
    if frame.skipped:
        print_record(LogRecord(node_id=frame.node_id, skipped=frame.skipped), out=out, err=err)
    written = set()
    for name, text in frame.pieces(stream):
        sink = out if name == "stdout" else err
        sink.write(text)
        written.add(sink)
    for sink in written:
        sink.flush()
    if frame.end:
        record = LogRecord(node_id=frame.node_id, end=True, detail=frame.detail)
        print_record(record, out=out, err=err)


async def follow_logs(
    client: Client,
    job_id: str,
    *,
    follow: bool = True,
    tail: int | None = None,
    execution: str | None = None,
    stream: str | None = None,
) -> set[str]:
    """Print the job's live output (only ``stream`` when given); return the nodes whose
    live output was not kept (their published logs are the place to look)."""
    missing: set[str] = set()
    frames = client.log_frames(job_id, follow=follow, tail=tail, execution=execution)
    async for frame in frames:
        if frame.end and frame.detail == "no live output kept":
            missing.add(frame.node_id)
            frame = attrs.evolve(frame, end=False, detail="")
        print_frame(frame, stream=stream)
    return missing


async def cmd_logs_live(ns: argparse.Namespace) -> int:
    """``logs -f`` / ``logs --tail N``: live output, then the published logs of executions
    whose live output is no longer kept."""
    from .jobs import client_from_args

    execution = ns.execution or ns.node
    async with client_from_args(ns) as client:
        job_id = (await client.describe(ns.job)).job_id
        missing = await follow_logs(
            client, job_id, follow=ns.follow, tail=ns.tail, execution=execution, stream=ns.stream
        )
        for node_id in sorted(missing):
            async for chunk in client.logs(job_id, node=node_id, stream=ns.stream):
                text = chunk.data
                if ns.tail is not None:
                    text = "\n".join(text.splitlines()[-ns.tail :]) if ns.tail else ""
                sink = sys.stdout if chunk.stream == "stdout" else sys.stderr
                sink.write(text if not text or text.endswith("\n") else text + "\n")
                sink.flush()
    return 0


def event_line(event: NodeEvent) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    job = event.job_id[:10] if event.job_id else "-"
    node = _short(event.node_id) if event.node_id else "-"
    state = f" [{event.state}]" if event.state else ""
    detail = f"  {event.detail}" if event.detail else ""
    return f"{stamp}  {event.kind:<17} {job:<10}  {node:<8}{state}{detail}"


async def cmd_events(ns: argparse.Namespace) -> int:
    import json

    from ..convert import to_json_data
    from .jobs import client_from_args

    def skipped(n: int) -> None:
        print(f"[{n} earlier event(s) not kept by the node]", file=sys.stderr, flush=True)

    async with client_from_args(ns) as client:
        async for event in client.node_events(follow=ns.follow, tail=ns.tail, on_skipped=skipped):
            if ns.format == "json":
                print(json.dumps(to_json_data(event)), flush=True)
            else:
                print(event_line(event), flush=True)
    return 0


def add_watch_parsers(sub: Any, api: argparse.ArgumentParser) -> None:
    """Register ``events`` on the top-level subparsers (``logs`` lives in jobs)."""
    p = sub.add_parser(
        "events",
        help="print the node's events: jobs created, bids, results, nodes joining and leaving",
        description="Print the node's event stream (the last --tail events it keeps, "
        "then with -f new ones as they happen, until Ctrl-C).",
        parents=[api],
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument(
        "--tail", type=int, default=None, metavar="N", help="start with the last N events only"
    )
    p.add_argument("--output", dest="format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_events)
