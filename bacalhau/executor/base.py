"""The Executor interface: run one job given its prepared volumes.

An executor writes the job's ``stdout`` and ``stderr`` files into
``ctx.results_dir`` and lets the job write each named output volume into
``ctx.outputs[name]`` (a host directory it mounts or preopens at the output's
path). The runner writes ``exitCode`` from the returned :class:`RunResult`.
A non-zero exit is a result, not an error; an executor raises
:class:`~bacalhau.errors.ExecutorError` only when it could not run the job
(trap, timeout, missing image, ...), with a message a person can act on.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import attrs

from ..models import InputSpec, JobSpec
from ..paths import remove_tree
from ..storage.base import Reader

__all__ = [
    "MAX_LOG_BYTES",
    "ExecutionContext",
    "ExecutionLayout",
    "Executor",
    "OutputSink",
    "PreparedVolume",
    "RunResult",
    "make_layout",
]

MAX_LOG_BYTES = 1024 * 1024
"""stdout and stderr are each capped at 1 MiB in the results folder; the rest is
dropped and ``RunResult.truncated`` notes it."""


@attrs.frozen(kw_only=True)
class PreparedVolume:
    """An input volume made ready for an executor.

    Attributes:
        spec: the input as the job asked for it.
        host_path: set for POSIX volumes: a read-only file or directory on the host.
        size: the volume's total length in bytes (library volumes).
        read: set for library volumes: the executor reads bytes by calling it, on a
            worker thread (it blocks): ``read(offset, length) -> bytes``. Thread-safe.
    """

    spec: InputSpec
    host_path: Path | None = None
    size: int | None = None
    read: Reader | None = None  # thread-safe; library mode


OutputSink = Callable[[Literal["stdout", "stderr"], bytes], None]
"""Takes the job's output as it is written (``sink("stdout", b"...")``), from any thread,
without blocking: the node's live log buffer (:class:`bacalhau.live.LogBuffer`)."""


@attrs.frozen(kw_only=True)
class ExecutionContext:
    """Everything one run needs; built by the node's execution runner.

    ``output``, when set, is given the job's stdout and stderr bytes while the job runs
    (live logs); the ``stdout``/``stderr`` files in ``results_dir`` stay the record.
    """

    job_id: str
    execution_id: str
    spec: JobSpec
    volumes: tuple[PreparedVolume, ...]
    outputs: dict[str, Path] = attrs.field(hash=False)
    results_dir: Path
    work_dir: Path
    node_id: str = ""
    output: OutputSink | None = attrs.field(default=None, eq=False)


@attrs.frozen
class RunResult:
    """How the job ended. ``exit_code`` is the job's own exit status."""

    exit_code: int
    truncated: tuple[str, ...] = ()


class Executor(abc.ABC):
    """Runs jobs of one engine type (``JobSpec.engine.type == name``)."""

    name: ClassVar[str]
    storage_mode: ClassVar[Literal["posix", "library", "any"]] = "posix"
    """How inputs must be presented: as host paths, byte streams, or either."""
    bounded_output: ClassVar[bool] = False
    """True when all an execution writes comes from its spec (so the wire's size limit
    bounds it): the runner then does not watch its disk while it runs. Its results are
    checked against the limits afterwards all the same."""

    async def is_installed(self) -> bool:
        """Whether the engine can run here (the node bids only if so)."""
        return True

    def validate(self, spec: JobSpec) -> None:
        """Raise ValidationError if ``spec.engine.params`` are wrong for this engine."""

    async def unsupported_reason(self, spec: JobSpec) -> str | None:
        """Why this node should not bid on ``spec`` although the engine is installed
        (e.g. its image is not present and the node runs local images only), or None.

        Called by the bid strategy after :meth:`is_installed` and :meth:`validate`.
        """
        return None

    async def start(self) -> None:
        """Called once when the node starts (clean leftovers, warm caches)."""

    async def close(self) -> None:
        """Called once when the node stops."""

    @abc.abstractmethod
    async def run(self, ctx: ExecutionContext) -> RunResult:
        """Run the job. Cancellation (anyio) must stop it promptly and clean up."""

    def run_in_memory(self, spec: JobSpec) -> tuple[RunResult, dict[str, bytes]] | None:
        """Run at once a job whose whole output is a few small files at the top of its
        results folder, holding them in memory: the result and ``{file name: bytes}``
        (``stdout`` and ``stderr`` at least), exactly the files :meth:`run` would have
        left. None (the default, and for every job that needs a folder, waits or fails):
        the runner gives the job a folder and calls :meth:`run`.

        Raises:
            ValidationError: the job's parameters are wrong (as :meth:`run` would).
        """
        return None


@attrs.frozen(kw_only=True)
class ExecutionLayout:
    """The folders of one execution, under one root folder."""

    results: Path
    work: Path
    inputs: Path
    outputs: dict[str, Path] = attrs.field(hash=False)


def make_layout(folder: Path, spec: JobSpec) -> ExecutionLayout:
    """Create ``folder`` afresh with ``results/`` (one folder per named output in it),
    ``work/`` and ``inputs/``. Blocking: call it on a worker thread from async code."""
    layout = ExecutionLayout(
        results=folder / "results",
        work=folder / "work",
        inputs=folder / "inputs",
        outputs={out.name: folder / "results" / out.name for out in spec.outputs},
    )
    remove_tree(folder)
    for d in (layout.results, layout.work, layout.inputs, *layout.outputs.values()):
        d.mkdir(parents=True)
    return layout


def write_capped(path: Path, data: bytes, *, limit: int = MAX_LOG_BYTES) -> bool:
    """Write at most ``limit`` bytes of ``data`` to ``path``; return True if truncated."""
    path.write_bytes(data[:limit])
    return len(data) > limit
