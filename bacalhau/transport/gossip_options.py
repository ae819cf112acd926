"""Options of the gossip transport (timings and limits)."""

from __future__ import annotations

import attrs

from ..protocol.gossip import GossipConfig

__all__ = ["GossipOptions"]


@attrs.frozen(kw_only=True)
class GossipOptions:
    """Timing and limits of the gossip transport. The defaults suit a LAN.

    Attributes:
        heartbeat: seconds between heartbeats (mesh repair, IHAVE, pings).
        idle_timeout: a peer silent this long is dropped (it pings every heartbeat).
        handshake_timeout: seconds a new connection has to finish the handshake.
        frame_timeout: seconds a begun frame has to arrive whole.
        write_timeout: a peer that accepts no bytes for this long is dropped.
        connect_timeout: seconds to open a TCP connection.
        max_peers: most connections; more are refused (after telling the other
            side this node's peers, so it can go elsewhere).
        target_peers: dial known addresses until this many peers are connected.
        max_handshakes: most connections in handshake at once.
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
    connect_timeout: float = 5.0
    max_peers: int = 64
    target_peers: int = 32
    max_handshakes: int = 64
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
