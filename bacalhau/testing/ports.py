"""Loopback ports for test servers that must be told their port before they start.

A server that binds port 0 and reports what it got cannot collide with anything, and is
always the better choice. Some servers cannot: ``nats-server`` needs its client, monitor
and route ports in its config file (routes name each other's ports), and a process that is
killed and restarted must come back on the port its clients know. For those:

- :func:`free_port` picks a port *outside* the kernel's ephemeral range (so no outgoing
  connection on the machine can take it in the meantime) and checks it binds now;
- :func:`is_port_clash` recognises "address already in use" in a server's output;
- :func:`with_fresh_ports` calls a start function again (with new ports) when it raises
  :class:`PortClash`, a bounded number of times.

Together these make "bind: address already in use" a retry, never a test failure.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = [
    "PortClash",
    "ephemeral_range",
    "free_port",
    "is_port_clash",
    "listening_socket",
    "with_fresh_ports",
]

T = TypeVar("T")

_DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default net.ipv4.ip_local_port_range
_LOWEST = 10000  # below this live well-known services and the project's own defaults (1234)
_CLASH_WORDS = ("address already in use", "eaddrinuse", "only one usage of each socket address")


class PortClash(RuntimeError):
    """A server could not bind its port: another process holds it. Retry with a fresh one."""


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (``(low, high)``, inclusive).

    Falls back to Linux's default where the file is missing or unreadable.
    """
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    if not 0 < low <= high <= 65535:
        return _DEFAULT_EPHEMERAL
    return low, high


def _candidates(rng: random.Random) -> list[int]:
    low, high = ephemeral_range()
    pool = [range(_LOWEST, low), range(high + 1, 65536)]
    sized = [r for r in pool if len(r) > 0]
    if not sized:  # the whole space is ephemeral: nothing better than the kernel's choice
        return []
    return [rng.choice(rng.choice(sized)) for _ in range(64)]


def _binds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening_socket(host: str = "127.0.0.1", *, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to a port of ``host`` the kernel picks, already listening: its
    address is known before any server runs, and no other process can take it meanwhile
    (nothing to retry, unlike :func:`free_port`). The caller closes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1", *, rng: random.Random | None = None) -> int:
    """A TCP port on ``host`` that binds right now, outside the ephemeral range.

    Another process may still take it before the caller's server binds it (that is what
    :func:`with_fresh_ports` is for), but no outgoing connection of any process will: the
    kernel gives those ports from the ephemeral range only.
    """
    chooser = rng or random.Random()
    for port in _candidates(chooser):
        if _binds(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # every candidate busy
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_port_clash(text: str) -> bool:
    """True when a server's output (log, stderr) says it could not bind a busy port."""
    lowered = text.lower()
    return any(word in lowered for word in _CLASH_WORDS)


def with_fresh_ports(start: Callable[[], T], *, attempts: int = 8) -> T:
    """``start()``, called again while it raises :class:`PortClash` (at most ``attempts``).

    ``start`` must choose new ports on each call (with :func:`free_port`) and clean up what
    it started before raising. The last clash is re-raised when every attempt clashed.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        try:
            return start()
        except PortClash:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
