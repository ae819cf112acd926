"""Connection limits of the API server: a cap, header and body deadlines, quiet refusals.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but
not a connection that never finishes its request headers, and it has no cap on
connections: 21k idle sockets once used every file descriptor of a node. The
protocol class here is uvicorn's h11 protocol with:

* **a connection cap**: past ``max_connections`` the oldest connection that is
  not serving a request (still waiting for headers, or idle between requests)
  is closed to make room; only when every connection is busy is the newcomer
  refused. So idle sockets cannot lock a normal client out.
* **a header deadline**: a connection must send complete request headers within
  ``header_timeout`` of opening (or of its previous response), else it is closed.
* **a body deadline**: a request body must arrive within ``body_timeout`` of its
  headers.
* **rate-limited logging**: refusals, evictions and expiries are counted and
  logged at most once per ``LOG_EVERY`` seconds, and uvicorn's own per-request
  warnings ("Invalid HTTP request received") pass the same kind of filter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import attrs
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionGuard", "RateLimitFilter", "guarded_protocol"]

log = logging.getLogger("bacalhau.api")

LOG_EVERY = 10.0
"""Seconds between two log lines about refused or expired connections."""


class RateLimitFilter(logging.Filter):
    """Lets ``burst`` records through per ``period`` seconds, then one summary line."""

    def __init__(self, *, burst: int = 5, period: float = LOG_EVERY) -> None:
        super().__init__()
        self.burst, self.period = burst, period
        self._window = 0.0
        self._passed = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window >= self.period:
            if self.suppressed:
                record.msg = f"{record.msg} (and {self.suppressed} more like it suppressed)"
            self._window, self._passed, self.suppressed = now, 0, 0
        self._passed += 1
        if self._passed > self.burst:
            self.suppressed += 1
            return False
        return True


_UVICORN_FILTER = RateLimitFilter()


def quiet_uvicorn() -> None:
    """Rate-limit uvicorn's per-connection warnings (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _UVICORN_FILTER not in logger.filters:
        logger.addFilter(_UVICORN_FILTER)


@attrs.define(eq=False)
class ConnectionGuard:
    """The limits and the open connections of one server (oldest first)."""

    max_connections: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    open: OrderedDict[Any, None] = attrs.Factory(OrderedDict)
    counts: dict[str, int] = attrs.Factory(
        lambda: {"refused": 0, "evicted": 0, "header_timeouts": 0, "body_timeouts": 0}
    )
    _logged: float = 0.0
    _logged_counts: dict[str, int] = attrs.Factory(dict)

    def note(self, what: str) -> None:
        self.counts[what] += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            news = {k: v - self._logged_counts.get(k, 0) for k, v in self.counts.items()}
            self._logged, self._logged_counts = now, dict(self.counts)
            text = ", ".join(f"{v} {k}" for k, v in news.items() if v)
            log.warning(
                "API connection limits (%d open, cap %d): %s since last report",
                len(self.open),
                self.max_connections,
                text,
            )

    def opened(self, conn: GuardedH11Protocol) -> bool:
        """Register ``conn``; make room by closing the oldest idle one. False: refuse it."""
        self.open[conn] = None
        while len(self.open) > self.max_connections:
            victim = next((c for c in self.open if c is not conn and c.idle), None)
            if victim is None:
                self.open.pop(conn, None)
                self.note("refused")
                return False
            self.open.pop(victim, None)
            victim.close_quietly()
            self.note("evicted")
        return True

    def closed(self, conn: GuardedH11Protocol) -> None:
        self.open.pop(conn, None)

    def close_all(self) -> None:
        """Close every connection still open (the server has stopped). uvicorn cancels
        a request that outlives its graceful shutdown but leaves its connection open:
        the client would wait on it, and the socket would leak until collected."""
        for conn in list(self.open):
            conn.close_quietly()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`ConnectionGuard` (see the module docs)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "headers"

    @property
    def idle(self) -> bool:
        """Not serving a request: waiting for (the rest of) request headers."""
        return self._phase == "headers"

    def _arm(self, seconds: float, why: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._expire, why)

    def _expire(self, why: str) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.note(why)
            self.close_quietly()

    def close_quietly(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.opened(self):
            self.close_quietly()
            return
        self._arm(self.guard.header_timeout, "header_timeouts")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._progress()

    def _progress(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        if self._phase == "headers":
            if cycle.more_body:
                self._phase = "body"
                self._arm(self.guard.body_timeout, "body_timeouts")
            else:
                self._phase = "busy"
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
        elif self._phase == "body" and not cycle.more_body:
            self._phase = "busy"
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._phase = "headers"
        if self.transport is not None and not self.transport.is_closing():
            self._arm(self.guard.header_timeout, "header_timeouts")
            self._progress()  # a pipelined request may already be in

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.guard.closed(self)
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to ``guard``."""
    quiet_uvicorn()
    return type("GuardedH11", (GuardedH11Protocol,), {"guard": guard})
