"""Small helpers shared by the data layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["unwrap_group"]


@contextlib.contextmanager
def unwrap_group() -> Iterator[None]:
    """Re-raise the only exception of an ``ExceptionGroup`` from a task group as itself,
    so callers see ``BlockNotFound`` or ``StorageError`` rather than a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
