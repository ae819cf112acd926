"""Settings of the NATS transport, and the setting-up it needs: TLS and JetStream.

:class:`NatsOptions` is what ``bacalhau serve --transport nats`` and
:class:`~bacalhau.Network` pass to :class:`~bacalhau.transport.nats.NatsTransport`.
:func:`setup_jetstream` creates (or reuses) the network's stream and this node's two
durable consumers.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence

import attrs
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from ..errors import TransportError, ValidationError
from .base import MAX_FRAME

__all__ = ["NatsOptions", "parse_servers", "setup_jetstream", "tls_context"]

log = logging.getLogger("bacalhau.transport.nats")

_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
SUB_PENDING_BYTES = 16 * MAX_FRAME
"""How much a subscription may hold before nats-py counts us a slow consumer."""


@attrs.frozen(kw_only=True)
class NatsOptions:
    """How to reach the NATS cluster and how to use it.

    Args:
        servers: server URLs (``nats://host:port``, ``tls://...``); more than one
            for a cluster. Servers the cluster advertises are added automatically.
        subject: the network's broadcast subject; other subjects derive from it.
        token / user / password: NATS authentication.
        nkey_seed: an nkey seed (``SU...``) or the path of a file holding one.
        creds: path of a ``.creds`` file (user JWT + nkey seed).
        tls_ca: CA bundle to verify the server with.
        tls_cert / tls_key: client certificate and key, for servers that verify clients.
        jetstream: also put broadcasts in a stream; a durable consumer per node catches up.
        jetstream_replicas: replicas of the stream (at most the cluster's size).
        jetstream_max_age: seconds the stream keeps events.
        jetstream_max_bytes: size cap of the stream (oldest events go first).
        jetstream_memory: keep the stream in memory instead of files.
        jetstream_consumer_ttl: seconds after which the server deletes the durable
            consumer of a node that stayed away.
        buffer_frames / buffer_bytes: bound of the outgoing buffer while disconnected.
        resend_window: broadcasts sent this many seconds before a lost connection
            was noticed are sent again after reconnecting (0: never).
        heartbeat: seconds between presence announcements (peers expire after 3).
        connect_timeout: seconds to wait for the first connection before failing.
        reconnect_wait: seconds between reconnect attempts to one server.
        ping_interval: seconds between client pings (detects a dead server).
        max_packet: cap on one NATS message, below the server's ``max_payload``.
        name: connection name shown in NATS monitoring (default: the node id).
        randomize: try the servers in random order (default: in the order given,
            so the first URL is the node's home server and the rest are fail-overs).
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    subject: str = "bacalhau.default"
    token: str | None = None
    user: str | None = None
    password: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    jetstream: bool = False
    jetstream_replicas: int = 1
    jetstream_max_age: float = 3600.0
    jetstream_max_bytes: int = 256 * 1024 * 1024
    jetstream_memory: bool = False
    jetstream_consumer_ttl: float = 86400.0
    buffer_frames: int = 1024
    buffer_bytes: int = 16 * 1024 * 1024
    resend_window: float = 2.0
    heartbeat: float = 5.0
    connect_timeout: float = 10.0
    reconnect_wait: float = 0.5
    ping_interval: float = 10.0
    max_packet: int | None = None
    name: str | None = None
    randomize: bool = False

    def __attrs_post_init__(self) -> None:
        if not all(isinstance(s, str) and s for s in self.servers):
            raise ValidationError("server URLs must be non-empty strings", field="nats.servers")
        if not self.servers:
            raise ValidationError("give at least one NATS server URL", field="nats.servers")
        if not _SUBJECT.match(self.subject) or len(self.subject) > 200:
            raise ValidationError(
                f"{self.subject!r} is not a plain NATS subject (letters, digits, '-', '_', dots)",
                field="nats.subject",
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValidationError(
                "a TLS client certificate needs its key, and the reverse", field="nats.tls_key"
            )
        if self.password is not None and self.user is None:
            raise ValidationError("a NATS password needs a user", field="nats.user")
        if self.buffer_frames < 1 or self.buffer_bytes < 1 or self.heartbeat <= 0:
            raise ValidationError("buffer sizes and heartbeat must be positive", field="nats")
        if not 1 <= self.jetstream_replicas <= 5:
            raise ValidationError(
                "JetStream replicas must be 1 to 5", field="nats.jetstream_replicas"
            )

    @property
    def stream_name(self) -> str:
        """The JetStream stream of this network (derived from the subject)."""
        return "BACALHAU_" + re.sub(r"[^A-Za-z0-9_-]", "_", self.subject).upper()


def tls_context(opts: NatsOptions) -> ssl.SSLContext:
    """The TLS context for ``opts`` (blocking: reads files; run it in a thread).

    Raises:
        TransportError: a CA, certificate or key file cannot be read or parsed.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.tls_ca)
        if opts.tls_cert is not None:
            ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"could not load the NATS TLS files: {exc}") from exc
    return ctx


async def setup_jetstream(
    nc: NatsClient, opts: NatsOptions, node_id: str
) -> dict[str, Subscription]:
    """Make sure the stream exists; subscribe to this node's two durable consumers.

    The stream captures broadcasts (``subject``) and direct requests
    (``subject.node.*``). Consumer ``{node_id}`` delivers broadcasts to
    ``subject.deliver.{node_id}``; consumer ``{node_id}-direct`` delivers the
    requests addressed to this node to ``subject.deliver.{node_id}.direct``. Both
    start from "now" when first made, then keep their place while the node is away.

    Returns:
        ``{"jetstream": ..., "jetstream-direct": ...}`` subscriptions.

    Raises:
        TransportError: the server has no JetStream, or refused the stream or consumers.
    """
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        DeliverPolicy,
        DiscardPolicy,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )
    from nats.js.errors import BadRequestError, NotFoundError

    js = nc.jetstream(timeout=5)
    stream, subject = opts.stream_name, opts.subject
    config = StreamConfig(
        name=stream,
        subjects=[subject, f"{subject}.node.*"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=opts.jetstream_max_age,
        max_bytes=opts.jetstream_max_bytes,
        storage=StorageType.MEMORY if opts.jetstream_memory else StorageType.FILE,
        num_replicas=opts.jetstream_replicas,
    )
    subs: dict[str, Subscription] = {}
    try:
        try:
            info = await js.stream_info(stream)
            if sorted(info.config.subjects or []) != sorted(config.subjects or []):
                await js.update_stream(config)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:  # another node created it first
                await js.stream_info(stream)
        for path, name, filtered in (
            ("jetstream", node_id, subject),
            ("jetstream-direct", f"{node_id}-direct", f"{subject}.node.{node_id}"),
        ):
            deliver = f"{subject}.deliver.{node_id}" + (".direct" if path != "jetstream" else "")
            subs[path] = await nc.subscribe(deliver, pending_bytes_limit=SUB_PENDING_BYTES)
            consumer = ConsumerConfig(
                durable_name=name,
                deliver_subject=deliver,
                filter_subject=filtered,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                max_ack_pending=4096,
                inactive_threshold=opts.jetstream_consumer_ttl,
            )
            try:
                await js.add_consumer(stream, consumer)
            except BadRequestError:  # exists with other settings: start it afresh
                log.warning("replacing the JetStream consumer %s (its settings changed)", name)
                await js.delete_consumer(stream, name)
                await js.add_consumer(stream, consumer)
    except (nats.errors.Error, TimeoutError) as exc:
        for sub in subs.values():
            await sub.unsubscribe()
        raise TransportError(
            f"JetStream is not usable on the NATS server ({type(exc).__name__}: {exc!s:.200}); "
            "start the servers with JetStream (nats-server -js) or drop --nats-jetstream"
        ) from exc
    return subs


def parse_servers(urls: Sequence[str]) -> tuple[str, ...]:
    """Normalise server URLs: ``host:port`` gets ``nats://``; commas split several in one."""
    out: list[str] = []
    for item in urls:
        for url in item.split(","):
            url = url.strip()
            if url:
                out.append(url if "://" in url else f"nats://{url}")
    return tuple(out)
