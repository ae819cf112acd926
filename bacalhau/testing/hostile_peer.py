"""Hostile peers for tests: nodes that publish other than they proposed, and raw attackers.

:class:`HostilePeer` speaks a real transport (gossip or NATS, real handshake, its
own key) and sends each attack of issue #17: identifiers that would name paths,
NaN timestamps, bad signatures, floods of large jobs nobody bids on. The tests in
``tests/hostile/`` aim it at a real node and check that the node refuses each
attack, keeps serving and loses nothing.

:class:`SwitchingPublisher` makes an accepted node publish results other than the
ones it committed to: it predicts the honest CID (so its proposal agrees with the
honest nodes and is accepted), then changes the results and publishes those. Use
:func:`switching_plugins` as the ``plugins`` of one node of a network.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ..convert import to_data
from ..identity import Identity
from ..models import JobSpec, StorageRef
from ..publisher.base import Publisher
from ..transport.base import Transport, TransportHandler
from ..wire import pack
from .malicious import RiggedPlugins

if TYPE_CHECKING:
    from ..node.plugins import Plugins
    from ..node.services import NodeServices

__all__ = ["HostilePeer", "SwitchingPublisher", "switching_plugins"]


class SwitchingPublisher(Publisher):
    """Commits to the honest results, publishes different ones.

    Args:
        inner: the honest publisher it wraps.
        change: what it does to the results folder after acceptance (default:
            appends a line to ``stdout``).
    """

    def __init__(self, inner: Publisher, *, mark: bytes = b"switched after acceptance\n") -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.mark = mark
        self.switched = 0

    async def predict(self, results_dir: Path) -> str | None:
        return await self.inner.predict(results_dir)

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        with (results_dir / "stdout").open("ab") as f:
            f.write(self.mark)
        self.switched += 1
        return await self.inner.publish(job_id, execution_id, results_dir)


def switching_plugins() -> RiggedPlugins:
    """Plugins for a node whose every publisher is a :class:`SwitchingPublisher`."""

    def rig(plugins: Plugins, services: NodeServices) -> None:
        for name, publisher in list(plugins.publishers.items()):
            plugins.publishers[name] = SwitchingPublisher(publisher)

    return RiggedPlugins(rig=rig)


class _Ears(TransportHandler):
    """What the hostile peer hears (it answers every request with nothing)."""

    def __init__(self) -> None:
        self.heard = 0

    async def handle_broadcast(self, frame: bytes) -> bool:
        self.heard += 1
        return False  # never forward anything

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        return b""


class HostilePeer:
    """A peer that speaks a real transport (gossip or NATS) with its own key, and attacks.

    It runs an ordinary :class:`~bacalhau.transport.base.Transport` (so the handshake,
    the network secret and the framing are the real ones), and signs with its own
    :class:`~bacalhau.identity.Identity`; what it signs is whatever the attack needs,
    built as raw plain data so that no validator of ours stops it on the way out.

    Use ``await tg.start(peer.run)``, then :meth:`broadcast` or :meth:`send` the frames
    the attack methods make.

    Attacks (each returns the frame(s) to send):

    ========================= ================================================
    :meth:`job_created`        ``JobCreated`` with any job id (``..``, ``/abs``)
    :meth:`envelope`           any kind and body, any ``sent_at`` (NaN, inf)
    :meth:`bad_signature`      a frame whose signature does not verify
    :meth:`heard_flood`        many large jobs no node will bid on
    ========================= ================================================
    """

    def __init__(self, transport: Transport, identity: Identity) -> None:
        if transport.node_id != identity.node_id:
            raise ValueError("the transport and the identity belong to different nodes")
        self.transport = transport
        self.identity = identity
        self.ears = _Ears()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self.transport.run(self.ears, task_status=task_status)

    # --- frames -----------------------------------------------------------------------

    def envelope(self, kind: str, body: Any, *, sent_at: float | None = None) -> bytes:
        """A well-signed envelope of ``kind`` carrying ``body`` as it is."""
        signed = pack(
            [
                1,
                kind,
                self.identity.public_key,
                os.urandom(16),
                time.time() if sent_at is None else sent_at,
                body,
            ]
        )
        return pack([signed, self.identity.sign(signed)])

    def bad_signature(self, kind: str = "BidPlaced", body: Any = None) -> bytes:
        """An envelope whose signature is 64 random bytes."""
        signed = pack(
            [
                1,
                kind,
                self.identity.public_key,
                os.urandom(16),
                time.time(),
                body or {"job_id": "j-1"},
            ]
        )
        return pack([signed, os.urandom(64)])

    def job_created(
        self, job_id: str, *, spec: JobSpec | None = None, created_at: float | None = None
    ) -> bytes:
        """A ``JobCreated`` for ``job_id``, whatever it is."""
        body = {
            "job_id": job_id,
            "spec": to_data(spec or JobSpec.noop(stdout="pwned")),
            "seal_key": os.urandom(32),
            "created_at": time.time() if created_at is None else created_at,
        }
        return self.envelope("JobCreated", body)

    def heard_flood(self, count: int, size: int, *, engine: str = "hostile") -> list[bytes]:
        """``count`` valid jobs of about ``size`` bytes each, for an engine nobody has."""
        spec = to_data(JobSpec.noop())
        spec["engine"] = {"type": engine, "params": {}}
        spec["inputs"] = [{"source": {"type": "inline", "data": os.urandom(size)}, "target": "/in"}]
        frames = []
        for _ in range(count):
            body = {
                "job_id": f"j-{uuid.uuid4()}",
                "spec": spec,
                "seal_key": os.urandom(32),
                "created_at": time.time(),
            }
            frames.append(self.envelope("JobCreated", body))
        return frames

    # --- sending ----------------------------------------------------------------------

    async def broadcast(self, frame: bytes) -> None:
        await self.transport.broadcast(frame)

    async def send(self, peer_id: str, frame: bytes, *, timeout: float = 10.0) -> bytes:
        """Send ``frame`` straight to ``peer_id`` as a lifecycle event."""
        return await self.transport.request(peer_id, pack(["event", frame]), timeout=timeout)
