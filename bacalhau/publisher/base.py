"""The Publisher interface: make an accepted results folder readable by others."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

from ..models import StorageRef

__all__ = ["Publisher"]


class Publisher(abc.ABC):
    name: ClassVar[str]
    reads_results: ClassVar[bool] = True
    """False for a publisher that never reads the results folder (:meth:`predict` and
    :meth:`publish` ignore it): the runner may then keep a small job's results in memory
    and never write them to disk (it then does not ask :meth:`predict` for a CID, and
    gives :meth:`publish` the path the folder would have had)."""

    @abc.abstractmethod
    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        """Publish ``results_dir``; return where it now lives.

        Raises:
            PublishError: with the reason.
        """

    def publish_now(self, job_id: str, execution_id: str) -> StorageRef | None:
        """For a publisher that does not read the results (:attr:`reads_results` False)
        and need not wait for anything: where they live, at once. None (the default):
        call :meth:`publish`."""
        return None

    async def predict(self, results_dir: Path) -> str | None:
        """The CID ``results_dir`` will be published at, if this publisher can say before
        publishing (the compute node commits to it in its proposal); None otherwise."""
        return None
