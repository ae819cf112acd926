"""What a node adds so people can watch it: live logs of its executions (served to the
job's requester over the transport), its event stream, and its info for network views.

:class:`NodeWatch` is created by the node; the API follows a job's logs through
:meth:`NodeWatch.follow_logs`, wherever the job's executions run.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Set
from typing import Any, cast

import anyio
import anyio.abc
import attrs
import orjson

from ..errors import BacalhauError, DecodeError, TransportError
from ..ids import names_node
from ..models import NodeInfo
from ..protocol.nodes import NodeTable
from ..wire import pack, unpack
from .codec import decode_columns, encode_reply, note
from .events import EventHub
from .logs import STREAMS, LogBuffer, LogColumns, LogHub

__all__ = [
    "LOGS_PROTOCOL",
    "LogChunkLive",
    "LogRecord",
    "NodeWatch",
]

LOGS_PROTOCOL = "logs/2"
LINGER = 0.2
"""After new output wakes a follower, it waits this long so lines come in batches (a
job printing fast costs a follower a few reads a second, not one per line)."""
BATCH_LINES = 1000
"""A follower with at least this many lines to read reads them at once (no linger)."""
MAX_WAIT = 5.0
"""Longest a remote log read waits for new lines before answering."""
_STREAMS = frozenset(STREAMS)
REPLY_BYTES = 448 * 1024
"""Most output one read returns, as the buffer counts it (characters + 64 a line): some
6,000 short lines. A character takes at most 4 bytes in UTF-8, so even the worst reply
stays under the 2 MiB a peer's reply may have."""
READ_LINES = 10_000
"""Most lines one read returns."""
PEER_POLL = 1.0
"""Seconds between looks at the peers and the node table (for NodeJoined / NodeLeft)."""


@attrs.frozen(kw_only=True)
class LogRecord:
    """One line of a job's live output, or a note (what :meth:`Client.log_stream
    <bacalhau.api.client.Client.log_stream>` yields).

    A log line has ``seq``, ``stream`` and ``text``; a note has ``skipped`` (lines of
    that execution evicted before this follower read them) or ``end`` (the execution's
    output is complete; ``detail`` says why when no live output could be had).
    """

    node_id: str
    seq: int = -1
    stream: str = ""
    text: str = ""
    time: float = 0.0
    partial: bool = False
    skipped: int = 0
    end: bool = False
    detail: str = ""


@attrs.frozen(kw_only=True)
class LogChunkLive:
    """One NDJSON line of ``GET /api/v1/jobs/{id}/logs/stream``: what one read of one
    execution's output gave.

    Attributes:
        node_id: the execution's node.
        lines: ``[seq, stream, text, time, partial]`` per line, in order.
        skipped: lines evicted before this follower read them (0: none missed).
        end: the execution's output is complete.
        detail: why, when an execution ended without live output.
    """

    node_id: str
    lines: tuple[tuple[int, str, str, float, bool], ...] = ()
    skipped: int = 0
    end: bool = False
    detail: str = ""

    @classmethod
    def parse(cls, line: str | bytes) -> LogChunkLive:
        """One NDJSON line of the stream, checked field by field (C-level passes and one
        generator over the lines: a follower of a fast job reads tens of thousands of
        lines a second, and a per-line schema conversion cost ~20 us each).

        Raises:
            DecodeError: not such a line (naming the field).
        """
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"log stream: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DecodeError("log stream: a line must be an object")
        node_id, rows = data.get("node_id"), data.get("lines", [])
        skipped, end, detail = (
            data.get("skipped", 0),
            data.get("end", False),
            data.get("detail", ""),
        )
        if not isinstance(node_id, str):
            raise DecodeError("log stream: node_id must be a string")
        if type(skipped) is not int or skipped < 0:
            raise DecodeError("log stream: skipped must be a non-negative integer")
        if type(end) is not bool or not isinstance(detail, str):
            raise DecodeError("log stream: end must be a boolean and detail a string")
        if not isinstance(rows, list) or not all(
            type(r) is list
            and len(r) == 5
            and type(r[0]) is int
            and type(r[1]) is str  # a list or map here is unhashable: no TypeError
            and r[1] in _STREAMS
            and type(r[2]) is str
            and type(r[3]) in (float, int)
            and type(r[4]) is bool
            for r in rows
        ):
            raise DecodeError(
                "log stream: lines must be [seq, stream, text, time, partial] "
                "(an integer, stdout or stderr, a string, a number, a boolean)"
            )
        lines = cast(tuple[tuple[int, str, str, float, bool], ...], tuple(map(tuple, rows)))
        return cls(node_id=node_id, lines=lines, skipped=skipped, end=end, detail=detail)

    def records(self) -> list[LogRecord]:
        """The chunk as :class:`LogRecord` values (a ``skipped`` note, lines, ``end``)."""
        out = [LogRecord(node_id=self.node_id, skipped=self.skipped)] if self.skipped else []
        out.extend(
            LogRecord(
                node_id=self.node_id, seq=seq, stream=stream, text=text, time=t, partial=partial
            )
            for seq, stream, text, t, partial in self.lines
        )
        if self.end:
            out.append(LogRecord(node_id=self.node_id, end=True, detail=self.detail))
        return out


async def _gather(buffer: LogBuffer, cursor: int, wait: float | None) -> None:
    """Wait (at most ``wait`` seconds; None: as long as it takes) for output after
    ``cursor``, then let it gather until a batch's worth (:data:`BATCH_LINES`) is there,
    the output ends or :data:`LINGER` has passed.

    A follower so reads a job printing a little in a few reads a second, and one
    printing fast in reads of thousands of lines as soon as they are there (it keeps up
    with the job instead of letting the buffer drop what it has not read); the writer
    wakes it once per batch, not once per write.
    """
    with anyio.move_on_after(wait):
        await buffer.wait(cursor)
    if not buffer.closed and buffer.next_seq - cursor < BATCH_LINES:
        with anyio.move_on_after(LINGER):
            await buffer.wait(cursor + BATCH_LINES - 1)


def _encode(node_id: str, columns: LogColumns, batch: bool) -> bytes:
    try:
        return columns.frame(node_id) if batch else columns.ndjson(node_id)
    except (TypeError, ValueError) as exc:  # not JSON (a peer's reply is checked first)
        raise DecodeError(f"malformed log reply: {exc}") from None


@attrs.define(eq=False)
class NodeWatch:
    """Live logs, events and info of one node (``node.watch``)."""

    node: Any
    events: EventHub = attrs.Factory(EventHub)
    held: bool = False
    """While True, :meth:`poll` publishes nothing (a :class:`~bacalhau.network.Network`
    starting its nodes: they do not join, they are there; it calls :meth:`start` once
    all have started)."""
    _registered: bool = False

    @property
    def logs(self) -> LogHub:
        hub: LogHub = self.node.runner.logs
        return hub

    # --- node hooks -----------------------------------------------------------------------

    def register(self) -> None:
        """Serve remote log reads (before the transport starts)."""
        if self._registered:
            return
        self._registered = True
        self.node.register_protocol(LOGS_PROTOCOL, self._serve_logs)

    def job_changed(self, job_id: str) -> None:
        job = self.node.requester.jobs.get(job_id)
        if job is not None:
            self.events.job_changed(job_id, job.history, job.state.value)

    period = PEER_POLL
    """Seconds between calls of :meth:`poll` (the node runs it, on its own or from the
    ticker its network shares)."""

    def start(self) -> None:
        """Record the nodes seen now (the next :meth:`poll` publishes what changed)."""
        self.events.peers_seen(self.members())

    def poll(self) -> None:
        """Publish the nodes that joined and left since the last look."""
        if not self.held:
            self.events.peers_now(self.members())

    # --- serving peers --------------------------------------------------------------------

    async def _serve_logs(self, peer_id: str, payload: bytes) -> bytes:
        """A remote follower (only the job's requester) reads from a cursor, waiting up to
        ``wait`` seconds for lines when there are none yet."""
        req = unpack(payload)
        if not isinstance(req, dict):
            raise DecodeError("log request must be a map")
        job_id, cursor, tail, wait = req.get("job"), req.get("cursor"), req.get("tail"), 0.0
        if not isinstance(job_id, str) or len(job_id) > 200:
            raise DecodeError("log request: job must be a job id")
        if cursor is not None and (not isinstance(cursor, int) or cursor < 0):
            raise DecodeError("log request: cursor must be a non-negative integer")
        if tail is not None and (not isinstance(tail, int) or tail < 0):
            raise DecodeError("log request: tail must be a non-negative integer")
        raw_wait = req.get("wait", 0)
        if isinstance(raw_wait, int | float) and math.isfinite(raw_wait):
            wait = min(max(0.0, float(raw_wait)), MAX_WAIT)
        job = self.node.compute.jobs.get(job_id)
        if job is None or job.requester_id != peer_id:
            return pack({"found": False, "reason": "no execution of that job for you here"})
        buffer = self.logs.get(job_id)
        if buffer is None and wait:
            with anyio.move_on_after(wait):
                while buffer is None:
                    await self.logs.wait_opened()
                    buffer = self.logs.get(job_id)
        if buffer is None:
            return pack({"found": False, "reason": "no output yet"})
        if cursor is None:
            cursor = buffer.tail_cursor(tail) if tail is not None else 0
        if wait:
            await _gather(buffer, cursor, wait)
        read = buffer.read_columns(cursor, limit=READ_LINES, max_bytes=REPLY_BYTES)
        return encode_reply(read, joined=req.get("joined") is True)

    def network(self) -> list[NodeInfo]:
        """This node (what it announces, with its transport and peers), then every other
        node its requester knows from their signed announcements (live ones), by id.

        Nothing is asked of any peer: a view costs no traffic however often it is read,
        and it shows the nodes the requester would schedule on, with their labels,
        capacity and load as of their last announcement. A node with no requester role
        keeps no table and shows only itself (with its peers).
        """
        me = self.node.info()
        own = attrs.evolve(self.node.announcement(), peers=me.peers, transport=me.transport)
        known = sorted(
            (i for i in self.node.known_nodes() if i.node_id != own.node_id),
            key=lambda i: i.node_id,
        )
        return [own, *known]

    def members(self) -> Set[str]:
        """The other nodes this node sees: its transport's peers and the live nodes of its
        requester's table (one that leaves both has left)."""
        peers = self.node.peers()
        table: NodeTable = self.node.requester.nodes
        table.expire(self.node.clock.now())
        known = table.nodes.keys()  # a view: no copy of a thousand ids every second
        me = self.node.node_id
        if isinstance(peers, frozenset) and me not in peers and known <= peers:
            return peers  # the transport's own set (a compute-only node knows no table)
        return (set(peers) | known) - {me}

    # --- following a job's logs -----------------------------------------------------------

    async def follow_logs(
        self,
        job_id: str,
        emit: Callable[[bytes], Awaitable[None]],
        *,
        node_prefix: str = "",
        tail: int | None = None,
        follow: bool = True,
        batch: bool = False,
    ) -> None:
        """Hand ``emit`` the live output of every execution of ``job_id`` (a job this node
        requested) on the nodes ``node_prefix`` names (:func:`~bacalhau.ids.names_node`:
        the id's start or end; "" for every node): what is kept so far (the
        last ``tail`` lines of each when given), then, with ``follow``, new lines as they
        are written, until the job is terminal and every execution's output has ended.

        Each read of one execution's output is one ``emit``: a line of NDJSON (a
        :class:`LogChunkLive`) or, with ``batch``, a ``format=batch`` frame (a
        :class:`~bacalhau.live.frames.LogFrame`: columns, no step a line).

        A slow ``emit`` delays only this follower: the executions' buffers drop what it
        has not read in time (it then gets a ``skipped`` record), never the job.
        """
        started: set[str] = set()
        lock = anyio.Lock()

        async def send(records: bytes) -> None:
            async with lock:  # the lines of one read stay together
                await emit(records)

        async def one(node_id: str) -> None:
            try:
                await self._follow_execution(job_id, node_id, tail, follow, batch, send)
            except (BacalhauError, TransportError) as exc:
                await send(note(node_id, detail=f"live output: {exc}", batch=batch))

        async with anyio.create_task_group() as tg:
            while True:
                result = self.node.describe(job_id)
                for ex in result.executions:
                    if names_node(ex.node_id, node_prefix) and ex.node_id not in started:
                        started.add(ex.node_id)
                        tg.start_soon(one, ex.node_id)
                if not follow or result.state.terminal:
                    break
                await self.node.changed(job_id).wait()

    async def _follow_execution(
        self,
        job_id: str,
        node_id: str,
        tail: int | None,
        follow: bool,
        batch: bool,
        out: Callable[[bytes], Awaitable[None]],
    ) -> None:
        if node_id == self.node.node_id:
            await self._follow_local(job_id, tail, follow, batch, out)
            return
        cursor: int | None = None
        while True:
            request = {
                "job": job_id,
                "cursor": cursor,
                "tail": tail,
                "wait": MAX_WAIT * follow,
                "joined": True,  # the texts as one string (a node that predates it: an array)
            }
            raw = await self.node.request(
                node_id, LOGS_PROTOCOL, pack(request), timeout=MAX_WAIT + 10
            )
            columns = decode_columns(raw)
            if columns is None:
                if not follow or self._execution_over(job_id, node_id):
                    await out(note(node_id, detail="no live output kept", batch=batch))
                    return
                with anyio.move_on_after(1.0):  # refused at once: look again on a change
                    await self.node.changed(job_id).wait()
                continue
            if columns.count or columns.skipped or columns.closed:
                await out(_encode(node_id, columns, batch))
            if columns.closed or (not follow and not columns.count):
                if not columns.closed:
                    await out(note(node_id, detail="still running", batch=batch))
                return
            cursor = columns.next

    def _execution_over(self, job_id: str, node_id: str) -> bool:
        result = self.node.describe(job_id)
        if result.state.terminal:
            return True
        return any(e.node_id == node_id and e.state.terminal for e in result.executions)

    async def _follow_local(
        self,
        job_id: str,
        tail: int | None,
        follow: bool,
        batch: bool,
        out: Callable[[bytes], Awaitable[None]],
    ) -> None:
        node_id = self.node.node_id
        buffer: LogBuffer | None = self.logs.get(job_id)
        while buffer is None:
            if not follow or self._execution_over(job_id, node_id):
                await out(note(node_id, detail="no live output kept", batch=batch))
                return
            with anyio.move_on_after(MAX_WAIT):
                await self.logs.wait_opened()
            buffer = self.logs.get(job_id)
        cursor = buffer.tail_cursor(tail) if tail is not None else 0
        while True:
            read = buffer.read_columns(cursor, limit=READ_LINES, max_bytes=REPLY_BYTES)
            if read.count or read.skipped or read.closed:
                await out(_encode(node_id, read, batch))
            if read.closed:
                return
            if not follow and not read.count:
                await out(note(node_id, detail="still running", batch=batch))
                return
            cursor = read.next
            if follow:
                await _gather(buffer, cursor, None)
