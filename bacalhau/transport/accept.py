"""Accepting TCP connections on listening sockets, race-free on asyncio.

anyio's asyncio listener awaits ``loop.sock_accept``. When the accepting task is
cancelled in the same loop iteration as a connection arrives, CPython 3.11 still runs
the accept callback, which sets a result on the cancelled future: an
``InvalidStateError`` reaches the loop's exception handler (a test harness reports it
as a failure) and the accepted socket leaks (bpo-41317's sibling). Waiting for
readability and accepting without blocking has no such window: a cancelled wait just
ends, and a connection not yet accepted stays in the backlog.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import anyio.abc

__all__ = ["serve_sockets"]

log = logging.getLogger("bacalhau.transport")

_RESOURCE_LIMITS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Handler = Callable[[anyio.abc.SocketStream], Coroutine[Any, Any, None]]


async def serve_sockets(
    socks: Sequence[socket.socket], handler: Handler, tg: anyio.abc.TaskGroup
) -> None:
    """Accept connections on every socket in ``socks`` until cancelled; run
    ``handler(stream)`` for each in ``tg``. The sockets stay open (their owner closes
    them)."""
    async with anyio.create_task_group() as accepting:
        for sock in socks:
            accepting.start_soon(_accept_loop, sock, handler, tg)


async def _accept_loop(sock: socket.socket, handler: Handler, tg: anyio.abc.TaskGroup) -> None:
    sock.setblocking(False)
    while True:
        await anyio.wait_readable(sock)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue  # another accept took it, or the peer gave up first
        except OSError as exc:
            if exc.errno not in _RESOURCE_LIMITS:
                raise
            log.warning("accept: %s; retrying shortly", exc.strerror or exc)
            await anyio.sleep(0.1)  # out of descriptors or memory: let connections close
            continue
        try:
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = await anyio.abc.SocketStream.from_socket(conn)
        except BaseException:
            conn.close()
            raise
        tg.start_soon(handler, stream)
