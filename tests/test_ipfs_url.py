"""The ``url`` storage provider: downloads with a size limit and a checksum option."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bacalhau.errors import StorageError
from bacalhau.limits import JobLimits
from bacalhau.models import StorageSpec
from bacalhau.storage.url import UrlStorage

BODY = b"0123456789" * 10_000


async def chunks() -> AsyncIterator[bytes]:
    for _ in range(5):
        yield BODY


def mock(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/data":
        return httpx.Response(200, content=BODY)
    if request.url.path == "/moved":
        return httpx.Response(302, headers={"location": "/data"})
    if request.url.path == "/stream":  # no content-length: the limit applies while streaming
        return httpx.Response(200, content=chunks())
    return httpx.Response(404)


def provider(**kwargs: object) -> UrlStorage:
    limits = JobLimits(url_allow_domains=("example.test",))
    return UrlStorage(
        transport=httpx.MockTransport(mock),
        limits=limits,
        **kwargs,  # type: ignore[arg-type]
    )


LOOPBACK = JobLimits(url_allow_networks=("127.0.0.0/8",))


@pytest.mark.anyio
async def test_download_with_checksum(tmp_path: Path) -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    spec = StorageSpec.from_url("http://example.test/moved", checksum=f"sha256:{digest}")
    dest = await provider().prepare(spec, tmp_path / "in" / "file")
    assert dest.read_bytes() == BODY
    assert dest.stat().st_mode & 0o777 == 0o444
    assert not await provider().has_locally(spec)


@pytest.mark.anyio
async def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    spec = StorageSpec.from_url("http://example.test/data", checksum="sha256:" + "0" * 64)
    with pytest.raises(StorageError, match="checksum mismatch"):
        await provider().prepare(spec, tmp_path / "file")
    assert not any(os.scandir(tmp_path))


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/data", "/stream"])
async def test_size_limit(tmp_path: Path, path: str) -> None:
    spec = StorageSpec.from_url(f"http://example.test{path}")
    with pytest.raises(StorageError, match="limit"):
        await provider(max_size=50_000).prepare(spec, tmp_path / "file")
    assert not any(os.scandir(tmp_path))


@pytest.mark.anyio
async def test_http_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="HTTP 404"):
        await provider().prepare(StorageSpec.from_url("http://example.test/x"), tmp_path / "f")


@pytest.fixture
def server() -> Iterator[str]:
    with serving(BODY) as url:
        yield url


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A loopback HTTP server answering every GET with ``body``; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.mark.anyio
async def test_real_http_server_on_loopback(tmp_path: Path, server: str) -> None:
    dest = await UrlStorage(limits=LOOPBACK).prepare(
        StorageSpec.from_url(server + "/x"), tmp_path / "f"
    )
    assert dest.read_bytes() == BODY


@pytest.mark.anyio
async def test_connection_refused(tmp_path: Path) -> None:
    # The port stays bound, never listening, while it is asked: a connection is refused,
    # and no other process can take the port and answer meanwhile.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(StorageError, match="failed"):
            await UrlStorage(timeout=30, limits=LOOPBACK).prepare(
                StorageSpec.from_url(f"http://127.0.0.1:{port}/"), tmp_path / "f"
            )
