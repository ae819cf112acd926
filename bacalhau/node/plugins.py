"""The node's named registries of executors, storage providers, verifiers and publishers.

Registries are plain dicts. :func:`default_plugins` fills them with every
built-in whose module is present, then with third-party plugins registered
under the entry-point groups ``bacalhau.executors``, ``bacalhau.storage``,
``bacalhau.verifiers`` and ``bacalhau.publishers``. An entry point names a
factory called with the node's :class:`~bacalhau.node.services.NodeServices`
and returning the plugin; its ``name`` (or ``type`` for storage) is its key.
"""

from __future__ import annotations

import functools
import logging
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import attrs

from ..executor.noop import NoopExecutor
from ..publisher.local import LocalPublisher
from ..publisher.noop import NoopPublisher
from ..storage.inline import InlineStorage
from ..verifier.noop import NoopVerifier

if TYPE_CHECKING:
    from ..executor.base import Executor
    from ..publisher.base import Publisher
    from ..storage.base import DataServices, StorageProvider
    from ..storage.ipfs.blockstore import BlockStore
    from ..storage.ipfs.exchange import BlockService
    from ..verifier.base import Verifier
    from .services import NodeServices

__all__ = ["ENTRY_POINT_GROUPS", "Plugins", "default_plugins"]

log = logging.getLogger("bacalhau.plugins")

ENTRY_POINT_GROUPS = {
    "executors": "bacalhau.executors",
    "storage": "bacalhau.storage",
    "verifiers": "bacalhau.verifiers",
    "publishers": "bacalhau.publishers",
}


@attrs.define(kw_only=True)
class Plugins:
    """What a node can do, by name. Mutate before the node starts to add your own."""

    executors: dict[str, Executor] = attrs.Factory(dict)
    storage: dict[str, StorageProvider] = attrs.Factory(dict)
    verifiers: dict[str, Verifier] = attrs.Factory(dict)
    publishers: dict[str, Publisher] = attrs.Factory(dict)
    data: DataServices | None = None
    """The node's data services (block store and exchange), when available."""

    @property
    def blockstore(self) -> BlockStore | None:
        return None if self.data is None else self.data.blockstore

    @property
    def blocks(self) -> BlockService | None:
        return None if self.data is None else self.data.blocks

    def add(self, plugin: Any) -> None:
        """Register ``plugin`` in the registry its base class belongs to."""
        from ..executor.base import Executor
        from ..publisher.base import Publisher
        from ..storage.base import StorageProvider
        from ..verifier.base import Verifier

        if isinstance(plugin, Executor):
            self.executors[plugin.name] = plugin
        elif isinstance(plugin, StorageProvider):
            self.storage[plugin.type] = plugin
        elif isinstance(plugin, Verifier):
            self.verifiers[plugin.name] = plugin
        elif isinstance(plugin, Publisher):
            self.publishers[plugin.name] = plugin
        else:
            raise TypeError(
                f"{plugin!r} is not an Executor, StorageProvider, Verifier or Publisher"
            )

    async def start(self, services: NodeServices) -> None:
        if self.data is not None:
            self.data.start()
        for executor in self.executors.values():
            await executor.start()

    async def close(self) -> None:
        for executor in self.executors.values():
            try:
                await executor.close()
            except Exception:
                log.exception("closing executor %s failed", executor.name)


def default_plugins(services: NodeServices, *, entry_points_too: bool = True) -> Plugins:
    """Every built-in plugin available here, plus installed third-party ones."""
    plugins = Plugins()
    for plugin in (
        NoopExecutor(),
        InlineStorage(),
        NoopVerifier(),
        NoopPublisher(),
        LocalPublisher(services.data_dir / "published"),
    ):
        plugins.add(plugin)
    _add_builtin_optional(plugins, services)
    if entry_points_too:
        for group in ENTRY_POINT_GROUPS.values():
            for ep in _entry_points(group, tuple(sys.path)):
                try:
                    plugins.add(ep.load()(services))
                except Exception:
                    log.exception("plugin %s from %s could not be loaded", ep.name, ep.value)
    return plugins


@functools.lru_cache(maxsize=32)
def _entry_points(group: str, path: tuple[str, ...]) -> tuple[Any, ...]:
    """The installed entry points of ``group``, looked up once per ``sys.path`` (reading
    every distribution's metadata costs tens of milliseconds: a network of a thousand
    nodes in one process would spend minutes on it)."""
    return tuple(entry_points(group=group))


def _optional(plugins: Plugins, what: str, make: Any) -> Any:
    """Build an optional built-in; a missing module means the node goes without it."""
    try:
        plugin = make()
    except ImportError as exc:
        log.debug("built-in %s not available: %s", what, exc)
        return None
    if plugin is not None and not isinstance(plugin, tuple):
        plugins.add(plugin)
    return plugin


def _limits(services: NodeServices) -> Any:
    from ..limits import DEFAULT_JOB_LIMITS

    compute = getattr(services, "compute_config", None)
    return getattr(compute, "limits", None) or DEFAULT_JOB_LIMITS


def _add_builtin_optional(plugins: Plugins, services: NodeServices) -> None:
    """Built-ins with heavier dependencies, each optional."""
    limits = _limits(services)

    def data() -> tuple[DataServices]:
        from ..storage.ipfs.data import IpfsData

        return (IpfsData(services.data_dir / "blocks", services),)

    made = _optional(plugins, "block store", data)
    if made is not None:
        (plugins.data,) = made

        def ipfs_storage() -> Any:
            from ..storage.ipfs.provider import IpfsStorage

            return IpfsStorage(plugins.blocks, limits=limits.dag)

        def ipfs_publisher() -> Any:
            from ..publisher.ipfs import IpfsPublisher

            return IpfsPublisher(plugins.blocks)

        _optional(plugins, "ipfs storage", ipfs_storage)
        _optional(plugins, "ipfs publisher", ipfs_publisher)

    def url() -> Any:
        from ..storage.url import UrlStorage

        return UrlStorage(limits=limits)

    def deterministic() -> Any:
        from ..verifier.deterministic import DeterministicVerifier

        return DeterministicVerifier(services)

    def audit() -> Any:
        from ..verifier.audit import AuditVerifier

        return AuditVerifier(services)

    def wasm() -> Any:
        from ..executor.wasm import WasmExecutor

        return WasmExecutor(blocks=plugins.blocks, limits=limits)

    def docker() -> Any:
        from ..executor.docker import DockerExecutor

        compute = getattr(services, "compute_config", None)
        local_only = bool(compute and compute.docker_local_images_only)
        return DockerExecutor(node_id=services.node_id, local_images_only=local_only, limits=limits)

    for what, make in (
        ("url storage", url),
        ("deterministic verifier", deterministic),
        ("audit verifier", audit),
        ("wasm executor", wasm),
        ("docker executor", docker),
    ):
        _optional(plugins, what, make)
