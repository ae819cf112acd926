"""The Docker executor's pieces that need no engine: a job's checked params, the
container user, and probes of an engine's unix socket (cheap enough to run every few
seconds, unlike building an SDK client)."""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs

from ..errors import ExecutorError, ValidationError
from ..models import JobSpec, check_abs_path

__all__ = ["DockerParams", "check_unix_socket", "container_user", "ping_unix_socket"]

_PARAMS = frozenset({"image", "cmd", "entrypoint", "workdir"})


def _field(name: str) -> str:
    return f"engine.params.{name}"


def _str_list(params: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"must be a list of strings, got {value!r}", field=_field(name))
    if any("\x00" in v for v in value):
        raise ValidationError("must not contain NUL", field=_field(name))
    return tuple(value)


@attrs.frozen(kw_only=True)
class DockerParams:
    """The docker engine's params of a job, checked.

    Args:
        image: an image reference (``busybox``, ``ubuntu:22.04``, ``repo@sha256:...``).
        cmd: the command; empty means the image's ``CMD``.
        entrypoint: replaces the image's ``ENTRYPOINT`` when given.
        workdir: absolute working directory inside the container.
    """

    image: str
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    workdir: str | None = None

    @classmethod
    def from_spec(cls, spec: JobSpec) -> DockerParams:
        """Read and check ``spec.engine.params``.

        Raises:
            ValidationError: a param is missing, unknown or of the wrong type,
                naming the field (``engine.params.image``).
        """
        params = spec.engine.params
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise ValidationError(
                f"unknown docker param(s): {', '.join(unknown)} (known: image, cmd, entrypoint,"
                " workdir)",
                field="engine.params",
            )
        image = params.get("image")
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise ValidationError(
                f"must name an image such as 'ubuntu:22.04', got {image!r}", field=_field("image")
            )
        workdir = params.get("workdir")
        if workdir is not None:
            check_abs_path(_field("workdir"), workdir)
        return cls(
            image=image,
            cmd=_str_list(params, "cmd") or (),
            entrypoint=_str_list(params, "entrypoint"),
            workdir=workdir,
        )


def check_unix_socket(host: str, *, timeout: float = 5.0) -> None:
    """For a ``unix://`` host, connect once and close; other hosts pass unchecked.

    The docker SDK leaks its socket when connecting to a unix socket fails (a
    ResourceWarning later), so the executor tries the path itself first.

    Raises:
        OSError: nothing listens at the socket path.
    """
    if not host.startswith("unix://"):
        return
    path = host[len("unix://") :]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        probe.connect(path)


def ping_unix_socket(host: str, *, timeout: float = 5.0) -> bool:
    """Whether the engine at the ``unix://`` ``host`` answers ``GET /_ping`` with 200."""
    path = host[len("unix://") :]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            probe.connect(path)
            probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = probe.recv(64)
    except OSError:
        return False
    return status.split(b" ", 2)[1:2] == [b"200"]


def container_user(option: str | None) -> tuple[int, int, list[str] | None]:
    """``(uid, gid, extra groups)`` a container runs as.

    ``option`` is ``UID[:GID]`` (numeric) or None: the node's own user, or
    ``65534:65534`` (nobody) when the node runs as root. When the container's user
    is not the node's and the node is not root, the container also joins the node's
    group, through which it may write its output folders.

    Raises:
        ExecutorError: ``option`` is not ``UID[:GID]``.
    """
    me, my_group = os.getuid(), os.getgid()
    if option is None:
        if me == 0:
            return 65534, 65534, None
        return me, my_group, None
    uid_text, _, gid_text = option.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ExecutorError(f"docker user must be UID[:GID] in numbers, got {option!r}")
    uid = int(uid_text)
    gid = int(gid_text) if gid_text else uid
    extra = None if me in (0, uid) else [str(my_group)]
    return uid, gid, extra
