"""Test helpers, importable without pytest: networks, fakes, conformance suites.

:func:`open_network` is what the ``bacalhau_network`` pytest fixture uses;
call it from any test framework or script.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..network import Network

__all__ = ["open_network"]


@contextlib.asynccontextmanager
async def open_network(
    n: int = 3, *, transport: str = "memory", **options: Any
) -> AsyncIterator[Network]:
    """Start ``n`` nodes in this process; yield the running :class:`Network`.

    Args:
        transport: ``memory`` (default) or ``nats`` (pass ``nats_urls``).
        options: ``seed``, ``faults`` and ``per_node_options`` for the network; anything
            else goes to every :class:`~bacalhau.Node`.
    """
    if transport == "memory":
        net = Network.in_memory(n, **options)
    elif transport == "nats":
        from ..transport.nats import NatsTransport

        urls = options.pop("nats_urls")
        nats_options = options.pop("nats_options", {})
        net = Network.custom(
            n, lambda ident: NatsTransport(ident, servers=list(urls), **nats_options), **options
        )
    else:
        raise ValueError(f"unknown transport {transport!r}: use 'memory' or 'nats'")
    async with net:
        yield net
