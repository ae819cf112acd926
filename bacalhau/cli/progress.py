"""Progress bars for long transfers in the CLI (``data add``, ``data get``, ``get``),
through a node's API and on a local ``--data-dir`` alike.

On a terminal, a rich bar on stderr with the bytes done, the total, the rate and the time
left; when stderr is not a terminal (a pipe, a file, CI), nothing at all. The bar is told
``progress(done, total)``; :class:`Tally` turns the importer's and exporter's "so many
more bytes" into that, and :func:`tree_bytes` finds the total of what ``add`` will read.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["MIN_BYTES", "Progress", "Tally", "transfer_progress", "tree_bytes"]

Progress = Callable[[int, int | None], None]
"""``progress(bytes done, total bytes or None)``."""

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


class Tally:
    """Adds up increments (``tally(n)``: n more bytes moved) and tells ``progress`` the
    running total against ``total`` (None: unknown). :meth:`finish` reports the end as
    complete, whatever the estimate was."""

    def __init__(self, progress: Progress, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        progress(0, total)

    def __call__(self, n: int) -> None:
        self.done += n
        total = self.total
        if total is not None and self.done > total:  # the estimate was low (files grew)
            total = self.total = self.done
        self.progress(self.done, total)

    def finish(self) -> None:
        self.total = self.done
        self.progress(self.done, self.done)


def tree_bytes(paths: Iterable[str], *, hidden: bool = False) -> int | None:
    """The bytes of regular files that adding ``paths`` reads (names starting with ``.``
    under a directory skipped unless ``hidden``, links not followed), or None when one
    of them is stdin (``-``). Unreadable entries count 0 (the add reports them)."""
    total = 0
    for path in paths:
        if path == "-":
            return None
        top = Path(path)
        try:
            if top.is_file():
                total += top.stat().st_size
                continue
        except OSError:
            continue
        for root, dirs, files in os.walk(top):
            if not hidden:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                files = [f for f in files if not f.startswith(".")]
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
