"""The Node: one transport, a requester, a compute side and their plugins.

The node is the I/O driver around the sans-IO state machines. Every input (a
frame from the transport, a client's submit, a timer, an execution's outcome)
becomes an event; the node feeds it to the state machines and carries out the
commands they return. Feeding is synchronous and never re-entered, so the
state machines see one event at a time without locks.

Frames are checked in this order: size and msgpack shape, the Ed25519
signature (once per process, through a shared :class:`~bacalhau.wire.VerifiedCache`,
so a frame heard by many nodes or from many peers is verified once), the
message id against a replay cache and the send time against
``max_message_age``, the message's fields, and finally (in the state machines)
the sender's role for that job. The replay check comes after the signature so
that a forged frame cannot burn a genuine message's id.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import attrs

from ..compute.bidding import (
    BidRequest,
    BidStrategy,
    CapacityStrategy,
    DataLocalityStrategy,
    SupportStrategy,
    decide,
)
from ..compute.capacity import Capacity, ComputeConfig
from ..compute.runner import ExecutionRunner
from ..errors import (
    BacalhauError,
    JobNotFound,
    PeerUnreachable,
    TransportError,
    ValidationError,
    VerificationError,
    WireError,
)
from ..identity import Identity
from ..models import JobEvent, JobResult, JobSpec, NodeInfo
from ..protocol import commands as c
from ..protocol.compute import ComputeState
from ..protocol.events import (
    BidDecided,
    BidReviewed,
    CancelJob,
    Event,
    MessageReceived,
    ProposalOpened,
    SubmitJob,
    TimerFired,
)
from ..protocol.messages import (
    REQUESTER_KINDS,
    Message,
    ResultsProposed,
    decode_message,
    encode_message,
)
from ..protocol.requester import RequesterConfig, RequesterState
from ..transport.base import Transport, TransportHandler
from ..verifier.commitment import unseal_commitment
from ..wire import VerifiedCache, decode_envelope, encode_envelope, pack, unpack
from .plugins import Plugins, default_plugins
from .services import ProtocolHandler
from .store import StateStore, StoreError
from .timers import TimerQueue

__all__ = ["JobHandle", "Node"]

log = logging.getLogger("bacalhau.node")

EVENT_PROTOCOL = "event"
SEND_BACKOFF = (0.05, 0.25, 1.0, 0.0)
"""Pauses between the (at most four) attempts of a direct send."""
SEND_TIMEOUT = 10.0
OUTBOX_LIMIT = 10_000
"""Messages queued for one peer before new ones are dropped (the protocol's timers cover loss)."""


_DEFAULT_REQUESTER = RequesterConfig()
_DEFAULT_COMPUTE = ComputeConfig()


class JobHandle:
    """A submitted job. ``await handle.wait()`` for its :class:`JobResult`."""

    def __init__(self, node: Node, job_id: str) -> None:
        self.node = node
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id})"

    def result(self) -> JobResult:
        """The job as it stands now (state may not be terminal yet)."""
        return self.node.describe(self.job_id)

    async def wait(self, timeout: float | None = None) -> JobResult:
        """Wait until the job is completed, failed or cancelled.

        Raises:
            TimeoutError: not terminal within ``timeout`` seconds (the job goes on).
        """
        try:
            with anyio.fail_after(timeout):
                while True:
                    result = self.result()
                    if result.state.terminal:
                        return result
                    await self.node.changed(self.job_id).wait()
        except TimeoutError:
            state = self.result().state.value
            raise TimeoutError(f"job {self.job_id} still {state} after {timeout:g}s") from None

    async def events(self) -> AsyncIterator[JobEvent]:
        """Every event of the job's history, then new ones as they happen, until terminal."""
        seen = 0
        while True:
            result = self.result()
            for event in result.events[seen:]:
                yield event
            seen = len(result.events)
            if result.state.terminal:
                return
            await self.node.changed(self.job_id).wait()

    async def cancel(self, reason: str = "cancelled by the user") -> None:
        await self.node.cancel(self.job_id, reason)


class Node(TransportHandler):
    """A bacalhau node: requester and compute in one, over any transport.

    Use as ``async with Node(...) as node:`` or run it in your own task group
    with ``await tg.start(node.run)``.

    Args:
        transport: how frames move (its ``node_id`` must match ``identity``).
        identity: the node's keys; default: loaded or created in ``data_dir``.
        data_dir: where blocks, executions and state live; default: a temp dir
            removed when the node stops.
        requester / compute: the two halves' settings; ``compute=None`` makes a
            requester-only node, ``requester=None`` a compute-only node.
        plugins: executors, storage providers, verifiers and publishers by name, or a
            function of the node's services returning them (called when the node starts,
            so plugins can use its data dir and block store); default: every built-in
            plus entry points (:func:`~bacalhau.node.plugins.default_plugins`).
        bid_strategies: extra bid strategies, run after the built-in ones.
        bid_acceptance: requester side: strategies every bid must pass before it can be
            chosen (``BidRequest.node_id`` is the bidder); the requester's
            ``acceptance_probe_http`` / ``acceptance_probe_exec`` hooks are added to them.
        verify_cache: share one between the nodes of a process.
        seed: seeds the requester's random choice of bids (for reproducible tests).
        max_message_age: envelopes older than this many seconds are refused as replays.
        durable: keep jobs, executions and reputation in SQLite in ``data_dir`` and
            recover them on restart; default: on when ``data_dir`` is given.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        identity: Identity,
        data_dir: Path | None = None,
        requester: RequesterConfig | None = _DEFAULT_REQUESTER,
        compute: ComputeConfig | None = _DEFAULT_COMPUTE,
        plugins: Plugins | Callable[[Any], Plugins] | None = None,
        bid_strategies: Sequence[BidStrategy] = (),
        bid_acceptance: Sequence[BidStrategy] = (),
        verify_cache: VerifiedCache | None = None,
        seed: int | None = None,
        max_message_age: float = 600.0,
        durable: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if transport.node_id != identity.node_id:
            raise ValidationError("transport and identity belong to different nodes")
        self.identity = identity
        self.node_id = identity.node_id
        self.transport = transport
        self.durable = (data_dir is not None) if durable is None else durable
        if self.durable and data_dir is None:
            raise ValidationError("a durable node needs a data_dir")
        self.store: StateStore | None = None
        self._data_dir = data_dir
        self.requester_config = requester
        self.compute_config = compute
        self._plugins = plugins
        self._extra_strategies = tuple(bid_strategies)
        self.verify_cache = verify_cache or VerifiedCache()
        self.clock = clock
        self.max_message_age = max_message_age
        from ..compute.hooks import ExecHook, HttpHook

        rconfig = requester or RequesterConfig()
        self.acceptance: list[BidStrategy] = list(bid_acceptance)
        label = "bid acceptance probe"
        if rconfig.acceptance_probe_http:
            self.acceptance.append(
                HttpHook(rconfig.acceptance_probe_http, rconfig.acceptance_probe_timeout, label)
            )
        if rconfig.acceptance_probe_exec:
            self.acceptance.append(
                ExecHook(rconfig.acceptance_probe_exec, rconfig.acceptance_probe_timeout, label)
            )
        if self.acceptance and not rconfig.bid_review:
            rconfig = attrs.evolve(rconfig, bid_review=True)
        self.requester = RequesterState(
            self.node_id,
            identity.seal_public_key,
            config=rconfig,
            rng=random.Random(seed),
        )
        self.compute = ComputeState(self.node_id)
        self.stats: Counter[str] = Counter()
        self._protocols: dict[str, ProtocolHandler] = {}
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._inbox: deque[Event] = deque()
        self._pumping = False
        self._changes: dict[str, anyio.Event] = {}
        self._outboxes: dict[str, Any] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._timers = TimerQueue(clock=clock, fire=lambda key: self._feed(TimerFired(key)))
        self._ctx_tg: anyio.abc.TaskGroup | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.plugins: Plugins
        self.runner: ExecutionRunner
        self.capacity: Capacity
        self.strategies: list[BidStrategy] = []
        self.started = anyio.Event()
        from ..live.node import NodeWatch

        self.watch = NodeWatch(self)
        """Live logs, the event stream and network info (:mod:`bacalhau.live`)."""

    def __repr__(self) -> str:
        return f"Node({self.node_id})"

    # --- NodeServices ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self._data_dir is not None, "node not started"
        return self._data_dir

    @property
    def blockstore(self) -> Any:
        return self.plugins.blockstore

    @property
    def blocks(self) -> Any:
        return self.plugins.blocks

    def peers(self) -> frozenset[str]:
        return self.transport.peers()

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float = 10.0
    ) -> bytes:
        return await self.transport.request(peer_id, pack([protocol, payload]), timeout=timeout)

    def register_protocol(self, protocol: str, handler: ProtocolHandler) -> None:
        if protocol == EVENT_PROTOCOL or protocol in self._protocols:
            raise ValidationError(f"protocol {protocol!r} is already registered")
        self._protocols[protocol] = handler

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        self._ctx_tg = anyio.create_task_group()
        await self._ctx_tg.__aenter__()
        try:
            await self._ctx_tg.start(self.run)
        except BaseException:
            self._ctx_tg.cancel_scope.cancel()
            await self._ctx_tg.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._ctx_tg is not None
        self._ctx_tg.cancel_scope.cancel()
        return await self._ctx_tg.__aexit__(et, e, tb)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the node and serve until cancelled."""
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bacalhau-node-")
            self._data_dir = Path(self._tmp.name)
        try:
            try:
                self._setup()
            except OSError as exc:
                raise StoreError(
                    f"cannot use the data dir {self.data_dir}: "
                    f"{exc.strerror or exc} ({exc.filename})"
                ) from None
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.runner.bind(tg)
                if self.store is not None:
                    await tg.start(self.store.run)
                await self.plugins.start(self)
                tg.start_soon(self._timers.run)
                self.watch.register()
                await tg.start(self.transport.run, self)
                await tg.start(self.watch.run)
                self.started.set()
                if self.store is not None:
                    self._apply([*self.requester.recover(self.clock()), *self.compute.recover()])
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.plugins.close()
        finally:
            self._tg = None
            for box in self._outboxes.values():
                box.close()
            self._outboxes.clear()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
                self._data_dir = None

    def _setup(self) -> None:
        """Open the data dir, plugins, runner, strategies and store (blocking, at start)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._plugins is None:
            self.plugins = default_plugins(self)
        elif isinstance(self._plugins, Plugins):
            self.plugins = self._plugins
        else:
            self.plugins = self._plugins(self)
        compute = self.compute_config or ComputeConfig()
        self.capacity = Capacity(compute.capacity, compute.max_executions, compute.queue_size)
        self.runner = ExecutionRunner(
            node_id=self.node_id,
            root=self.data_dir / "executions",
            executors=self.plugins.executors,
            storage=self.plugins.storage,
            verifiers=self.plugins.verifiers,
            publishers=self.plugins.publishers,
            capacity=self.capacity,
            feed=self._feed,
            limits=compute.limits,
        )
        self.strategies = [
            SupportStrategy(
                self.plugins.executors,
                self.plugins.storage,
                self.plugins.verifiers,
                self.plugins.publishers,
            ),
            CapacityStrategy(self.capacity),
        ]
        if compute.data_locality in ("local", "nearby"):
            self.strategies.append(
                DataLocalityStrategy(self.plugins.storage, mode=compute.data_locality)
            )
        from ..compute.hooks import hook_strategies

        self.strategies.extend(hook_strategies(compute))
        self.strategies.extend(self._extra_strategies)
        if self.durable:
            self.store = StateStore(self.data_dir / "state.db")
            self._restore(self.store)

    def _restore(self, store: StateStore) -> None:
        from collections import Counter

        requester_jobs, compute_jobs, reputation = store.load()
        self.requester.jobs = {j.job_id: j for j in requester_jobs}
        self.compute.jobs = {j.job_id: j for j in compute_jobs}
        self.requester.reputation = {n: Counter(c) for n, c in reputation.items()}
        if requester_jobs or compute_jobs:
            log.info(
                "%s: recovered %d jobs and %d executions from %s",
                self.node_id[-8:],
                len(requester_jobs),
                len(compute_jobs),
                store.path,
            )

    # --- the public API -------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> JobHandle:
        """Submit ``spec`` with this node as its requester; return at once with a handle.

        Raises:
            ValidationError: the spec's engine parameters are wrong (checked here when
                this node has that executor).
            StoreError: a durable node could not record the job (disk full, ...).
        """
        if self.requester_config is None:
            raise BacalhauError("this node is compute-only; submit to a requester node")
        if not isinstance(spec, JobSpec):
            raise ValidationError(f"expected a JobSpec, got {type(spec).__name__}")
        if not self.started.is_set():
            raise BacalhauError("node is not running (use 'async with node' or tg.start(node.run))")
        executor = self.plugins.executors.get(spec.engine.type)
        if executor is not None:
            executor.validate(spec)  # a bad engine parameter fails here, not on a far node
        if self.store is not None and self.store.error is not None:
            raise self.store.error
        job_id = f"j-{uuid.uuid4()}"
        self._feed(SubmitJob(job_id, spec, peers=len(self.peers())))
        if self.store is not None:
            try:
                await self.store.flush()  # the job is on disk before we say it is accepted
            except StoreError:
                self._feed(CancelJob(job_id, "the node could not record the job"))
                raise
        return JobHandle(self, job_id)

    async def run_job(self, spec: JobSpec, *, timeout: float | None = None) -> JobResult:
        """Submit and wait: the one-line way to run a job."""
        return await (await self.submit(spec)).wait(timeout)

    # --- data -----------------------------------------------------------------------------

    def _need_blocks(self) -> Any:
        if self.plugins.blocks is None:
            raise BacalhauError("this node has no block store (bacalhau.storage.ipfs missing)")
        return self.plugins.blocks

    async def add_data(self, data: bytes | str | Path, *, cid_version: int = 0) -> str:
        """Store a file, a directory (recursively) or bytes in this node's block store,
        pinned, and return its CID (the one ``ipfs add`` prints for the same data).
        Other nodes fetch it from here by block exchange."""
        from ..storage.ipfs.importer import add_bytes, add_path

        self._need_blocks()
        if isinstance(data, bytes):
            return await add_bytes(self.blockstore, data, cid_version=cid_version, pin=True)
        return await add_path(self.blockstore, Path(data), cid_version=cid_version, pin=True)

    async def get_data(self, cid: str, dest: Path) -> Path:
        """Write the file or directory at ``cid`` to ``dest`` (fetched from peers when
        needed from every provider at once, every block verified against its hash; files
        are written while their blocks arrive)."""
        from ..storage.ipfs.exporter import export_to_path

        blocks = self._need_blocks()
        if hasattr(blocks, "export"):
            return await blocks.export(cid, Path(dest))  # type: ignore[no-any-return]
        return await export_to_path(blocks, cid, Path(dest))

    async def cat(self, cid: str, *, max_size: int = 64 * 1024 * 1024) -> bytes:
        """The bytes of the file at ``cid`` (a path inside a directory CID: ``CID/a/b``)."""
        from ..storage.ipfs.exporter import read_all, resolve

        blocks = self._need_blocks()
        root, _, path = cid.partition("/")
        target = await resolve(blocks, root, path) if path else root
        return await read_all(blocks, target, max_size=max_size)

    def resolve(self, job_id_or_prefix: str) -> str:
        """The full id of a job this node requested, given its id or a unique prefix."""
        if job_id_or_prefix in self.requester.jobs:
            return job_id_or_prefix
        matches = [j for j in self.requester.jobs if j.startswith(job_id_or_prefix)]
        if len(matches) == 1 and len(job_id_or_prefix) >= 3:
            return matches[0]
        if len(matches) > 1:
            raise JobNotFound(
                f"job id prefix {job_id_or_prefix!r} is ambiguous ({len(matches)} jobs match)"
            )
        raise JobNotFound(f"no job {job_id_or_prefix!r} on this node")

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, self.resolve(job_id))

    def describe(self, job_id: str) -> JobResult:
        return self.requester.result(self.resolve(job_id))

    def list_jobs(self) -> list[JobResult]:
        return [self.requester.result(j) for j in self.requester.jobs]

    async def cancel(self, job_id: str, reason: str = "cancelled by the user") -> None:
        self._feed(CancelJob(self.resolve(job_id), reason))

    def info(self) -> NodeInfo:
        p = self.plugins
        return NodeInfo(
            node_id=self.node_id,
            executors=tuple(sorted(p.executors)),
            verifiers=tuple(sorted(p.verifiers)),
            publishers=tuple(sorted(p.publishers)),
            storage=tuple(sorted(p.storage)),
            peers=tuple(sorted(self.peers())),
            capacity=self.capacity.total,
            running=self.capacity.running,
            version=_version(),
            transport=dict(self.transport.status()),
        )

    def changed(self, job_id: str) -> anyio.Event:
        """An event set the next time the job's record changes (then replaced)."""
        event = self._changes.get(job_id)
        if event is None:
            event = self._changes[job_id] = anyio.Event()
        return event

    # --- the driver: feed events, carry out commands --------------------------------------

    def _feed(self, event: Event) -> None:
        self._inbox.append(event)
        self._pump()

    def _apply(self, commands: list[c.Command]) -> None:
        """Carry out commands produced outside ``_feed`` (recovery), then pump."""
        for command in commands:
            self._execute(command)
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._inbox:
                ev = self._inbox.popleft()
                now = self.clock()
                try:
                    commands = self._dispatch(ev, now)
                except Exception:
                    log.exception("%s: state machine failed on %r", self.node_id[-8:], ev)
                    self.stats["internal_errors"] += 1
                    continue
                for command in commands:
                    self._execute(command)
        finally:
            self._pumping = False

    def _dispatch(self, event: Event, now: float) -> list[c.Command]:
        if isinstance(event, MessageReceived):
            if type(event.message).__name__ in REQUESTER_KINDS:
                return self._compute(event, now) if self.compute_config else []
            return self.requester.handle(event, now) if self.requester_config else []
        if isinstance(event, TimerFired) and event.key[1] == "forget":
            return self._compute(event, now)
        if isinstance(event, SubmitJob | CancelJob | ProposalOpened | TimerFired | BidReviewed):
            return self.requester.handle(event, now)
        return self._compute(event, now)

    def _compute(self, event: Event, now: float) -> list[c.Command]:
        commands = self.compute.handle(event, now)
        if self.store is not None:
            if isinstance(event, MessageReceived):
                job_id = event.message.job_id
            elif isinstance(event, TimerFired):
                job_id = event.key[0]
            else:
                job_id = getattr(event, "job_id", "")
            job = self.compute.jobs.get(job_id)
            if job is not None:
                self.store.save_compute(job)
            elif isinstance(event, TimerFired):
                self.store.forget_compute(job_id)
        return commands

    def _execute(self, cmd: c.Command) -> None:
        if isinstance(cmd, c.Broadcast):
            self._send_message(None, cmd.message)
        elif isinstance(cmd, c.Send):
            self._send_message(cmd.to, cmd.message)
        elif isinstance(cmd, c.SetTimer):
            self._timers.set(cmd.key, cmd.at)
        elif isinstance(cmd, c.CancelTimers):
            self._timers.cancel(cmd.job_id, cmd.name, cmd.node)
        elif isinstance(cmd, c.JobChanged):
            if self.store is not None:
                job = self.requester.jobs[cmd.job_id]
                self.store.save_requester(job)
                for node_id in job.executions:
                    if node_id in self.requester.reputation:
                        self.store.save_reputation(node_id, self.requester.reputation[node_id])
            self.watch.job_changed(cmd.job_id)
            event = self._changes.pop(cmd.job_id, None)
            if event is not None:
                event.set()
        elif isinstance(cmd, c.EvaluateBid):
            self._spawn(self._evaluate_bid, cmd)
        elif isinstance(cmd, c.ReviewBid):
            self._spawn(self._review_bid, cmd)
        elif isinstance(cmd, c.RunExecution):
            self.runner.start(cmd.job_id, cmd.spec, cmd.seal_key)
        elif isinstance(cmd, c.CancelExecution):
            self.runner.cancel(cmd.job_id)
        elif isinstance(cmd, c.DiscardResults):
            self.runner.discard(cmd.job_id)
        elif isinstance(cmd, c.PublishResults):
            self.runner.publish(cmd.job_id, cmd.spec)
        elif isinstance(cmd, c.Dropped):
            self.stats["dropped_forged" if cmd.forged else "dropped"] += 1
            level = logging.WARNING if cmd.forged else logging.DEBUG
            log.log(level, "%s: dropped: %s", self.node_id[-8:], cmd.reason)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    async def _evaluate_bid(self, cmd: c.EvaluateBid) -> None:
        if self.compute_config is None:
            return
        request = BidRequest(cmd.job_id, cmd.spec, cmd.requester_id, self.node_id)
        answer = await decide(self.strategies, request)
        self._feed(BidDecided(cmd.job_id, answer.bid, answer.reason))

    async def _review_bid(self, cmd: c.ReviewBid) -> None:
        request = BidRequest(cmd.job_id, cmd.spec, self.node_id, cmd.node_id)
        answer = await decide(self.acceptance, request)
        self._feed(BidReviewed(cmd.job_id, cmd.node_id, answer.bid, answer.reason))

    # --- outgoing -------------------------------------------------------------------------

    def _send_message(self, to: str | None, message: Message) -> None:
        if to == self.node_id:
            self._inbox.append(self._as_event(self.node_id, message))
            return
        kind, body = encode_message(message)
        frame, _ = encode_envelope(self.identity, kind, body, now=self.clock())
        self.verify_cache.add(frame)  # nodes of this process need not check our signature
        if to is None:  # broadcast: hear it ourselves, then tell everyone
            self._inbox.append(self._as_event(self.node_id, message))
        self._enqueue(to or "*", frame)

    def _as_event(self, sender: str, message: Message) -> Event:
        if isinstance(message, ResultsProposed):
            return self._open_proposal(sender, message)
        return MessageReceived(sender, message)

    def _enqueue(self, dest: str, frame: bytes) -> None:
        box = self._outboxes.get(dest)
        if box is None:
            if self._tg is None:
                return
            send, receive = anyio.create_memory_object_stream[bytes](OUTBOX_LIMIT)
            self._outboxes[dest] = box = send
            self._tg.start_soon(self._sender, dest, receive)
        try:
            box.send_nowait(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the node is stopping
        except anyio.WouldBlock:
            self.stats["outbox_full"] += 1
            log.warning("%s: outbox to %s full; message dropped", self.node_id[-8:], dest[-8:])

    async def _sender(self, dest: str, receive: Any) -> None:
        """Deliver one destination's frames in order; retry direct sends a few times."""
        async with receive:
            async for frame in receive:
                for attempt, backoff in enumerate(SEND_BACKOFF):
                    try:
                        if dest == "*":
                            await self.transport.broadcast(frame)
                        else:
                            await self.transport.request(
                                dest, pack([EVENT_PROTOCOL, frame]), timeout=SEND_TIMEOUT
                            )
                        break
                    except TransportError as exc:
                        if attempt == len(SEND_BACKOFF) - 1:
                            self.stats["send_failed"] += 1
                            log.info(
                                "%s: giving up sending to %s: %s", self.node_id[-8:], dest[-8:], exc
                            )
                        else:
                            self.stats["send_retried"] += 1
                            await anyio.sleep(backoff)

    # --- incoming (TransportHandler) ------------------------------------------------------

    async def handle_broadcast(self, frame: bytes) -> bool:
        return self._receive(frame)

    async def handle_request(self, peer_id: str, frame: bytes) -> bytes:
        try:
            protocol, payload = unpack(frame)
            if not isinstance(protocol, str) or not isinstance(payload, bytes):
                raise WireError("request must be [protocol, payload]")
        except (WireError, ValueError, TypeError) as exc:
            self.stats["dropped_malformed"] += 1
            raise PeerUnreachable(f"malformed request: {exc}") from None
        if protocol == EVENT_PROTOCOL:
            self._receive(payload)
            return b""
        handler = self._protocols.get(protocol)
        if handler is None:
            raise PeerUnreachable(f"unknown protocol {protocol!r}")
        return await handler(peer_id, payload)

    def _receive(self, frame: bytes) -> bool:
        """Check one event frame and feed it. Returns False if invalid."""
        try:
            env = decode_envelope(frame, cache=self.verify_cache)
        except WireError as exc:
            self.stats["dropped_invalid"] += 1
            log.info("%s: refused frame: %s", self.node_id[-8:], exc)
            return False
        now = self.clock()
        if env.msg_id in self._seen:
            self.stats["dropped_replayed"] += 1
            return True
        if abs(now - env.sent_at) > self.max_message_age:
            self.stats["dropped_replayed"] += 1
            log.info(
                "%s: refused %s from %s: sent %.0fs away from now",
                self.node_id[-8:],
                env.kind,
                env.sender[-8:],
                now - env.sent_at,
            )
            return False
        self._remember(env.msg_id, now)
        try:
            message = decode_message(env.kind, env.body)
        except ValidationError as exc:
            self.stats["dropped_invalid"] += 1
            log.info(
                "%s: refused %s from %s: %s", self.node_id[-8:], env.kind, env.sender[-8:], exc
            )
            return False
        self._feed(self._as_event(env.sender, message))
        return True

    def _remember(self, msg_id: bytes, now: float) -> None:
        seen = self._seen
        seen[msg_id] = now
        while seen:
            oldest_id, at = next(iter(seen.items()))
            if now - at <= self.max_message_age and len(seen) <= 500_000:
                break
            del seen[oldest_id]

    def _open_proposal(self, sender: str, msg: ResultsProposed) -> ProposalOpened:
        job = self.requester.jobs.get(msg.job_id)
        if job is None:
            return ProposalOpened(msg.job_id, sender, None, "unknown job")
        verifier = self.plugins.verifiers.get(job.spec.verifier)
        if verifier is None:
            return ProposalOpened(msg.job_id, sender, None, f"no {job.spec.verifier} verifier")
        try:
            digest = verifier.open(job_id=msg.job_id, node_id=sender, proposal=msg.proposal)
            commitment = unseal_commitment(
                self.identity, msg.commitment, job_id=msg.job_id, node_id=sender
            )
        except VerificationError as exc:
            self.stats["proposals_refused"] += 1
            return ProposalOpened(msg.job_id, sender, None, str(exc))
        return ProposalOpened(msg.job_id, sender, digest, commitment=commitment)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bacalhau-py")
    except PackageNotFoundError:
        return "0+unknown"
