"""The ``noop`` publisher: publishes nothing (results stay out of reach)."""

from __future__ import annotations

from pathlib import Path

from ..models import StorageRef
from .base import Publisher

__all__ = ["NoopPublisher"]


class NoopPublisher(Publisher):
    name = "noop"
    reads_results = False

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        return StorageRef(type="noop")

    def publish_now(self, job_id: str, execution_id: str) -> StorageRef | None:
        if type(self).publish is not NoopPublisher.publish:  # a subclass's own publish
            return None
        return StorageRef(type="noop")
