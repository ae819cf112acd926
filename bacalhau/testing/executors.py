"""Run an executor by hand, outside a node: for testing your own executor plugin.

::

    ctx = execution_context(tmp_path, JobSpec.wasm(module, outputs=[OutputSpec("o", "/o")]))
    result = await WasmExecutor().run(ctx)
    assert (ctx.outputs["o"] / "file.txt").exists()

The folders are laid out exactly as the node's execution runner lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..executor.base import ExecutionContext, PreparedVolume, make_layout
from ..models import JobSpec

__all__ = ["execution_context"]


def execution_context(
    folder: Path,
    spec: JobSpec,
    volumes: Sequence[PreparedVolume] = (),
    *,
    job_id: str = "job-test",
    execution_id: str | None = None,
    node_id: str = "",
) -> ExecutionContext:
    """A fresh :class:`ExecutionContext` for ``spec`` in ``folder`` (created, or emptied)."""
    layout = make_layout(folder, spec)
    return ExecutionContext(
        job_id=job_id,
        execution_id=execution_id or f"{job_id}/{node_id or 'node'}",
        spec=spec,
        volumes=tuple(volumes),
        outputs=layout.outputs,
        results_dir=layout.results,
        work_dir=layout.work,
        node_id=node_id,
    )
