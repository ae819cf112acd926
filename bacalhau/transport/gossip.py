"""The TCP gossip transport: nodes in many processes and on many hosts.

Nodes connect over TCP (length-prefixed msgpack frames, see
:mod:`bacalhau.transport.gossip_conn`), prove their node keys and the optional
network secret in a handshake, and broadcast through a GossipSub-like mesh
(:mod:`bacalhau.protocol.gossip` decides who gets what). Peers are found by
static addresses, by mDNS (:mod:`bacalhau.transport.discovery`) and by peer
exchange: every connection starts by telling the other side the addresses of
this node's other peers, so a node that knows one peer learns the rest.

Guarantees (the :class:`~bacalhau.transport.base.Transport` contract):

* a broadcast reaches each connected node at most once and never its sender;
  it is forwarded only after the node's handler found it valid;
* delivery is best effort: a peer that falls behind loses frames from its
  bounded queue, and the IHAVE/IWANT exchange of recent ids repairs the gap;
* :meth:`GossipTransport.request` dials a peer whose address is known if it
  is not connected yet, and raises ``PeerUnreachable`` otherwise.

Limits (all in :class:`GossipOptions`): frames of at most ``MAX_FRAME``
bytes, handshakes and frames that must finish in time (slow-loris peers are
cut off), per-peer queues bounded in bytes and frames, a bounded inbox, a
bounded number of peers, concurrent handshakes and requests.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import SocketAttribute

from ..errors import ConnectionRetired, PeerUnreachable, TransportError, WireError
from ..identity import Identity
from ..protocol.gossip import (
    ID_SIZE,
    GossipCommand,
    GossipState,
    Graft,
    IDontWant,
    IHave,
    Prune,
)
from .accept import serve_sockets
from .base import MAX_FRAME, Transport, TransportHandler, reply_pieces
from .discovery import DiscoveredPeer, MdnsDiscovery, interface_addresses, parse_peer_address
from .gossip_book import AddressBook, Known, parse_peers_message
from .gossip_conn import (
    BYE,
    ERROR,
    GRAFT,
    IDONTWANT,
    IHAVE,
    IWANT,
    PEERS,
    PING,
    PRUNE,
    PUBLISH,
    REPLY,
    REQUEST,
    RETIRE,
    WIRE_MAX,
    Connection,
    Frame,
    FrameReader,
    encode,
    encode_bin_message,
    encode_reply,
)
from .gossip_handshake import SelfConnection, handshake
from .gossip_limits import HandshakeSlots, LogBudget, should_cut
from .gossip_options import GossipOptions, gossip_transport_factory
from .secret import DEFAULT_NETWORK, parse_secret

__all__ = ["GossipOptions", "GossipTransport", "gossip_transport_factory"]


log = logging.getLogger("bacalhau.transport.gossip")


class GossipTransport(Transport):
    """A node's end of a TCP gossip network.

    Args:
        identity: the node's keys; the handshake proves them to each peer.
        host: address to listen on (``0.0.0.0`` for every interface).
        port: TCP port to listen on; 0 picks a free one (see :attr:`address`).
        peers: static peers, as ``"HOST:PORT"`` strings or ``(host, port)``
            pairs; dialed at start and redialed with backoff forever.
        secret: the network secret; nodes without the same one cannot connect
            (a key from ``bacalhau secret new``, or a passphrase of at least 12
            characters; see :mod:`bacalhau.transport.secret`).
        network: the network's name (salts passphrases).
        mdns: announce and discover nodes by mDNS.
        mdns_interfaces: interface addresses for mDNS (None: all).
        advertise_host: the host other nodes should dial (default: the address
            they see this node connect from, or the listen host for mDNS).
        options: timings and limits.
        listen_socket: an already bound, listening socket to use instead of
            ``host``/``port`` (for socket activation and race-free tests).
        seed: seeds the mesh's random choices (tests).
    """

    def __init__(
        self,
        identity: Identity,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        peers: Sequence[str | tuple[str, int]] = (),
        secret: str | bytes | None = None,
        network: str = DEFAULT_NETWORK,
        mdns: bool = False,
        mdns_interfaces: Sequence[str] | None = None,
        advertise_host: str | None = None,
        options: GossipOptions | None = None,
        listen_socket: Any = None,
        seed: int | None = None,
    ) -> None:
        self.identity = identity
        self.host, self.port = host, port
        self.static_peers = [parse_peer_address(p) if isinstance(p, str) else p for p in peers]
        parsed = parse_secret(secret, network=network) if secret is not None else None
        self._secret_key = parsed.key if parsed is not None else None
        self.network_tag = parsed.tag if parsed is not None else "public"
        self.mdns, self.mdns_interfaces = mdns, mdns_interfaces
        self.advertise_host = advertise_host
        self.options = options or GossipOptions()
        self._listen_socket = listen_socket
        self._rng = random.Random(seed)
        self.state = GossipState(config=self.options.gossip, rng=random.Random(seed))
        self._conns: dict[str, Connection] = {}
        self._retiring: set[Connection] = set()
        """Connections replaced by a newer one to the same peer, still finishing work."""
        opts = self.options
        self._book = AddressBook(
            own_id=identity.node_id,
            maxsize=opts.address_book,
            backoff_min=opts.backoff_min,
            backoff_max=opts.backoff_max,
            max_failures=opts.max_dial_failures,
            rng=random.Random(seed),
        )
        self._dialing: dict[str, anyio.Event] = {}
        self._inbox: deque[tuple[bytes, bytes, str, bool]] = deque()
        self._pex_dirty = False
        self._inbox_bytes = 0
        self._inbox_wake = anyio.Event()
        self._slots = HandshakeSlots(
            max_total=self.options.max_handshakes,
            max_per_address=self.options.max_handshakes_per_address,
        )
        self._log_budget = LogBudget()
        self._handler: TransportHandler | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._bound: tuple[str, int] | None = None
        self._beats = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "refused",
                "retired",
                "cut_off",
                "inbox_dropped",
                "invalid",
                "published",
                "delivered",
                "duplicates",
                "forwarded",
                "iwant_served",
            ),
            0,
        )

    # --- public surface -------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) of the listener; TransportError before :meth:`run`."""
        if self._bound is None:
            raise TransportError("gossip transport is not listening yet")
        return self._bound

    def peers(self) -> frozenset[str]:
        return frozenset(self._conns)

    def status(self) -> dict[str, object]:
        return {
            "transport": "gossip",
            "listen": f"{self._bound[0]}:{self._bound[1]}" if self._bound else None,
            "peers": len(self._conns),
            "mesh": len(self.state.mesh),
            "known_addresses": len(self._book),
            "queued_bytes": sum(c.queued_bytes for c in self._conns.values()),
            "dropped_to_peers": sum(c.dropped for c in self._conns.values()),
            "inbox_bytes": self._inbox_bytes,
            "seen": len(self.state.seen),
            **self.stats,
        }

    async def run(
        self,
        handler: TransportHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._handler is not None:
            raise TransportError("this gossip transport is already running")
        if self.mdns and self.mdns_interfaces:  # a bad interface fails here, plainly
            await anyio.to_thread.run_sync(interface_addresses, self.mdns_interfaces)
        if self._listen_socket is not None:
            listener: anyio.abc.Listener[
                anyio.abc.SocketStream
            ] = await anyio.abc.SocketListener.from_socket(self._listen_socket)
            bound = listener.extra(SocketAttribute.local_address)
            raw_sockets = [listener.extra(SocketAttribute.raw_socket)]
        else:
            multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            listener = multi
            bound = multi.listeners[0].extra(SocketAttribute.local_address)
            raw_sockets = [one.extra(SocketAttribute.raw_socket) for one in multi.listeners]
        self._bound = (str(bound[0]), int(bound[1]))
        self._handler = handler
        try:
            async with listener, anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(serve_sockets, raw_sockets, self._accept, tg)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._deliver_loop)
                for host, port in self.static_peers:
                    tg.start_soon(self._static_loop, host, port)
                if self.mdns:
                    discovery = MdnsDiscovery(
                        node_id=self.node_id,
                        port=self._bound[1],
                        host=self.advertise_host or self.host,
                        interfaces=self.mdns_interfaces,
                        network_tag=self.network_tag,
                    )
                    await tg.start(discovery.run, self._on_discovered)
                log.info("gossip: node %s listening on %s:%d", self.node_id, *self._bound)
                task_status.started()
        finally:
            for conn in [*self._conns.values(), *self._retiring]:
                conn.close("transport stopped")
            self._conns.clear()
            self._retiring.clear()
            for peer in list(self.state.peers):
                self.state.remove_peer(peer)
            self._handler = self._tg = None
            self._inbox.clear()
            self._inbox_bytes = 0

    async def broadcast(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._handler is None:
            raise TransportError("transport is not running")
        _, targets = self.state.publish(frame, monotonic())
        # "first hop": every peer of the origin has it (flood publish), see _deliver_loop
        data = encode_bin_message(PUBLISH, self.options.gossip.flood_publish, frame)
        backlogged = False
        for peer in targets:
            conn = self._conns.get(peer)
            if conn is not None:
                conn.send_bulk(data)
                backlogged = backlogged or conn.backlogged
        self.stats["published"] += 1
        if backlogged:  # let the writers drain before the caller queues more
            await anyio.lowlevel.checkpoint()

    async def request(
        self,
        peer_id: str,
        frame: bytes,
        *,
        timeout: float = 10.0,
    ) -> bytes:
        if len(frame) > MAX_FRAME:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if self._handler is None:
            raise TransportError("transport is not running")
        deadline = monotonic() + timeout
        while True:
            conn = self._conns.get(peer_id)
            if conn is None:
                conn = await self._connect_to(peer_id, max(0.0, deadline - monotonic()))
            try:
                return await conn.request(frame, max(0.0, deadline - monotonic()))
            except ConnectionRetired:  # not sent: the peer has a newer connection
                continue

    # --- connections ----------------------------------------------------------------------

    async def _connect_to(self, peer_id: str, within: float) -> Connection:
        known = self._book.get(peer_id)
        if known is None:
            raise PeerUnreachable(f"peer {peer_id} is not connected and its address is unknown")
        event = self._dialing.get(peer_id)
        if event is None and self._tg is not None:
            event = self._dialing[peer_id] = anyio.Event()
            self._tg.start_soon(self._dial, known)
        if event is not None:
            with anyio.move_on_after(within):
                await event.wait()
        conn = self._conns.get(peer_id)
        if conn is None:
            raise PeerUnreachable(f"could not connect to {peer_id} at {known.host}:{known.port}")
        return conn

    async def _accept(self, stream: anyio.abc.SocketStream) -> None:
        try:
            await self._session(stream, outbound=False, expected_id=None)
        except Exception:  # a bug of ours in one connection must not take the node down
            log.exception("gossip: unexpected error serving an incoming connection")

    async def _session(
        self,
        stream: anyio.abc.SocketStream,
        *,
        outbound: bool,
        expected_id: str | None,
        on_admit: Callable[[], None] | None = None,
    ) -> tuple[str, str | None]:
        """Handshake and serve one connection until it closes.

        Returns ("self" | "failed" | "refused" | "closed", the peer's id if learned).
        ``on_admit`` is called once the connection is registered as the peer's.
        """
        opts = self.options
        remote = stream.extra(SocketAttribute.remote_address)
        where = f"{remote[0]}:{remote[1]}"
        reader = FrameReader(stream)
        # incoming handshakes hold a slot; the oldest are evicted when slots run out
        slot = None if outbound else self._slots.open(str(remote[0]))
        try:
            with slot.scope if slot is not None else contextlib.nullcontext():
                hello = await handshake(
                    stream,
                    reader,
                    self.identity,
                    secret_key=self._secret_key,
                    outbound=outbound,
                    listen_port=self._bound[1] if self._bound else None,
                    advertise_host=self.advertise_host,
                    expected_id=expected_id,
                    time_limit=opts.handshake_timeout,
                )
            if slot is not None and slot.evicted:
                raise WireError("evicted: too many connections in handshake")
        except SelfConnection:
            await stream.aclose()
            return "self", None
        except (WireError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            if self._log_budget.allow():
                log.warning("gossip: cut off %s during handshake: %s", where, exc)
            self.stats["cut_off"] += 1
            await anyio.aclose_forcefully(stream)
            return "failed", None
        except BaseException:  # cancelled mid-handshake: still close the socket
            await anyio.aclose_forcefully(stream)
            raise
        finally:
            if slot is not None:
                self._slots.close(slot)
        listen_host = hello.advertise_host or str(remote[0])
        conn = Connection(
            peer_id=hello.node_id,
            stream=stream,
            reader=reader,
            outbound=outbound,
            remote=(str(remote[0]), int(remote[1])),
            listen_addr=(listen_host, hello.listen_port) if hello.listen_port else None,
            max_bytes=opts.queue_bytes,
            max_frames=opts.queue_frames,
            last_recv=monotonic(),
            last_sent=monotonic(),
        )
        reader.read_directly()  # the read loop is its only reader from here on
        async with stream:
            refusal = self._admit(conn)
            if refusal is not None:  # tell it why, and where else to go
                with anyio.move_on_after(1), contextlib.suppress(Exception):
                    await stream.send(self._peers_message(conn) + encode([BYE, refusal]))
                return "refused", hello.node_id
            if on_admit is not None:
                on_admit()
            try:
                async with anyio.create_task_group() as tg:
                    conn.scope = tg.cancel_scope
                    tg.start_soon(self._read_loop, conn, tg)
                    await conn.write_loop()
                    tg.cancel_scope.cancel()
            finally:
                self._drop(conn)
        return "closed", hello.node_id

    def _admit(self, conn: Connection) -> str | None:
        """Register an authenticated connection; or refuse it, returning why.

        A second connection to a peer (both dialled at once) is not refused: of the
        two, both ends keep the one opened by the node with the smaller id and retire
        the other, which closes once the requests already sent on it are answered.
        """
        peer = conn.peer_id
        if conn.listen_addr is not None:
            self._book.remember(peer, *conn.listen_addr, source="peer", reset=True)
        existing = self._conns.get(peer)
        if existing is None and len(self._conns) >= self.options.max_peers:
            log.info("gossip: refused %s: already %d peers", peer, len(self._conns))
            self.stats["refused"] += 1
            conn.close("refused: too many peers")
            return f"too many peers ({len(self._conns)})"
        if existing is not None:
            # two connections to one peer (both dialed at once): keep the one opened by the
            # node with the smaller id, so both ends keep the same one
            def lower_dialed(c: Connection) -> bool:
                return c.outbound == (self.node_id < peer)

            if lower_dialed(existing) and not lower_dialed(conn):
                # the peer may have sent requests on it already: answer them first
                self._retire(conn, "duplicate connection")
                return None
            self._retire(existing, "replaced by a newer connection")
            self.state.remove_peer(peer)
        self._conns[peer] = conn
        for cmd in self.state.add_peer(peer):
            self._run_command(cmd)
        conn.send_control(self._peers_message(conn))
        self._pex_dirty = True  # the others learn of it at the next heartbeat
        log.debug("gossip: connected to %s (%s)", peer, "out" if conn.outbound else "in")
        return None

    def _retire(self, conn: Connection, reason: str) -> None:
        """Retire ``conn``: it closes once the work in flight on it is done. One at a
        time per peer: a peer that dials again and again cannot keep old connections
        open for ``retire_timeout`` each; a further one is closed at once."""
        if any(c.peer_id == conn.peer_id for c in self._retiring):
            conn.close(reason)
            return
        conn.retire(reason, within=self.options.retire_timeout)
        self._retiring.add(conn)
        self.stats["retired"] += 1
        log.debug("gossip: retiring a connection to %s: %s", conn.peer_id, reason)

    def _drop(self, conn: Connection, reason: str = "closed") -> None:
        """Close ``conn`` (if not yet) and forget it as the peer's connection."""
        conn.close(reason)
        self._retiring.discard(conn)
        if self._conns.get(conn.peer_id) is conn:
            del self._conns[conn.peer_id]
            self.state.remove_peer(conn.peer_id)
            self._pex_dirty = True
            self._book.disconnected(conn.peer_id, monotonic())
            log.debug("gossip: disconnected from %s: %s", conn.peer_id, conn.close_reason)

    def _on_discovered(self, peer: DiscoveredPeer) -> None:
        self._book.remember(peer.node_id, peer.host, peer.port, source="mdns", reset=True)
        self._maybe_dial()

    def _maybe_dial(self) -> None:
        """Dial known, unconnected addresses while below ``target_peers``."""
        opts, tg = self.options, self._tg
        if tg is None:
            return
        room = min(opts.target_peers - len(self._conns), opts.max_dials - len(self._dialing))
        busy = self._conns.keys() | self._dialing.keys()
        for known in self._book.ready(monotonic(), busy, room):
            self._dialing[known.node_id] = anyio.Event()
            tg.start_soon(self._dial, known)

    async def _dial(self, known: Known) -> None:
        """Dial one known address (the caller registered it in ``_dialing``)."""
        opts = self.options
        event = self._dialing.setdefault(known.node_id, anyio.Event())
        admitted = False

        def on_admit() -> None:
            nonlocal admitted
            admitted = True
            known.failures = 0
            event.set()

        try:
            with anyio.fail_after(opts.connect_timeout):
                stream = await anyio.connect_tcp(known.host, known.port)
        except (OSError, TimeoutError) as exc:
            log.debug(
                "gossip: dial %s at %s:%d failed: %r", known.node_id, known.host, known.port, exc
            )
        else:
            # the session lasts as long as the connection: stop counting it as a dial
            # once it is admitted (or has failed)
            async with anyio.create_task_group() as tg:

                async def release() -> None:
                    await event.wait()
                    if self._dialing.get(known.node_id) is event:
                        del self._dialing[known.node_id]

                tg.start_soon(release)
                await self._session(
                    stream, outbound=True, expected_id=known.node_id, on_admit=on_admit
                )
                event.set()
        finally:
            event.set()
            if self._dialing.get(known.node_id) is event:
                del self._dialing[known.node_id]
        if not admitted and self._book.failed(known, monotonic()):
            log.debug("gossip: forgot %s after %d failed dials", known.node_id, known.failures)

    async def _static_loop(self, host: str, port: int) -> None:
        """Keep a connection to a static peer address, redialing with backoff."""
        opts = self.options
        backoff = opts.backoff_min
        peer_id: str | None = None
        while True:
            if peer_id is not None and (conn := self._conns.get(peer_id)) is not None:
                await conn.closed.wait()
                backoff = opts.backoff_min
                await anyio.sleep(backoff * self._rng.uniform(0.5, 1.0))
                continue
            try:
                with anyio.fail_after(opts.connect_timeout):
                    stream = await anyio.connect_tcp(host, port)
            except (OSError, TimeoutError) as exc:
                log.debug("gossip: static peer %s:%d unreachable: %r", host, port, exc)
                outcome = "failed"
            else:
                outcome, learned = await self._session(stream, outbound=True, expected_id=None)
                peer_id = learned or peer_id
                if outcome == "self":
                    log.debug("gossip: static peer %s:%d is this node", host, port)
                    return
            if outcome == "closed":
                backoff = opts.backoff_min
            await anyio.sleep(backoff * self._rng.uniform(0.5, 1.0))
            backoff = min(opts.backoff_max, backoff * 2)

    # --- receiving ------------------------------------------------------------------------

    async def _read_loop(self, conn: Connection, tg: anyio.abc.TaskGroup) -> None:
        reason: str
        try:
            while True:
                msg = await conn.reader.read_message(max_size=WIRE_MAX)
                conn.last_recv = monotonic()
                self._dispatch(conn, msg, tg)
        except WireError as exc:
            reason = str(exc)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            reason = f"connection error: {exc!r}"
        except Exception as exc:  # a bug of ours must not take the node down
            log.exception("gossip: unexpected error reading from %s", conn.peer_id)
            reason = f"internal error: {exc!r}"
        if conn.close_reason is None:
            if reason.startswith(("connection closed by peer", "peer refused", "peer said bye")):
                log.debug("gossip: %s closed: %s", conn.peer_id, reason)
            else:
                self.stats["cut_off"] += 1
                log.warning(
                    "gossip: cut off peer %s (%s:%d): %s", conn.peer_id, *conn.remote, reason
                )
        conn.close(reason)

    def _dispatch(self, conn: Connection, msg: list[Any], tg: anyio.abc.TaskGroup) -> None:
        kind, peer = msg[0], conn.peer_id
        if kind == PUBLISH:
            if (
                len(msg) != 3
                or not isinstance(msg[1], bytes)
                or len(msg[1]) > MAX_FRAME
                or not isinstance(msg[2], bool)
            ):
                raise WireError("malformed PUBLISH")
            self._on_publish(msg[1], peer, msg[2])
        elif kind in (IHAVE, IWANT, IDONTWANT):
            ids = msg[1] if len(msg) == 2 else None
            if not (
                isinstance(ids, list)
                and len(ids) <= self.options.gossip.max_ihave_ids
                and all(isinstance(i, bytes) and len(i) == ID_SIZE for i in ids)
            ):
                raise WireError("malformed IHAVE/IWANT/IDONTWANT")
            if kind == IDONTWANT:
                self.state.on_idontwant(peer, ids)
            elif kind == IHAVE:
                for cmd in self.state.on_ihave(peer, ids, monotonic()):
                    self._run_command(cmd)
            else:
                for frame in self.state.on_iwant(peer, ids):
                    self.stats["iwant_served"] += 1
                    conn.send_bulk(encode_bin_message(PUBLISH, False, frame))
        elif kind == GRAFT:
            for cmd in self.state.on_graft(peer):
                self._run_command(cmd)
        elif kind == PRUNE:
            self.state.on_prune(peer)
        elif kind == PING:
            pass
        elif kind == PEERS:
            self._on_peers(conn, msg)
        elif kind == REQUEST:
            if len(msg) != 3 or type(msg[1]) is not int or not isinstance(msg[2], bytes):
                raise WireError("malformed REQUEST")
            if conn.inflight >= self.options.max_inflight_requests:
                conn.send_control(encode([ERROR, msg[1], "busy: too many requests in flight"]))
            else:
                conn.inflight += 1
                tg.start_soon(self._serve_request, conn, msg[1], msg[2])
        elif kind == REPLY:
            if len(msg) != 3 or type(msg[1]) is not int or not isinstance(msg[2], bytes):
                raise WireError("malformed REPLY")
            conn.resolve(msg[1], msg[2], None)
        elif kind == ERROR:
            if len(msg) != 3 or type(msg[1]) is not int or not isinstance(msg[2], str):
                raise WireError("malformed ERROR")
            conn.resolve(msg[1], None, f"peer {peer} failed to answer: {msg[2][:500]}")
        elif kind == RETIRE:
            if len(msg) != 1:
                raise WireError("malformed RETIRE")
            conn.on_peer_retired()
        elif kind == BYE:
            reason = msg[1] if len(msg) == 2 and isinstance(msg[1], str) else "?"
            if reason == "shutting down":
                self._book.forget(peer)
            raise WireError(f"peer said bye: {reason[:200]}")

    def _on_publish(self, frame: bytes, source: str, first_hop: bool) -> None:
        mid = self.state.receive(frame, monotonic())
        if mid is None:
            self.stats["duplicates"] += 1
            return
        for cmd in self.state.dont_want(mid, frame, source):
            self._run_command(cmd)
        if self._inbox and self._inbox_bytes + len(frame) > self.options.inbox_bytes:
            self.state.forget(mid)  # IHAVE will offer it again once we catch up
            self.stats["inbox_dropped"] += 1
            return
        self._inbox.append((mid, frame, source, first_hop))
        self._inbox_bytes += len(frame)
        if not self._inbox_wake.is_set():
            self._inbox_wake.set()

    def _on_peers(self, conn: Connection, msg: list[Any]) -> None:
        entries, complete = parse_peers_message(msg, self.options.pex_max)
        for entry in entries:
            if entry[0] not in self._conns and entry[0] not in self._book:
                self._book.remember(*entry, source="pex", reset=False)
        # a complete list tells whom the peer floods its own broadcasts to
        conn.peer_peers = frozenset(e[0] for e in entries) if complete else None
        self._maybe_dial()

    async def _serve_request(self, conn: Connection, req_id: int, frame: bytes) -> None:
        handler = self._handler
        try:
            try:
                if handler is None:
                    raise TransportError("transport stopped")
                pieces, size = reply_pieces(await handler.handle_request(conn.peer_id, frame))
                data: Frame = encode_reply(req_id, pieces, size)  # sent as they are, not joined
            except Exception as exc:
                log.debug("gossip: request from %s failed: %r", conn.peer_id, exc)
                data = encode([ERROR, req_id, f"{type(exc).__name__}: {exc}"[:1000]])
            with anyio.fail_after(self.options.write_timeout):
                await conn.send_direct(data)
        except (TimeoutError, PeerUnreachable):
            pass
        finally:
            conn.served()  # once the reply is queued: a retiring connection waits for it

    async def _deliver_loop(self) -> None:
        """Hand received broadcasts to the node one at a time; forward the valid ones."""
        handled = 0
        while True:
            if not self._inbox:
                self._inbox_wake = anyio.Event()
                await self._inbox_wake.wait()
                continue
            handled += 1
            if handled % 64 == 0:  # let the writers drain a long backlog's forwards
                await anyio.lowlevel.checkpoint()
            mid, frame, source, first_hop = self._inbox.popleft()
            self._inbox_bytes -= len(frame)
            handler = self._handler
            if handler is None:
                return
            try:
                valid = await handler.handle_broadcast(frame)
            except Exception:
                log.exception("gossip: the node's broadcast handler failed; frame not forwarded")
                valid = False
            conn = self._conns.get(source)
            if not valid:
                self.stats["invalid"] += 1
                if conn is not None:
                    conn.invalid += 1
                    if should_cut(
                        invalid=conn.invalid, valid=conn.valid, max_invalid=self.options.max_invalid
                    ):
                        self.stats["cut_off"] += 1
                        log.warning("gossip: cut off %s: %d invalid frames", source, conn.invalid)
                        self._drop(conn, f"sent {conn.invalid} invalid frames")
                continue
            if conn is not None:
                conn.valid += 1
            self.stats["delivered"] += 1
            targets = self.state.accept(mid, frame, source)
            origin = self._conns.get(source) if first_hop else None
            if origin is not None and origin.peer_peers is not None:
                # it came straight from its origin, which sent it to all its peers:
                # forward it only to those that are not the origin's peers
                skip = origin.peer_peers
                targets = [p for p in targets if p not in skip]
            if targets:
                data = encode_bin_message(PUBLISH, False, frame)
                for peer in targets:
                    conn = self._conns.get(peer)
                    if conn is not None:
                        self.stats["forwarded"] += 1
                        conn.send_bulk(data)

    # --- heartbeat ------------------------------------------------------------------------

    def _run_command(self, cmd: GossipCommand) -> None:
        conn = self._conns.get(cmd.peer)
        if conn is None:
            return
        if isinstance(cmd, Graft):
            conn.send_control(encode([GRAFT]))
        elif isinstance(cmd, Prune):
            conn.send_control(encode([PRUNE]))
        elif isinstance(cmd, IHave):
            conn.send_control(encode([IHAVE, list(cmd.ids)]))
        elif isinstance(cmd, IDontWant):
            conn.send_control(encode([IDONTWANT, list(cmd.ids)]))
        else:
            conn.send_control(encode([IWANT, list(cmd.ids)]))

    def _peers_message(self, conn: Connection) -> bytes:
        """A PEERS frame for ``conn``: the other peers' addresses, and whether that is
        all of them (then ``conn`` knows whom this node's own broadcasts reach)."""
        others = [
            [c.peer_id, c.listen_addr[0], c.listen_addr[1]]
            for c in self._conns.values()
            if c.peer_id != conn.peer_id and c.listen_addr is not None
        ]
        complete = len(others) == len(self._conns) - (conn.peer_id in self._conns)
        if len(others) > self.options.pex_max:
            others = self._rng.sample(others, self.options.pex_max)
            complete = False
        return encode([PEERS, others, complete])

    async def _heartbeat_loop(self) -> None:
        opts = self.options
        ping = encode([PING])
        while True:
            await anyio.sleep(opts.heartbeat)
            now = monotonic()
            self._beats += 1
            for cmd in self.state.heartbeat(now):
                self._run_command(cmd)
            pex = self._pex_dirty or self._beats % opts.pex_every == 0
            self._pex_dirty = False
            for conn in [*self._conns.values(), *self._retiring]:
                reason = conn.check(
                    now,
                    idle_timeout=opts.idle_timeout,
                    frame_timeout=opts.frame_timeout,
                    write_timeout=opts.write_timeout,
                )
                if reason is not None:
                    log.warning(
                        "gossip: cut off peer %s (%s:%d): %s", conn.peer_id, *conn.remote, reason
                    )
                    self.stats["cut_off"] += 1
                    self._drop(conn, reason)
                    continue
                if now - conn.last_sent >= opts.heartbeat:
                    conn.send_control(ping)
                if pex and conn.retiring is None:
                    conn.send_control(self._peers_message(conn))
            self._maybe_dial()
