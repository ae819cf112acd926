"""The ``url`` storage provider: download an HTTP(S) source, with a size limit and an
optional ``sha256:`` checksum."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from ..errors import StorageError
from ..models import StorageSpec
from .base import StorageProvider

__all__ = ["DEFAULT_MAX_SIZE", "UrlStorage"]

DEFAULT_MAX_SIZE = 1024**3
"""Largest download accepted by default (1 GiB)."""

_FLUSH = 1024 * 1024


class UrlStorage(StorageProvider):
    """Inputs of type ``url``: the body of an HTTP(S) GET, as one read-only file.

    Args:
        max_size: refuse bodies larger than this many bytes.
        timeout: seconds without progress before the download fails.
        max_redirects: redirects followed at most.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
    """

    type = "url"

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float = 60.0,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.max_size = max_size
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.transport = transport

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
                        follow_redirects=True,
                        max_redirects=self.max_redirects,
                    ) as client,
                    client.stream("GET", url) as response,
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


async def _discard(part: Path) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: part.unlink(missing_ok=True))
