"""The job commands of the ``bacalhau`` CLI, all through :class:`~bacalhau.api.client.Client`.

``list``, ``describe``, ``logs``, ``get``, ``cancel``, ``validate``, ``job run``
(``node``, ``version`` and ``devstack`` live in :mod:`bacalhau.cli.nodes`), and the
submission flow shared with
``docker run`` and ``wasm run`` (:func:`submit_and_follow`): submit, then with
``--wait`` (the default) show the lifecycle as it happens (bids, running,
verifying, publishing) and end with the results CID.

Every ``cmd_*`` coroutine takes the parsed namespace and returns an exit code
(:mod:`bacalhau.cli` maps exceptions to codes).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from ..convert import to_json_data
from ..errors import ValidationError
from ..models import JobResult, JobSpec, JobState
from ..paths import remove_tree

if TYPE_CHECKING:  # (imported where used: every CLI command pays for this module's imports)
    from ..api.client import Client
    from ..api.schemas import EventLine
    from ..compat.v1 import Translated

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_ERROR",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "add_submit_options",
    "client_from_args",
    "emit",
    "load_spec",
    "submit_and_follow",
]

EXIT_OK = 0
"""The command did what was asked (a waited-for job completed)."""
EXIT_JOB_FAILED = 1
"""A job that was waited for (or whose results were asked for) failed or was cancelled."""
EXIT_BAD_INPUT = 2
"""Bad arguments, an invalid job spec, an unknown job id or CID."""
EXIT_UNREACHABLE = 3
"""No node answered at the API address."""
EXIT_ERROR = 4
"""Anything else (the node refused, a local file could not be written, ...)."""

FORMATS = ("text", "json", "yaml")


def _out() -> IO[str]:
    return sys.stdout


def _err() -> IO[str]:
    return sys.stderr


def short(job_id: str) -> str:
    """The short form of a job id shown in tables (a unique prefix in practice)."""
    return job_id[:10]


def short_node(node_id: str | None) -> str:
    return f"…{node_id[-8:]}" if node_id else "-"


def emit(value: Any, fmt: str, out: IO[str] | None = None) -> None:
    """Print a value (or plain data) as JSON or YAML."""
    data = to_json_data(value) if attrs.has(type(value)) or isinstance(value, list) else value
    data = json.loads(json.dumps(data))  # enums (str subclasses) to plain str for YAML
    out = out or _out()
    if fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        out.write(json.dumps(data, indent=2) + "\n")


def api_address(ns: argparse.Namespace) -> str | None:
    """``--api``, else ``BACALHAU_API``, else Bacalhau's ``BACALHAU_API_HOST`` and
    ``BACALHAU_API_PORT`` (either may be alone), else None (the default address)."""
    import os

    given = getattr(ns, "api", None) or os.environ.get("BACALHAU_API")
    if given:
        return str(given)
    host = os.environ.get("BACALHAU_API_HOST", "").strip()
    port = os.environ.get("BACALHAU_API_PORT", "").strip()
    if not host and not port:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"{host or '127.0.0.1'}:{port or '1234'}"


def client_from_args(ns: argparse.Namespace) -> Client:
    """The Client for ``--api``/``BACALHAU_API`` (or ``BACALHAU_API_HOST`` and
    ``BACALHAU_API_PORT``) and ``--api-token``/``BACALHAU_API_TOKEN``."""
    from ..api.client import Client

    return Client(api_address(ns), token=getattr(ns, "api_token", None))


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """``--api`` and ``--api-token`` on a subcommand (they may also come before it)."""
    parser.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="the node's API (default $BACALHAU_API or 127.0.0.1:1234)",
    )
    parser.add_argument(
        "--api-token",
        default=argparse.SUPPRESS,
        metavar="TOKEN",
        help="bearer token (default $BACALHAU_API_TOKEN)",
    )


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """The options every job-submitting command has: wait, id-only, output format."""
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the job until it ends (default); --no-wait (or Bacalhau's "
        "--wait=false) returns at once",
    )
    # Bacalhau's spelling; exact option strings, so "--wait IMAGE" still reads IMAGE
    parser.add_argument("--wait=false", dest="wait", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--wait=true", dest="wait", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (the job goes on)",
    )
    parser.add_argument(
        "--id-only", action="store_true", help="print only the job id (progress is not shown)"
    )
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print the job's output live as it runs (progress goes to stderr)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the job spec (YAML, as job run reads it) and submit nothing",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the results when the job ends (into --output-dir)",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="where --download writes the results (default ./job-ID; must be new or empty)",
    )
    parser.add_argument(
        "--output",
        dest="format",
        choices=FORMATS,
        default="text",
        help="print the final job as json or yaml instead of text",
    )
    if not any("--api" in a.option_strings for a in parser._actions):
        add_api_options(parser)


# --- progress ----------------------------------------------------------------------------

_PHASE_TEXT: dict[str, Callable[[EventLine], str]] = {
    "created": lambda e: f"submitted ({e.event.detail})",
    "queued": lambda e: f"queued: {e.event.detail}",
    "targets": lambda e: f"ops job: runs on {e.event.detail}",
    "bid": lambda e: f"bid from {short_node(e.event.node_id)}",
    "declined": lambda e: f"{short_node(e.event.node_id)} declined: {e.event.detail}",
    "bid_accepted": lambda e: f"running on {short_node(e.event.node_id)}",
    "bid_rejected": lambda e: (
        f"bid of {short_node(e.event.node_id)} not taken"
        + (f" ({e.event.detail})" if e.event.detail else "")
    ),
    "proposed": lambda e: f"verifying: results proposed by {short_node(e.event.node_id)}",
    "results_accepted": lambda e: f"publishing: results of {short_node(e.event.node_id)} accepted",
    "results_rejected": lambda e: (
        f"results of {short_node(e.event.node_id)} rejected: {e.event.detail}"
    ),
    "published": lambda e: f"published by {short_node(e.event.node_id)}: {e.event.detail}",
    "execution_failed": lambda e: (
        f"execution on {short_node(e.event.node_id)} failed: {e.event.detail}"
    ),
    "execution_lost": lambda e: (
        f"execution on {short_node(e.event.node_id)} lost: {e.event.detail}"
    ),
}


_PHASE = {
    "created": "submitted",
    "queued": "queued",
    "bid": "bidding",
    "declined": "bidding",
    "bid_rejected": "bidding",
    "bid_accepted": "running",
    "execution_failed": "running",
    "execution_lost": "running",
    "proposed": "verifying",
    "results_rejected": "verifying",
    "results_accepted": "publishing",
    "published": "publishing",
}


def progress_line(line: EventLine) -> str:
    """One human line for an event: time, the lifecycle phase it belongs to, what happened."""
    kind = line.event.kind
    text = _PHASE_TEXT.get(kind)
    what = text(line) if text else (line.event.detail or kind.replace("_", " "))
    phase = _PHASE.get(kind, kind)
    stamp = time.strftime("%H:%M:%S", time.localtime(line.event.time))
    return f"  {stamp}  {phase:<10}  {what}"


def print_outcome(result: JobResult, out: IO[str]) -> None:
    """The closing lines of a waited-for job: state, reason, results CID, next steps."""
    print(
        f"Job {result.job_id} {result.state.value}"
        + (f": {result.reason}" if result.reason else ""),
        file=out,
    )
    for ex in result.executions:
        if ex.exit_code not in (None, 0):
            print(f"  exit code {ex.exit_code} on {short_node(ex.node_id)}", file=out)
    if result.cid:
        print(f"Results CID: {result.cid}", file=out)
        print(f"  get them:  bacalhau get {short(result.job_id)}", file=out)
    elif result.ok:
        published = [str(e.published) for e in result.accepted if e.published]
        if published:
            print(f"Results: {', '.join(published)}", file=out)


def print_dry_run(spec: JobSpec, out: IO[str] | None = None) -> None:
    """``--dry-run``: the spec as YAML, in the form ``job run`` reads back."""
    emit(spec, "yaml", out)


async def submit_and_follow(client: Client, spec: JobSpec, ns: argparse.Namespace) -> int:
    """Submit ``spec``; unless ``--no-wait``, follow it to the end. Returns the exit code.

    ``--dry-run`` prints the spec and submits nothing; ``--download`` fetches the
    results once the job has completed."""
    fmt = getattr(ns, "format", "text")
    id_only = getattr(ns, "id_only", False)
    if getattr(ns, "dry_run", False):
        print_dry_run(spec)
        return EXIT_OK
    download = getattr(ns, "download", False)
    if download and not getattr(ns, "wait", True):
        raise ValidationError(
            "--download needs to wait for the job (drop --no-wait)", field="download"
        )
    job_id = await client.submit(spec)
    if not getattr(ns, "wait", True):
        if id_only:
            print(job_id, file=_out())
        elif fmt != "text":
            emit({"job_id": job_id}, fmt)
        else:
            print(f"Job submitted: {job_id}", file=_out())
            print(f"  follow it:  bacalhau describe {short(job_id)}", file=_out())
        return EXIT_OK
    show = not id_only and fmt == "text"
    follow = getattr(ns, "follow", False)
    talk = sys.stderr if follow else _out()  # with --follow, stdout is the job's output
    if show:
        print(f"Job {job_id}", file=talk)
        talk.flush()

    def on_event(line: EventLine) -> None:
        if show:
            print(progress_line(line), file=talk, flush=True)

    timeout = getattr(ns, "wait_timeout", None)
    if follow:
        from .watch import follow_logs

        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(follow_logs, client, job_id))
            result = await client.wait(job_id, timeout=timeout, on_event=on_event)
    else:
        result = await client.wait(job_id, timeout=timeout, on_event=on_event)
    if id_only:
        print(job_id, file=_out())
    elif fmt != "text":
        emit(result, fmt)
    else:
        print_outcome(result, _out())
    if download and result.ok:
        dest = (
            Path(ns.output_dir) if getattr(ns, "output_dir", None) else Path(f"job-{short(job_id)}")
        )
        cid, path = await client.get_results(job_id, dest)
        print(f"Results {cid} downloaded to {path}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_JOB_FAILED


# --- job specs from files ----------------------------------------------------------------


def load_spec(path: str) -> JobSpec:
    """A JobSpec from a YAML or JSON file (``-`` reads stdin); see :func:`load_job`.

    Raises:
        ValidationError: unreadable, not YAML/JSON, or an invalid spec (the message
            names the field, e.g. ``$.deal.concurrency``).
    """
    return load_job(path).spec


def load_job(path: str) -> Translated:
    """A JobSpec, and what could not be kept, from a YAML or JSON file (``-`` is stdin).

    Three shapes are read, told apart by their keys (:func:`bacalhau.compat.detect`):
    ours (the spec's fields as ``GET /api/v1/jobs/ID`` shows them under ``spec``, bare,
    under a ``spec`` key, or a whole ``bacalhau describe`` output), Bacalhau 1.x jobs
    (``Type: batch``, ``Count``, ``Tasks``) and Bacalhau 0.3 specs (``APIVersion:
    V1beta1``, ``Spec``).

    Raises:
        ValidationError: unreadable, not YAML/JSON, or an invalid job (the message
            names the offending key, e.g. ``$.deal.concurrency`` or
            ``Tasks[0].Engine.Params.Image``).
    """
    import yaml

    from ..compat import detect, translate

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", field="file"
        ) from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path} is neither YAML nor JSON: {exc}", field="file") from None
    if not isinstance(data, dict):
        raise ValidationError(
            f"{path} must hold a mapping (a job spec), got {type(data).__name__}", field="file"
        )
    translated = translate(data)
    return attrs.evolve(translated, source=detect(data))


def _warn(path: str, translated: Translated) -> None:
    for warning in translated.warnings:
        print(f"warning: {path}: {warning}", file=_err())


async def cmd_validate(ns: argparse.Namespace) -> int:
    translated = load_job(ns.file)
    _warn(ns.file, translated)
    spec = translated.spec
    if ns.format != "text":
        emit(spec, ns.format)
    else:
        shape = {"bacalhau-v1": " (a Bacalhau 1.x job)", "bacalhau-v0.3": " (a Bacalhau 0.3 spec)"}
        kind = shape.get(translated.source, "")
        print(f"{ns.file}: a valid {spec.engine.type} job spec{kind}", file=_out())
    return EXIT_OK


async def cmd_job_run(ns: argparse.Namespace) -> int:
    translated = load_job(ns.file)
    _warn(ns.file, translated)
    if getattr(ns, "dry_run", False):
        print_dry_run(translated.spec)
        return EXIT_OK
    async with client_from_args(ns) as client:
        return await submit_and_follow(client, translated.spec, ns)


# --- queries -----------------------------------------------------------------------------


SORT_KEYS = ("created_at", "id", "state", "engine")


async def cmd_list(ns: argparse.Namespace) -> int:
    # created_at and id sort on the node (an indexed query); state and engine sort the page
    sort = {"created_at": "created", "id": "id"}.get(ns.sort_by, "created")
    newest = (ns.sort_by == "created_at") != ns.reverse
    async with client_from_args(ns) as client:
        page = await client.list_jobs(
            state=ns.state or None,
            label=ns.label,
            engine=ns.engine,
            limit=1000 if ns.all else ns.limit,
            offset=ns.offset,
            sort=sort,
            order="newest" if newest else "oldest",
        )
        jobs = list(page.jobs)
        for _ in range(page.total // 1000 + 1 if ns.all else 0):  # bounded by the total
            if page.next is None:
                break
            page = await client.list_jobs(
                state=ns.state or None,
                label=ns.label,
                engine=ns.engine,
                limit=1000,
                sort=sort,
                order="newest" if newest else "oldest",
                after=page.next,
            )
            jobs.extend(page.jobs)
    key = {
        "created_at": lambda j: (j.created_at, j.job_id),
        "id": lambda j: (j.job_id,),
        "state": lambda j: (j.state.value, j.created_at),
        "engine": lambda j: (j.engine, j.created_at),
    }[ns.sort_by]
    # newest first by default (as before); --reverse flips whichever order was asked for
    jobs.sort(key=key, reverse=(ns.sort_by == "created_at") != ns.reverse)
    page = attrs.evolve(page, jobs=tuple(jobs), offset=ns.offset if not ns.all else 0)
    if ns.id_only:
        for job in page.jobs:
            print(job.job_id, file=_out())
    elif ns.format != "text":
        emit(page, ns.format)
    else:
        rows = [("ID", "CREATED", "ENGINE", "STATE", "RESULTS")]
        for job in page.jobs:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
            rows.append((short(job.job_id), created, job.engine, job.state.value, job.cid or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                file=_out(),
            )
        if page.total > page.offset + len(page.jobs):
            print(
                f"({page.total} jobs; next page: --offset {page.offset + len(page.jobs)})",
                file=_out(),
            )
    return EXIT_OK


async def cmd_describe(ns: argparse.Namespace) -> int:
    async with client_from_args(ns) as client:
        result = await client.describe(ns.job)
    data = to_json_data(result)
    data["cid"] = result.cid
    emit(data, "json" if ns.format == "json" else "yaml")
    return EXIT_OK


async def cmd_logs(ns: argparse.Namespace) -> int:
    if ns.follow or ns.tail is not None or ns.execution:
        from .watch import cmd_logs_live

        return await cmd_logs_live(ns)
    async with client_from_args(ns) as client:
        async for chunk in client.logs(ns.job, follow=ns.follow, node=ns.node, stream=ns.stream):
            sink = sys.stdout if chunk.stream == "stdout" else sys.stderr
            sink.write(chunk.data)
            if chunk.data and not chunk.data.endswith("\n"):
                sink.write("\n")
            if not chunk.complete:
                print(
                    f"[{chunk.stream} of {short_node(chunk.node_id)} truncated: the full "
                    "log is in the results; bacalhau get]",
                    file=sys.stderr,
                )
            sink.flush()
    return EXIT_OK


def _clear_destination(dest: Path, *, force: bool) -> None:
    """``get`` writes into a new or empty folder; ``--force`` first removes what is there.

    Raises:
        ValidationError: ``dest`` holds something and ``force`` is not set (the message
            says how to go on).
    """
    if not (dest.exists() or dest.is_symlink()):
        return
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        return
    if not force:
        raise ValidationError(
            f"{dest} already exists and is not empty; pass --force to replace it "
            "(its contents are deleted first), or pick another --output-dir",
            field="--output-dir",
        )
    if dest.is_dir() and not dest.is_symlink():
        remove_tree(dest)
    else:
        dest.unlink()


async def cmd_get(ns: argparse.Namespace) -> int:
    async with client_from_args(ns) as client:
        result = await client.describe(ns.job)
        dest = Path(ns.output_dir) if ns.output_dir else Path(f"job-{short(result.job_id)}")
        await anyio.to_thread.run_sync(functools.partial(_clear_destination, dest, force=ns.force))
        if ns.raw:
            return await _get_raw(client, result, dest)
        from .progress import transfer_progress

        with transfer_progress(f"getting {short(result.job_id)}") as progress:
            cid, path = await client.get_results(result.job_id, dest, progress=progress)
    vouched = any(
        e.verified and e.published is not None and e.published.cid == cid for e in result.accepted
    )
    if vouched:  # the requester checked the publication against the accepted commitment
        print(f"Fetched and verified {cid}", file=sys.stderr)
    else:
        print(
            f"Fetched {cid} (every block checked against the CID; no accepted commitment "
            "vouches for it)",
            file=sys.stderr,
        )
    print(f"Results of {result.job_id} are in {path}", file=_out())
    return EXIT_OK


async def _get_raw(client: Client, result: JobResult, dest: Path) -> int:
    """``get --raw``: every published result, unmerged, under ``DEST/raw/CID``."""
    from ..errors import JobFailed

    cids = sorted({e.published.cid for e in result.accepted if e.published and e.published.cid})
    if not cids:
        raise JobFailed(f"job {result.job_id} {result.state.value} with no results published")
    await anyio.Path(dest / "raw").mkdir(parents=True, exist_ok=True)
    for cid in cids:
        await client.download(cid, dest / "raw" / cid)
        print(f"Fetched and verified {cid}", file=sys.stderr)
    print(f"Results of {result.job_id} are in {dest / 'raw'}", file=_out())
    return EXIT_OK


async def cmd_cancel(ns: argparse.Namespace) -> int:
    async with client_from_args(ns) as client:
        state = await client.cancel(ns.job, ns.reason)
        job_id = (await client.describe(ns.job)).job_id
    print(f"Job {job_id} {state.value}", file=_out())
    return EXIT_OK


# --- the parsers -------------------------------------------------------------------------


def add_job_parsers(sub: Any) -> None:
    """Register this module's commands on the top-level subparsers object."""
    from .nodes import cmd_devstack, cmd_node, cmd_version

    api = argparse.ArgumentParser(add_help=False)
    add_api_options(api)

    made: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, fn: Any, help_: str, **kw: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_, description=help_, parents=[api], **kw
        )
        parser.set_defaults(func=fn)
        made[name] = parser
        return parser

    p = command("list", cmd_list, "list the node's jobs, newest first")
    p.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[s.value for s in JobState],
        help="only jobs in this state (repeatable)",
    )
    p.add_argument("--label", default=None, help="only jobs with this label")
    p.add_argument("--engine", default=None, help="only jobs for this executor")
    p.add_argument(
        "-n",
        "--number",
        "--limit",
        dest="limit",
        type=int,
        default=20,
        help="how many (default 20, at most 1000)",
    )
    p.add_argument("--all", action="store_true", help="every job (all pages)")
    p.add_argument(
        "--sort-by",
        choices=SORT_KEYS,
        default="created_at",
        help="order by this (default created_at, newest first)",
    )
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    p.add_argument("--offset", type=int, default=0, help="skip this many")
    p.add_argument("--id-only", action="store_true", help="print full job ids only")
    p.add_argument("--output", dest="format", choices=FORMATS, default="text")

    p = command(
        "describe", cmd_describe, "show a job: spec, state, executions and events (YAML by default)"
    )
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument("--output", dest="format", choices=("yaml", "json"), default="yaml")

    p = command("logs", cmd_logs, "print a job's stdout (and stderr, to stderr)")
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print the output live, line by line, until the job ends",
    )
    p.add_argument(
        "--tail",
        type=int,
        default=None,
        metavar="N",
        help="start with the last N lines of each execution",
    )
    p.add_argument(
        "--execution",
        default=None,
        metavar="NODE",
        help="only the execution on this node (its id, its start, or its end as shown: …76eJkm3N)",
    )
    p.add_argument(
        "--node",
        default=None,
        help="only executions on nodes whose id starts or ends with this",
    )
    p.add_argument("--stream", choices=("stdout", "stderr"), default=None)

    p = command("get", cmd_get, "download a job's published results and verify them")
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="where to write them (default ./job-ID; must be new or empty, or use --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the output folder if it exists (what is in it is deleted first)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="every execution's published results unmerged, under DIR/raw/CID",
    )

    p = command("cancel", cmd_cancel, "cancel a job")
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument("--reason", default="cancelled by the user")

    p = sub.add_parser("validate", help="check a job spec file (YAML or JSON); needs no node")
    p.add_argument("file", metavar="FILE", help="the spec file, or - for stdin")
    p.add_argument(
        "--output",
        dest="format",
        choices=FORMATS,
        default="text",
        help="print the normalised spec as json or yaml",
    )
    p.set_defaults(func=cmd_validate)

    job = sub.add_parser("job", help="run a job from a spec file")
    job_sub = job.add_subparsers(dest="job_command", required=True, metavar="COMMAND")
    p = job_sub.add_parser(
        "run",
        help="submit a job file (YAML or JSON: ours, Bacalhau 1.x or Bacalhau 0.3)",
        description="Submit the job in FILE (- for stdin): our spec, a Bacalhau 1.x job "
        "(Type, Count, Tasks) or a Bacalhau 0.3 spec (APIVersion: V1beta1), told apart "
        "by their keys. Fields with no counterpart are refused, naming the key.",
    )
    p.add_argument("file", metavar="FILE", nargs="?", default="-", help="default: stdin")
    add_submit_options(p)
    p.set_defaults(func=cmd_job_run)
    # Bacalhau 1.x nests the job commands under "job": the same parsers, there too
    for ours, theirs in (("list", "list"), ("logs", "logs"), ("get", "get"), ("cancel", "stop")):
        job_sub.add_parser(
            theirs,
            parents=[made[ours]],
            add_help=False,
            help=f"as bacalhau {ours}",
            description=made[ours].description,
        )
    p = job_sub.add_parser(
        "describe",
        help="show a job (YAML by default), in the form job run reads back",
        parents=[api],
    )
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument("--output", dest="format", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=cmd_describe)
    p = job_sub.add_parser(
        "validate",
        help="check a job file (ours, Bacalhau 1.x or 0.3); needs no node",
    )
    p.add_argument("file", metavar="FILE", help="the job file, or - for stdin")
    p.add_argument("--output", dest="format", choices=FORMATS, default="text")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "create",
        help="submit a job file, as Bacalhau 0.3 named it (same as job run)",
        description="Submit the job in FILE (ours, Bacalhau 1.x or 0.3; - for stdin).",
    )
    p.add_argument("file", metavar="FILE")
    add_submit_options(p)
    p.set_defaults(func=cmd_job_run)

    p = command(
        "node",
        cmd_node,
        "show the node (id, peers, capacity, executors); 'node list' and 'node describe ID' "
        "show the nodes it knows from their announcements",
    )
    p.add_argument("--output", dest="format", choices=FORMATS, default="text")
    nodes = p.add_subparsers(dest="node_command", required=False, metavar="COMMAND")
    q = nodes.add_parser(
        "list", help="the nodes this node knows: labels, executors, free capacity", parents=[api]
    )
    q.add_argument("--output", dest="format", choices=FORMATS, default="text")
    q = nodes.add_parser(
        "describe",
        help="one known node's announcement (id, unique prefix, or the short id 'node list' shows)",
        parents=[api],
    )
    q.add_argument("node_id", metavar="ID")
    q.add_argument("--output", dest="format", choices=("yaml", "json"), default="yaml")

    p = command("version", cmd_version, "print the client's and the node's versions")
    p.add_argument("--client-only", action="store_true", help="do not ask the node")
    p.add_argument("--output", dest="format", choices=FORMATS, default="text")

    p = sub.add_parser(
        "devstack",
        help="run a whole network in one process, for trying things",
        description="Run N nodes on an in-memory transport in this process, "
        "with node 0's API on HOST:PORT, until Ctrl-C.",
    )
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1234, help="API port (default 1234; 0: any)")
    p.add_argument(
        "--token",
        dest="api_token_serve",
        default=None,
        metavar="TOKEN",
        help="require this bearer token (needed beyond loopback)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed the nodes' random choices")
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="keep the nodes' data here (default: a temporary directory)",
    )
    p.set_defaults(func=cmd_devstack)
