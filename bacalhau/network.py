"""Network: many nodes in one process (the devstack), for scripts and tests.

::

    async with bacalhau.Network.in_memory(5) as net:
        result = await net.nodes[0].run_job(bacalhau.JobSpec.noop(stdout="hi"), timeout=30)

All nodes share one :class:`~bacalhau.wire.VerifiedCache`, so each event's
signature is checked once for the whole process, and one
:class:`~bacalhau.node.ticker.Ticker`, so a thousand nodes' periodic chores run from
one task. Once its nodes have started, the network freezes the garbage collector's
view of the heap (``gc.freeze()``): the objects the nodes were built from are not
walked again by every full collection while jobs run (at a thousand nodes that halves
the latency of a job), and it raises the collector's thresholds (:data:`GC_THRESHOLD`);
the heap is unfrozen and the thresholds restored when the network closes. Each node's
event stream (``node.watch``) reports the nodes that join or leave once the network
has started, not the nodes it started with. When the network
closes it checks that no node left an execution running or a results folder behind, and
that no node's state machines hit an internal error (a bug) while it ran.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from .errors import BacalhauError, NetworkInvariantError, lone_error, sole_error
from .identity import Identity
from .node.driver import Fault
from .node.node import Node
from .node.ticker import Ticker
from .transport.base import Transport
from .transport.memory import Faults, MemoryHub
from .wire import VerifiedCache

__all__ = ["Network", "NetworkInvariantError"]

log = logging.getLogger("bacalhau.network")

TransportFactory = Callable[[Identity], Transport]
GC_THRESHOLD = (20_000, 20, 100)


class _HeapHold:
    """The garbage collector's settings are the process's: networks that overlap share
    one hold, in any order of closing. The first to start saves the thresholds; each
    start freezes what exists then; the last to close thaws and restores."""

    holders = 0
    saved: tuple[int, int, int] = (700, 10, 10)

    @classmethod
    def take(cls) -> None:
        if cls.holders == 0:
            cls.saved = gc.get_threshold()
        cls.holders += 1
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)

    @classmethod
    def release(cls) -> None:
        cls.holders -= 1
        if cls.holders == 0:  # back into the collector's oldest generation
            gc.unfreeze()
            gc.set_threshold(*cls.saved)


"""The collector's thresholds while a network runs (Python's: 700, 10, 10): a thousand
jobs in flight keep tens of thousands of young objects alive, which the default walks
again every 700 allocations; this cuts the collector's share of a burst by half."""


def scratch_dir() -> str | None:
    """Where throw-away node data goes: RAM-backed ``/dev/shm`` when it is there
    (creating and removing an execution's folders on a disk costs milliseconds),
    else the system's temp dir. ``BACALHAU_SCRATCH`` overrides it."""
    chosen = os.environ.get("BACALHAU_SCRATCH")
    if chosen:
        return chosen
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class Network:
    """A set of nodes run together. Build one with :meth:`in_memory` (or :meth:`custom`)."""

    def __init__(
        self,
        *,
        n: int,
        transport_factory: TransportFactory,
        hub: MemoryHub | None = None,
        data_dir: Path | None = None,
        seed: int | None = None,
        node_options: dict[str, Any] | None = None,
        per_node_options: Sequence[dict[str, Any]] | None = None,
        check_on_exit: bool = True,
        freeze_heap: bool = True,
    ) -> None:
        if n < 1:
            raise BacalhauError(f"a network needs at least one node, got {n}")
        if per_node_options is not None and len(per_node_options) != n:
            raise BacalhauError("per_node_options must have one entry per node")
        self.n = n
        self.hub = hub
        self.transport_factory = transport_factory
        self.seed = seed
        self.node_options = node_options or {}
        self.per_node_options = list(per_node_options or [{} for _ in range(n)])
        self.verify_cache = VerifiedCache()
        self.nodes: list[Node] = []
        self.check_on_exit = check_on_exit
        self.freeze_heap = freeze_heap
        self.ticker = Ticker()
        self._starting = False
        self._holds_heap = False
        self._data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._counter = 0
        self._options: dict[str, dict[str, Any]] = {}
        self._stopped: dict[str, anyio.Event] = {}
        self._faults: list[Fault] = []

    @classmethod
    def in_memory(
        cls,
        n: int = 3,
        *,
        seed: int | None = None,
        faults: Faults | None = None,
        data_dir: Path | None = None,
        per_node_options: Sequence[dict[str, Any]] | None = None,
        check_on_exit: bool = True,
        freeze_heap: bool = True,
        **node_options: Any,
    ) -> Network:
        """``n`` nodes on an in-process hub. ``node_options`` go to every :class:`Node`;
        ``faults`` and ``seed`` make the hub drop, delay, duplicate or reorder frames;
        ``freeze_heap=False`` leaves the garbage collector alone (see the module's
        docstring)."""
        hub = MemoryHub(seed=seed, faults=faults or Faults())
        return cls(
            n=n,
            transport_factory=lambda ident: hub.transport(ident.node_id),
            hub=hub,
            data_dir=data_dir,
            seed=seed,
            node_options=node_options,
            per_node_options=per_node_options,
            check_on_exit=check_on_exit,
            freeze_heap=freeze_heap,
        )

    @classmethod
    def custom(cls, n: int, transport_factory: TransportFactory, **kwargs: Any) -> Network:
        """``n`` nodes, each on a transport made by ``transport_factory(identity)``."""
        return cls(n=n, transport_factory=transport_factory, **kwargs)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self._data_dir is not None, "network not started"
        return self._data_dir

    async def __aenter__(self) -> Network:
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bacalhau-net-", dir=scratch_dir())
            self._data_dir = Path(self._tmp.name)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self.ticker.run)
            self._starting = True
            for options in self.per_node_options:
                await self.add_node(**options)
            self._starting = False
            for node in self.nodes:  # the nodes it started with did not join: they were
                node.watch.held = False  # there (a thousand nodes: not half a million
                node.watch.start()  # events of nodes joining)
        except BaseException as exc:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._cleanup()
            if (lone := lone_error(exc)) is not None:
                raise lone from lone.__cause__  # e.g. TransportError: could not connect ...
            raise
        if self.freeze_heap:
            # what the nodes were built from lives as long as the network: out of the
            # collector's generations, so full collections no longer walk all of it
            _HeapHold.take()
            self._holds_heap = True
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        problems: list[str] = []
        if et is None and self.check_on_exit:
            # let cancelled executions finish cleaning up (waits only while one does; the
            # bound is generous: a loaded machine or engine can take seconds to clean up)
            with anyio.move_on_after(60):
                while any(  # noqa: ASYNC110
                    node.runner.stopping or node.runner.removing for node in self.nodes
                ):
                    await anyio.sleep(0.01)
            problems = self.check_invariants()
        if et is None:
            problems += self.check_faults()
        self._tg.cancel_scope.cancel()
        try:
            result = await self._tg.__aexit__(et, e, tb)
        except BaseExceptionGroup as group:
            if not sole_error(group, e):
                raise
            assert e is not None
            raise e.with_traceback(tb) from e.__cause__  # the body's own error, alone
        finally:
            self._cleanup()
        if problems:
            raise NetworkInvariantError("; ".join(problems))
        return result

    def _cleanup(self) -> None:
        if self._holds_heap:
            self._holds_heap = False
            _HeapHold.release()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def add_node(self, *, identity: Identity | None = None, **options: Any) -> Node:
        """Start one more node (it joins the running network)."""
        assert self._tg is not None, "network not started"
        identity = identity or Identity.generate()
        index = self._counter
        self._counter += 1
        merged = {**self.node_options, **options}
        if self.seed is not None:
            merged.setdefault("seed", self.seed * 1000 + index)
        merged.setdefault("data_dir", self.data_dir / f"node{index}")
        merged.setdefault("durable", False)
        merged.setdefault("ticker", self.ticker)
        node = Node(
            transport=self.transport_factory(identity),
            identity=identity,
            verify_cache=self.verify_cache,
            **merged,
        )
        node.watch.held = self._starting
        scope = anyio.CancelScope()
        stopped = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                with scope:
                    await node.run(task_status=task_status)
            finally:
                stopped.set()

        await self._tg.start(run)
        self._stopped[node.node_id] = stopped
        self._scopes[node.node_id] = scope
        self._options[node.node_id] = merged
        self.nodes.append(node)
        return node

    async def restart_node(self, node: Node) -> Node:
        """Crash ``node`` and start it again with the same identity, data and options
        (it recovers its jobs only if it is ``durable``)."""
        options = self._options.pop(node.node_id)
        await self.stop_node(node)
        return await self.add_node(identity=node.identity, **options)

    async def stop_node(self, node: Node) -> None:
        """Stop ``node`` abruptly (its executions die with it), as a crash would."""
        listed = node in self.nodes
        if listed:  # out of the list first: nobody picks a node that is going down
            self.nodes.remove(node)
        scope = self._scopes.pop(node.node_id, None)
        if scope is not None:
            scope.cancel()
            await self._stopped.pop(node.node_id).wait()
        if listed:
            self._faults.extend(node.faults)

    # --- checks ---------------------------------------------------------------------------

    def check_invariants(self) -> list[str]:
        """What is wrong with the network now (empty if nothing)."""
        problems: list[str] = []
        for node in self.nodes:
            for job in node.requester.jobs.values():
                accepted = sum(
                    1
                    for e in job.executions.values()
                    if e.state.value in ("results_accepted", "published")
                )
                if job.spec.target == "all":  # an ops job: at most once per target node
                    extra = [e for e in job.executions if e not in job.targets]
                    if extra and accepted:
                        problems.append(f"{job.job_id}: ran on {len(extra)} non-target nodes")
                elif accepted > job.spec.deal.concurrency:
                    problems.append(f"{job.job_id}: {accepted} accepted results > concurrency")
            folders = node.data_dir / "executions"
            live = {"running", "proposed", "publishing"}
            for job_id in node.runner.running:
                cj = node.compute.jobs.get(job_id)
                if cj is None or cj.state.value not in live:
                    problems.append(
                        f"{node.node_id}: execution of {job_id} still running "
                        f"after its job {cj.state if cj else 'was forgotten'}"
                    )
            if folders.is_dir():
                for folder in folders.iterdir():
                    cj = node.compute.jobs.get(folder.name)
                    if cj is None or cj.state.value not in live:
                        problems.append(
                            f"{node.node_id}: results folder of {folder.name} left behind"
                        )
        return problems

    def check_faults(self) -> list[str]:
        """Internal errors any node's state machines hit (bugs), stopped nodes included."""
        faults = [*self._faults, *(f for node in self.nodes for f in node.faults)]
        return [f"internal error on job {f.job_id} ({f.side}): {f.error}" for f in faults]

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no node has an execution running (after all jobs ended)."""
        with anyio.fail_after(timeout):
            while any(node.runner.active for node in self.nodes):  # noqa: ASYNC110 - polls many runners
                await anyio.sleep(0.01)
