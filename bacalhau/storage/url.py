"""The ``url`` storage provider: download an HTTP(S) source, with a size limit, an
optional ``sha256:`` checksum, and a destination policy.

A job's input URL must not turn the node into the job's proxy into the node's own
network position (its loopback API, a cloud metadata service at 169.254.169.254, the
LAN). So before every connection, on the first request and on every redirect hop, the
host is resolved and **every** address it resolves to is checked; the connection then
goes to the checked address itself (the ``Host`` header and TLS name stay the URL's), so
a second DNS answer cannot swap in another address. Refused: loopback, link-local,
private, shared (CGNAT), multicast, unspecified, reserved and other non-global
addresses, including their IPv4-mapped and IPv4-compatible IPv6 forms, unless the
node allows them (``JobLimits.url_allow_networks`` / ``serve --allow-url-network``,
``url_allow_domains`` / ``--allow-url-domain``). The refusal is a ``StorageError``
whose reason reaches the job's events.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from ..errors import StorageError
from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..models import StorageSpec
from .base import StorageProvider

__all__ = ["DEFAULT_MAX_SIZE", "UrlStorage", "destination_refusal"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: how host names become IP addresses."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

DEFAULT_MAX_SIZE = 1024**3
"""Largest download accepted by default (1 GiB)."""

_FLUSH = 1024 * 1024

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _category(ip: IpAddress) -> str | None:
    """Why ``ip`` is not a public destination, or None when it is."""
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return name
    if not ip.is_global:
        return "not globally routable"
    return None


def destination_refusal(
    host: str, ip_text: str, limits: JobLimits = DEFAULT_JOB_LIMITS
) -> str | None:
    """Why a URL input may not connect to ``ip_text`` (resolved from ``host``), or None.

    ``host`` (or a parent domain of it) in ``limits.url_allow_domains``, or the address
    in one of ``limits.url_allow_networks``, allows it; otherwise any non-global address
    is refused, IPv4-mapped (``::ffff:127.0.0.1``) and IPv4-compatible forms included.
    """
    name = host.lower().rstrip(".")
    if any(name == d or name.endswith("." + d) for d in limits.url_allow_domains):
        return None
    try:
        ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
    except ValueError:
        return f"{ip_text!r} is not an IP address"
    candidates: list[IpAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        elif ip.packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
            candidates.append(ipaddress.IPv4Address(ip.packed[12:]))
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
    if any(c in net for c in candidates for net in limits.url_allow_networks):
        return None
    for candidate in reversed(candidates):  # an embedded IPv4 address names the risk best
        why = _category(candidate)
        if why is not None:
            shown = f"{ip} ({candidate})" if candidate != ip else str(ip)
            return f"{host} resolves to {shown}, a {why} address"
    return None


async def _resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class UrlStorage(StorageProvider):
    """Inputs of type ``url``: the body of an HTTP(S) GET, as one read-only file.

    Args:
        max_size: refuse bodies larger than this many bytes (default:
            ``limits.url_max_size``).
        timeout: seconds without progress before the download fails.
        max_redirects: redirects followed at most (each hop is checked).
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
        limits: the destination policy (``url_allow_networks``, ``url_allow_domains``).
        resolver: ``(host, port) -> addresses`` (default: the system's resolver).
    """

    type = "url"

    def __init__(
        self,
        *,
        max_size: int | None = None,
        timeout: float = 60.0,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: JobLimits = DEFAULT_JOB_LIMITS,
        resolver: Resolver | None = None,
    ) -> None:
        self.max_size = limits.url_max_size if max_size is None else max_size
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.transport = transport
        self.limits = limits
        self.resolver = resolver or _resolve

    async def _pin(self, url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """Check ``url``'s destination; return the URL to connect to (the checked IP),
        the headers and the request extensions that keep the original host name.

        Raises:
            StorageError: the scheme is not HTTP(S) or the destination is refused.
        """
        if url.scheme not in ("http", "https"):
            raise StorageError(f"GET {url}: only http and https URLs are fetched")
        host = url.host
        if not host:
            raise StorageError(f"GET {url}: no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        name = host.lower().rstrip(".")
        if any(name == d or name.endswith("." + d) for d in self.limits.url_allow_domains):
            return url, {}, {}
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await self.resolver(host, port)
            except OSError as exc:
                raise StorageError(f"GET {url}: cannot resolve {host}: {exc}") from None
        if not addresses:
            raise StorageError(f"GET {url}: {host} resolves to no address")
        for address in addresses:
            why = destination_refusal(host, address, self.limits)
            if why is not None:
                raise StorageError(
                    f"GET {url} refused: {why}; this node fetches URL inputs only from public "
                    "addresses (serve --allow-url-network / --allow-url-domain allow others)"
                )
        pinned = url.copy_with(host=addresses[0].split("%", 1)[0])
        headers = {"host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return pinned, headers, extensions

    async def has_locally(self, spec: StorageSpec) -> bool:
        """A URL is never local: it is downloaded when the job runs."""
        return False

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        """Download ``spec.url`` to the file ``dest`` (read-only), checking size and checksum.

        The body goes to a temporary name first, so ``dest`` exists only when
        complete and verified.

        Raises:
            StorageError: HTTP error status, too large, checksum mismatch, or network failure.
        """
        if spec.type != "url" or not spec.url:
            raise StorageError(f"the url provider cannot read a {spec.type!r} source")
        url = spec.url
        part = dest.with_name(f".{dest.name}.part")
        hasher = hashlib.sha256()
        received = 0
        try:
            await anyio.to_thread.run_sync(lambda: dest.parent.mkdir(parents=True, exist_ok=True))
            fh = await anyio.to_thread.run_sync(open, part, "wb")
            try:
                async with (
                    httpx.AsyncClient(
                        transport=self.transport,
                        timeout=self.timeout,
                        follow_redirects=False,
                        trust_env=False,
                    ) as client,
                    self._get(client, httpx.URL(url)) as response,
                ):
                    if response.status_code >= 400:
                        status = f"{response.status_code} {response.reason_phrase}"
                        raise StorageError(f"GET {url} failed: HTTP {status}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_size:
                        raise StorageError(
                            f"GET {url}: {declared} bytes exceeds the {self.max_size}-byte limit"
                        )
                    pending: list[bytes] = []
                    held = 0
                    async for piece in response.aiter_bytes():
                        received += len(piece)
                        if received > self.max_size:
                            raise StorageError(
                                f"GET {url}: body exceeds the {self.max_size}-byte limit"
                            )
                        hasher.update(piece)
                        pending.append(piece)
                        held += len(piece)
                        if held >= _FLUSH:
                            await anyio.to_thread.run_sync(fh.write, b"".join(pending))
                            pending, held = [], 0
                    if pending:
                        await anyio.to_thread.run_sync(fh.write, b"".join(pending))
            finally:
                fh.close()
            if spec.checksum is not None:
                want = spec.checksum.removeprefix("sha256:")
                got = hasher.hexdigest()
                if got != want:
                    raise StorageError(
                        f"GET {url}: checksum mismatch (expected sha256:{want}, got sha256:{got})"
                    )
            await anyio.to_thread.run_sync(os.chmod, part, 0o444)
            await anyio.to_thread.run_sync(os.replace, part, dest)
        except httpx.HTTPError as exc:
            await _discard(part)
            raise StorageError(f"GET {url} failed: {exc}") from None
        except BaseException:
            await _discard(part)
            raise
        return dest

    def _get(self, client: httpx.AsyncClient, url: httpx.URL) -> _Hops:
        return _Hops(self, client, url)


class _Hops:
    """``async with``: GET ``url``, following redirects by hand, each hop checked."""

    def __init__(self, storage: UrlStorage, client: httpx.AsyncClient, url: httpx.URL) -> None:
        self.storage = storage
        self.client = client
        self.url = url
        self.response: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        url = self.url
        for _ in range(self.storage.max_redirects + 1):
            pinned, headers, extensions = await self.storage._pin(url)
            request = self.client.build_request(
                "GET", pinned, headers=headers, extensions=extensions
            )
            response = await self.client.send(request, stream=True)
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                await response.aclose()
                url = url.join(location)
                continue
            self.response = response
            return response
        raise StorageError(f"GET {self.url}: more than {self.storage.max_redirects} redirects")

    async def __aexit__(self, *exc: object) -> None:
        if self.response is not None:
            await self.response.aclose()


async def _discard(part: Path) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: part.unlink(missing_ok=True))
