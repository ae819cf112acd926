"""``upper``: an example executor plugin that upper-cases every input file.

A job for it::

    JobSpec(engine=EngineSpec("upper", {"prefix": ">> "}),
            inputs=[InputSpec(StorageSpec.inline("hello\\n"), "/in/hello.txt")],
            outputs=[OutputSpec("upper", "/out")])

writes ``upper/hello.txt`` (``>> HELLO``) into its results and prints a summary on stdout.
Params: ``prefix`` (optional text put before every line). The first declared output
receives the files; with no output declared, only stdout is written.

Nodes find it through the ``bacalhau.executors`` entry point (see pyproject.toml),
which names :func:`make_executor`; or add it by hand with ``Plugins.add(UpperExecutor())``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bacalhau.errors import ExecutorError, ValidationError
from bacalhau.executor.base import ExecutionContext, Executor, RunResult, write_capped
from bacalhau.models import JobSpec

__all__ = ["MAX_INPUT_BYTES", "UpperExecutor", "make_executor"]

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""Inputs larger than this in total are refused (the executor reads them into memory)."""


class UpperExecutor(Executor):
    """Upper-cases the text of every input file into the job's first output."""

    name = "upper"
    storage_mode = "posix"  # inputs arrive as read-only files on the host

    def validate(self, spec: JobSpec) -> None:
        """Called before bidding and before running: refuse what we cannot run.

        Raises:
            ValidationError: an unknown parameter, or a prefix that is not text.
        """
        params = spec.engine.params
        unknown = set(params) - {"prefix"}
        if unknown:
            raise ValidationError(
                f"unknown upper parameter(s): {', '.join(sorted(unknown))}", field="engine.params"
            )
        if not isinstance(params.get("prefix", ""), str):
            raise ValidationError("must be text", field="engine.params.prefix")

    async def run(self, ctx: ExecutionContext) -> RunResult:
        """Read each input volume, write the upper-cased copy, report on stdout.

        File work happens on a worker thread, so the node's event loop never blocks;
        cancellation takes effect between files.

        Raises:
            ExecutorError: an input is not UTF-8 text, or the inputs are too large.
        """
        self.validate(ctx.spec)
        prefix = str(ctx.spec.engine.params.get("prefix", ""))
        out_dir = next(iter(ctx.outputs.values()), None)
        files = await anyio.to_thread.run_sync(_list_inputs, ctx)
        total = sum(size for _, _, size in files)
        if total > MAX_INPUT_BYTES:
            raise ExecutorError(
                f"inputs hold {total} bytes; the upper executor takes at most "
                f"{MAX_INPUT_BYTES} (split the job)"
            )
        lines = 0
        for path, name, _ in files:
            text = await anyio.to_thread.run_sync(_read_text, path)
            upper = "".join(prefix + line for line in text.upper().splitlines(keepends=True))
            lines += text.count("\n")
            if out_dir is not None:
                dest = out_dir / name
                await anyio.to_thread.run_sync(_write_text, dest, upper)
        summary = f"upper-cased {len(files)} file(s), {lines} line(s), {total} byte(s)\n"
        truncated = write_capped(ctx.results_dir / "stdout", summary.encode())
        write_capped(ctx.results_dir / "stderr", b"")
        return RunResult(exit_code=0, truncated=("stdout",) if truncated else ())


def _list_inputs(ctx: ExecutionContext) -> list[tuple[Path, str, int]]:
    """(host file, name relative to its volume, size) of every input file."""
    files: list[tuple[Path, str, int]] = []
    for volume in ctx.volumes:
        assert volume.host_path is not None, "storage_mode posix gives host paths"
        root = volume.host_path
        if root.is_dir():
            files += [
                (p, str(p.relative_to(root)), p.stat().st_size)
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
        else:
            files.append((root, Path(volume.spec.target).name, root.stat().st_size))
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExecutorError(
            f"{path.name} is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}); the upper executor handles text only"
        ) from None


def _write_text(dest: Path, text: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")


def make_executor(services: Any) -> UpperExecutor:
    """The entry point's factory: called once per node with its ``NodeServices``."""
    return UpperExecutor()
