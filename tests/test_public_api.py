"""The public surface is what we mean it to be, and the sans-IO core loads no I/O."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bacalhau

# The public API, exactly. A name added to or dropped from ``bacalhau.__all__`` is a
# decision: make it here too (and in the CHANGELOG).
PUBLIC = [
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


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(bacalhau.__all__) == bacalhau.__all__, "__all__ is kept sorted"
    assert bacalhau.__all__ == PUBLIC
    assert dir(bacalhau) == PUBLIC


def test_exports_resolve_to_objects_defined_in_the_package() -> None:
    for name in bacalhau.__all__:
        value = getattr(bacalhau, name)
        assert value is not None, name
        if name != "__version__":
            assert value.__module__.startswith("bacalhau."), (name, value.__module__)
            assert value.__name__ == name, "exported under its own name"


def test_lazy_table_and_type_checking_imports_match_all() -> None:
    """The three lists in ``bacalhau/__init__.py`` (lazy table, ``__all__``, the imports
    type checkers read) name the same things, from the same modules."""
    lazy = dict(bacalhau._EXPORTS)
    assert set(lazy) | {"__version__"} == set(bacalhau.__all__)
    tree = ast.parse(Path(bacalhau.__file__).read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1
                for alias in imp.names:
                    typed[alias.asname or alias.name] = imp.module or ""
    assert typed == lazy


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        bacalhau.NoSuchThing  # noqa: B018


def test_protocol_core_imports_no_io() -> None:
    code = (
        "import sys, bacalhau.protocol.requester, bacalhau.protocol.compute, bacalhau.wire;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('anyio', 'asyncio', 'socket', 'trio', 'httpx', 'docker', 'wasmtime')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
