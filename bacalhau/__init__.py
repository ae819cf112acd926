"""bacalhau-py: compute over data, as a Python library.

Run a whole network in one process::

    import anyio, bacalhau

    async def main():
        async with bacalhau.Network.in_memory(3) as net:
            result = await net.nodes[0].run_job(bacalhau.JobSpec.noop(stdout="hi"), timeout=30)
            print(result.state, result.executions[0].stdout)

    anyio.run(main)

Public names are loaded on first use, so ``import bacalhau.protocol`` (the
sans-IO core) pulls in no I/O library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "BacalhauError": "errors",
    "ExecutorError": "errors",
    "JobFailed": "errors",
    "JobNotFound": "errors",
    "ValidationError": "errors",
    "Deal": "models",
    "EngineSpec": "models",
    "ExecutionResult": "models",
    "ExecutionState": "models",
    "InputSpec": "models",
    "JobEvent": "models",
    "JobResult": "models",
    "JobSpec": "models",
    "JobState": "models",
    "NodeInfo": "models",
    "Selector": "models",
    "parse_selectors": "selectors",
    "OutputSpec": "models",
    "Resources": "models",
    "StorageRef": "models",
    "StorageSpec": "models",
    "Identity": "identity",
    "ComputeConfig": "compute.capacity",
    "RequesterConfig": "protocol.requester",
    "Network": "network",
    "Node": "node.node",
    "JobHandle": "node.node",
    "Plugins": "node.plugins",
    "Faults": "transport.memory",
    "MemoryHub": "transport.memory",
    "Client": "api.client",
    "SyncClient": "api.client",
    "GossipTransport": "transport.gossip",
    "NatsTransport": "transport.nats",
}

__all__ = [
    "BacalhauError",
    "Client",
    "ComputeConfig",
    "Deal",
    "EngineSpec",
    "ExecutionResult",
    "ExecutionState",
    "ExecutorError",
    "Faults",
    "GossipTransport",
    "Identity",
    "InputSpec",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobResult",
    "JobSpec",
    "JobState",
    "MemoryHub",
    "NatsTransport",
    "Network",
    "Node",
    "NodeInfo",
    "OutputSpec",
    "Plugins",
    "RequesterConfig",
    "Resources",
    "Selector",
    "StorageRef",
    "StorageSpec",
    "SyncClient",
    "ValidationError",
    "__version__",
    "parse_selectors",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bacalhau' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .api.client import Client, SyncClient
    from .compute.capacity import ComputeConfig
    from .errors import BacalhauError, ExecutorError, JobFailed, JobNotFound, ValidationError
    from .identity import Identity
    from .models import (
        Deal,
        EngineSpec,
        ExecutionResult,
        ExecutionState,
        InputSpec,
        JobEvent,
        JobResult,
        JobSpec,
        JobState,
        NodeInfo,
        OutputSpec,
        Resources,
        Selector,
        StorageRef,
        StorageSpec,
    )
    from .network import Network
    from .node.node import JobHandle, Node
    from .node.plugins import Plugins
    from .protocol.requester import RequesterConfig
    from .selectors import parse_selectors
    from .transport.gossip import GossipTransport
    from .transport.memory import Faults, MemoryHub
    from .transport.nats import NatsTransport
