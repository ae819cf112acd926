"""The ``local`` publisher: copies results into a directory on this node."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio.to_thread

from ..errors import PublishError
from ..models import StorageRef
from .base import Publisher

__all__ = ["LocalPublisher"]


class LocalPublisher(Publisher):
    """Copies each accepted results folder to ``root/<job_id>/<execution_id>``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        dest = self.root / job_id / execution_id
        tmp = dest.with_name(dest.name + ".partial")

        def copy() -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(results_dir, tmp, symlinks=True)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)

        try:
            await anyio.to_thread.run_sync(copy)
        except OSError as exc:
            raise PublishError(f"could not copy results to {dest}: {exc.strerror or exc}") from exc
        return StorageRef(type="local", path=str(dest))
