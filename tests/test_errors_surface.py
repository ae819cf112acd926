"""A user's error inside ``async with Network/Node`` comes out as that one error, not
wrapped in an exception group by the task group that runs the nodes."""

from __future__ import annotations

import pytest

from bacalhau import Identity, MemoryHub, Network, Node
from bacalhau.errors import sole_error

pytestmark = pytest.mark.anyio


async def test_network_body_error_comes_out_alone() -> None:
    with pytest.raises(FileNotFoundError) as info:
        async with Network.in_memory(2):
            open("no-such-module.wasm", "rb")  # noqa: ASYNC230, SIM115 - the README's mistake
    assert not isinstance(info.value, BaseExceptionGroup)
    assert info.traceback[-1].name == "test_network_body_error_comes_out_alone"


async def test_node_body_error_comes_out_alone(tmp_path: object) -> None:
    identity = Identity.generate()
    hub = MemoryHub()
    with pytest.raises(KeyError, match="missing"):
        async with Node(transport=hub.transport(identity.node_id), identity=identity):
            raise KeyError("missing")


def test_sole_error_only_for_the_bodys_own_error() -> None:
    body = ValueError("mine")
    other = RuntimeError("a node failed")
    assert sole_error(BaseExceptionGroup("g", [body]), body)
    assert sole_error(BaseExceptionGroup("g", [BaseExceptionGroup("h", [body])]), body)
    assert not sole_error(BaseExceptionGroup("g", [body, other]), body)
    assert not sole_error(BaseExceptionGroup("g", [other]), None)
