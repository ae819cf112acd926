"""What a part of the node may do with its peers, beyond the node's own events.

Services such as block exchange speak their own request protocols to other nodes.
They receive a :class:`PeerServices` (the node implements it), never the node, so
they depend on this small interface and not on :mod:`bacalhau.node`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from .base import Reply

__all__ = ["PeerServices", "ProtocolHandler"]

ProtocolHandler = Callable[[str, bytes], Awaitable[Reply]]
"""(peer id, request payload) -> reply payload: its bytes, or its pieces (see
:data:`~bacalhau.transport.base.Reply`; the requester receives them joined)."""


class PeerServices(Protocol):
    """Peers and direct requests, as a node offers them to its services."""

    @property
    def node_id(self) -> str: ...

    def peers(self) -> frozenset[str]:
        """The nodes this one can reach now."""
        ...

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float = 10.0
    ) -> bytes:
        """Send ``payload`` to the ``protocol`` handler of ``peer_id``; return its reply.

        Raises:
            TransportError: the peer could not be reached or did not answer in time.
        """
        ...

    def register_protocol(self, protocol: str, handler: ProtocolHandler) -> None:
        """Serve direct requests for ``protocol`` with ``handler``.

        Raises:
            ValidationError: the protocol name is taken.
        """
        ...
