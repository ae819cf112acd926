"""Canonical hashing of a results folder: one sha256 for a whole tree.

Two nodes that produced the same results must get the same digest, however the
files were created (order, timestamps, owners, inode numbers, umask), and any
change a person would call a different result must change it. The digest is
the sha256 of a *manifest*: one record per entry below the root, sorted by
relative path (compared as bytes), each record

============  ==================================================================
``kind``      1 byte: ``D`` directory, ``F`` regular file, ``X`` executable file
``path``      4-byte big-endian length, then the relative path as bytes, ``/``
              separated (names are taken as the OS gives them: no Unicode
              normalisation, no case folding)
``size``      files only: 8-byte big-endian size
``sha256``    files only: the sha256 of the file's contents
============  ==================================================================

after the header ``b"bacalhau/results-tree/v1\\n"``. Every field is
length-prefixed or fixed-size, so no two different trees share a manifest.

Mode: only the executable bit is recorded (a file is ``X`` when any of its
execute bits is set), as git records modes. Other permission bits follow the
umask of whoever wrote the file and are not part of a job's result; timestamps,
owners and extended attributes are ignored for the same reason. Empty
directories count (``mkdir out/empty`` is a different result from not making it);
the root folder itself is not an entry, so its name and mode do not matter.

Refused, with :class:`~bacalhau.errors.VerificationError`: symlinks (they could
point outside the results and mean different things on different nodes),
sockets, FIFOs and device files, and a root that is not a real directory. A
file that changes size while it is hashed is refused too.

Example (the digest is pinned in the test suite too, computed there independently):
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> hash_tree(root).hex()  # an empty folder: the sha256 of the header alone
    '6093bf57cb2142e1b3359fb6c84ce8eeacec6d50fe1e71e425b831f21a9315db'
    >>> _ = (root / "stdout").write_text("hello\\n")
    >>> [(e.kind, e.path, e.size) for e in manifest(root)]
    [('F', 'stdout', 6)]
    >>> hash_tree(root).hex()
    '3de1c92677282adb48dfb22c7773fbdd0039c465dabdaecf6d59ebe68e9d341f'
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import attrs

from ..errors import VerificationError

__all__ = ["HEADER", "TreeEntry", "digest_manifest", "hash_tree", "manifest"]

HEADER = b"bacalhau/results-tree/v1\n"
"""Domain separation and format version of the manifest."""

_CHUNK = 1024 * 1024
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


@attrs.frozen(kw_only=True)
class TreeEntry:
    """One record of the manifest.

    Attributes:
        kind: ``"D"`` directory, ``"F"`` file, ``"X"`` executable file.
        path: the path relative to the root, ``/``-separated (``os.fsdecode`` form).
        size: file size in bytes (0 for directories).
        sha256: the file's content digest (empty for directories).
    """

    kind: str
    path: str
    size: int = 0
    sha256: bytes = b""

    def record(self) -> bytes:
        """The entry's bytes in the manifest."""
        raw = os.fsencode(self.path)
        out = self.kind.encode() + len(raw).to_bytes(4, "big") + raw
        if self.kind != "D":
            out += self.size.to_bytes(8, "big") + self.sha256
        return out


def _hash_file(path: str, rel: str) -> tuple[int, bytes]:
    """(size, sha256) of the regular file at ``path``, never following a symlink."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise VerificationError(
            f"cannot read results file {rel!r}: {exc.strerror or exc}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VerificationError(
                f"results entry {rel!r} changed into a special file while being hashed"
            )
        h = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            h.update(chunk)
    except OSError as exc:
        raise VerificationError(
            f"cannot read results file {rel!r}: {exc.strerror or exc}"
        ) from None
    finally:
        os.close(fd)
    if size != st.st_size:
        raise VerificationError(
            f"results file {rel!r} changed size while being hashed "
            f"({st.st_size} -> {size} bytes); is the job still running?"
        )
    return size, h.digest()


def manifest(root: Path) -> tuple[TreeEntry, ...]:
    """Every entry below ``root``, in canonical (bytewise path) order.

    Blocking (it reads every file): call it through ``anyio.to_thread.run_sync``
    from async code.

    Raises:
        VerificationError: ``root`` is not a directory, or the tree holds a
            symlink, a special file or an unreadable entry (the message names it).
    """
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise VerificationError(
            f"results folder {root} cannot be read: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise VerificationError(f"results folder {root} is {what}")
    entries: list[TreeEntry] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError as exc:
            where = prefix.rstrip("/") or "."
            raise VerificationError(
                f"cannot list results folder {where!r}: {exc.strerror or exc}"
            ) from None
        for child in children:
            rel = prefix + child.name
            try:
                mode = child.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise VerificationError(
                    f"cannot read results entry {rel!r}: {exc.strerror or exc}"
                ) from None
            if stat.S_ISDIR(mode):
                entries.append(TreeEntry(kind="D", path=rel))
                stack.append((Path(child.path), rel + "/"))
            elif stat.S_ISREG(mode):
                size, digest = _hash_file(child.path, rel)
                kind = "X" if mode & 0o111 else "F"
                entries.append(TreeEntry(kind=kind, path=rel, size=size, sha256=digest))
            elif stat.S_ISLNK(mode):
                raise VerificationError(
                    f"results contain a symlink at {rel!r}: symlinks are refused because they "
                    "can point outside the results; write a regular file instead"
                )
            else:
                raise VerificationError(
                    f"results contain a special file ({_kind_name(mode)}) at {rel!r}: only "
                    "regular files and directories can be verified"
                )
    entries.sort(key=lambda e: os.fsencode(e.path))
    return tuple(entries)


def digest_manifest(entries: Iterable[TreeEntry]) -> bytes:
    """The 32-byte sha256 of a manifest (entries must already be in canonical order)."""
    h = hashlib.sha256(HEADER)
    for entry in entries:
        h.update(entry.record())
    return h.digest()


def hash_tree(root: Path) -> bytes:
    """The canonical 32-byte sha256 of the tree at ``root``.

    Blocking; see :func:`manifest` for what is hashed and what is refused.

    Raises:
        VerificationError: as :func:`manifest`.
    """
    return digest_manifest(manifest(root))


def _kind_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return f"mode {stat.S_IFMT(mode):o}"
