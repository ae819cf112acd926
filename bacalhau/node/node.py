"""The Node: the public facade over a node's parts.

A node is built from small parts with one job each:

- the inbound gate (:mod:`bacalhau.node.gate`): decode, signature, replay, age;
- the driver (:mod:`bacalhau.node.driver`): routes events to the sans-IO state
  machines by type, carries out their commands, runs the timers on an injectable
  clock, and turns a state machine's internal error into a failed job;
- the outbox (:mod:`bacalhau.node.outbox`): signs messages and sends them, one
  ordered queue per destination;
- the execution runner (:mod:`bacalhau.compute.runner`) and the plugins;
- the state store (:mod:`bacalhau.node.store`) when durable.

:class:`Node` wires them, starts and stops them, and offers the public API
(submit, describe, list, cancel, data).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from ..compute.bidding import (
    ENGINE_RECHECK_SECONDS,
    BidStrategy,
    CapacityStrategy,
    DataLocalityStrategy,
    SupportStrategy,
)
from ..compute.capacity import Capacity, ComputeConfig
from ..compute.runner import ExecutionRunner
from ..errors import (
    BacalhauError,
    JobNotFound,
    PeerUnreachable,
    ValidationError,
    lone_error,
    sole_error,
)
from ..identity import Identity
from ..models import JobEvent, JobResult, JobSpec, NodeInfo
from ..paths import private_dir, private_files
from ..protocol.compute import ComputeState
from ..protocol.events import CancelJob, SubmitJob
from ..protocol.messages import NodeAnnounced
from ..protocol.nodes import HEARTBEAT, MIN_GAP, Announcer
from ..protocol.requester import RequesterConfig, RequesterState
from ..transport.base import Reply, Transport, TransportHandler
from ..wire import LONE_DECODED, LONE_FRAMES, VerifiedCache, pack
from .clock import Clock, SystemClock
from .driver import Driver, Fault
from .fraud import FraudDesk
from .gate import InboundGate, Turned
from .history import JobPage, JobQuery, JobRow, page_in_memory
from .holdings import Holdings
from .outbox import EVENT_PROTOCOL, Outbox, split_request
from .plugins import Plugins, default_plugins
from .retention import (
    DiskRetention,
    collect_records,
    configure_publishers,
    run_disk_retention,
    run_record_retention,
)
from .services import ProtocolHandler

if TYPE_CHECKING:
    from ..storage.base import DataServices
    from ..storage.ipfs.blockstore import BlockStore
    from ..storage.ipfs.exchange import BlockService
from .store import StateStore, StoreError
from .ticker import Chore, Ticker, run_every

__all__ = ["JobHandle", "Node"]

log = logging.getLogger("bacalhau.node")

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
                    live = self.node.requester.jobs.get(self.job_id)
                    if live is None or live.state.terminal:  # the whole result only then
                        result = self.result()
                        if result.state.terminal:
                            return result
                    await self.node.driver.ended(self.job_id).wait()
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
        verify_cache: share one between the nodes of a process (default: a small one
            of the node's own, :data:`~bacalhau.wire.LONE_FRAMES`).
        seed: seeds the requester's random choice of bids (for reproducible tests).
        max_message_age: envelopes older than this many seconds are refused as replays.
            It is also how long message ids, ended jobs' compute records and jobs merely
            heard of are kept (memory and ``state.db`` grow with it for that long, then
            level off).
        durable: keep jobs, executions and reputation in SQLite in ``data_dir`` and
            recover them on restart; default: on when ``data_dir`` is given.
        clock: the node's time (default: the wall clock); pass a
            :class:`~bacalhau.node.clock.VirtualClock` to run the protocol on virtual time.
        heartbeat: seconds between the node's announcements of itself (it also
            announces when it joins and, at most every ``MIN_GAP``, when what it offers
            changes); requesters forget a node silent for their ``node_ttl``.
        ticker: a :class:`~bacalhau.node.ticker.Ticker` on the node's clock runs its
            periodic chores instead of its own tasks (``Network`` shares one).
        job_retention: a durable node removes a finished job's record this many seconds
            after the job ended (None: never); the job then answers "expired on ...".
        gc_interval / gc_batch: how often retention runs, and the most records it
            removes per run (so one run never holds the store for long).
        disk: the block store's budget, the results pin retention and the execution
            folders' (:class:`~bacalhau.node.retention.DiskRetention`; None: keep all).
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
        clock: Clock | None = None,
        heartbeat: float = HEARTBEAT,
        job_retention: float | None = None,
        gc_interval: float = 60.0,
        gc_batch: int = 1000,
        disk: DiskRetention | None = None,
        ticker: Ticker | None = None,
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
        self.verify_cache = verify_cache or VerifiedCache(LONE_FRAMES, decoded_max=LONE_DECODED)
        self.clock: Clock = clock or SystemClock()
        self.ticker = ticker if ticker is not None and ticker.shared_with(self.clock) else None
        self._chores: list[int] = []
        self.max_message_age = max_message_age
        if job_retention is not None and job_retention <= 0:
            raise ValidationError("job_retention must be positive (or None: keep forever)")
        self.job_retention = job_retention
        self.gc_interval = gc_interval
        self.gc_batch = gc_batch
        self.disk = disk
        from ..compute.hooks import ExecHook, HttpHook

        rconfig = requester or RequesterConfig()
        self.acceptance: list[BidStrategy] = list(bid_acceptance)
        label = "bid acceptance probe"
        if rconfig.acceptance_probe_http:
            self.acceptance.append(
                HttpHook(
                    url=rconfig.acceptance_probe_http,
                    timeout=rconfig.acceptance_probe_timeout,
                    label=label,
                )
            )
        if rconfig.acceptance_probe_exec:
            self.acceptance.append(
                ExecHook(
                    command=rconfig.acceptance_probe_exec,
                    timeout=rconfig.acceptance_probe_timeout,
                    label=label,
                )
            )
        if self.acceptance and not rconfig.bid_review:
            rconfig = attrs.evolve(rconfig, bid_review=True)
        self.requester = RequesterState(
            self.node_id,
            identity.seal_public_key,
            config=rconfig,
            rng=random.Random(seed),
        )
        if not 0 < max_message_age < math.inf:  # nan or inf would let any replay in
            why = "max_message_age must be a positive, finite number of seconds"
            raise ValidationError(f"{why}, not {max_message_age!r}", field="max_message_age")
        # a fresh gate (after a restart) admits any frame younger than max_message_age:
        # ended and heard jobs' records outlive that window, so a replay finds them
        window = max_message_age
        self.compute = ComputeState(self.node_id, heard_ttl=window, tombstone_ttl=window)
        self.stats: Counter[str] = Counter()
        self.gate = InboundGate(
            node_id=self.node_id,
            clock=self.clock.now,
            verify_cache=self.verify_cache,
            stats=self.stats,
            max_message_age=max_message_age,
        )
        self.outbox = Outbox(
            identity=identity,
            transport=transport,
            clock=self.clock,
            verify_cache=self.verify_cache,
            stats=self.stats,
        )
        self.driver = Driver(
            node_id=self.node_id,
            requester=self.requester,
            compute=self.compute,
            serve_requester=requester is not None,
            serve_compute=compute is not None,
            clock=self.clock,
            outbox=self.outbox,
            identity=identity,
            stats=self.stats,
            acceptance=self.acceptance,
        )
        self._protocols: dict[str, ProtocolHandler] = {}
        self._ctx_tg: anyio.abc.TaskGroup | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.plugins: Plugins
        self.runner: ExecutionRunner
        self.capacity: Capacity
        self.strategies: list[BidStrategy] = []
        self.support: SupportStrategy
        self.started = anyio.Event()
        self._stopped = False  # set for good once the node has begun to stop
        from ..live.node import NodeWatch

        self.watch = NodeWatch(self)
        """Live logs, the event stream and network info (:mod:`bacalhau.live`)."""
        self.driver.on_job_changed = self.watch.job_changed
        self.driver.on_job_evicted = self.watch.events.forget_job
        self.announcer = Announcer(heartbeat=heartbeat)
        self.holdings = Holdings()
        """Root CIDs held here, announced for data locality (:mod:`.holdings`)."""
        self._dirty = anyio.Event()
        self.driver.announcer = self.announcer
        self.driver.on_compute = self._mark_dirty

    def __repr__(self) -> str:
        return f"Node({self.node_id})"

    @property
    def faults(self) -> list[Fault]:
        """Internal errors of the state machines (bugs); each failed its job."""
        return self.driver.faults

    # --- NodeServices (what plugins see) ------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self._data_dir is not None, "node not started"
        return self._data_dir

    @property
    def data(self) -> DataServices | None:
        """The node's data services (block store and exchange); None without them."""
        return self.plugins.data

    @property
    def blockstore(self) -> BlockStore | None:
        return self.plugins.blockstore

    @property
    def blocks(self) -> BlockService | None:
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
        except BaseException as exc:
            self._ctx_tg.cancel_scope.cancel()
            await self._ctx_tg.__aexit__(None, None, None)
            if (lone := lone_error(exc)) is not None:
                raise lone from lone.__cause__  # e.g. TransportError: could not connect ...
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._ctx_tg is not None
        self._ctx_tg.cancel_scope.cancel()
        try:
            return await self._ctx_tg.__aexit__(et, e, tb)
        except BaseExceptionGroup as group:
            if not sole_error(group, e):
                raise
            assert e is not None
            raise e.with_traceback(tb) from e.__cause__  # the body's own error, alone

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
                self.driver.bind(tg)
                self.outbox.bind(tg)
                self.runner.bind(tg, keep=self.driver.results_in_flight())
                if self.store is not None:
                    await tg.start(self.store.run)
                    if self.store.needs_conversion:  # one-time VACUUM, off the event loop
                        tg.start_soon(self.store.convert_off_loop)
                await self.plugins.start(self)
                if self.disk is not None:
                    configure_publishers(self, self.disk)
                    tg.start_soon(run_disk_retention, self, self.disk)
                if self.plugins.blocks is not None:
                    self.plugins.blocks.clock = self.clock
                    tg.start_soon(self.plugins.blocks.reprovide)
                tg.start_soon(self.driver.timers.run)
                self.watch.register()
                await tg.start(self.transport.run, self)
                self.watch.start()
                self._every(tg, self.watch.period, self.watch.poll, clock=None)
                await self.support.refresh()  # before the first announcement, then often
                self._every(tg, ENGINE_RECHECK_SECONDS, self.support.refresh, clock=self.clock)
                tg.start_soon(self._announce_loop)
                self.started.set()
                if self.store is not None:
                    self.driver.recover()
                    if self.job_retention is not None:
                        tg.start_soon(run_record_retention, self)
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    self._stopped = True
                    with anyio.CancelScope(shield=True):
                        await self.plugins.close()
        finally:
            self._stopped = True
            while self._chores and self.ticker is not None:
                self.ticker.remove(self._chores.pop())
            self.driver.bind(None)
            self.outbox.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
                self._data_dir = None

    def _setup(self) -> None:
        """Open the data dir, plugins, runner, strategies and store (blocking, at start)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_dir(self.data_dir)
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
            feed=self.driver.feed,
            limits=compute.limits,
            sign=self.identity.sign,
        )
        self.support = SupportStrategy(
            executors=self.plugins.executors,
            storage=self.plugins.storage,
            verifiers=self.plugins.verifiers,
            publishers=self.plugins.publishers,
            on_change=self._mark_dirty,
        )
        self.strategies = [self.support, CapacityStrategy(self.capacity, labels=compute.labels)]
        if compute.data_locality in ("local", "nearby"):
            self.strategies.append(
                DataLocalityStrategy(self.plugins.storage, mode=compute.data_locality)
            )
        from ..compute.hooks import hook_strategies

        self.strategies.extend(hook_strategies(compute))
        self.strategies.extend(self._extra_strategies)
        self.driver.runner = self.runner
        self.driver.fraud = FraudDesk(
            node_id=self.node_id,
            identity=self.identity,
            requester=self.requester,
            post=self.outbox.post,
            stats=self.stats,
            feed=self.driver.feed,
            runner=self.runner,
        )
        self.driver.use_capacity(self.capacity)
        self.driver.verifiers = self.plugins.verifiers
        self.driver.strategies = self.strategies
        self.holdings.seed(self.plugins.data)
        if self.durable:
            self.store = StateStore(self.data_dir / "state.db")
            self.driver.store = self.store
            private_files(self.data_dir, "state.db", "state.db-wal", "state.db-shm")
            self._restore(self.store)

    async def collect_garbage(self) -> int:
        """Run record retention once now; return how many job records it removed
        (:func:`~bacalhau.node.retention.collect_records`: it compacts the store too)."""
        return await collect_records(self)

    def _restore(self, store: StateStore) -> None:
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
        if self._stopped:
            raise BacalhauError(f"node {self.node_id} has stopped; submit to a running node")
        executor = self.plugins.executors.get(spec.engine.type)
        if executor is not None:
            executor.validate(spec)  # a bad engine parameter fails here, not on a far node
        if self.store is not None and self.store.error is not None:
            raise self.store.error
        job_id = f"j-{uuid.uuid4()}"
        self.driver.feed(SubmitJob(job_id=job_id, spec=spec, peers=len(self.peers())))
        if self.store is not None:
            try:
                await self.store.flush()  # the job is on disk before we say it is accepted
            except StoreError:
                self.driver.feed(CancelJob(job_id, "the node could not record the job"))
                raise
        return JobHandle(self, job_id)

    async def run_job(self, spec: JobSpec, *, timeout: float | None = None) -> JobResult:
        """Submit and wait: the one-line way to run a job."""
        return await (await self.submit(spec)).wait(timeout)

    # --- data -----------------------------------------------------------------------------

    def _need_data(self) -> DataServices:
        if self.plugins.data is None:
            raise BacalhauError("this node has no block store (bacalhau.storage.ipfs missing)")
        return self.plugins.data

    async def add_data(self, data: bytes | str | Path, *, cid_version: int = 0) -> str:
        """Store a file, a directory (recursively) or bytes in this node's block store,
        pinned, and return its CID (the one ``ipfs add`` prints for the same data).
        Other nodes fetch it from here by block exchange."""
        cid = await self._need_data().add(data, cid_version=cid_version)
        self.holdings.add(cid)  # announced: requesters prefer this node for jobs reading it
        self._mark_dirty()
        return cid

    async def get_data(self, cid: str, dest: Path) -> Path:
        """Write the file or directory at ``cid`` to ``dest`` (fetched from peers when
        needed from every provider at once, every block verified against its hash; files
        are written while their blocks arrive)."""
        return await self._need_data().get(cid, dest)

    async def cat(self, cid: str, *, max_size: int = 64 * 1024 * 1024) -> bytes:
        """The bytes of the file at ``cid`` (a path inside a directory CID: ``CID/a/b``)."""
        return await self._need_data().cat(cid, max_size=max_size)

    def resolve(self, job_id_or_prefix: str) -> str:
        """The full id of a job this node requested, given its id or a unique prefix.

        Raises:
            JobNotFound: no such job, an ambiguous prefix, or a job whose record
                expired (the message says when).
        """
        wanted = job_id_or_prefix
        if wanted in self.requester.jobs:
            return wanted
        matches = {j for j in self.requester.jobs if j.startswith(wanted)}
        if self.store is not None and len(wanted) >= 3:
            matches.update(self.store.find_jobs(wanted, limit=2))
        if len(matches) == 1 and (len(wanted) >= 3 or wanted in matches):
            return matches.pop()
        if len(matches) > 1:
            raise JobNotFound(f"job id prefix {wanted!r} is ambiguous ({len(matches)} jobs match)")
        expired = self.store.expired_at(wanted) if self.store is not None else None
        if expired is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expired))
            raise JobNotFound(f"job {wanted} expired on {when} (its record passed --job-retention)")
        raise JobNotFound(f"no job {wanted!r} on this node")

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, self.resolve(job_id))

    def describe(self, job_id: str) -> JobResult:
        """The job as it stands: live jobs from memory, finished ones from the store."""
        job_id = self.resolve(job_id)
        job = self.requester.jobs.get(job_id)
        if job is None and self.store is not None:
            job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} on this node")
        return self.requester.result_of(job)

    def list_jobs(self) -> list[JobResult]:
        """Every job this node holds in memory (its live jobs; on a node without a store,
        all of them). For history use :meth:`query_jobs`."""
        return [self.requester.result_of(j) for j in self.requester.jobs.values()]

    async def query_jobs(self, query: JobQuery | None = None) -> JobPage:
        """A page of this node's job history: filtered, sorted, keyset-paged. On a durable
        node it is an indexed SQLite query run on a worker thread."""
        query = query or JobQuery()
        if self.store is None:
            rows = (JobRow.of(j) for j in self.requester.jobs.values())
            return page_in_memory(rows, query)
        await self.store.flush()
        return await anyio.to_thread.run_sync(self.store.query, query)

    async def describe_rows(self, rows: Sequence[JobRow]) -> list[JobResult]:
        """Whole results for one page of history rows: live jobs from memory, finished
        ones read from the store on a worker thread (a job expired since the page was
        read is left out)."""
        live = {r.job_id: self.requester.jobs.get(r.job_id) for r in rows}
        missing = [job_id for job_id, job in live.items() if job is None]
        if missing and self.store is not None:
            store = self.store
            found = await anyio.to_thread.run_sync(lambda: [store.get_job(j) for j in missing])
            live.update(zip(missing, found, strict=True))
        return [self.requester.result_of(j) for j in live.values() if j is not None]

    async def cancel(self, job_id: str, reason: str = "cancelled by the user") -> None:
        self.driver.feed(CancelJob(self.resolve(job_id), reason))

    def info(self) -> NodeInfo:
        p = self.plugins
        return NodeInfo(
            node_id=self.node_id,
            executors=self.support.offered(),
            unavailable=self.support.unavailable(),
            verifiers=tuple(sorted(p.verifiers)),
            publishers=tuple(sorted(p.publishers)),
            storage=tuple(sorted(p.storage)),
            peers=tuple(sorted(self.peers())),
            capacity=self.capacity.total,
            running=self.capacity.running,
            version=_version(),
            transport=dict(self.transport.status()),
        )

    def announcement(self) -> NodeInfo:
        """What this node tells every requester about itself (signed on the wire)."""
        p, cap = self.plugins, self.capacity
        total = cap.total
        compute = self.compute_config
        return NodeInfo(
            node_id=self.node_id,
            executors=self.support.offered(),
            unavailable=self.support.unavailable(),
            verifiers=tuple(sorted(p.verifiers)),
            publishers=tuple(sorted(p.publishers)),
            storage=tuple(sorted(p.storage)),
            capacity=total,
            running=cap.running,
            version=_version(),
            labels=dict(compute.labels) if compute else {},
            free_cpu=max(0.0, total.cpu - cap.cpu),
            free_memory=max(0, total.memory - cap.memory),
            free_gpu=max(0, total.gpu - cap.gpu),
            free_slots=cap.free_slots,
            queued=cap.queued,
            max_executions=cap.max_executions,
            gpus=compute.gpus if compute else (),
            compute=compute is not None,
            data=self.holdings.announced(p.data),
        )

    def known_nodes(self) -> list[NodeInfo]:
        """The nodes this requester knows from their announcements (live ones only)."""
        return [k.info for k in self.requester.nodes.live(self.clock.now())]

    def known_node(self, node_id_or_prefix: str) -> NodeInfo:
        """A known node's announcement by its id, start or end (:func:`bacalhau.ids.find_node`).

        Raises:
            NodeNotFound: no live node matches, or several do.
        """
        from ..ids import find_node

        known = {i.node_id: i for i in self.known_nodes()}
        return known[find_node(known, node_id_or_prefix)]

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def _every(
        self, tg: anyio.abc.TaskGroup, period: float, chore: Chore, *, clock: Clock | None
    ) -> None:
        """Run ``chore`` every ``period`` seconds: from the shared ticker, else from a
        task of this node (on ``clock``; None: real time), e.g. the engine checks."""
        if self.ticker is not None:
            self._chores.append(self.ticker.add(period, chore))
        else:
            tg.start_soon(functools.partial(run_every, period, chore, clock=clock))

    async def _announce_loop(self) -> None:
        """Announce on start, when what we offer changes (at most every MIN_GAP), and on
        the heartbeat."""
        while True:
            now = self.clock.now()
            info = self.announcer.due(self.announcement(), now)
            if info is not None:
                self.driver.broadcast(NodeAnnounced(info))
            self._dirty = anyio.Event()
            with self.clock.wake_at(now + self.announcer.heartbeat):
                await self._dirty.wait()
            with self.clock.wake_at(self.clock.now() + MIN_GAP):
                await anyio.sleep_forever()

    def changed(self, job_id: str) -> anyio.Event:
        """An event set the next time the job's record changes (then replaced)."""
        return self.driver.changed(job_id)

    # --- incoming (TransportHandler) ------------------------------------------------------

    async def handle_broadcast(self, frame: bytes) -> bool:
        return self.handle_broadcast_now(frame)

    def handle_request_now(self, peer_id: str, frame: bytes) -> Reply | None:
        """As :meth:`handle_request` for an event frame (taken at once); None, having
        done nothing, for the other protocols (their handlers await)."""
        protocol, payload = split_request(frame, self.stats)
        if protocol != EVENT_PROTOCOL:
            return None
        self.handle_broadcast_now(payload)
        return b""

    async def handle_request(self, peer_id: str, frame: bytes) -> Reply:
        protocol, payload = split_request(frame, self.stats)
        if protocol == EVENT_PROTOCOL:
            self.handle_broadcast_now(payload)
            return b""
        handler = self._protocols.get(protocol)
        if handler is None:
            raise PeerUnreachable(f"unknown protocol {protocol!r}")
        return await handler(peer_id, payload)

    def handle_broadcast_now(self, frame: bytes) -> bool:
        """Pass one event frame through the gate and feed it; False if it was refused."""
        verdict = self.gate.admit(frame)
        if isinstance(verdict, Turned):
            return verdict is Turned.DUPLICATE
        for admitted in verdict:
            self.driver.deliver(admitted.sender, admitted.message)
        return True


@functools.cache
def _version() -> str:
    """The installed package's version (read once: each announcement carries it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bacalhau-py")
    except PackageNotFoundError:
        return "0+unknown"
