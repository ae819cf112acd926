"""Hostile sources for ``bacalhau verify``: the node named by ``--inputs-from`` may
stream a CAR without end, and a ``--car`` file may lie about its blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from bacalhau import JobSpec
from bacalhau.api.client import Client
from bacalhau.cid import RAW, cid_str, make_cid
from bacalhau.errors import BacalhauError, StorageError
from bacalhau.models import InputSpec, StorageSpec
from bacalhau.node.rerun import Sources, car_fetcher, rerun_offline

pytestmark = pytest.mark.anyio


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _car(cid: bytes, block: bytes) -> bytes:
    raw = b"\x00" + cid
    header = b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes((len(raw),)) + raw + b"\x67version\x01"
    return _uvarint(len(header)) + header + _uvarint(len(cid) + len(block)) + cid + block


async def _endless() -> AsyncIterator[bytes]:
    chunk = b"\x00" * 65536
    for _ in range(10_000):  # 640 MiB if nobody stops reading
        yield chunk


async def test_an_endless_car_from_inputs_from_is_cut_off(tmp_path: Path) -> None:
    read: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        async for chunk in _endless():
            read.append(len(chunk))
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    async with Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler)) as client:
        fetch = car_fetcher(client, max_bytes=1 << 20)
        with pytest.raises(StorageError, match="passes 1048576 bytes"):
            await fetch("bafkqaaa", tmp_path / "in.car")
    assert sum(read) <= 2 << 20  # stopped reading soon after the bound
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []  # no partial file left


async def test_a_car_file_whose_block_lies_is_refused(tmp_path: Path) -> None:
    cid = make_cid(b"the input", codec=RAW, version=1)
    car = tmp_path / "in.car"
    car.write_bytes(_car(cid, b"not the input"))
    source = StorageSpec(type="ipfs", cid=cid_str(cid))
    spec = JobSpec.noop(inputs=[InputSpec(source, "/in")])
    with pytest.raises(BacalhauError, match="CAR file"):
        await rerun_offline("j-1", spec, tmp_path / "run", Sources(cars=(car,)))
