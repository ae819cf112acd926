"""Build paths from untrusted names, provably under a root.

Every path the node makes from something it did not choose (a job id, a peer id, a
UnixFS link name, a volume path, an output name) goes through :func:`safe_join`. It
refuses, with a :class:`~bacalhau.errors.ValidationError` naming the part, any name that
could leave the root: absolute paths, ``..``, empty or ``.`` components, NUL bytes,
over-long components, and (when the path already exists on disk) any symlink on the way
that resolves outside the root.

The check is in two steps:

1. **Lexical.** Each part is split on ``/``; every component must be a plain name. So the
   joined path is under ``root`` as a string, whatever is on disk.
2. **On disk.** The deepest ancestor of the result that exists is resolved with
   :func:`os.path.realpath`, and must lie under ``realpath(root)``. With
   ``allow_symlink=False`` (the default) the result itself must not be a symlink either,
   so opening it cannot follow a link anywhere.

A race with another writer between the check and the use is outside what a path check
can close; the node's own folders are written only by the node.

>>> safe_join("/srv/data", "jobs", "j-1").as_posix()
'/srv/data/jobs/j-1'
>>> safe_join("/srv/data", "../etc")
Traceback (most recent call last):
...
bacalhau.errors.ValidationError: path: '../etc' leaves /srv/data (component '..')
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bacalhau.errors import ValidationError

__all__ = [
    "MAX_NAME_BYTES",
    "check_name",
    "is_within",
    "private_dir",
    "private_files",
    "remove_tree",
    "safe_join",
]

MAX_NAME_BYTES = 255
"""The longest one path component may be, in UTF-8 bytes (the POSIX NAME_MAX)."""


def check_name(name: str, *, field: str = "name") -> str:
    """Return ``name`` if it is one plain path component, else raise.

    A plain component is non-empty, is not ``.`` or ``..``, holds no ``/`` or NUL, and is
    at most :data:`MAX_NAME_BYTES` bytes of UTF-8.

    Raises:
        ValidationError: naming ``field`` and what was wrong with ``name``.
    """
    if not isinstance(name, str):
        raise ValidationError(f"expected a string, got {type(name).__name__}", field=field)
    if name in ("", ".", ".."):
        raise ValidationError(f"{name!r} is not a file name", field=field)
    if "/" in name or "\x00" in name:
        raise ValidationError(f"{name!r} holds '/' or NUL", field=field)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{name!r} is not valid UTF-8", field=field) from None
    if size > MAX_NAME_BYTES:
        raise ValidationError(f"name is {size} bytes long (at most {MAX_NAME_BYTES})", field=field)
    return name


def is_within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """True when ``realpath(path)`` is ``realpath(root)`` or lies under it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def safe_join(
    root: str | os.PathLike[str],
    *parts: str,
    field: str = "path",
    allow_symlink: bool = False,
) -> Path:
    """Join untrusted ``parts`` onto ``root`` and prove the result stays under it.

    Args:
        root: the trusted folder (need not exist yet).
        *parts: untrusted relative names; each may hold several ``/``-separated
            components (``"outputs/a.txt"``), none of them empty, ``.`` or ``..``.
        field: the name the error uses for the offending value (``"job_id"``,
            ``"inputs[0].path"``).
        allow_symlink: when False (the default) the result must not itself be a
            symlink; when True a final symlink is allowed (its parent is still checked),
            for callers that only ``lstat``/``unlink`` it.

    Returns:
        ``Path(root, *components)``: lexical, not resolved, so callers see the path
        they asked for.

    Raises:
        ValidationError: naming ``field`` and the part that would leave ``root``.
    """
    root_path = Path(root)
    components: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValidationError(f"expected a string, got {type(part).__name__}", field=field)
        if part.startswith("/"):
            raise ValidationError(f"{part!r} leaves {root_path} (absolute path)", field=field)
        if part == "":
            raise ValidationError("empty name", field=field)
        for component in part.split("/"):
            if component in ("", ".", ".."):
                raise ValidationError(
                    f"{part!r} leaves {root_path} (component {component!r})", field=field
                )
            try:
                check_name(component, field=field)
            except ValidationError as exc:
                raise ValidationError(
                    f"{part!r}: {str(exc).removeprefix(f'{field}: ')}", field=field
                ) from None
            components.append(component)
    result = root_path.joinpath(*components)
    if not components:
        return result
    # On disk: the deepest existing ancestor must resolve under the root (the root
    # itself always does: then there is nothing to resolve).
    ancestor = result.parent
    while ancestor != root_path and not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    real_root = real_ancestor = ""
    if ancestor != root_path:
        real_root = os.path.realpath(root_path)
        real_ancestor = os.path.realpath(ancestor)
    prefix = real_root.rstrip(os.sep) + os.sep
    if real_ancestor != real_root and not real_ancestor.startswith(prefix):
        raise ValidationError(
            f"{'/'.join(components)!r} leaves {root_path} (through a link to {real_ancestor})",
            field=field,
        )
    if not allow_symlink and os.path.islink(result):
        raise ValidationError(f"{'/'.join(components)!r} is a symbolic link", field=field)
    return result


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` and everything under it, however deep or wide; gone is fine.

    Unlike :func:`shutil.rmtree` it never recurses (no ``RecursionError`` at any
    depth) and works relative to open directory descriptors, so paths longer than
    ``PATH_MAX`` are no obstacle; at most two descriptors are open at a time. Links
    are removed, never followed. Read-only folders (inputs are made 0555) are made
    writable first.

    Raises:
        OSError: something could not be removed (permissions, another owner).
    """
    top = Path(path)
    try:  # an empty folder (a job's unused work/ and inputs/): one system call
        os.rmdir(top)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass  # not empty, not a folder, or not ours to remove as it is: the long way
    try:
        mode = os.lstat(top).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        top.unlink(missing_ok=True)
        return
    parent = os.open(top.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(top.name, _DIR_FLAGS, dir_fd=parent)
    except BaseException:
        os.close(parent)
        raise
    names: list[str] = []  # the path from ``top`` down to the folder ``fd`` is open on
    try:
        while True:
            _make_writable(fd)
            child = None
            for name in os.listdir(fd):
                try:
                    st = os.lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    child = name
                    break
                os.unlink(name, dir_fd=fd)
            if child is not None:
                inner = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                names.append(child)
                continue
            if not names:
                break
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
        os.close(fd)
        fd = -1
        os.rmdir(top.name, dir_fd=parent)
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(parent)


def _make_writable(fd: int) -> None:
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(mode) | 0o700)
    except OSError:
        pass  # not ours: removing will say so


def private_dir(path: str | os.PathLike[str]) -> None:
    """Make the folder ``path`` 0700 when this process owns it (a node's data dir:
    keys, job env values in ``state.db``, inputs and results are nobody else's)."""
    try:
        st = os.stat(path)
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass


def private_files(folder: str | os.PathLike[str], *names: str) -> None:
    """Make each existing file ``folder/name`` 0600 (not following links)."""
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(path, 0o600)
        except OSError:
            continue
