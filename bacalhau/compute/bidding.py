"""The bid strategy chain: each strategy may say no, with a reason; all must say yes.

A strategy is any object with ``async def decide(self, request) -> BidResponse``; one
that can often answer without waiting may also have ``decide_now(request)``, returning
the same answer or None when it must wait (:func:`decide_now` then saves a task).
Built-in strategies check that the node can run the job at all (engine,
storage, verifier, publisher), that it ever fits the node's capacity, that the
queue has room, data locality, and external hooks (``bacalhau.compute.hooks``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from ..errors import BacalhauError
from ..models import JobSpec
from ..protocol.nodes import LABELS_DIFFER
from ..selectors import matches

if TYPE_CHECKING:
    from ..executor.base import Executor
    from ..publisher.base import Publisher
    from ..storage.base import StorageProvider
    from ..verifier.base import Verifier
    from .capacity import Capacity

__all__ = [
    "BidRequest",
    "BidResponse",
    "BidStrategy",
    "CapacityStrategy",
    "DataLocalityStrategy",
    "SupportStrategy",
    "decide",
    "decide_now",
]

log = logging.getLogger("bacalhau.compute")


@attrs.frozen(kw_only=True)
class BidRequest:
    job_id: str
    spec: JobSpec
    requester_id: str
    node_id: str


@attrs.frozen(kw_only=True)
class BidResponse:
    bid: bool
    reason: str = ""
    busy: bool = False
    """A no for now only (no room): the requester keeps the job queued, not failed."""


class BidStrategy(Protocol):
    async def decide(self, request: BidRequest) -> BidResponse: ...


YES = BidResponse(bid=True)


ENGINE_RECHECK_SECONDS = 5.0
"""How long an engine's ``is_installed`` answer is trusted before a job asks again."""


@attrs.define(kw_only=True)
class SupportStrategy:
    """Bid only on jobs whose engine, storage, verifier and publisher this node has.

    Whether an engine is installed is asked when a job needs it, and the answer is kept
    for ``recheck_after`` seconds: a Docker engine started (or stopped) after the node is
    seen by the next job after that, not only when the node starts.
    """

    executors: Mapping[str, Executor]
    storage: Mapping[str, StorageProvider]
    verifiers: Mapping[str, Verifier]
    publishers: Mapping[str, Publisher]
    recheck_after: float = ENGINE_RECHECK_SECONDS
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[], None] | None = None
    """Called when an engine's answer differs from the one before (the node then
    announces what it offers now)."""
    _installed: dict[str, tuple[bool, float]] = attrs.Factory(dict)

    async def engine_installed(self, engine: str, executor: Executor) -> bool:
        """``executor.is_installed()``, asked again once the last answer is too old."""
        if not _may_be_missing(executor):
            return True  # Executor.is_installed: always there
        now = self.clock()
        known = self._installed.get(engine)
        if known is None or now - known[1] >= self.recheck_after:
            known = await self._ask(engine, executor, now)
        return known[0]

    async def _ask(self, engine: str, executor: Executor, now: float) -> tuple[bool, float]:
        before = self._installed.get(engine)
        try:
            answer = await executor.is_installed()
        except Exception:  # a plugin's check that fails means "not installed"
            log.exception("asking whether the %s engine is installed failed", engine)
            answer = False
        known = (answer, now)
        self._installed[engine] = known
        if before is not None and before[0] != known[0] and self.on_change is not None:
            self.on_change()
        return known

    async def refresh(self) -> None:
        """Ask every engine that can be missing (its executor has its own
        ``is_installed``) whether it answers now."""
        for engine, executor in list(self.executors.items()):
            if _may_be_missing(executor):
                await self._ask(engine, executor, self.clock())

    def offered(self) -> tuple[str, ...]:
        """The engines this node can run jobs on now, by the last answers: every
        executor but those whose engine did not answer (or was not asked yet)."""
        return tuple(sorted(e for e, x in self.executors.items() if self._answers(e, x)))

    def unavailable(self) -> tuple[str, ...]:
        """The node's executors whose engine does not answer (or was not asked yet)."""
        return tuple(sorted(e for e, x in self.executors.items() if not self._answers(e, x)))

    def _answers(self, engine: str, executor: Executor) -> bool:
        if not _may_be_missing(executor):
            return True
        known = self._installed.get(engine)
        return known is not None and known[0]

    async def decide(self, request: BidRequest) -> BidResponse:
        spec = request.spec
        engine = spec.engine.type
        executor = self.executors.get(engine)
        if executor is None:
            return BidResponse(bid=False, reason=f"no {engine!r} executor on this node")
        if not await self.engine_installed(engine, executor):
            return BidResponse(
                bid=False, reason=f"the {engine} engine is not available on this node"
            )
        try:
            executor.validate(spec)
            why = await executor.unsupported_reason(spec)
        except BacalhauError as exc:
            return BidResponse(bid=False, reason=f"invalid {engine} job: {exc}")
        if why:
            return BidResponse(bid=False, reason=why)
        return self._plugins(spec)

    def decide_now(self, request: BidRequest) -> BidResponse | None:
        """:meth:`decide` when it needs no waiting: the engine's state is known and
        its executor has no reasons of its own (else None)."""
        from ..executor.base import Executor

        spec = request.spec
        engine = spec.engine.type
        executor = self.executors.get(engine)
        if executor is None:
            return BidResponse(bid=False, reason=f"no {engine!r} executor on this node")
        if _may_be_missing(executor):
            known = self._installed.get(engine)
            if known is None or self.clock() - known[1] >= self.recheck_after:
                return None
            installed = known[0]
        else:  # its engine is always there: no answer to wait for, however old
            installed = True
        if type(executor).unsupported_reason is not Executor.unsupported_reason:
            return None
        if not installed:
            return BidResponse(
                bid=False, reason=f"the {engine} engine is not available on this node"
            )
        try:
            executor.validate(spec)
        except BacalhauError as exc:
            return BidResponse(bid=False, reason=f"invalid {engine} job: {exc}")
        return self._plugins(spec)

    def _plugins(self, spec: JobSpec) -> BidResponse:
        for volume in spec.inputs:
            if volume.source.type not in self.storage:
                return BidResponse(
                    bid=False, reason=f"no {volume.source.type!r} storage on this node"
                )
        if spec.verifier not in self.verifiers:
            return BidResponse(bid=False, reason=f"no {spec.verifier!r} verifier on this node")
        if spec.publisher not in self.publishers:
            return BidResponse(bid=False, reason=f"no {spec.publisher!r} publisher on this node")
        return YES


def _may_be_missing(executor: Executor) -> bool:
    from ..executor.base import Executor

    return type(executor).is_installed is not Executor.is_installed


@attrs.define
class CapacityStrategy:
    """No bid on a job that could never fit, nor on one whose selectors this node's
    labels do not match (a broadcast reaches every node; targeted offers go only to
    nodes whose announced labels match), nor while the queue is full."""

    capacity: Capacity
    labels: Mapping[str, str] = attrs.field(factory=dict, kw_only=True)
    """This node's labels (``ComputeConfig.labels``)."""

    async def decide(self, request: BidRequest) -> BidResponse:
        return self.decide_now(request)

    def decide_now(self, request: BidRequest) -> BidResponse:
        selectors = request.spec.selectors
        if selectors and not matches(selectors, self.labels):
            wanted = ", ".join(str(s) for s in selectors)
            return BidResponse(bid=False, reason=f"{LABELS_DIFFER} ({wanted})")
        why = self.capacity.fits_ever(request.spec.resources)
        if why:
            return BidResponse(bid=False, reason=f"too big for this node: {why}")
        if self.capacity.queue_full():
            return BidResponse(bid=False, reason="busy: execution queue is full", busy=True)
        return YES


@attrs.define
class DataLocalityStrategy:
    """With ``local`` locality, bid only when every input is already on this node; with
    ``nearby``, also when a peer is known to hold it (a live provider record)."""

    storage: Mapping[str, StorageProvider]
    mode: str = "local"

    def decide_now(self, request: BidRequest) -> BidResponse | None:
        """Yes at once for a job without inputs; else None (the stores are asked)."""
        return None if request.spec.inputs else YES

    async def decide(self, request: BidRequest) -> BidResponse:
        for volume in request.spec.inputs:
            provider = self.storage.get(volume.source.type)
            if provider is None:
                here = False
            elif self.mode == "nearby":
                here = await provider.has_nearby(volume.source)
            else:
                here = await provider.has_locally(volume.source)
            if not here:
                what = volume.source.cid or volume.source.url or volume.source.type
                return BidResponse(bid=False, reason=f"data not {self.mode}: {what}")
        return YES


def decide_now(strategies: Sequence[BidStrategy], request: BidRequest) -> BidResponse | None:
    """The chain's answer if every strategy it needs can give one without waiting (a
    strategy's optional ``decide_now(request)`` returning a response, not None), else
    None: then run :func:`decide`. Same answers as :func:`decide`, without a task."""
    for strategy in strategies:
        now: Callable[[BidRequest], BidResponse | None] | None = getattr(
            strategy, "decide_now", None
        )
        if now is None:
            return None
        try:
            answer = now(request)
        except BacalhauError as exc:
            return BidResponse(bid=False, reason=f"{type(strategy).__name__} failed: {exc}")
        if answer is None:
            return None
        if not answer.bid:
            return answer
    return YES


async def decide(strategies: Sequence[BidStrategy], request: BidRequest) -> BidResponse:
    """Run ``strategies`` in order; the first no wins (a strategy that fails says no)."""
    for strategy in strategies:
        try:
            answer = await strategy.decide(request)
        except BacalhauError as exc:
            return BidResponse(bid=False, reason=f"{type(strategy).__name__} failed: {exc}")
        if not answer.bid:
            return answer
    return YES
