"""The ``noop`` executor: pretends to run a job and writes what the job tells it to.

Params (see :meth:`JobSpec.noop`): ``stdout``, ``stderr``, ``exit_code``,
``files`` (``{"output_name/relative/path": text}``), ``delay`` seconds,
``error`` (fail the execution with this message instead of running).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import anyio
import anyio.to_thread

from ..errors import ExecutorError, ValidationError
from ..models import JobSpec
from .base import MAX_LOG_BYTES, ExecutionContext, Executor, RunResult, write_capped

__all__ = ["NoopExecutor"]

_KNOWN = {"stdout", "stderr", "exit_code", "files", "delay", "error"}


INLINE_BYTES = 16 * 1024
"""Output this small is written on the event loop (two small files cost less than a
hop to a worker thread); more goes through a worker thread."""


class NoopExecutor(Executor):
    name = "noop"
    storage_mode = "any"
    bounded_output = True  # it writes what its spec says, nothing more

    def validate(self, spec: JobSpec) -> None:
        p = spec.engine.params
        unknown = set(p) - _KNOWN
        if unknown:
            raise ValidationError(
                f"unknown noop parameter(s): {', '.join(sorted(unknown))}", field="engine.params"
            )
        if not isinstance(p.get("exit_code", 0), int) or not 0 <= p.get("exit_code", 0) <= 255:
            raise ValidationError(
                "must be an integer from 0 to 255", field="engine.params.exit_code"
            )
        delay = p.get("delay", 0)
        if not isinstance(delay, int | float) or not 0 <= delay <= spec.timeout * 10:
            raise ValidationError("must be a non-negative number", field="engine.params.delay")
        files = p.get("files", {})
        if not isinstance(files, dict):
            raise ValidationError("must map 'output/path' to text", field="engine.params.files")
        names = {o.name for o in spec.outputs}
        for key, text in files.items():
            parts = PurePosixPath(key).parts if isinstance(key, str) else ()
            if len(parts) < 2 or parts[0] not in names or ".." in parts or key.startswith("/"):
                raise ValidationError(
                    f"{key!r} must be 'output_name/relative/path' of a declared output",
                    field="engine.params.files",
                )
            if not isinstance(text, str):
                raise ValidationError(
                    f"content of {key!r} must be text", field="engine.params.files"
                )

    def run_in_memory(self, spec: JobSpec) -> tuple[RunResult, dict[str, bytes]] | None:
        """A job with no files, no delay, no error and small stdout/stderr: its results
        (``stdout``, ``stderr``, as :meth:`run` writes them) in memory."""
        p = spec.engine.params
        if p.get("files") or p.get("delay") or p.get("error") or spec.outputs:
            return None
        self.validate(spec)
        out = {name: str(p.get(name, "")).encode() for name in ("stdout", "stderr")}
        if sum(len(data) for data in out.values()) > INLINE_BYTES:
            return None
        truncated = tuple(name for name, data in out.items() if len(data) > MAX_LOG_BYTES)
        files = {name: data[:MAX_LOG_BYTES] for name, data in out.items()}
        return RunResult(exit_code=int(p.get("exit_code", 0)), truncated=truncated), files

    async def run(self, ctx: ExecutionContext) -> RunResult:
        p = ctx.spec.engine.params
        self.validate(ctx.spec)
        if p.get("delay"):
            await anyio.sleep(float(p["delay"]))
        if p.get("error"):
            raise ExecutorError(str(p["error"]))

        def write() -> tuple[str, ...]:
            truncated = []
            for name in ("stdout", "stderr"):
                if write_capped(ctx.results_dir / name, str(p.get(name, "")).encode()):
                    truncated.append(name)
            for key, text in dict(p.get("files", {})).items():
                output, _, rel = key.partition("/")
                path = ctx.outputs[output] / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            return tuple(truncated)

        size = sum(len(str(p.get(n, ""))) for n in ("stdout", "stderr"))
        if not p.get("files") and size <= INLINE_BYTES:
            truncated = write()
        else:
            truncated = await anyio.to_thread.run_sync(write)
        return RunResult(exit_code=int(p.get("exit_code", 0)), truncated=truncated)
