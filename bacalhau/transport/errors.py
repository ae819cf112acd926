"""The transports' own errors (all under :class:`~bacalhau.errors.WireError`)."""

from __future__ import annotations

from ..errors import WireError

__all__ = ["ConnectionClosed", "Refused", "SelfConnection"]


class SelfConnection(WireError):
    """The peer at the other end is this node (a static or advertised address of our own)."""


class ConnectionClosed(WireError):
    """The peer closed the connection (cleanly between frames, or mid-frame)."""


class Refused(WireError):
    """A packet failed the network-secret check (missing, wrong, or not expected)."""
