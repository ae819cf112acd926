"""Progress bars for long transfers in the CLI (``data add``, ``data get``, ``get``).

On a terminal, a rich bar on stderr with the bytes done, the total, the rate and the time
left; when stderr is not a terminal (a pipe, a file, CI), nothing at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["MIN_BYTES", "transfer_progress"]

MIN_BYTES = 4 * 1024 * 1024
"""Smaller transfers get no bar (it would only flash)."""


@contextmanager
def transfer_progress(
    description: str, *, stream: IO[str] | None = None, force_terminal: bool | None = None
) -> Iterator[Callable[[int, int | None], None]]:
    """A ``progress(done, total)`` callback drawing a bar while the block runs.

    Args:
        description: what is moving (shown left of the bar).
        stream: where the bar goes (default stderr).
        force_terminal: draw even if ``stream`` is not a terminal (tests), or never.
    """
    out = stream if stream is not None else sys.stderr
    terminal = out.isatty() if force_terminal is None else force_terminal
    if not terminal:
        yield _nothing
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=out, force_terminal=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = None

    def update(done: int, total: int | None) -> None:
        nonlocal task
        if task is None:
            if total is not None and total < MIN_BYTES:
                return
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _nothing(done: int, total: int | None) -> None:
    return None
