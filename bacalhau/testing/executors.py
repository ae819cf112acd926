"""Run an executor by hand, outside a node: for testing your own executor plugin.

::

    ctx = execution_context(tmp_path, JobSpec.wasm(module, outputs=[OutputSpec("o", "/o")]))
    result = await WasmExecutor().run(ctx)
    assert (ctx.outputs["o"] / "file.txt").exists()

The folders are laid out exactly as the node's execution runner lays them out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import attrs

from ..executor.base import ExecutionContext, PreparedVolume, make_layout
from ..models import JobSpec
from ..paths import is_within

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
    """A fresh :class:`ExecutionContext` for ``spec`` in ``folder`` (created, or emptied).

    Volumes whose ``host_path`` lies outside ``folder`` are copied into its ``inputs/``
    first (links kept as links), as the runner materialises inputs there: executors
    refuse host paths outside the execution folder.
    """
    layout = make_layout(folder, spec)
    placed = []
    for i, volume in enumerate(volumes):
        host = volume.host_path
        if host is not None and not is_within(folder, host) and os.path.lexists(host):
            dest = layout.inputs / str(i)
            if host.is_dir() and not host.is_symlink():
                shutil.copytree(host, dest, symlinks=True)
            else:
                shutil.copy2(host, dest, follow_symlinks=False)
            volume = attrs.evolve(volume, host_path=dest)
        placed.append(volume)
    return ExecutionContext(
        job_id=job_id,
        execution_id=execution_id or f"{job_id}/{node_id or 'node'}",
        spec=spec,
        volumes=tuple(placed),
        outputs=layout.outputs,
        results_dir=layout.results,
        work_dir=layout.work,
        node_id=node_id,
    )
