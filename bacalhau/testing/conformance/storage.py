"""The storage conformance suite: what every :class:`~bacalhau.storage.base.StorageProvider` does.

Write a :class:`StorageHarness` (how to make your provider and a source of given bytes)
and run the applicable checks::

    from bacalhau.testing.conformance import storage as suite

    @pytest.mark.parametrize("check", suite.checks_for(MyHarness))
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await suite.CHECKS[check](MyHarness(), tmp_path)

Features: ``directories`` (:meth:`StorageHarness.directory` gives a source that is a
folder of files) and ``missing`` (:meth:`StorageHarness.missing` gives a source whose
data cannot be had).
"""

from __future__ import annotations

import abc
import os
import stat
import threading
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread

from ...errors import StorageError
from ...models import StorageSpec
from ...storage.base import StorageProvider
from ._suite import Suite

__all__ = ["CHECKS", "SIZES", "StorageHarness", "checks_for"]

SIZES = (0, 1, 1000, 300_000)
"""Source sizes every provider must round-trip (the last spans several 256 KiB chunks)."""


class StorageHarness(abc.ABC):
    """How the suite makes your provider and the sources it reads."""

    features: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    async def make(self, folder: Path) -> StorageProvider:
        """A fresh provider; ``folder`` is the harness's to use (a block store, files)."""

    @abc.abstractmethod
    async def source(self, data: bytes) -> StorageSpec:
        """A source of the provider's type whose content is the single file ``data``."""

    async def directory(self, files: dict[str, bytes]) -> StorageSpec:
        """A source that is a folder holding ``files`` (``/``-separated relative paths)."""
        raise NotImplementedError

    async def missing(self) -> StorageSpec:
        """A source of the provider's type whose data cannot be had."""
        raise NotImplementedError


_suite: Suite[StorageHarness] = Suite()
CHECKS = _suite.checks
checks_for = _suite.checks_for


def _payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def _read_only(path: Path) -> bool:
    return not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


@_suite.check()
async def check_files_round_trip_read_only(harness: StorageHarness, folder: Path) -> None:
    """``prepare`` puts the exact bytes at ``dest`` (creating its parents), read-only."""
    provider = await harness.make(folder / "provider")
    for size in SIZES:
        data = _payload(size)
        dest = folder / "volumes" / str(size) / "input"
        path = await provider.prepare(await harness.source(data), dest)
        assert path.is_file(), f"prepare() of a single-file source gave {path}"
        assert path.read_bytes() == data, f"{size} bytes did not round-trip"
        assert _read_only(path), f"the prepared file {path} is writable"


@_suite.check()
async def check_reader_agrees_with_prepare(harness: StorageHarness, folder: Path) -> None:
    """``open_reader`` is None, or a thread-safe reader of the same bytes and size."""
    provider = await harness.make(folder / "provider")
    data = _payload(300_000)
    opened = await provider.open_reader(await harness.source(data))
    if opened is None:
        return  # the provider cannot stream: the runner uses prepare() (checked above)
    read, size = opened
    assert size == len(data)
    for offset, length in ((0, 10), (262_140, 10), (299_990, 100), (0, len(data))):
        assert read(offset, length) == data[offset : offset + length], (offset, length)
    assert read(len(data), 10) == b"", "reading at the end gives no bytes"
    errors: list[BaseException] = []

    def hammer(start: int) -> None:
        try:
            for offset in range(start, len(data), 37_001):
                assert read(offset, 4096) == data[offset : offset + 4096]
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    def threads() -> None:
        workers = [threading.Thread(target=hammer, args=(i * 1000,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    await anyio.to_thread.run_sync(threads)
    assert errors == [], f"concurrent reads disagreed: {errors[0]!r}"


@_suite.check()
async def check_a_source_of_another_type_is_refused(harness: StorageHarness, folder: Path) -> None:
    provider = await harness.make(folder / "provider")
    other = (
        StorageSpec(type="url", url="https://example.invalid/x")
        if provider.type == "inline"
        else StorageSpec.inline(b"not mine")
    )
    error: StorageError | None = None
    try:
        await provider.prepare(other, folder / "dest")
    except StorageError as exc:
        error = exc
    assert error is not None, f"the {provider.type} provider prepared a {other.type} source"


@_suite.check()
async def check_has_locally_answers(harness: StorageHarness, folder: Path) -> None:
    provider = await harness.make(folder / "provider")
    assert isinstance(await provider.has_locally(await harness.source(b"here")), bool)


@_suite.check()
async def check_concurrent_prepares_stay_apart(harness: StorageHarness, folder: Path) -> None:
    provider = await harness.make(folder / "provider")
    datas = [_payload(1000 + i) + bytes([i]) for i in range(4)]
    specs = [await harness.source(d) for d in datas]
    got: dict[int, bytes] = {}

    async def prepare(i: int) -> None:
        path = await provider.prepare(specs[i], folder / "volumes" / str(i))
        got[i] = await anyio.to_thread.run_sync(path.read_bytes)

    async with anyio.create_task_group() as tg:
        for i in range(len(specs)):
            tg.start_soon(prepare, i)
    assert got == dict(enumerate(datas))


@_suite.check("missing")
async def check_missing_data_is_a_storage_error(harness: StorageHarness, folder: Path) -> None:
    """Data that cannot be had raises ``StorageError`` and leaves nothing at ``dest``."""
    provider = await harness.make(folder / "provider")
    dest = folder / "volumes" / "missing"
    error: StorageError | None = None
    try:
        await provider.prepare(await harness.missing(), dest)
    except StorageError as exc:
        error = exc
    assert error is not None, "prepare() of missing data did not raise StorageError"
    assert str(error).strip(), "the error says what went wrong"
    assert not dest.exists(), "a failed prepare() left something at dest"


@_suite.check("directories")
async def check_folders_round_trip_read_only(harness: StorageHarness, folder: Path) -> None:
    files = {"a.txt": b"alpha", "sub/b.bin": _payload(300_000), "sub/deeper/c": b"", ".h": b"h"}
    provider = await harness.make(folder / "provider")
    dest = folder / "volumes" / "tree"
    path = await provider.prepare(await harness.directory(files), dest)
    assert path.is_dir()
    found = {
        str(p.relative_to(path)).replace(os.sep, "/"): p.read_bytes()
        for p in path.rglob("*")
        if p.is_file()
    }
    assert found == files
    assert all(_read_only(path / name) for name in files), "prepared files are writable"
