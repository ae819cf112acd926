"""Listening for the API: the socket and a uvicorn server that leaves signals alone."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import attrs
import uvicorn

from ..errors import BacalhauError, ValidationError

__all__ = ["ApiAddress", "QuietServer", "bind_listener", "is_loopback"]


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the caller's cancellation stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_listener(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValidationError(f"cannot listen on {host!r}: {exc.strerror}", field="host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BacalhauError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            + (
                " (another node or program uses it; pick another port)"
                if exc.errno in (98, 48)
                else ""
            )
        ) from None
    return sock


@attrs.frozen
class ApiAddress:
    """Where the API listens (the port is the real one when 0 was asked for)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url.removeprefix("http://")


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (with or without brackets)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
