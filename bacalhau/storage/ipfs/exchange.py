"""Block exchange: fetch missing blocks from peers over the node's request channel.

A small want/have/block protocol (in the spirit of bitswap) on the node's
``bitswap`` request protocol, the same on every transport (gossip TCP, NATS,
in-memory; NATS splits frames larger than the server's ``max_payload``).
Payloads are msgpack:

* ``["have", [cid, ...]]`` -> ``[bool, ...]``: which of these blocks the peer holds.
* ``["want", [cid, ...]]`` -> ``{"blocks": [[cid, data], ...], "missing": [cid, ...]}``:
  the blocks it holds, in request order, until the reply budget (3.5 MiB) is used;
  those neither sent nor listed missing were cut for size and may be asked again.
* ``["announce", [cid, ...]]`` -> ``true``: the sender now provides these roots.

Keeping the pipe full: every provider gets a window of ``want`` requests in
flight, sized from its measured round trip and delivery rate
(:class:`~bacalhau.storage.ipfs.flow.FlowWindow`: about twice the
bandwidth-delay product, 2 to 16 requests), within a cap of bytes in flight per
fetch so memory stays flat. Replies are decoded, hashed once and written on a
worker thread, a reply's blocks in one batch (:meth:`BlockStore.put_many`). The
sending side does not hash: every block in a store was verified when it was
stored (the importer computed its hash; the exchange and CAR import checked it),
and the receiver checks every block anyway.

Finding providers: :class:`~bacalhau.storage.ipfs.records.ProviderRecords`
(bounded, expiring) of peers that announced a root; a node announces every DAG
it fetched, pinned or published. When no live record exists the node asks every
peer ``have`` (a broadcast "who has"). A fetch spreads the wanted blocks over
every provider at once and puts the work of a provider that vanishes, times out
or sends a corrupt block back in the queue for the others; when all providers
are gone it looks for providers again before giving up with
:class:`BlockNotFound`. Blocks already stored are never asked for again, so a
fetch that was killed resumes where it stopped.

Everything a peer sends is untrusted: requests are size-limited, every field
is type-checked, and no block is stored or returned unverified.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from time import monotonic
from typing import Any, Protocol

import anyio
import anyio.to_thread
import attrs
import msgpack

from ...cid import DAG_PB, AnyCid, block_digest_ok, cid_str, split_cid, to_cid
from ...errors import (
    BlockNotFound,
    CorruptBlock,
    DecodeError,
    PeerUnreachable,
    StorageError,
    TransportError,
)
from ...transport.base import Reply
from ...transport.services import PeerServices
from ._util import unwrap_group
from .blockstore import BlockStore
from .dagpb import decode_node
from .exchange_wire import pack_want_reply, parse_want_reply, want_reply_pieces
from .flow import FlowWindow
from .records import (
    DEFAULT_PROVIDER_TTL,
    DEFAULT_REPROVIDE_INTERVAL,
    ProviderRecords,
    Reprovider,
)

__all__ = ["PROTOCOL", "BlockService", "pack_want_reply"]

log = logging.getLogger(__name__)

PROTOCOL = "bitswap"
MAX_REQUEST = 128 * 1024
MAX_CIDS = 256
REPLY_BUDGET = 3 * 1024 * 1024 + 512 * 1024
"""Block bytes in one ``want`` reply (after its first block): with the framing, the reply
stays under the transports' 4 MiB frame; fewer, larger replies cost less per byte."""
MAX_REPLY = 4 * 1024 * 1024
WINDOW_LOW, WINDOW_HIGH = 2, 16
"""Bounds of the requests in flight to one provider (see FlowWindow)."""
MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
"""Bytes asked for and not yet stored, per fetch, over all its providers."""
MAX_PROVIDER_ROOTS = 4096
DISCOVERY_ROUNDS = 2
ANNOUNCE_WAIT = 2.0
"""Seconds a fetch waits for its announcement to reach the peers."""
ABSORB_THREADS = 2
"""Worker threads verifying and storing received replies at once (hashing releases the
GIL, so two keep two cores busy; more only contend)."""
GUESS_SIZE = 256 * 1024
"""Assumed size of a block whose size no parent told us."""
ANNOUNCE_BATCH = 16
"""Most roots in one announcement (a peer records at most this many from one)."""


class _Clock(Protocol):
    def now(self) -> float: ...

    def wake_at(self, at: float) -> anyio.CancelScope: ...


class _WallClock:
    def now(self) -> float:
        return time.time()

    def wake_at(self, at: float) -> anyio.CancelScope:
        return anyio.move_on_after(max(0.0, at - time.time()))


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, limit: int) -> Any:
    if not isinstance(data, bytes) or len(data) > limit:
        raise DecodeError(f"message of {len(data)} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=limit,
            max_map_len=16,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"malformed bitswap message: {exc}") from None


def _cid_list(value: Any, limit: int = MAX_CIDS) -> list[bytes]:
    if not isinstance(value, list) or len(value) > limit:
        raise DecodeError(f"expected a list of at most {limit} CIDs")
    out = []
    for item in value:
        if not isinstance(item, bytes) or not 2 <= len(item) <= 256:
            raise DecodeError("a CID must be 2-256 bytes")
        try:
            split_cid(item)
        except ValueError as exc:
            raise DecodeError(f"not a CID: {exc}") from None
        out.append(item)
    return out


@attrs.define
class _Fetch:
    """Shared state of one fetch: what is wanted, in flight, done; who provides it."""

    dag: bool
    max_bytes: int | None = attrs.field(default=None, kw_only=True)
    stored: set[bytes] | None = attrs.field(default=None, kw_only=True)
    """Where to record the CIDs this fetch stored (verified on receipt), if anywhere."""
    exceeded: bool = False
    queue: collections.deque[bytes] = attrs.Factory(collections.deque)
    seen: set[bytes] = attrs.Factory(set)
    in_flight: int = 0
    refused: dict[bytes, set[str]] = attrs.Factory(dict)
    changed: anyio.Event = attrs.Factory(anyio.Event)
    failed: dict[str, str] = attrs.Factory(dict)
    sizes: dict[bytes, int] = attrs.Factory(dict)
    received: int = 0
    received_bytes: int = 0
    windows: dict[str, FlowWindow] = attrs.Factory(dict)
    peer_in_flight: collections.Counter[str] = attrs.Factory(collections.Counter)
    peer_cids: collections.Counter[str] = attrs.Factory(collections.Counter)
    """CIDs asked of each provider and not yet answered."""
    pumps: set[str] = attrs.Factory(set)
    """Providers whose pump is running."""
    bytes_in_flight: int = 0

    def share(self, peer: str) -> int:
        """How many more CIDs ``peer`` may be asked for now: its fair share of what is
        queued or in flight, split among the providers still pumping. Without it, the
        first pump to wake takes the whole queue while the others wait."""
        active = sum(1 for p in self.pumps if p not in self.failed) or 1
        pending = len(self.queue) + self.peer_cids.total()
        return -(-pending // active) - self.peer_cids[peer]

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def add(self, cids: Iterable[bytes], sizes: dict[bytes, int] | None = None) -> None:
        for cid in cids:
            if cid not in self.seen:
                self.seen.add(cid)
                self.queue.append(cid)
        if sizes:
            self.sizes.update(sizes)
        self.notify()


@attrs.define
class BlockService:
    """The node's block store plus fetching of missing blocks from peers.

    Args:
        store: the node's :class:`BlockStore`.
        services: peers, direct requests and protocol registration (the node).
        request_timeout: seconds to wait for one ``want`` reply.
    """

    store: BlockStore
    services: PeerServices
    request_timeout: float = attrs.field(default=30.0, kw_only=True)
    discovery_timeout: float = attrs.field(default=5.0, kw_only=True)
    provider_ttl: float = attrs.field(default=DEFAULT_PROVIDER_TTL, kw_only=True)
    reprovide_interval: float = attrs.field(default=DEFAULT_REPROVIDE_INTERVAL, kw_only=True)
    stats: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    records: ProviderRecords = attrs.field(init=False)
    reprovider: Reprovider = attrs.field(init=False)
    clock: _Clock = attrs.field(factory=_WallClock, kw_only=True)
    """Time for re-announcing (the node passes its own, virtual in tests)."""
    _arrived: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    _absorbing: anyio.CapacityLimiter = attrs.field(
        factory=lambda: anyio.CapacityLimiter(ABSORB_THREADS), init=False
    )
    _serving: anyio.Semaphore = attrs.field(factory=lambda: anyio.Semaphore(8), init=False)
    _recent: collections.OrderedDict[str, None] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def __attrs_post_init__(self) -> None:
        self.records = ProviderRecords(ttl=self.provider_ttl, max_roots=MAX_PROVIDER_ROOTS)
        self.reprovider = Reprovider(
            interval=self.reprovide_interval, max_roots=MAX_PROVIDER_ROOTS, batch=ANNOUNCE_BATCH
        )

    def register(self) -> None:
        """Serve this node's blocks to peers (called once when the node starts)."""
        self.services.register_protocol(PROTOCOL, self._handle)

    # --- serving ------------------------------------------------------------------------

    async def _handle(self, peer_id: str, payload: bytes) -> Reply:
        try:
            message = _unpack(payload, MAX_REQUEST)
            if (
                not isinstance(message, list)
                or len(message) != 2
                or not isinstance(message[0], str)
            ):
                raise DecodeError("expected [op, cids]")
            op, cids = message[0], _cid_list(message[1])
        except DecodeError as exc:
            self.stats["refused_requests"] += 1
            return _pack({"error": str(exc)})
        if op == "have":
            have = await anyio.to_thread.run_sync(lambda: [self.store.has(c) for c in cids])
            return _pack(have)
        if op == "want":
            async with self._serving:
                blocks, missing = await anyio.to_thread.run_sync(self._serve_want, cids)
            self.stats["blocks_served"] += len(blocks)
            # in pieces: the transport sends the block bytes as read, without a join
            return want_reply_pieces(blocks, missing)
        if op == "announce":
            for cid in cids[:ANNOUNCE_BATCH]:
                self.records.add(cid, peer_id)
            return _pack(True)
        self.stats["refused_requests"] += 1
        return _pack({"error": f"unknown op {op!r}"})

    def _serve_want(self, cids: list[bytes]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        blocks: list[tuple[bytes, bytes]] = []
        missing: list[bytes] = []
        used = 0
        for cid in cids:
            try:
                if blocks and used + self.store.size(cid) > REPLY_BUDGET:
                    break  # the rest are cut for size; the peer asks again
                data = self.store.get(cid)  # verified when stored; the receiver checks it
            except BlockNotFound:
                missing.append(cid)
                continue
            blocks.append((cid, data))
            used += len(data) + len(cid)
        return blocks, missing

    # --- providers ----------------------------------------------------------------------

    async def announce(self, cid: AnyCid) -> int:
        """Tell every peer this node provides ``cid``; return how many heard it. The
        root is announced again every ``reprovide_interval`` while it is held here
        (see :meth:`reprovide`)."""
        return await self._announce([to_cid(cid)])

    async def _announce(self, roots: list[bytes]) -> int:
        payload = _pack(["announce", roots])
        heard = 0

        async def tell(peer: str) -> None:
            nonlocal heard
            with contextlib.suppress(TransportError, TimeoutError):
                await self.services.request(peer, PROTOCOL, payload, timeout=self.discovery_timeout)
                heard += 1

        now = self.clock.now()
        for root in roots:
            self.reprovider.provided(root, now)
        async with anyio.create_task_group() as tg:
            for peer in sorted(self.services.peers()):
                tg.start_soon(tell, peer)
        self.stats["announced"] += len(roots)
        return heard

    async def reprovide(self) -> None:
        """Announce again, for as long as the node runs, every root this node
        provides, before the peers' records of it lapse; a root no longer wholly
        held here is dropped instead. At most ``ANNOUNCE_BATCH`` roots a round, in
        one message to each peer."""
        while True:
            roots = self.reprovider.due(self.clock.now())
            if roots:
                held = await anyio.to_thread.run_sync(self._held, roots)
                for root in set(roots) - set(held):
                    self.reprovider.drop(root)
                    self.stats["reprovide_dropped"] += 1
                if held:
                    with anyio.move_on_after(self.discovery_timeout + 1):
                        await self._announce(held)
                    for root in held:  # even if the round timed out: due again later
                        self.reprovider.provided(root, self.clock.now())
                    self.stats["reprovided"] += len(held)
                continue
            at = self.reprovider.next_at()
            with self.clock.wake_at(
                at if at is not None else self.clock.now() + self.reprovider.interval
            ):
                await anyio.sleep_forever()

    def _held(self, roots: list[bytes]) -> list[bytes]:
        return [root for root in roots if self.store.has_dag(root)]

    async def find_providers(
        self,
        cid: AnyCid,
        *,
        exclude: Iterable[str] = (),
        among: Iterable[str] | None = None,
        ask: bool = False,
    ) -> list[str]:
        """Peers that hold the block ``cid``.

        Peers with a live provider record come first; only when there is none (or
        with ``ask``) is every other peer (or only those ``among``) asked ``have``.
        """
        raw = to_cid(cid)
        excluded = set(exclude)
        peers = self.services.peers()
        if among is not None:
            peers = peers & frozenset(among)
        found = [p for p in self.records.providers(raw) if p in peers and p not in excluded]
        if found and not ask:
            self.stats["provider_records_used"] += 1
            return found
        payload = _pack(["have", [raw]])
        answers: list[str] = []

        async def ask_peer(peer: str) -> None:
            try:
                reply = await self.services.request(
                    peer, PROTOCOL, payload, timeout=self.discovery_timeout
                )
                have = _unpack(reply, 1024)
            except (TransportError, TimeoutError, DecodeError):
                return
            if isinstance(have, list) and have[:1] == [True]:
                answers.append(peer)
                self.records.add(raw, peer)

        async with anyio.create_task_group() as tg:
            for peer in sorted(peers - excluded - set(found)):
                tg.start_soon(ask_peer, peer)
        self.stats["discoveries"] += 1
        return found + sorted(answers)

    def arrival(self) -> anyio.Event:
        """An event set the next time fetched blocks are stored (or a fetch ends)."""
        return self._arrived

    def signal_arrival(self) -> None:
        """Wake everyone waiting on :meth:`arrival`."""
        self._arrived.set()
        self._arrived = anyio.Event()

    # --- local --------------------------------------------------------------------------

    async def has_locally(self, cid: AnyCid) -> bool:
        """True if the block is in the local store (no network)."""
        return await anyio.to_thread.run_sync(self.store.has, to_cid(cid))

    async def has_dag_locally(self, cid: AnyCid) -> bool:
        """True if every block of the DAG under ``cid`` is in the local store."""
        return await anyio.to_thread.run_sync(self.store.has_dag, to_cid(cid))

    def _read_local(self, cids: Sequence[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for cid in cids:
            try:
                out.append(self.store.get_verified(cid))
            except BlockNotFound:
                out.append(None)
            except CorruptBlock:
                self.stats["corrupt_local"] += 1
                out.append(None)
        return out

    # --- fetching -----------------------------------------------------------------------

    async def get(self, cid: AnyCid) -> bytes:
        """A block's verified bytes: from the local store, else fetched from peers.

        Raises:
            BlockNotFound: no reachable peer has it.
        """
        return (await self.get_many([to_cid(cid)]))[0]

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        """Verified bytes of several blocks, fetching the missing ones in parallel."""
        raw = [to_cid(c) for c in cids]
        local = await anyio.to_thread.run_sync(self._read_local, raw)
        missing = [c for c, data in zip(raw, local, strict=True) if data is None]
        if not missing:
            return [d for d in local if d is not None]
        await self._fetch(missing, dag=False)
        again = await anyio.to_thread.run_sync(self._read_local, missing)
        fetched = dict(zip(missing, again, strict=True))
        out = []
        for cid, data in zip(raw, local, strict=True):
            value = data if data is not None else fetched.get(cid)
            if value is None:
                raise BlockNotFound(f"block {cid_str(cid)} vanished from the store after fetching")
            out.append(value)
        return out

    async def fetch_dag(
        self, cid: AnyCid, *, max_bytes: int | None = None, stored: set[bytes] | None = None
    ) -> int:
        """Make every block of the DAG under ``cid`` local; return how many were fetched.

        Args:
            max_bytes: stop with :class:`StorageError` once more block bytes than this
                have been fetched (a bound on what a hostile DAG can make us store).
            stored: a set to which the CID of each block is added as this fetch
                stores it (verified on receipt), while the fetch runs.

        Raises:
            BlockNotFound: some blocks could not be had from any reachable peer.
            StorageError: ``max_bytes`` was exceeded.
        """
        raw = to_cid(cid)
        missing = await anyio.to_thread.run_sync(self.store.missing, raw)
        fetched = (
            await self._fetch(missing, dag=True, max_bytes=max_bytes, stored=stored)
            if missing
            else 0
        )
        if fetched:
            # others may fetch it from here now; best effort, and never holding up the
            # caller for long behind an unresponsive peer
            with anyio.move_on_after(ANNOUNCE_WAIT):
                await self.announce(raw)
        return fetched

    async def export(
        self,
        cid: AnyCid,
        dest: Path,
        *,
        read_only: bool = False,
        max_size: int | None = None,
        **options: Any,
    ) -> Path:
        """Fetch the DAG under ``cid`` and write it to ``dest`` while blocks arrive
        (see :func:`~bacalhau.storage.ipfs.stream.export_streaming`; ``options`` are its
        ``limits`` and ``symlinks``)."""
        from .stream import export_streaming

        return await export_streaming(
            self, cid, dest, read_only=read_only, max_size=max_size, **options
        )

    async def pin(self, cid: AnyCid) -> None:
        """Fetch the whole DAG under ``cid`` and pin it recursively."""
        raw = to_cid(cid)
        cm = self.store.guard()
        await anyio.to_thread.run_sync(cm.__enter__)
        try:
            await self.fetch_dag(raw)
            await anyio.to_thread.run_sync(self.store.pin, raw)
        finally:
            cm.__exit__(None, None, None)

    async def _fetch(
        self,
        cids: Sequence[bytes],
        *,
        dag: bool,
        max_bytes: int | None = None,
        stored: set[bytes] | None = None,
    ) -> int:
        state = _Fetch(dag, max_bytes=max_bytes, stored=stored)
        state.add(cids)
        first = cids[0]
        excluded: set[str] = set()
        for _ in range(DISCOVERY_ROUNDS):
            providers: list[str] = []
            if not dag and self._recent:
                # a file read window by window: ask the peers that just served us first
                providers = await self.find_providers(
                    first, exclude=excluded, among=list(self._recent)
                )
            if not providers:
                providers = await self.find_providers(first, exclude=excluded, ask=bool(excluded))
            if not providers and state.queue:
                # the first wanted block may be held by nobody, but others may be
                providers = await self.find_providers(state.queue[0], exclude=excluded, ask=True)
            if not providers:
                break
            with unwrap_group():
                async with anyio.create_task_group() as tg:
                    state.pumps.update(providers)  # all of them, before the first pump takes
                    for peer in providers:
                        state.windows.setdefault(peer, FlowWindow(low=WINDOW_LOW, high=WINDOW_HIGH))
                        tg.start_soon(self._pump, state, peer)
            excluded |= set(state.failed)
            if state.exceeded:
                self.stats["blocks_fetched"] += state.received
                self.stats["bytes_fetched"] += state.received_bytes
                raise StorageError(
                    f"fetched {state.received_bytes} bytes of {cid_str(cids[0])},"
                    f" more than the {state.max_bytes} allowed"
                )
            if not state.queue:
                break
            first = state.queue[0]
            state.refused.clear()
        if state.queue:
            reasons = "; ".join(f"{p[-8:]}: {r}" for p, r in sorted(state.failed.items()))
            raise BlockNotFound(
                f"{len(state.queue)} block(s) (first {cid_str(state.queue[0])}) could not be"
                f" fetched from any reachable peer" + (f" ({reasons})" if reasons else "")
            )
        self.stats["blocks_fetched"] += state.received
        self.stats["bytes_fetched"] += state.received_bytes
        return state.received

    def _take(self, state: _Fetch, peer: str) -> list[bytes]:
        batch: list[bytes] = []
        skipped: list[bytes] = []
        budget = REPLY_BUDGET
        most = min(64, state.share(peer))
        while state.queue and len(batch) < most and budget > 0:
            cid = state.queue.popleft()
            if peer in state.refused.get(cid, ()):
                skipped.append(cid)
            else:
                batch.append(cid)
                budget -= state.sizes.get(cid, GUESS_SIZE)
        state.queue.extendleft(reversed(skipped))
        return batch

    async def _pump(self, state: _Fetch, peer: str) -> None:
        """Keep the window's ``limit`` of requests out to ``peer`` (one task per
        request) until nothing is left to ask for or the peer fails. One pump per
        provider wakes on each change, not one task per window slot."""
        window = state.windows[peer]
        try:
            await self._pump_until_done(state, peer, window)
        finally:
            state.pumps.discard(peer)
            state.notify()  # the others' shares grow

    async def _pump_until_done(self, state: _Fetch, peer: str, window: FlowWindow) -> None:
        async with anyio.create_task_group() as tg:
            while peer not in state.failed:
                if (
                    state.peer_in_flight[peer] < window.limit
                    and state.bytes_in_flight < MAX_INFLIGHT_BYTES
                ):
                    batch = self._take(state, peer)
                    if batch:
                        expect = sum(state.sizes.get(c, GUESS_SIZE) for c in batch)
                        state.in_flight += 1
                        state.peer_in_flight[peer] += 1
                        state.peer_cids[peer] += len(batch)
                        state.bytes_in_flight += expect
                        tg.start_soon(self._request, state, peer, batch, expect)
                        continue
                    if state.in_flight == 0:
                        state.notify()
                        return
                await state.changed.wait()

    async def _request(self, state: _Fetch, peer: str, batch: list[bytes], expect: int) -> None:
        """One ``want`` request of the pump for ``peer``."""
        window = state.windows[peer]
        sent = monotonic()
        try:
            nbytes = await self._fetch_batch(state, peer, batch)
            window.on_reply(sent, monotonic(), nbytes)
        except (TransportError, TimeoutError, DecodeError, CorruptBlock) as exc:
            window.on_failure()
            state.failed[peer] = str(exc) or type(exc).__name__
            state.queue.extendleft(reversed(batch))
            self.stats["provider_failures"] += 1
            log.info("block exchange: dropping provider %s: %s", peer[-8:], exc)
        finally:
            state.in_flight -= 1
            state.peer_in_flight[peer] -= 1
            state.peer_cids[peer] -= len(batch)
            state.bytes_in_flight -= expect
            self.stats["window_max"] = max(self.stats["window_max"], window.limit)
            state.notify()

    async def _fetch_batch(self, state: _Fetch, peer: str, batch: list[bytes]) -> int:
        """Ask ``peer`` for ``batch``; store what it sent. Returns the reply's size."""
        payload = _pack(["want", batch])
        with anyio.fail_after(self.request_timeout + 1):
            reply = await self.services.request(
                peer, PROTOCOL, payload, timeout=self.request_timeout
            )
        got, missing, children, sizes, bad, nbytes = await anyio.to_thread.run_sync(
            self._absorb, reply, batch, state.dag, limiter=self._absorbing
        )
        state.received += len(got)
        state.received_bytes += nbytes
        if state.stored is not None:
            state.stored.update(got)
        if state.max_bytes is not None and state.received_bytes > state.max_bytes:
            state.exceeded = True  # every worker stops; _fetch reports it
        if state.exceeded:
            state.queue.clear()
            return len(reply)
        if got:
            self.signal_arrival()
        if got and not bad:
            self._recent.pop(peer, None)
            self._recent[peer] = None
            while len(self._recent) > 4:
                self._recent.popitem(last=False)
        leftover = [c for c in batch if c not in got]
        for cid in leftover:
            if cid in missing:
                state.refused.setdefault(cid, set()).add(peer)
        state.queue.extendleft(reversed(leftover))
        if children:
            state.add(children, sizes)
        if bad:
            self.stats["corrupt_received"] += len(bad)
            raise CorruptBlock(f"sent {len(bad)} block(s) that do not match their CIDs")
        if all(peer in state.refused.get(c, ()) for c in state.queue) and state.queue:
            # this provider lacks everything that is left: stop asking it
            state.failed.setdefault(peer, "does not have the remaining blocks")
        return len(reply)

    def _absorb(
        self, reply_bytes: bytes, batch: list[bytes], dag: bool
    ) -> tuple[set[bytes], set[bytes], list[bytes], dict[bytes, int], set[bytes], int]:
        """Decode a ``want`` reply, verify its blocks and store the good ones in one
        batch (worker thread).

        Returns:
            (CIDs stored, CIDs the peer said it lacks, missing blocks below the stored
            ones to fetch, their expected sizes, CIDs that were corrupt, block bytes stored).

        Raises:
            DecodeError / PeerUnreachable: a malformed or refusing reply.
        """
        if not isinstance(reply_bytes, bytes) or len(reply_bytes) > MAX_REPLY:
            raise DecodeError(f"want reply of {len(reply_bytes)} bytes exceeds {MAX_REPLY}")
        wanted = set(batch)
        parsed = parse_want_reply(reply_bytes, max_items=MAX_CIDS)
        blocks: list[tuple[bytes, bytes | memoryview]] = []
        listed: Any
        if parsed is not None:  # our own layout: the blocks stay views into the reply
            pairs, listed = parsed
            if len(pairs) > len(batch):
                raise DecodeError("malformed want reply")
            for cid, view in pairs:
                if cid not in wanted:
                    raise DecodeError("want reply holds a block we did not ask for")
                blocks.append((cid, view))
        else:
            reply = _unpack(reply_bytes, MAX_REPLY)
            if not isinstance(reply, dict) or "error" in reply:
                why = reply.get("error") if isinstance(reply, dict) else reply
                raise PeerUnreachable(f"refused our request: {why!r}")
            pairs_any = reply.get("blocks")
            if not isinstance(pairs_any, list) or len(pairs_any) > len(batch):
                raise DecodeError("malformed want reply")
            for pair in pairs_any:
                if (
                    not isinstance(pair, list)
                    or len(pair) != 2
                    or not isinstance(pair[0], bytes)
                    or not isinstance(pair[1], bytes)
                    or pair[0] not in wanted
                ):
                    raise DecodeError("want reply holds a block we did not ask for")
                blocks.append((pair[0], pair[1]))
            listed = reply.get("missing", [])
        missing = set(_cid_list(listed, MAX_CIDS)) & wanted
        good: list[tuple[bytes, Sequence[bytes | memoryview]]] = []
        bad: set[bytes] = set()
        nbytes = 0
        for cid, data in blocks:
            if block_digest_ok(cid, data):
                good.append((cid, (data,)))
                nbytes += len(data)
            else:
                bad.add(cid)
        self.store.put_many(good)
        children: list[bytes] = []
        sizes: dict[bytes, int] = {}
        if dag:
            for cid, (data,) in good:
                if split_cid(cid)[1] != DAG_PB or data[:1] == b"\x0a":
                    continue  # raw, or dag-pb that starts with Data: a leaf (Links come first)
                try:
                    links = decode_node(data).links
                except DecodeError:
                    continue
                for link in links:
                    if link.hash in sizes:
                        continue
                    below = self.store.missing(link.hash)
                    children.extend(below)
                    if below == [link.hash] and link.tsize is not None:
                        # a leaf's tsize is its size; a subtree's is more than its block
                        sizes[link.hash] = min(link.tsize, REPLY_BUDGET)
        return {cid for cid, _ in good}, missing, children, sizes, bad, nbytes
