"""Checks of an execution's results folder: what it holds and how much (no links,
devices or pipes; bounded entries, bytes and depth)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ExecutorError

__all__ = [
    "MAX_RESULT_BYTES",
    "MAX_RESULT_DEPTH",
    "MAX_RESULT_FILES",
    "check_results",
    "short_reason",
    "tree_usage",
]

MAX_RESULT_FILES = 10_000
MAX_RESULT_BYTES = 4 * 1024**3
MAX_RESULT_DEPTH = 128
"""A results folder with more entries (files and folders), bytes or levels of folders than
this is refused (the execution fails)."""


def tree_usage(
    root: Path,
    *,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    max_depth: int | None = None,
) -> tuple[int, int]:
    """``(entries, bytes)`` under ``root`` (files and folders count as entries),
    without following links; stops early once a limit is passed.

    Raises:
        ExecutorError: folders nest deeper than ``max_depth``.
    """
    entries = total = 0
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        if max_depth is not None and depth > max_depth:
            raise ExecutorError(f"folders nest deeper than {max_depth} levels")
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    entries += 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), depth + 1))
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                    if (max_entries is not None and entries > max_entries) or (
                        max_bytes is not None and total > max_bytes
                    ):
                        return entries, total
        except (FileNotFoundError, NotADirectoryError):
            continue
    return entries, total


def short_reason(reason: str, limit: int = 1000) -> str:
    """``reason`` cut to ``limit`` characters (a reason travels in a signed message)."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def check_results(
    results: Path,
    *,
    max_files: int = MAX_RESULT_FILES,
    max_bytes: int = MAX_RESULT_BYTES,
    max_depth: int = MAX_RESULT_DEPTH,
) -> None:
    """Refuse a results folder holding links, devices, pipes or too much.

    Nothing is followed: a job could have left a symlink to the host's files in an
    output volume, and publishing must never read through it. Files and folders
    both count toward ``max_files``.

    Raises:
        ExecutorError: naming the first offending path.
    """
    entries = total = 0
    stack = [(results, 0)]
    while stack:
        folder, depth = stack.pop()
        if depth > max_depth:
            raise ExecutorError(
                f"results refused: folders nest deeper than {max_depth} levels "
                f"(at {folder.relative_to(results)})"
            )
        with os.scandir(folder) as it:
            for entry in it:
                rel = _Rel(entry.path, results)
                if entry.is_symlink():
                    raise ExecutorError(
                        f"results refused: {rel} is a symbolic link "
                        f"(to {os.readlink(entry.path)!r}); outputs must "
                        "hold plain files and folders"
                    )
                entries += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                else:
                    raise ExecutorError(f"results refused: {rel} is not a regular file")
                if entries > max_files:
                    raise ExecutorError(f"results refused: more than {max_files} files and folders")
                if total > max_bytes:
                    raise ExecutorError(f"results refused: more than {max_bytes} bytes")


class _Rel:
    """A path shown relative to ``results`` (worked out only when shown: an error)."""

    __slots__ = ("path", "results")

    def __init__(self, path: str, results: Path) -> None:
        self.path, self.results = path, results

    def __str__(self) -> str:
        return str(Path(self.path).relative_to(self.results))
