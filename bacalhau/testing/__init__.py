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
        from ..transport.nats_setup import NatsOptions

        urls = tuple(options.pop("nats_urls"))
        nats_options = NatsOptions(servers=urls, **options.pop("nats_options", {}))
        secret = options.pop("secret", None)
        network_keys = {"seed", "data_dir", "per_node_options", "check_on_exit"}
        net_kwargs = {k: options.pop(k) for k in list(options) if k in network_keys}
        net = Network.custom(
            n,
            lambda ident: NatsTransport(ident, options=nats_options, secret=secret),
            node_options=options,
            **net_kwargs,
        )
    else:
        raise ValueError(f"unknown transport {transport!r}: use 'memory' or 'nats'")
    async with net:
        yield net
