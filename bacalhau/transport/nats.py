"""The NATS transport: the same nodes, carried by a NATS cluster instead of our mesh.

Subjects (``subject`` is the network's name, ``bacalhau.default`` unless set):

* ``{subject}`` - broadcasts: every node publishes and subscribes here.
* ``{subject}.node.{node_id}`` - direct requests to one node (NATS request/reply,
  with the reply going to an inbox of the requester).
* ``{subject}.presence`` and ``{subject}.presence.{node_id}`` - who is there:
  a node says hello when it connects, everyone answers it directly, and
  each node repeats "here" every ``heartbeat`` seconds; a node not heard from
  for three heartbeats is no longer a peer.
* ``{subject}.deliver.{node_id}[.direct]`` - JetStream deliveries (``jetstream=True``).

NATS carries bytes and is not trusted. Frames are signed envelopes checked by the
node above; this transport additionally signs each request (so the receiver
learns truthfully who asked) and each presence announcement, and on a private
network tags every packet with an HMAC keyed from the network secret: a node
without the secret hears nothing and is heard by no one. Frames up to
:data:`~bacalhau.transport.base.MAX_FRAME` travel in chunks sized from the
server's ``max_payload`` (see :mod:`bacalhau.transport.nats_frames`).

nats-py reconnects by itself, to any server of the cluster (those given and those
the servers advertise), and restores subscriptions. While disconnected,
broadcasts wait in a bounded buffer (the oldest are dropped when it is full) and
``status()`` says so; requests wait for the connection up to their timeout.

With ``jetstream=True`` broadcasts and direct requests are also captured by a
stream, and each node reads what concerns it through two durable consumers named
after its node id, so a node that was offline (a restarted requester, with the
same key) receives what it missed. A request carries its reply subject in band,
so one replayed from the stream can still be checked and answered. Broadcasts are
deduplicated by frame hash and requests by id, so the two routes (core NATS and
the stream) hand each one to the node once.

Needs the asyncio backend of anyio (nats-py is asyncio-only).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
import attrs
import nats.errors
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..errors import PeerUnreachable, TransportError, ValidationError, WireError
from ..identity import Identity, node_id_from_public_key, public_key_from_node_id, verify_signature
from .base import MAX_FRAME, Transport, TransportHandler, join_reply
from .nats_frames import (
    Kind,
    Packet,
    Reassembler,
    Refused,
    decode_packet,
    encode_packets,
    mac_key,
    request_extra,
    request_signing_bytes,
)
from .nats_setup import SUB_PENDING_BYTES, NatsOptions, parse_servers, setup_jetstream, tls_context

__all__ = ["NatsOptions", "NatsTransport", "nats_transport_factory", "parse_servers"]

log = logging.getLogger(__name__)

_PRESENCE_CONTEXT = b"bacalhau/nats/presence/v1\x00"
MAX_PEERS = 4096
"""Most peers remembered from presence announcements."""


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@attrs.define
class _Waiter:
    peer_id: str
    done: anyio.Event = attrs.Factory(anyio.Event)
    reply: bytes | None = None
    error: str | None = None

    def finish(self, reply: bytes | None = None, error: str | None = None) -> None:
        if not self.done.is_set():
            self.reply, self.error = reply, error
            self.done.set()


@attrs.define
class _Peer:
    nonce: bytes
    seen: float


_Inbound = tuple[bytes, list[str]]
"""A reassembled broadcast frame and the JetStream ack subjects to answer after handling it."""


@attrs.define(eq=False)
class NatsTransport(Transport):
    """One node's connection to a NATS cluster.

    Args:
        identity: the node's keys; the node id is the transport's.
        options: servers, credentials, TLS, JetStream and buffering.
        secret: the network secret of a private network (None: an open network);
            a key from ``bacalhau secret new`` or a passphrase (see
            :mod:`bacalhau.transport.secret`; on NATS prefer a key).
    """

    identity: Identity
    options: NatsOptions = attrs.Factory(NatsOptions)
    secret: bytes | None = attrs.field(default=None, repr=False, converter=_as_bytes)
    _key: bytes | None = attrs.field(init=False, default=None, repr=False)
    _nc: NatsClient | None = attrs.field(init=False, default=None)
    _handler: TransportHandler | None = attrs.field(init=False, default=None)
    _tg: anyio.abc.TaskGroup | None = attrs.field(init=False, default=None)
    _inbound: MemoryObjectSendStream[_Inbound] | None = attrs.field(init=False, default=None)
    _inbox: str = attrs.field(init=False, default="")
    _boot: bytes = attrs.field(init=False, factory=lambda: os.urandom(8))
    _presence_sig: bytes = attrs.field(init=False, default=b"")
    _peers: dict[str, _Peer] = attrs.field(init=False, factory=dict)
    _verified: OrderedDict[tuple[bytes, bytes], None] = attrs.field(init=False, factory=OrderedDict)
    _waiting: dict[bytes, _Waiter] = attrs.field(init=False, factory=dict)
    _seen: OrderedDict[bytes, None] = attrs.field(init=False, factory=OrderedDict)
    _handled: OrderedDict[bytes, None] = attrs.field(init=False, factory=OrderedDict)
    _reassembler: Reassembler = attrs.field(init=False, factory=Reassembler)
    _buffer: deque[bytes] = attrs.field(init=False, factory=deque)
    _recent: deque[tuple[float, bytes]] = attrs.field(init=False, factory=deque)
    _buffered_bytes: int = attrs.field(init=False, default=0)
    _wake_flusher: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _request_slots: anyio.Semaphore = attrs.field(init=False, factory=lambda: anyio.Semaphore(64))
    _closing: bool = attrs.field(init=False, default=False)
    _disconnected_at: float | None = attrs.field(init=False, default=None)
    _up: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _warned_full: bool = attrs.field(init=False, default=False)
    _last_error: str | None = attrs.field(init=False, default=None)
    counters: dict[str, int] = attrs.field(
        init=False,
        factory=lambda: dict.fromkeys(
            (
                "sent",
                "received",
                "dropped",
                "refused",
                "malformed",
                "duplicates",
                "reconnects",
                "replayed",
                "resent",
            ),
            0,
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.secret is not None:
            if not self.secret:
                raise ValidationError("the network secret must not be empty", field="secret")
            self._key = mac_key(self.secret, network=self.options.subject)
        self._presence_sig = self.identity.sign(
            self._presence_bytes(self.identity.public_key, self._boot)
        )

    # --- identity and subjects ---------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def _node_subject(self, node_id: str) -> str:
        return f"{self.options.subject}.node.{node_id}"

    def _presence_bytes(self, key: bytes, nonce: bytes) -> bytes:
        return _PRESENCE_CONTEXT + self.options.subject.encode() + b"\x00" + key + nonce

    # --- running -------------------------------------------------------------------------------

    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, subscribe and serve until cancelled.

        Raises:
            TransportError: no server accepted the connection within ``connect_timeout``
                (unreachable, wrong credentials, TLS failure), or JetStream was asked
                for and the server has none.
        """
        if self._nc is not None:
            raise TransportError(f"NATS transport of {self.node_id} is already running")
        nc = await self._connect()
        self._nc, self._handler = nc, handler
        self._inbox = nc.new_inbox()
        self._up = anyio.Event()
        self._up.set()
        try:
            subs = await self._subscribe(nc)
            send, receive = anyio.create_memory_object_stream[_Inbound](256)
            async with anyio.create_task_group() as tg, send, receive:
                self._tg, self._inbound = tg, send
                for path, sub in subs.items():
                    tg.start_soon(self._reader, path, sub)
                tg.start_soon(self._worker, receive)
                tg.start_soon(self._flusher)
                tg.start_soon(self._heartbeats)
                # nats-py writes a flush's PING straight to the socket, ahead of commands
                # still queued (our SUBs): only a second round trip proves the server has
                # our subscriptions, so that a broadcast sent right after start reaches us.
                await nc.flush(timeout=5)
                await nc.flush(timeout=5)
                await self._announce(Kind.HELLO)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._closing = True
            self._tg = self._handler = self._inbound = None
            for waiter in self._waiting.values():
                waiter.finish(error="the NATS transport stopped")
            with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                with contextlib.suppress(Exception):
                    await self._announce(Kind.BYE)
                with contextlib.suppress(Exception):
                    await nc.close()
            self._nc = None
            self._closing = False

    async def _subscribe(self, nc: NatsClient) -> dict[str, Subscription]:
        subject, limit = self.options.subject, SUB_PENDING_BYTES
        subs = {
            "broadcast": await nc.subscribe(subject, pending_bytes_limit=limit),
            "node": await nc.subscribe(self._node_subject(self.node_id), pending_bytes_limit=limit),
            "presence": await nc.subscribe(f"{subject}.presence"),
            "hello": await nc.subscribe(f"{subject}.presence.{self.node_id}"),
            "inbox": await nc.subscribe(f"{self._inbox}.*", pending_bytes_limit=limit),
        }
        if self.options.jetstream:
            subs.update(await setup_jetstream(nc, self.options, self.node_id))
        return subs

    async def _connect(self) -> NatsClient:
        opts = self.options
        tls = (
            await anyio.to_thread.run_sync(partial(tls_context, opts))
            if opts.tls_ca or opts.tls_cert
            else None
        )
        nc = NatsClient()
        refused = anyio.Event()

        async def on_error(exc: Exception) -> None:
            text = str(exc) or type(exc).__name__
            self._last_error = text
            if not nc.is_connected:
                # A failed attempt, to connect or to reconnect: nats-py reuses its
                # transport object for the next attempt without closing this attempt's
                # socket (a server that accepted but did not finish the handshake), so
                # close it here (closing twice is harmless). Left open, it leaked until
                # collected: a ResourceWarning that failed an unrelated test in CI.
                transport = getattr(nc, "_transport", None)
                if transport is not None:
                    transport.close()
                if self._nc is None and (_is_auth_error(text) or isinstance(exc, ssl.SSLError)):
                    refused.set()
            log.debug("NATS error for %s: %s", self.node_id, text)

        async def on_disconnect() -> None:
            if self._disconnected_at is None and self._nc is not None and not self._closing:
                self._disconnected_at = time.monotonic()
                if self._up.is_set():
                    self._up = anyio.Event()
                self._warned_full = False
                self._requeue_recent()
                log.warning(
                    "node %s lost its NATS connection; reconnecting, and buffering up to %d "
                    "outgoing events meanwhile (%d sent just before are queued to go again)",
                    self.node_id,
                    opts.buffer_frames,
                    len(self._buffer),
                )

        async def on_reconnect() -> None:
            self.counters["reconnects"] += 1
            down = time.monotonic() - (self._disconnected_at or time.monotonic())
            self._disconnected_at = None
            self._up.set()
            log.warning(
                "node %s reconnected to NATS at %s after %.1fs; sending %d buffered events",
                self.node_id,
                _url(nc),
                down,
                len(self._buffer),
            )
            self._wake_flusher.set()
            if self._tg is not None:
                self._tg.start_soon(self._announce, Kind.HELLO)

        kwargs: dict[str, Any] = {
            "servers": list(opts.servers),
            "name": opts.name or f"bacalhau-{self.node_id}",
            "no_echo": True,
            "dont_randomize": not opts.randomize,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": opts.reconnect_wait,
            "connect_timeout": max(1, min(5, int(opts.connect_timeout))),
            "ping_interval": opts.ping_interval,
            "max_outstanding_pings": 2,
            "error_cb": on_error,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            "pending_size": 2 * MAX_FRAME + 1024 * 1024,
            "token": opts.token,
            "user": opts.user,
            "password": opts.password,
            "user_credentials": opts.creds,
            "tls": tls,
        }
        if opts.nkey_seed is not None:
            seed = opts.nkey_seed.strip()
            kwargs["nkeys_seed_str" if seed.startswith("SU") else "nkeys_seed"] = seed
        with anyio.move_on_after(opts.connect_timeout):
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await refused.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                try:
                    await nc.connect(**kwargs)
                except Exception as exc:  # nats-py raises several unrelated types here
                    self._last_error = str(exc) or type(exc).__name__
                tg.cancel_scope.cancel()
        if not nc.is_connected:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await nc.close()
            why = self._last_error or f"no answer within {opts.connect_timeout:g}s"
            hint = ""
            if refused.is_set():
                hint = " (check the token, user/password, nkey, creds and TLS files)"
            raise TransportError(
                f"could not connect to NATS at {', '.join(opts.servers)}: {why}{hint}"
            )
        log.info(
            "node %s connected to NATS at %s (max_payload %d)",
            self.node_id,
            _url(nc),
            nc.max_payload,
        )
        return nc

    # --- receiving -----------------------------------------------------------------------------

    async def _reader(self, path: str, sub: Subscription) -> None:
        async for msg in sub.messages:
            try:
                await self._on_message(path, msg)
            except Refused as exc:
                self.counters["refused"] += 1
                if self.counters["refused"] in (1, 10, 100, 1000):
                    log.warning(
                        "node %s refused NATS packets (%d so far): %s",
                        self.node_id,
                        self.counters["refused"],
                        exc,
                    )
                if path == "node" and msg.reply and self._key is not None:
                    await self._refuse(msg.reply)
                if path.startswith("jetstream") and msg.reply:
                    await self._ack([msg.reply])
            except WireError as exc:
                self.counters["malformed"] += 1
                log.debug(
                    "node %s dropped a malformed NATS packet on %s: %s",
                    self.node_id,
                    msg.subject,
                    exc,
                )
                if path.startswith("jetstream") and msg.reply:
                    await self._ack([msg.reply])  # never redeliver what cannot be read

    async def _refuse(self, reply: str) -> None:
        """Tell a requester without the network secret why it gets no answer (untagged)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        why = b"refused: this node is on a private network and the request lacks its network secret"
        for packet in encode_packets(
            Kind.ERROR,
            self.identity.public_key,
            _token(reply),
            why,
            max_packet=nc.max_payload,
            key=None,
        ):
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(reply, packet)

    async def _on_message(self, path: str, msg: Msg) -> None:
        if path == "inbox" and msg.headers and msg.headers.get("Status") == "503":
            waiter = self._waiting.get(_token(msg.subject))
            if waiter is not None:
                waiter.finish(error=f"no node {waiter.peer_id} is listening on this NATS network")
            return
        packet = decode_packet(msg.data, key=self._key)
        now = time.monotonic()
        acks = [msg.reply] if path.startswith("jetstream") and msg.reply else []
        if packet.sender_key == self.identity.public_key:
            await self._ack(acks)
            return
        if path in ("presence", "hello"):
            self._on_presence(packet, now)
            return
        frame = self._reassembler.add(path, packet, now)
        if frame is None:
            await self._ack(acks)  # stored chunks are acked as they come; the frame waits here
            return
        if path in ("broadcast", "jetstream"):
            if packet.kind is not Kind.BROADCAST:
                raise WireError(f"{packet.kind.name} packet on the broadcast subject")
            if self._inbound is not None:
                await self._inbound.send((frame, acks))
        elif path in ("node", "jetstream-direct"):
            if packet.kind is not Kind.REQUEST:
                raise WireError(f"{packet.kind.name} packet on a request subject")
            await self._on_request(packet, frame, acks)
        elif path == "inbox":
            waiter = self._waiting.get(packet.msg_id)
            if waiter is None or _token(msg.subject) != packet.msg_id:
                return
            if packet.kind is Kind.REPLY:
                waiter.finish(reply=frame)
            elif packet.kind is Kind.ERROR:
                waiter.finish(
                    error=f"peer {waiter.peer_id} failed to answer: "
                    + frame.decode(errors="replace")
                )

    async def _on_request(self, packet: Packet, frame: bytes, acks: list[str]) -> None:
        sender = _node_id(packet.sender_key)
        signed = request_signing_bytes(self.identity.public_key, packet.msg_id, packet.reply, frame)
        if not verify_signature(sender, packet.signature, signed):
            raise WireError(f"request claiming to be from {sender} has a bad signature")
        key = packet.sender_key + packet.msg_id
        if key in self._handled:  # the live copy and the stream's copy of one request
            self.counters["duplicates"] += 1
            await self._ack(acks)
            return
        self._handled[key] = None
        if len(self._handled) > 65536:
            self._handled.popitem(last=False)
        if acks:
            self.counters["replayed"] += 1
        await self._request_slots.acquire()
        if self._tg is None:
            self._request_slots.release()
            return
        self._tg.start_soon(self._serve_request, sender, frame, packet.msg_id, packet.reply, acks)

    def _on_presence(self, packet: Packet, now: float) -> None:
        if packet.kind not in (Kind.HELLO, Kind.HERE, Kind.BYE):
            raise WireError(f"{packet.kind.name} packet on the presence subject")
        key, nonce = packet.sender_key, packet.msg_id
        sender = _node_id(key)
        if (key, nonce) not in self._verified:
            if not verify_signature(sender, packet.body, self._presence_bytes(key, nonce)):
                raise WireError(f"presence of {sender} has a bad signature")
            self._verified[(key, nonce)] = None
            if len(self._verified) > 16384:
                self._verified.popitem(last=False)
        if packet.kind is Kind.BYE:
            peer = self._peers.get(sender)
            if peer is not None and peer.nonce == nonce:
                del self._peers[sender]
            return
        if sender not in self._peers and len(self._peers) >= MAX_PEERS:
            # keys cost nothing to make: forget the peer heard from longest ago
            del self._peers[min(self._peers, key=lambda p: self._peers[p].seen)]
        self._peers[sender] = _Peer(nonce, now)
        if packet.kind is Kind.HELLO and self._tg is not None:
            self._tg.start_soon(
                self._announce, Kind.HERE, f"{self.options.subject}.presence.{sender}"
            )

    async def _worker(self, receive: MemoryObjectReceiveStream[_Inbound]) -> None:
        async for frame, acks in receive:
            digest = hashlib.sha256(frame).digest()[:16]
            if digest in self._seen:
                self.counters["duplicates"] += 1
            else:
                self._seen[digest] = None
                if len(self._seen) > 65536:
                    self._seen.popitem(last=False)
                self.counters["received"] += 1
                if acks:
                    self.counters["replayed"] += 1
                handler = self._handler
                if handler is not None:
                    try:
                        await handler.handle_broadcast(frame)
                    except Exception:  # the node's bug must not stop the transport
                        log.exception("node %s failed to handle a broadcast", self.node_id)
            if acks:
                await self._ack(acks)

    async def _ack(self, subjects: list[str]) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # unacked deliveries come again, and are deduplicated then
        for subject in subjects:
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(subject, b"+ACK")

    async def _serve_request(
        self, sender: str, frame: bytes, msg_id: bytes, reply: str, acks: list[str]
    ) -> None:
        try:
            handler = self._handler
            kind = Kind.REPLY
            try:
                if handler is None:
                    raise TransportError("the node is shutting down")
                # packets are sealed one by one: the pieces are joined here
                answer = join_reply(await handler.handle_request(sender, frame))
            except Exception as exc:  # reported to the requester, not raised here
                log.debug("node %s failed a request from %s: %r", self.node_id, sender, exc)
                kind, answer = Kind.ERROR, f"{type(exc).__name__}: {exc}".encode()[:2000]
            try:
                await self._publish(reply, kind, msg_id, answer)
            except (nats.errors.Error, TransportError) as exc:
                log.info("node %s could not send a reply to %s: %s", self.node_id, sender, exc)
            await self._ack(acks)
        finally:
            self._request_slots.release()

    # --- sending -------------------------------------------------------------------------------

    async def _publish(
        self,
        subject: str,
        kind: Kind,
        msg_id: bytes,
        frame: bytes,
        *,
        extra: bytes = b"",
        reply: str = "",
    ) -> None:
        nc = self._nc
        if nc is None:
            raise TransportError("the NATS transport is not running")
        limit = nc.max_payload
        if self.options.max_packet is not None:
            limit = min(limit, self.options.max_packet)
        packets = encode_packets(
            kind,
            self.identity.public_key,
            msg_id,
            frame,
            max_packet=limit,
            key=self._key,
            extra=extra,
        )
        for packet in packets:
            await nc.publish(subject, packet, reply=reply)
        self.counters["sent"] += 1

    async def _announce(self, kind: Kind, subject: str | None = None) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        with contextlib.suppress(nats.errors.Error, TransportError):
            await self._publish(
                subject or f"{self.options.subject}.presence", kind, self._boot, self._presence_sig
            )

    async def broadcast(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        nc = self._nc
        if nc is None:
            raise TransportError("the NATS transport is not running")
        if nc.is_connected and not self._buffer:
            try:
                await self._publish(self.options.subject, Kind.BROADCAST, os.urandom(8), frame)
                self._remember(frame)
                return
            except nats.errors.Error as exc:
                log.info("node %s could not publish (%s); buffering", self.node_id, exc)
        self._hold(frame)

    def _hold(self, frame: bytes) -> None:
        self._buffer.append(frame)
        self._buffered_bytes += len(frame)
        opts = self.options
        while len(self._buffer) > opts.buffer_frames or self._buffered_bytes > opts.buffer_bytes:
            self._buffered_bytes -= len(self._buffer.popleft())
            self.counters["dropped"] += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "node %s: outgoing NATS buffer full (%d events, %d bytes); dropping the oldest",
                    self.node_id,
                    opts.buffer_frames,
                    opts.buffer_bytes,
                )
        self._wake_flusher.set()

    async def _flusher(self) -> None:
        while True:
            await self._wake_flusher.wait()
            self._wake_flusher = anyio.Event()
            nc = self._nc
            while self._buffer and nc is not None and nc.is_connected:
                frame = self._buffer[0]
                try:
                    await self._publish(self.options.subject, Kind.BROADCAST, os.urandom(8), frame)
                except nats.errors.Error:
                    break
                self._remember(frame)
                if self._buffer and self._buffer[0] is frame:
                    self._buffer.popleft()
                    self._buffered_bytes -= len(frame)

    def _remember(self, frame: bytes) -> None:
        """Keep what was just sent: a server that dies may have swallowed it."""
        now = time.monotonic()
        recent, window = self._recent, self.options.resend_window
        recent.append((now, frame))
        while recent and (len(recent) > 256 or recent[0][0] < now - window):
            recent.popleft()

    def _requeue_recent(self) -> None:
        """On disconnect: queue again the broadcasts of the last ``resend_window`` seconds.

        Publishes written just before a server died may never have left its socket;
        receivers deduplicate by frame hash, so sending twice costs only bandwidth.
        """
        cutoff = time.monotonic() - self.options.resend_window
        again = [frame for sent, frame in self._recent if sent >= cutoff]
        self._recent.clear()
        self._buffer.extendleft(reversed(again))
        self._buffered_bytes += sum(len(f) for f in again)
        self.counters["resent"] += len(again)

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.options.heartbeat)
            await self._announce(Kind.HERE)
            self._reassembler.expire(time.monotonic())

    async def request(
        self,
        peer_id: str,
        frame: bytes,
        *,
        timeout: float = 10.0,
    ) -> bytes:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._nc is None:
            raise TransportError("the NATS transport is not running")
        if peer_id == self.node_id:
            return await self._local_request(frame, timeout)
        try:
            dst_key = _public_key(peer_id)
        except ValidationError as exc:
            raise PeerUnreachable(f"cannot send to {peer_id!r}: {exc}") from None
        msg_id = os.urandom(8)
        reply = f"{self._inbox}.{msg_id.hex()}"
        stored = self.options.jetstream
        waiter = self._waiting[msg_id] = _Waiter(peer_id)
        try:
            with anyio.fail_after(timeout):
                while not self._connected():
                    await self._up.wait()
                signature = self.identity.sign(request_signing_bytes(dst_key, msg_id, reply, frame))
                # With JetStream the stream keeps the request for a peer that is away (its
                # durable consumer delivers it on return); the reply subject travels in band.
                # Without, NATS's own reply subject makes the server say "no responders".
                await self._publish(
                    self._node_subject(peer_id),
                    Kind.REQUEST,
                    msg_id,
                    frame,
                    extra=request_extra(signature, reply),
                    reply="" if stored else reply,
                )
                if stored and peer_id not in self.peers():
                    raise PeerUnreachable(
                        f"peer {peer_id} is not connected now; JetStream keeps the request "
                        "until it returns"
                    )
                await waiter.done.wait()
        except TimeoutError:
            raise PeerUnreachable(f"no reply from {peer_id} within {timeout:g}s") from None
        except nats.errors.Error as exc:
            raise PeerUnreachable(f"request to {peer_id} failed: NATS said {exc}") from None
        finally:
            self._waiting.pop(msg_id, None)
        if waiter.error is not None or waiter.reply is None:
            raise PeerUnreachable(waiter.error or f"no reply from {peer_id}")
        return waiter.reply

    async def _local_request(self, frame: bytes, timeout: float) -> bytes:
        handler = self._handler
        if handler is None:
            raise PeerUnreachable("the node is shutting down")
        try:
            with anyio.fail_after(timeout):
                return join_reply(await handler.handle_request(self.node_id, frame))
        except TimeoutError:
            raise PeerUnreachable(f"no reply from this node within {timeout:g}s") from None
        except TransportError:
            raise
        except Exception as exc:
            raise PeerUnreachable(f"this node failed to answer: {exc!r}") from exc

    # --- what the node sees --------------------------------------------------------------------

    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def peers(self) -> frozenset[str]:
        cutoff = time.monotonic() - 3 * self.options.heartbeat
        return frozenset(n for n, p in self._peers.items() if p.seen >= cutoff)

    def status(self) -> dict[str, object]:
        nc = self._nc
        down = self._disconnected_at
        return {
            "transport": "nats",
            "connected": self._connected(),
            "server": _url(nc) if nc is not None and nc.is_connected else None,
            "subject": self.options.subject,
            "max_payload": nc.max_payload if nc is not None else None,
            "jetstream": self.options.jetstream,
            "private": self._key is not None,
            "peers": len(self.peers()),
            "buffered": len(self._buffer),
            "buffered_bytes": self._buffered_bytes,
            "disconnected_for": round(time.monotonic() - down, 3) if down is not None else None,
            "last_error": self._last_error,
            **self.counters,
        }


@functools.lru_cache(maxsize=16384)
def _node_id(public_key: bytes) -> str:
    """Node id of a sender key (base58 encoding is slow, and senders repeat)."""
    return node_id_from_public_key(public_key)


@functools.lru_cache(maxsize=16384)
def _public_key(node_id: str) -> bytes:
    return public_key_from_node_id(node_id)


def _token(subject: str) -> bytes:
    try:
        return bytes.fromhex(subject.rsplit(".", 1)[-1])
    except ValueError:
        return b""


def _url(nc: NatsClient | None) -> str | None:
    url = nc.connected_url if nc is not None else None
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else None


def _is_auth_error(text: str) -> bool:
    text = text.lower()
    return "authorization" in text or "authentication" in text or "permissions violation" in text


def nats_transport_factory(
    servers: Sequence[str], *, secret: bytes | None = None, **options: Any
) -> Callable[[Identity], NatsTransport]:
    """A ``transport_factory`` for :class:`~bacalhau.Network`: every node on these servers.

    ``options`` are :class:`NatsOptions` fields (``subject``, ``jetstream``, ``token``, ...).
    """
    opts = NatsOptions(servers=parse_servers(servers), **options)
    return lambda identity: NatsTransport(identity, opts, secret=secret)
