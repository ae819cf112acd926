"""bacalhau-py: compute over data, as a Python library.

Run a whole network in one process::

    import anyio, bacalhau

    async def main():
        async with bacalhau.Network.in_memory(3) as net:
            result = await net.nodes[0].run_job(bacalhau.JobSpec.noop(stdout="hi"), timeout=30)
            print(result.state, result.executions[0].stdout)

    anyio.run(main)
"""

from .compute.capacity import ComputeConfig
from .errors import (
    BacalhauError,
    ExecutorError,
    JobFailed,
    JobNotFound,
    ValidationError,
)
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
    StorageRef,
    StorageSpec,
)
from .network import Network
from .node.node import JobHandle, Node
from .node.plugins import Plugins
from .protocol.requester import RequesterConfig
from .transport.memory import Faults, MemoryHub

__all__ = [
    "BacalhauError",
    "ComputeConfig",
    "Deal",
    "EngineSpec",
    "ExecutionResult",
    "ExecutionState",
    "ExecutorError",
    "Faults",
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
    "Network",
    "Node",
    "NodeInfo",
    "OutputSpec",
    "Plugins",
    "RequesterConfig",
    "Resources",
    "StorageRef",
    "StorageSpec",
    "ValidationError",
    "__version__",
]

__version__ = "0.1.0"
