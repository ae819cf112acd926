"""The ``inline`` storage provider: data carried inside the job spec (at most 1 MiB)."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread

from ..errors import StorageError
from ..models import StorageSpec
from .base import Reader, StorageProvider

__all__ = ["InlineStorage"]


class InlineStorage(StorageProvider):
    type = "inline"

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        if spec.data is None:
            raise StorageError("inline source has no data")
        data = spec.data

        def write() -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.chmod(0o444)

        await anyio.to_thread.run_sync(write)
        return dest

    async def open_reader(self, spec: StorageSpec) -> tuple[Reader, int] | None:
        data = spec.data or b""
        return (lambda offset, size: data[offset : offset + size]), len(data)
