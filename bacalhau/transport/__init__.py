"""Transports: how frames move between nodes."""

from .base import MAX_FRAME, Transport, TransportHandler

__all__ = ["MAX_FRAME", "Transport", "TransportHandler"]
