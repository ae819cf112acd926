"""Options of the gossip transport (timings and limits)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from ..protocol.gossip import GossipConfig

if TYPE_CHECKING:
    from ..identity import Identity
    from .gossip import GossipTransport

__all__ = ["GossipOptions", "gossip_transport_factory"]


@attrs.frozen(kw_only=True)
class GossipOptions:
    """Timing and limits of the gossip transport. The defaults suit a LAN.

    Attributes:
        heartbeat: seconds between heartbeats (mesh repair, IHAVE, pings).
        idle_timeout: a peer silent this long is dropped (it pings every heartbeat).
        handshake_timeout: seconds a new connection has to finish the handshake.
        frame_timeout: seconds a begun frame has to arrive whole.
        write_timeout: a peer that accepts no bytes for this long is dropped.
        retire_timeout: a connection replaced by a newer one to the same peer (both
            dialled at once) stays open this long at most for the requests already
            in flight on it; it closes as soon as they are answered.
        connect_timeout: seconds to open a TCP connection.
        max_peers: most connections; more are refused (after telling the other
            side this node's peers, so it can go elsewhere).
        target_peers: dial known addresses until this many peers are connected.
        max_handshakes: most incoming connections in handshake at once; past it the
            oldest is cut off to make room (:mod:`bacalhau.transport.gossip_limits`).
        max_handshakes_per_address: the same, per remote address.
        max_invalid: a peer that sent more invalid broadcasts than this, and more
            invalid than valid ones, is cut off.
        max_dials: most outgoing dials at once.
        backoff_min, backoff_max: reconnect delay range (doubling, with jitter).
        max_dial_failures: a discovered address is forgotten after this many
            failed dials in a row (static peers are retried forever).
        queue_bytes: per-peer bound of queued broadcast bytes (and of queued
            request/reply bytes).
        queue_frames: per-peer bound of queued frames of each kind.
        inbox_bytes: bound of received broadcast bytes waiting for the handler.
        max_inflight_requests: concurrent requests served for one peer.
        pex_every: heartbeats between peer-exchange messages.
        pex_max: most addresses in one peer-exchange message.
        address_book: most peer addresses remembered.
        gossip: the mesh parameters.
    """

    heartbeat: float = 1.0
    idle_timeout: float = 15.0
    handshake_timeout: float = 10.0
    frame_timeout: float = 30.0
    write_timeout: float = 30.0
    retire_timeout: float = 30.0
    connect_timeout: float = 5.0
    max_peers: int = 64
    target_peers: int = 32
    max_handshakes: int = 64
    max_handshakes_per_address: int = 16
    max_invalid: int = 64
    max_dials: int = 8
    backoff_min: float = 0.25
    backoff_max: float = 30.0
    max_dial_failures: int = 6
    queue_bytes: int = 8 * 1024 * 1024
    queue_frames: int = 4096
    inbox_bytes: int = 64 * 1024 * 1024
    max_inflight_requests: int = 64
    pex_every: int = 10
    pex_max: int = 32
    address_book: int = 1024
    gossip: GossipConfig = attrs.Factory(GossipConfig)


def gossip_transport_factory(
    *,
    host: str = "127.0.0.1",
    secret: str | bytes | None = None,
    options: GossipOptions | None = None,
    mdns: bool = False,
    mdns_interfaces: Sequence[str] | None = None,
) -> Callable[[Identity], GossipTransport]:
    """A ``transport_factory`` for :class:`~bacalhau.Network`: nodes of one process over TCP.

    Each transport listens on a free port of ``host`` (bound when it is made,
    so its address is known before it runs) and knows the addresses of the
    (up to four) transports made before it; peer exchange introduces the rest.
    """
    made: list[tuple[str, int]] = []

    def make(identity: Identity) -> GossipTransport:
        from .gossip import GossipTransport

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        transport = GossipTransport(
            identity,
            listen_socket=sock,
            peers=made[-4:],
            secret=secret,
            options=options,
            mdns=mdns,
            mdns_interfaces=mdns_interfaces,
        )
        made.append((host, int(sock.getsockname()[1])))
        return transport

    return make
