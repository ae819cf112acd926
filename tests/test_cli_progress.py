"""Progress of long transfers: the client reports bytes as they move; the CLI draws a
rich bar on a terminal and nothing elsewhere."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import anyio
import pytest

from bacalhau.api.client import Client
from bacalhau.api.server import serve_api
from bacalhau.cli.progress import MIN_BYTES, transfer_progress
from bacalhau.network import Network


def test_a_bar_with_bytes_and_rate_on_a_terminal() -> None:
    out = io.StringIO()
    with transfer_progress("adding big.bin", stream=out, force_terminal=True) as progress:
        progress(0, 64 * 1024 * 1024)
        progress(32 * 1024 * 1024, 64 * 1024 * 1024)
        progress(64 * 1024 * 1024, 64 * 1024 * 1024)
    text = out.getvalue()
    assert "adding big.bin" in text
    assert "64.0/64.0 MiB" in text
    assert "/s" in text


def test_nothing_when_not_a_terminal_or_small() -> None:
    piped = io.StringIO()  # isatty() is False, as for a pipe or a file
    with transfer_progress("adding big.bin", stream=piped) as progress:
        progress(64 * 1024 * 1024, 64 * 1024 * 1024)
    assert piped.getvalue() == ""
    small = io.StringIO()
    with transfer_progress("adding small", stream=small, force_terminal=True) as progress:
        progress(10, MIN_BYTES - 1)
    assert small.getvalue() == ""


@pytest.mark.anyio
async def test_the_client_reports_uploads_and_downloads(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        async with Client(str(address)) as client:
            sent: list[tuple[int, int | None]] = []
            added = await client.add_file(big, progress=lambda d, t: sent.append((d, t)))
            assert sent[-1] == (big.stat().st_size, big.stat().st_size)
            assert [d for d, _ in sent] == sorted(d for d, _ in sent)
            got: list[tuple[int, int | None]] = []
            dest = await client.download(
                added.cid, tmp_path / "back.bin", progress=lambda d, t: got.append((d, t))
            )
            assert dest.read_bytes() == big.read_bytes()
            assert got[-1][0] == got[-1][1]  # the CAR's length was known and reached
            assert got[-1][0] > big.stat().st_size
        tg.cancel_scope.cancel()
