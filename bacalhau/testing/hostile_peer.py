"""Hostile peers for tests: nodes that publish other than they proposed, and raw attackers.

:class:`SwitchingPublisher` makes an accepted node publish results other than the
ones it committed to: it predicts the honest CID (so its proposal agrees with the
honest nodes and is accepted), then changes the results and publishes those. Use
:func:`switching_plugins` as the ``plugins`` of one node of a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..models import StorageRef
from ..publisher.base import Publisher
from .malicious import RiggedPlugins

if TYPE_CHECKING:
    from ..node.plugins import Plugins
    from ..node.services import NodeServices

__all__ = ["SwitchingPublisher", "switching_plugins"]


class SwitchingPublisher(Publisher):
    """Commits to the honest results, publishes different ones.

    Args:
        inner: the honest publisher it wraps.
        change: what it does to the results folder after acceptance (default:
            appends a line to ``stdout``).
    """

    def __init__(self, inner: Publisher, *, mark: bytes = b"switched after acceptance\n") -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.mark = mark
        self.switched = 0

    async def predict(self, results_dir: Path) -> str | None:
        return await self.inner.predict(results_dir)

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        with (results_dir / "stdout").open("ab") as f:
            f.write(self.mark)
        self.switched += 1
        return await self.inner.publish(job_id, execution_id, results_dir)


def switching_plugins() -> RiggedPlugins:
    """Plugins for a node whose every publisher is a :class:`SwitchingPublisher`."""

    def rig(plugins: Plugins, services: NodeServices) -> None:
        for name, publisher in list(plugins.publishers.items()):
            plugins.publishers[name] = SwitchingPublisher(publisher)

    return RiggedPlugins(rig=rig)
