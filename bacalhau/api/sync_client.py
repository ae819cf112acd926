"""The blocking facade over :class:`~bacalhau.api.client.Client`, for scripts without an
event loop (``with SyncClient(...) as client:``)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.from_thread

from . import client as _client

if TYPE_CHECKING:
    from ..live.events import NodeEvent
    from ..live.frames import LogFrame
    from ..live.node import LogRecord
    from ..models import JobResult, JobSpec, JobState, NodeInfo
    from ..node.receipt import Receipt
    from .schemas import (
        DataAdded,
        DataEntry,
        EventLine,
        Health,
        JobList,
        LogChunk,
        NodeList,
        ResultsList,
    )

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """The :class:`Client` for scripts without an event loop.

    It runs an event loop on a worker thread (anyio's blocking portal) for as
    long as it is open; use ``with SyncClient(...) as client:`` or call
    :meth:`close`. Methods and arguments are the Client's; async iterators
    become plain iterators.
    """

    def __init__(self, api: str | None = None, **options: Any) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        try:
            self._client = _client.Client(api, **options)
        except BaseException:
            self._stack.close()
            raise
        self.url = self._client.url

    def __repr__(self) -> str:
        return f"SyncClient({self.url})"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._stack.close()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self._portal.call(aclose)

    def health(self) -> Health:
        return self._call(self._client.health)

    def node_info(self) -> NodeInfo:
        return self._call(self._client.node_info)

    def list_nodes(self) -> NodeList:
        return self._call(self._client.list_nodes)

    def describe_node(self, node_id: str) -> NodeInfo:
        return self._call(self._client.describe_node, node_id)

    def submit(self, spec: JobSpec) -> str:
        return self._call(self._client.submit, spec)

    def list_jobs(self, **filters: Any) -> JobList:
        return self._call(self._client.list_jobs, **filters)

    def describe(self, job_id: str) -> JobResult:
        return self._call(self._client.describe, job_id)

    def results(self, job_id: str) -> ResultsList:
        return self._call(self._client.results, job_id)

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> JobState:
        return self._call(self._client.cancel, job_id, reason)

    def receipt(self, job_id: str) -> Receipt:
        return self._call(self._client.receipt, job_id)

    def events(self, job_id: str, *, follow: bool = True) -> Iterator[EventLine]:
        return self._iterate(self._client.events(job_id, follow=follow))

    def logs(self, job_id: str, **options: Any) -> Iterator[LogChunk]:
        return self._iterate(self._client.logs(job_id, **options))

    def log_stream(self, job_id: str, **options: Any) -> Iterator[LogRecord]:
        return self._iterate(self._client.log_stream(job_id, **options))

    def log_frames(self, job_id: str, **options: Any) -> Iterator[LogFrame]:
        return self._iterate(self._client.log_frames(job_id, **options))

    def node_events(self, **options: Any) -> Iterator[NodeEvent]:
        return self._iterate(self._client.node_events(**options))

    def network(self) -> list[NodeInfo]:
        return self._call(self._client.network)

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        return self._call(self._client.wait, job_id, timeout=timeout)

    def run(self, spec: JobSpec, *, timeout: float | None = None) -> JobResult:
        return self._call(self._client.run, spec, timeout=timeout)

    def add_bytes(self, data: bytes, **options: Any) -> DataAdded:
        return self._call(self._client.add_bytes, data, **options)

    def add_file(self, path: str | os.PathLike[str], **options: Any) -> DataAdded:
        return self._call(self._client.add_file, path, **options)

    def add_path(self, path: str | os.PathLike[str], **options: Any) -> str:
        return self._call(self._client.add_path, path, **options)

    def import_car(self, path: str | os.PathLike[str]) -> tuple[str, ...]:
        return self._call(self._client.import_car, path)

    def cat(self, cid: str, *, path: str | None = None) -> bytes:
        """The whole file (use :meth:`Client.cat` to stream a large one)."""

        async def read() -> bytes:
            return b"".join([p async for p in self._client.cat(cid, path=path)])

        return self._call(read)

    def ls(self, cid: str, *, path: str | None = None) -> list[DataEntry]:
        return self._call(self._client.ls, cid, path=path)

    def export_car(self, cid: str, dest: str | os.PathLike[str]) -> Path:
        return self._call(self._client.export_car, cid, dest)

    def download(self, cid: str, dest: str | os.PathLike[str]) -> Path:
        return self._call(self._client.download, cid, dest)

    def get_results(self, job_id: str, dest: str | os.PathLike[str]) -> tuple[str, Path]:
        return self._call(self._client.get_results, job_id, dest)

    def pins(self) -> dict[str, str]:
        return self._call(self._client.pins)

    def pin(self, cid: str) -> dict[str, str]:
        return self._call(self._client.pin, cid)

    def unpin(self, cid: str) -> dict[str, str]:
        return self._call(self._client.unpin, cid)

    def gc(self) -> int:
        return self._call(self._client.gc)
