"""Write a DAG's files from a CAR byte stream while it arrives, in bounded memory.

:class:`CarParser` is a push parser of CARv1 (no I/O: feed it bytes, it hands back
the complete blocks so far); it holds at most one section (a block, at most
:data:`~bacalhau.storage.ipfs.car.MAX_SECTION`) plus the bytes fed since.
:func:`export_car_stream` runs it over an async stream of chunks (an HTTP body),
checks every block against its CID and stores it in a scratch block store in
batches, while the exporter writes the files under ``dest`` from that store as
soon as their blocks are there. So the archive never lies on disk whole, nothing
is held in memory beyond a batch, and what lands under ``dest`` is exactly the
DAG ``cid`` names (the tree is walked from ``cid``, not from the archive's roots).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs

from ...cid import AnyCid, block_digest_ok, cid_str, split_cid, to_cid
from ...errors import BlockNotFound, CorruptBlock, DecodeError, StorageError
from ...limits import DEFAULT_DAG_LIMITS, DagLimits
from ._util import unwrap_group
from .blockstore import BlockStore
from .car import _V2_PRAGMA, MAX_HEADER, MAX_IMPORT_BLOCKS, MAX_SECTION, decode_header
from .exporter import SymlinkPolicy, export_to_path

__all__ = ["CarParser", "export_car_stream"]

BATCH_BYTES = 2 * 1024 * 1024
"""Blocks checked and stored per worker-thread hop."""


def _varint(buf: bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """An unsigned varint at ``pos``: (value, next position), or None if incomplete.

    Raises:
        DecodeError: longer than 10 bytes.
    """
    value = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise DecodeError("CAR length prefix too long")


def _cid_len(section: memoryview) -> int:
    if len(section) >= 34 and section[0] == 0x12 and section[1] == 0x20:
        return 34  # CIDv0: a bare sha2-256 multihash
    pos = 0
    for _ in range(3):  # version, codec, hash function
        got = _varint(section, pos)
        if got is None:
            raise ValueError("CID runs past its section")
        pos = got[1]
    got = _varint(section, pos)
    if got is None or got[1] + got[0] > len(section):
        raise ValueError("CID runs past its section")
    return got[1] + got[0]


def _section(buf: bytearray, start: int, end: int) -> tuple[bytes, bytes]:
    """``(cid, block)`` of the section at ``buf[start:end]`` (its views end here)."""
    with memoryview(buf) as whole, whole[start:end] as section:
        try:
            n = _cid_len(section)
        except (ValueError, IndexError):
            n = -1
        cid, block = (section[:n].tobytes(), section[n:].tobytes()) if n > 0 else (b"", b"")
    try:
        split_cid(cid)
    except (ValueError, IndexError):
        raise DecodeError("CAR section does not start with a valid CID") from None
    return cid, block


@attrs.define
class CarParser:
    """Push parser of a CARv1 stream (CARv2 is a file format: refused here).

    ``feed(data)`` returns the ``(cid, block)`` pairs completed by ``data``, blocks
    *not* verified; :attr:`roots` is set once the header is in; :meth:`close` says
    whether the stream ended cleanly.
    """

    roots: list[bytes] | None = None
    _buf: bytearray = attrs.Factory(bytearray)

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet handed out (at most a section plus the last chunk)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Take more of the stream; return the blocks it completed.

        Raises:
            DecodeError: the stream is not CARv1, or a section is malformed or too large.
        """
        buf = self._buf
        buf += data
        if self.roots is None and buf[: len(_V2_PRAGMA)] == _V2_PRAGMA:
            raise DecodeError("a CARv2 file cannot be read as a stream (CARv1 expected)")
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        while True:
            got = _varint(buf, pos)
            if got is None:
                break
            length, start = got
            if self.roots is None:
                if not 0 < length <= MAX_HEADER:
                    raise DecodeError("not a CAR stream: missing or oversized header")
            elif not 0 < length <= MAX_SECTION:
                raise DecodeError(f"CAR section of {length} bytes (limit {MAX_SECTION})")
            end = start + length
            if end > len(buf):
                break
            if self.roots is None:
                self.roots = decode_header(bytes(buf[start:end]))
            else:
                out.append(_section(buf, start, end))
            pos = end
        del buf[:pos]
        return out

    def close(self) -> None:
        """The stream ended.

        Raises:
            DecodeError: it ended inside the header or a section.
        """
        if self.roots is None:
            raise DecodeError("not a CAR stream: it ended before its header")
        if self._buf:
            raise DecodeError(f"CAR stream truncated ({len(self._buf)} bytes of a section)")


@attrs.define
class _Arrivals:
    """The exporter's block source: blocks from the scratch store, waiting for those
    the stream has not delivered yet; once it has ended, a missing block is missing."""

    store: BlockStore
    streaming: bool = True
    failed: bool = False
    """The stream failed: its error is the one to report (the caller is cancelled)."""
    arrived: anyio.Event = attrs.Factory(anyio.Event)

    def signal(self) -> None:
        self.arrived.set()
        self.arrived = anyio.Event()

    async def get_many(self, cids: Sequence[bytes]) -> list[bytes]:
        store = self.store

        def read() -> list[bytes] | None:
            if not all(store.has(c) for c in cids):
                return None
            return [store.get(c) for c in cids]  # checked against their CIDs when stored

        while True:
            # Read the stream's state *before* looking: a batch stored (and the stream
            # ended) while we looked is then seen on the next round, never reported missing.
            arrived, streaming, failed = self.arrived, self.streaming, self.failed
            blocks = await anyio.to_thread.run_sync(read)
            if blocks is not None:
                return blocks
            if failed:
                await anyio.sleep_forever()  # the stream's own error cancels us
            if not streaming:
                lacking = [c for c in cids if not store.has(c)]
                if lacking:
                    raise BlockNotFound(f"block {cid_str(lacking[0])} is not in the archive")
                continue
            await arrived.wait()


def _check_and_store(store: BlockStore, blocks: list[tuple[bytes, bytes]]) -> None:
    for cid, data in blocks:
        if not block_digest_ok(cid, data):
            raise CorruptBlock(f"block {cid_str(cid)} in the archive does not match its CID")
    store.put_many([(cid, (data,)) for cid, data in blocks])


async def export_car_stream(
    chunks: AsyncIterable[bytes],
    cid: AnyCid,
    dest: Path,
    *,
    scratch: BlockStore,
    limits: DagLimits = DEFAULT_DAG_LIMITS,
    max_blocks: int = MAX_IMPORT_BLOCKS,
    symlinks: SymlinkPolicy = "contain",
) -> Path:
    """Write the DAG under ``cid`` to ``dest`` from a CARv1 stream, while it arrives.

    Same contract as :func:`~bacalhau.storage.ipfs.export_to_path` for ``dest``.
    Blocks are stored in ``scratch`` (the caller's, usually a temporary store);
    the stream is read only until every block the export needs is there.

    Raises:
        DecodeError: the stream is not a well-formed CARv1.
        CorruptBlock: a block does not match its CID.
        BlockNotFound: the stream ended without a block the DAG needs.
        StorageError: ``dest`` is unusable, the DAG breaks ``limits``, or the stream
            carries more than ``max_blocks`` blocks or far more bytes than
            ``limits.max_size``.
    """
    raw = to_cid(cid)
    source = _Arrivals(scratch)
    parser = CarParser()
    byte_bound = limits.max_size + limits.max_size // 64 + (1 << 20)

    async def feed() -> None:
        count = stored = 0
        batch: list[tuple[bytes, bytes]] = []
        pending = 0
        try:
            async for chunk in chunks:
                for cid_, data in parser.feed(chunk):
                    count += 1
                    stored += len(data)
                    if count > max_blocks or stored > byte_bound:
                        raise StorageError(
                            f"the archive holds more than {max_blocks} blocks or"
                            f" {byte_bound} bytes (the download's bounds)"
                        )
                    batch.append((cid_, data))
                    pending += len(data)
                if pending >= BATCH_BYTES:
                    await anyio.to_thread.run_sync(_check_and_store, scratch, batch)
                    batch, pending = [], 0
                    source.signal()
            parser.close()
            if batch:
                await anyio.to_thread.run_sync(_check_and_store, scratch, batch)
        except BaseException:
            source.failed = True
            raise
        finally:
            source.streaming = False
            source.signal()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # an async generator: close it here, not at collection
                with anyio.CancelScope(shield=True):
                    await aclose()

    with unwrap_group():
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            await export_to_path(source, raw, dest, limits=limits, symlinks=symlinks)
            tg.cancel_scope.cancel()  # the rest of the archive is not needed
    return Path(dest)
