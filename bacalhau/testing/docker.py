"""Finding a Docker engine for tests, and looking at what runs on it.

The test policy: a test that needs Docker calls :func:`require_docker_engine`
(the ``docker_engine`` fixtures in the test suite do). When no engine answers
at ``DOCKER_HOST`` (or the default socket), or the test image is missing, the
test is **skipped with the reason**; but when ``BACALHAU_REQUIRE_DOCKER=1`` is
set (``scripts/docker-engine.sh start`` exports it after provisioning an
engine, so CI sets it) the test **fails** instead: there a skip would hide a
broken engine.

The test image is ``BACALHAU_TEST_IMAGE`` (default
``bacalhau-test/busybox:latest``, the busybox image the provisioning script
imports). Importing this module needs neither pytest nor the docker SDK;
both are imported when first used.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from ..executor.docker_params import check_unix_socket

__all__ = [
    "DEFAULT_TEST_IMAGE",
    "DockerEngine",
    "docker_required",
    "docker_test_image",
    "probe_docker_engine",
    "require_docker_engine",
]

DEFAULT_TEST_IMAGE = "bacalhau-test/busybox:latest"
REQUIRE_ENV = "BACALHAU_REQUIRE_DOCKER"
IMAGE_ENV = "BACALHAU_TEST_IMAGE"
_HINT = 'start a private engine as root with: eval "$(scripts/docker-engine.sh start)"'


@attrs.frozen(kw_only=True)
class DockerEngine:
    """An engine that answered, with the test image present on it."""

    host: str
    version: str
    image: str

    def client(self, *, timeout: float = 60.0) -> Any:
        """A new ``docker.DockerClient`` for this engine (close it when done)."""
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout, version="auto")


def docker_test_image() -> str:
    """The image docker tests run (``BACALHAU_TEST_IMAGE`` or the default)."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_TEST_IMAGE


def docker_required() -> bool:
    """Whether a missing engine must fail the docker tests (``BACALHAU_REQUIRE_DOCKER=1``)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def probe_docker_engine(*, image: str | None = None, timeout: float = 10.0) -> DockerEngine | str:
    """Ask the engine at ``DOCKER_HOST`` (or the default socket) whether it can run tests.

    Blocking; call it from sync code or a worker thread.

    Returns:
        the engine, or a sentence saying why there is none usable (no engine,
        or the test image is missing).
    """
    image = image or docker_test_image()
    host = _host()
    try:
        import docker
        import docker.errors
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        return f"the docker SDK is not installed ({exc})"
    try:
        check_unix_socket(host, timeout=timeout)
        client = docker.from_env(timeout=timeout)
    except Exception as exc:  # any failure to reach it is the reason to report
        return f"no Docker engine answers at {host} ({_first_line(exc)}); {_HINT}"
    try:
        version = str(client.version().get("Version", "?"))
        try:
            client.api.inspect_image(image)
        except docker.errors.NotFound:
            return (
                f"the Docker engine at {host} lacks the test image {image}; {_HINT}"
                f" (it imports the image) or set {IMAGE_ENV}"
            )
    except Exception as exc:
        return f"the Docker engine at {host} fails ({_first_line(exc)}); {_HINT}"
    finally:
        client.close()
    return DockerEngine(host=host, version=version, image=image)


def require_docker_engine(*, image: str | None = None) -> DockerEngine:
    """The engine for a docker test: skip the test if there is none, or fail it
    when ``BACALHAU_REQUIRE_DOCKER=1`` says there must be one."""
    import pytest

    found = probe_docker_engine(image=image)
    if isinstance(found, DockerEngine):
        return found
    if docker_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but {found}", pytrace=False)
    pytest.skip(f"docker tests skipped: {found}")
    raise AssertionError("unreachable: pytest.skip raises")  # pragma: no cover


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
