"""A user's error inside ``async with Network/Node`` comes out as that one error, not
wrapped in an exception group by the task group that runs the nodes."""

from __future__ import annotations

import anyio
import anyio.abc
import attrs
import pytest

from bacalhau import Identity, MemoryHub, Network, Node
from bacalhau.errors import TransportError, lone_error, sole_error
from bacalhau.transport.base import TransportHandler
from bacalhau.transport.memory import MemoryTransport

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


async def test_node_start_failure_comes_out_alone() -> None:
    """A node that cannot start (here: its transport finds the node id taken, as a NATS
    transport finds no server) raises the transport's error, not an exception group."""
    identity = Identity.generate()
    hub = MemoryHub()
    async with Node(transport=hub.transport(identity.node_id), identity=identity):
        with pytest.raises(TransportError, match="already on this hub") as info:
            async with Node(transport=hub.transport(identity.node_id), identity=identity):
                pass
    assert not isinstance(info.value, BaseExceptionGroup)


@attrs.define(eq=False, kw_only=True)
class Unreachable(MemoryTransport):
    """A transport whose backbone does not answer."""

    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        raise TransportError("could not connect to the backbone")


async def test_network_start_failure_comes_out_alone() -> None:
    hub = MemoryHub()
    factory = lambda identity: Unreachable(hub=hub, node_id=identity.node_id)  # noqa: E731
    with pytest.raises(TransportError, match="could not connect") as info:
        async with Network.custom(2, factory):
            pass
    assert not isinstance(info.value, BaseExceptionGroup)


def test_lone_error_only_for_one_library_error() -> None:
    mine = TransportError("could not connect")
    assert lone_error(BaseExceptionGroup("g", [BaseExceptionGroup("h", [mine])])) is mine
    assert lone_error(mine) is None  # not a group: raised as it is
    assert lone_error(BaseExceptionGroup("g", [mine, TransportError("two")])) is None
    assert lone_error(BaseExceptionGroup("g", [ValueError("a bug")])) is None


def test_sole_error_only_for_the_bodys_own_error() -> None:
    body = ValueError("mine")
    other = RuntimeError("a node failed")
    assert sole_error(BaseExceptionGroup("g", [body]), body)
    assert sole_error(BaseExceptionGroup("g", [BaseExceptionGroup("h", [body])]), body)
    assert not sole_error(BaseExceptionGroup("g", [body, other]), body)
    assert not sole_error(BaseExceptionGroup("g", [other]), None)
