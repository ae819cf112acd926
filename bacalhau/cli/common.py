"""What ``docker run``, ``wasm run`` and friends share: the job options and their parsing.

The functions know nothing of argparse except :func:`add_job_options`, so the
CLI, the HTTP client and tests can share them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..cid import validate_cid
from ..compat.units import parse_cpu
from ..errors import ValidationError
from ..models import Deal, InputSpec, OutputSpec, Resources, StorageSpec, parse_size
from ..selectors import parse_selectors

__all__ = [
    "DEFAULT_OUTPUT",
    "add_job_options",
    "job_kwargs",
    "job_options_from_args",
    "parse_env",
    "parse_input",
    "parse_output",
    "parse_url_input",
    "parse_volume",
]

DEFAULT_INPUT_PATH = "/inputs"
"""Where ``-i URI`` mounts its source when no path is given (as Bacalhau does)."""

DEFAULT_OUTPUT = OutputSpec("outputs", "/outputs")
"""The output volume a job gets when no ``-o`` is given (as Bacalhau does)."""


def parse_volume(text: str) -> InputSpec:
    """``CID:/path`` (or ``CID/inner/path:/path``) -> an ipfs input volume at ``/path``.

    Raises:
        ValidationError: not of that form, or the CID or path is invalid.
    """
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise ValidationError(f"volume {text!r} must look like CID:/path", field="volume")
    cid, _, inner = source.partition("/")
    validate_cid(cid, field="volume")
    return InputSpec(StorageSpec.ipfs(cid, path=inner or None), target)


def _split_url(text: str) -> tuple[str, str | None]:
    """``https://host:port/file[:/path]`` -> (url, path or None)."""
    url, sep, rest = text.rpartition(":/")
    if sep and "://" in url and not rest.startswith("/"):
        return url, "/" + rest
    return text, None


def _url_target(url: str) -> str:
    """``/inputs/NAME`` for a URL's last path segment (Bacalhau keeps the file's name)."""
    from urllib.parse import urlsplit

    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    safe = name if name and name not in (".", "..") and "\x00" not in name else "input"
    return f"{DEFAULT_INPUT_PATH}/{safe}"


def parse_url_input(text: str, *, field: str = "input_urls") -> InputSpec:
    """``-u URL[:/path]`` -> a url input at ``/path`` (default ``/inputs/FILENAME``).

    Raises:
        ValidationError: not an http(s) URL, or a bad path.
    """
    url, target = _split_url(text.strip())
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"{text!r} is not an http(s) URL", field=field)
    try:
        return InputSpec(StorageSpec.from_url(url), target or _url_target(url))
    except ValidationError as exc:
        raise ValidationError(f"{text!r}: {exc}", field=field) from None


def parse_input(text: str) -> InputSpec:
    """One ``-i`` value, in any of Bacalhau's forms:

    - ``ipfs://CID[/inner/path][:/path]``, or a bare ``CID[:/path]``;
    - ``https://host/file[:/path]`` (default ``/inputs/file``);
    - ``src=URI,dst=/path`` (``opt=...`` options have no counterpart and are refused).

    Without a path an IPFS source is mounted at ``/inputs``.

    >>> parse_input("ipfs://QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u").target
    '/inputs'
    >>> parse_input("src=https://example.org/a.csv,dst=/data/a.csv").source.url
    'https://example.org/a.csv'

    Raises:
        ValidationError: naming the input and what is wrong with it.
    """
    raw = text.strip()
    target: str | None = None
    if raw.startswith(("src=", "dst=")) or ",dst=" in raw:
        fields: dict[str, str] = {}
        for part in raw.split(","):
            key, sep, value = part.partition("=")
            if not sep or key not in ("src", "dst"):
                raise ValidationError(
                    f"{text!r}: {key!r} is not src= or dst= (options have no counterpart here)",
                    field="input",
                )
            fields[key] = value
        if not fields.get("src"):
            raise ValidationError(f"{text!r} needs src=URI", field="input")
        raw, target = fields["src"], fields.get("dst") or None
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme in ("http", "https"):
        url, path = _split_url(raw)
        return parse_url_input(f"{url}:{target or path}" if target or path else url, field="input")
    if scheme not in ("", "ipfs"):
        raise ValidationError(
            f"{text!r}: {scheme}:// sources have no counterpart here (ipfs://, https://)",
            field="input",
        )
    body = raw.split("://", 1)[1] if scheme else raw
    source, sep, path = body.partition(":")
    if sep and target is None:
        target = path
    cid, _, inner = source.strip("/").partition("/")
    validate_cid(cid, field="input")
    try:
        return InputSpec(StorageSpec.ipfs(cid, path=inner or None), target or DEFAULT_INPUT_PATH)
    except ValidationError as exc:
        raise ValidationError(f"{text!r}: {exc}", field="input") from None


def parse_output(text: str) -> OutputSpec:
    """``name:/path`` -> an output volume.

    Raises:
        ValidationError: the name or path is invalid.
    """
    name, sep, path = text.partition(":")
    if not sep:
        raise ValidationError(f"output {text!r} must look like name:/path", field="output")
    return OutputSpec(name, path)


def parse_env(text: str) -> tuple[str, str]:
    """``K=V`` -> ``("K", "V")`` (``V`` may be empty or contain ``=``).

    Raises:
        ValidationError: there is no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValidationError(f"environment entry {text!r} must look like NAME=value", field="env")
    return key, value


def job_kwargs(
    *,
    volumes: Sequence[str] = (),
    inputs: Sequence[str] = (),
    urls: Sequence[str] = (),
    outputs: Sequence[str] = (),
    env: Sequence[str] = (),
    timeout: float | None = None,
    memory: str | int | None = None,
    cpu: float | str | None = None,
    concurrency: int = 1,
    confidence: int = 0,
    min_bids: int = 0,
    verifier: str = "noop",
    publisher: str = "ipfs",
    labels: Sequence[str] = (),
    retries: int | None = None,
    selectors: Sequence[str] = (),
    queue_timeout: float | None = None,
    target: str = "any",
    gpu: int | None = None,
    audit: float = 0.0,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for :class:`~bacalhau.models.JobSpec` (and its engine
    constructors) from CLI-style strings: ``-v``, ``-o`` and ``--env`` values, sizes
    such as ``512Mi``. Without ``outputs`` the job gets :data:`DEFAULT_OUTPUT` (unless
    an input sits at its path).

    Raises:
        ValidationError: naming the argument that is wrong.
    """
    defaults = Resources()
    mounted = [parse_volume(v) for v in volumes]
    mounted += [parse_input(i) for i in inputs]
    mounted += [parse_url_input(u) for u in urls]
    out = [parse_output(o) for o in outputs]
    if not out and all(i.target != DEFAULT_OUTPUT.path for i in mounted):
        out = [DEFAULT_OUTPUT]
    kwargs: dict[str, Any] = {
        "inputs": mounted,
        "outputs": out,
        "env": dict(parse_env(e) for e in env),
        "resources": Resources(
            cpu=defaults.cpu if cpu is None else parse_cpu(cpu, field="cpu"),
            memory=defaults.memory if memory is None else parse_size(memory),
            gpu=0 if gpu is None else gpu,
        ),
        "selectors": parse_selectors(selectors),
        "target": target,
        "deal": Deal(
            concurrency=concurrency, confidence=confidence, min_bids=min_bids, audit=audit
        ),
        "verifier": verifier,
        "publisher": publisher,
        "labels": tuple(labels),
    }
    if timeout is not None:
        kwargs["timeout"] = timeout
    if retries is not None:
        kwargs["retries"] = retries
    if queue_timeout is not None:
        kwargs["queue_timeout"] = queue_timeout
    if deterministic:
        kwargs["deterministic"] = True
    return kwargs


_OPTION_NAMES = (
    "volumes",
    "inputs",
    "urls",
    "outputs",
    "env",
    "timeout",
    "memory",
    "cpu",
    "concurrency",
    "confidence",
    "min_bids",
    "verifier",
    "publisher",
    "labels",
    "retries",
    "selectors",
    "queue_timeout",
    "target",
    "gpu",
    "audit",
    "deterministic",
)


def job_options_from_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The raw options (as :func:`job_kwargs` takes them) of a namespace parsed with
    :func:`add_job_options`."""
    return {name: getattr(ns, name) for name in _OPTION_NAMES if hasattr(ns, name)}


def add_job_options(run: argparse.ArgumentParser) -> None:
    """Register the options every ``... run`` command takes, named as Bacalhau names them."""
    run.add_argument(
        "-i",
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="URI",
        help="mount an input (repeatable): ipfs://CID[:/path], https://URL[:/path], "
        "src=URI,dst=/path or CID:/path; default path /inputs",
    )
    run.add_argument(
        "-v",
        "--input-volumes",
        dest="volumes",
        action="append",
        default=[],
        metavar="CID:/path",
        help="mount a CID read-only at /path (repeatable)",
    )
    run.add_argument(
        "-u",
        "--input-urls",
        dest="urls",
        action="append",
        default=[],
        metavar="URL[:/path]",
        help="download a URL as an input file (default /inputs/FILENAME; repeatable)",
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
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable (repeatable)",
    )
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    run.add_argument("--memory", default=None, metavar="SIZE", help="memory limit, e.g. 512Mi")
    run.add_argument(
        "--cpu", default=None, metavar="CORES", help="CPU limit: cores or millicores (500m)"
    )
    run.add_argument("--concurrency", type=int, default=1, help="how many nodes run it")
    run.add_argument("--confidence", type=int, default=0, help="how many must agree")
    run.add_argument(
        "--min-bids", type=int, default=0, help="bids to wait for before choosing among them"
    )
    run.add_argument(
        "--retries",
        type=int,
        default=None,
        help="replacements for failed or silent nodes (default 2)",
    )
    run.add_argument("--verifier", default="noop", help="noop, deterministic or audit")
    run.add_argument(
        "--audit",
        type=float,
        default=0.0,
        metavar="P",
        help="with --verifier audit: the probability (0 to 1) that another node re-runs the job",
    )
    run.add_argument(
        "--deterministic",
        action="store_true",
        help="promise that the job's results depend only on its inputs (so it can be audited)",
    )
    run.add_argument("-p", "--publisher", default="ipfs", help="ipfs, local or noop")
    run.add_argument("-l", "--label", dest="labels", action="append", default=[])
    run.add_argument(
        "-s",
        "--selector",
        dest="selectors",
        action="append",
        default=[],
        metavar="EXPR",
        help="run only on nodes whose labels match, e.g. 'region=eu,tier in (1,2),!spot'"
        " (=, !=, in, notin, exists, !exists, <, >; repeatable)",
    )
    run.add_argument(
        "--queue-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the job may wait for a node to take it (default 600)",
    )
    run.add_argument(
        "--target",
        choices=("any", "all"),
        default="any",
        help="all: run once on every node that matches the selectors (an ops job)",
    )
