"""The Docker executor: run a job's image as a container on a Docker engine.

The engine is the one ``DOCKER_HOST`` names (or the default socket), or
``base_url``. One run is one container:

* image, entrypoint, command and working dir from ``JobSpec.docker(...)``'s
  params, environment from ``spec.env``;
* every input volume's ``host_path`` bind-mounted **read-only** at its target,
  every output volume's host dir (``ctx.outputs[name]``) bind-mounted writable
  at its path; a volume is bound only after its real path (``realpath``) is
  proven to lie inside the execution folder and it is not itself a link;
* ``network_mode="none"``: the job sees only a loopback interface;
* hardened: every capability dropped, ``no-new-privileges``, a pids limit
  (``JobLimits.docker_pids_limit``), a read-only root filesystem with a tmpfs
  ``/tmp`` (counted in the job's memory), and a non-root user: ``JobLimits.docker_user``
  (``serve --docker-user``), by default the node's own user (``nobody`` when the
  node runs as root). Output folders are never world-writable: owned by that
  user (node as root), or the node's and shared through the node's group;
* memory (no swap) and CPU limits from ``spec.resources``;
* ``spec.timeout`` kills the container; cancelling the run kills it too;
* ``stdout`` and ``stderr`` written to ``ctx.results_dir``, each capped at
  :data:`~bacalhau.executor.base.MAX_LOG_BYTES`.

Containers carry labels with the node, job and execution ids
(:data:`LABEL_NODE`, :data:`LABEL_JOB`, :data:`LABEL_EXECUTION`); each run
removes its container however it ends, and :meth:`DockerExecutor.start`
removes leftovers of its own node (after a crash). Every call into the docker
SDK runs in a worker thread (``anyio.to_thread``); the SDK is imported lazily,
so ``import bacalhau`` does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from ..errors import ExecutorError, ExecutorUnavailable, ValidationError
from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..models import JobSpec
from ..paths import is_within
from .base import MAX_LOG_BYTES, ExecutionContext, Executor, RunResult, write_capped
from .docker_output import follow_output
from .docker_params import DockerParams, check_unix_socket, container_user, ping_unix_socket

__all__ = [
    "LABEL_EXECUTION",
    "LABEL_JOB",
    "LABEL_NODE",
    "DockerExecutor",
    "DockerParams",
    "container_user",
]

LABEL_PREFIX = "io.bacalhau-py"
LABEL_NODE = f"{LABEL_PREFIX}.node-id"
LABEL_JOB = f"{LABEL_PREFIX}.job-id"
LABEL_EXECUTION = f"{LABEL_PREFIX}.execution-id"
MIN_MEMORY = 6 * 1024 * 1024
"""Docker refuses memory limits below 6 MiB."""

KILL_EVENT_SLACK_NS = 250_000_000
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for an engine to answer at all (node start must not hang on it)."""
PING_REUSE = 1.0
"""Seconds a unix-socket engine's ping answer is shared by the other executors of the
process using that engine (a thousand in-process nodes, each asking every few seconds,
ping it about once a second, not 200 times, each a hop to a worker thread). An
executor asking again is never given its own last answer: it pings."""


class _SharedPings:
    """The last ping answer per engine socket, and who asked for it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._answers: dict[str, tuple[float, bool, int]] = {}

    async def ping(self, host: str, asker: object) -> bool:
        known = self._answers.get(host)
        if (
            known is not None
            and known[2] != id(asker)
            and 0 <= self.clock() - known[0] < PING_REUSE
        ):
            return known[1]
        answer = await anyio.to_thread.run_sync(ping_unix_socket, host)
        if len(self._answers) >= 64:  # a few engines per process at most
            self._answers.clear()
        self._answers[host] = (self.clock(), answer, id(asker))
        return answer


_PINGS = _SharedPings(time.monotonic)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
T = TypeVar("T")
log = logging.getLogger("bacalhau.executor.docker")


@attrs.frozen
class _State:
    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: str
    error: str


def _epoch(timestamp: str, *, plus_ns: int = 0) -> str | None:
    """RFC 3339 with nanoseconds (Docker's clock), plus ``plus_ns`` -> ``seconds.nanoseconds``."""
    m = _RFC3339.match(timestamp)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    seconds = int(datetime.fromisoformat(m.group(1) + zone).timestamp())
    if seconds <= 0:  # Docker's zero time: never started or never finished
        return None
    total = seconds * 1_000_000_000 + int((m.group(2) or "").ljust(9, "0")[:9]) + plus_ns
    return f"{total // 1_000_000_000}.{total % 1_000_000_000:09d}"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


@attrs.define(eq=False)
class _Engine:
    """Blocking calls on one docker client; call every method from a worker thread.

    Methods translate SDK and HTTP errors into :mod:`bacalhau.errors` so that
    async code never sees a docker or requests exception.
    """

    client: Any
    host: str
    ncpu: int

    @classmethod
    def connect(cls, base_url: str | None, timeout: float) -> _Engine:
        """Reach the engine, giving up after :data:`CONNECT_TIMEOUT` (then calls get ``timeout``).

        Raises:
            ExecutorUnavailable: nothing answers, with the host and the reason.
        """
        import docker

        host = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        probe = min(timeout, CONNECT_TIMEOUT)
        try:
            check_unix_socket(host, timeout=probe)
            if base_url:
                client = docker.DockerClient(base_url=base_url, timeout=probe, version="auto")
            else:
                client = docker.from_env(timeout=probe)
        except Exception as exc:  # any failure to reach the engine means "unavailable"
            raise ExecutorUnavailable(
                f"no Docker engine answers at {host} ({_reason(exc)}); start one or set"
                " DOCKER_HOST (scripts/docker-engine.sh starts a private one)"
            ) from None
        try:
            ncpu = int(client.info().get("NCPU") or os.cpu_count() or 1)
        except Exception as exc:
            client.close()
            raise ExecutorUnavailable(
                f"the Docker engine at {host} fails: {_reason(exc)}"
            ) from None
        client.api.timeout = timeout
        return cls(client=client, host=host, ncpu=ncpu)

    def _fail(self, what: str, exc: BaseException) -> ExecutorError:
        import docker.errors
        import requests.exceptions

        if "could not select device driver" in str(exc):
            return ExecutorError(
                f"the job asks for GPUs but the Docker engine at {self.host} has no GPU "
                f"runtime ({_reason(exc)}); install the NVIDIA Container Toolkit on this "
                "node, or offer no GPUs (serve --gpu 0)"
            )
        if isinstance(exc, requests.exceptions.ConnectionError | OSError):
            return ExecutorUnavailable(f"lost the Docker engine at {self.host} while {what}: {exc}")
        if isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException):
            return ExecutorError(
                f"Docker engine at {self.host} failed while {what}: {_reason(exc)}"
            )
        raise exc

    def ping(self) -> None:
        try:
            check_unix_socket(self.host, timeout=5.0)
            self.client.ping()
        except Exception as exc:
            raise self._fail("answering a ping", exc) from None

    def close(self) -> None:
        self.client.close()

    def image_present(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        except Exception as exc:
            raise self._fail(f"looking up image {image}", exc) from None
        return True

    def pull(self, image: str) -> None:
        """Pull ``image`` (``:latest`` when untagged), raising ExecutorError on failure."""
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(image)
        try:
            for line in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise ExecutorError(str(line["error"]))
        except ExecutorError as exc:
            raise ExecutorError(
                f"image {image} not found locally and could not be pulled: {exc}"
            ) from None
        except Exception as exc:
            reason = _reason(exc)
            raise ExecutorError(
                f"image {image} not found locally and could not be pulled: {reason}"
            ) from None

    def create(self, image: str, config: dict[str, Any], host: dict[str, Any]) -> str:
        from docker.types import Mount

        host = dict(host)
        host["mounts"] = [Mount(**m) for m in host["mounts"]]
        try:
            host_config = self.client.api.create_host_config(**host)
            reply = self.client.api.create_container(image, host_config=host_config, **config)
        except Exception as exc:
            raise self._fail(f"creating a container of {image}", exc) from None
        return str(reply["Id"])

    def start(self, container: str) -> None:
        try:
            self.client.api.start(container)
        except Exception as exc:
            raise self._fail("starting the container", exc) from None

    def wait(self, container: str) -> dict[str, Any]:
        try:
            # timeout=None: no HTTP read timeout, the executor bounds the wait itself.
            reply: dict[str, Any] = self.client.api.wait(container, timeout=None)
        except Exception as exc:
            raise self._gone_or_fail(container, "waiting for the container", exc) from None
        return reply

    def state(self, container: str) -> _State:
        try:
            state = self.client.api.inspect_container(container)["State"]
        except Exception as exc:
            raise self._gone_or_fail(container, "inspecting the container", exc) from None
        return _State(
            exit_code=int(state.get("ExitCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=str(state.get("StartedAt", "")),
            finished_at=str(state.get("FinishedAt", "")),
            error=str(state.get("Error") or ""),
        )

    def _gone_or_fail(self, container: str, what: str, exc: BaseException) -> ExecutorError:
        import docker.errors

        if isinstance(exc, docker.errors.NotFound):
            return ExecutorError(
                f"container {container[:12]} was removed from outside the executor while the"
                " job ran; the execution failed"
            )
        return self._fail(what, exc)

    def kill_signals(self, container: str, state: _State) -> list[str]:
        """Signals sent through the engine while the container ran (``docker kill``/``stop``)."""
        # The engine logs a kill event just after sending the signal, so it can be stamped
        # after FinishedAt; look a little past it (the engine streams until then).
        since = _epoch(state.started_at)
        until = _epoch(state.finished_at, plus_ns=KILL_EVENT_SLACK_NS)
        if since is None or until is None:
            return []
        try:
            stream = self.client.api.events(
                since=since,
                until=until,
                filters={"container": [container], "event": ["kill"]},
                decode=True,
            )
            try:
                return [
                    str(ev.get("Actor", {}).get("Attributes", {}).get("signal", "?"))
                    for ev in stream
                ]
            finally:
                _close_stream(stream)
        except Exception as exc:
            raise self._fail("reading the container's events", exc) from None

    def logs(self, container: str, *, stdout: bool, limit: int) -> bytes:
        """One of the container's streams, at most ``limit + 1`` bytes (more means truncated)."""
        try:
            stream = self.client.api.logs(
                container, stdout=stdout, stderr=not stdout, stream=True, follow=False
            )
        except Exception as exc:
            raise self._gone_or_fail(container, "reading the container's output", exc) from None
        data = bytearray()
        try:
            for chunk in stream:
                data += chunk
                if len(data) > limit:
                    break
        finally:
            _close_stream(stream)
        return bytes(data[: limit + 1])

    def kill(self, container: str) -> None:
        import docker.errors

        try:
            self.client.api.kill(container)
        except docker.errors.APIError:
            pass  # already stopped or gone: nothing to kill
        except Exception as exc:
            raise self._fail("killing the container", exc) from None

    def remove(self, container: str) -> None:
        """Remove ``container`` (killing it, with its anonymous volumes); gone is fine."""
        import docker.errors

        try:
            self.client.api.remove_container(container, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise self._fail(f"removing container {container[:12]}", exc) from None
        except Exception as exc:
            raise self._fail(f"removing container {container[:12]}", exc) from None

    def containers(self, label: str) -> list[str]:
        """Ids of all containers (running or not) carrying ``label`` (``key=value``)."""
        try:
            found = self.client.api.containers(all=True, quiet=True, filters={"label": label})
        except Exception as exc:
            raise self._fail("listing containers", exc) from None
        return [str(c["Id"]) for c in found]


def _bind_source(path: Path, root: Path, target: str, guards: bool) -> str:
    """The real path to bind for ``path``, proven inside the execution folder ``root``."""
    if not guards:
        return str(Path(path).resolve())
    try:
        is_link = os.path.islink(path)
        exists = os.path.lexists(path)
    except OSError:
        exists, is_link = False, False
    if not exists:
        raise ExecutorError(f"volume at {target}: {path} is missing")
    if is_link:
        raise ExecutorError(f"volume at {target} is a symbolic link on the host; refused")
    real = os.path.realpath(path)
    if not is_within(root, real):
        raise ExecutorError(f"volume at {target} lies outside the execution folder; refused")
    return real


def _share_output(host_dir: Path, uid: int, gid: int) -> None:
    """Make ``host_dir`` writable by the container's user, never by everyone."""
    me = os.getuid()
    if me == 0:
        os.chown(host_dir, uid, gid)
        host_dir.chmod(0o700)
    elif uid == me:
        host_dir.chmod(0o700)
    else:
        host_dir.chmod(0o770 | stat.S_ISGID)


def _close_stream(stream: Any) -> None:
    """Close a docker ``CancellableStream`` and its HTTP response (its own ``close``
    leaves the socket's file object open, which leaks the descriptor)."""
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        response.close()


def _reason(exc: BaseException) -> str:
    """A short human reason from a docker/requests exception."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


@attrs.define(kw_only=True, eq=False)
class DockerExecutor(Executor):
    """Runs ``docker`` jobs as containers on a Docker engine.

    Args:
        node_id: the node's id, put on every container's labels; :meth:`start`
            removes containers left with this id (by a crashed run). Empty means
            the execution context's node id is used and no clean-up on start.
        local_images_only: never pull; a job whose image is not present fails
            with "image X not found locally and could not be pulled", and
            :meth:`unsupported_reason` tells the node not to bid on it.
        base_url: the engine (``unix:///path``, ``tcp://host:port``); None
            means ``DOCKER_HOST`` or the default socket.
        api_timeout: seconds an engine call may take (not the job's own run).
        pull_timeout: seconds an image pull may take.
        limits: the node's job limits (``docker_user``, ``docker_pids_limit``, ``guards``).
    """

    name: ClassVar[str] = "docker"
    storage_mode: ClassVar[Literal["posix", "library", "any"]] = "posix"

    node_id: str = ""
    local_images_only: bool = False
    base_url: str | None = None
    api_timeout: float = 60.0
    pull_timeout: float = 600.0
    limits: JobLimits = DEFAULT_JOB_LIMITS
    _engine: _Engine | None = attrs.field(default=None, init=False)
    _lock: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)

    @property
    def host(self) -> str:
        """The engine this executor talks to (for messages and logs)."""
        if self._engine is not None:
            return self._engine.host
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    async def _connect(self) -> _Engine:
        async with self._lock:
            if self._engine is None:
                self._engine = await anyio.to_thread.run_sync(
                    _Engine.connect, self.base_url, self.api_timeout
                )
            return self._engine

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    async def is_installed(self) -> bool:
        """True when a Docker engine answers a ping (the node offers docker only then).

        Before the first job, an engine on a unix socket is pinged without building a
        Docker client (the node asks every few seconds; a client costs tens of ms)."""
        if self._engine is None and self.host.startswith("unix://"):
            return await _PINGS.ping(self.host, self)
        try:
            engine = await self._connect()
            await self._call(engine.ping)
        except ExecutorError:
            return False
        return True

    def validate(self, spec: JobSpec) -> None:
        """Check the docker params and that the memory limit is one Docker accepts.

        Raises:
            ValidationError: naming the field at fault.
        """
        DockerParams.from_spec(spec)
        if spec.resources.memory < MIN_MEMORY:
            raise ValidationError(
                f"docker needs at least 6 MiB of memory, got {spec.resources.memory} bytes",
                field="resources.memory",
            )

    async def unsupported_reason(self, spec: JobSpec) -> str | None:
        """Why this node should not bid on ``spec`` (None: it can run it).

        No engine answering, invalid params, or (with ``local_images_only``) an
        image not present locally are reasons.
        """
        try:
            params = DockerParams.from_spec(spec)
            engine = await self._connect()
            if self.local_images_only and not await self._call(engine.image_present, params.image):
                return (
                    f"image {params.image} is not present locally and this node runs local"
                    " images only"
                )
        except (ExecutorError, ValidationError) as exc:
            return str(exc)
        return None

    async def start(self) -> None:
        """Remove containers a crashed run of this node left behind (no engine: nothing)."""
        if not self.node_id:
            return
        try:
            engine = await self._connect()
            for container in await self._call(engine.containers, f"{LABEL_NODE}={self.node_id}"):
                await self._call(engine.remove, container)
        except ExecutorError:
            return

    async def close(self) -> None:
        """Close the client (running containers belong to their runs, which remove them)."""
        async with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            await self._call(engine.close)

    async def leftovers(self, node_id: str | None = None) -> list[str]:
        """Ids of containers labelled with ``node_id`` (default: this executor's)."""
        engine = await self._connect()
        return await self._call(engine.containers, f"{LABEL_NODE}={node_id or self.node_id}")

    async def run(self, ctx: ExecutionContext) -> RunResult:
        """Run the job's container to completion and collect its output.

        Returns:
            the container's exit code (non-zero is a result, not an error) and
            which of ``stdout``/``stderr`` were truncated.

        Raises:
            ExecutorUnavailable: no engine answers (or it went away).
            ExecutorError: bad params, image missing and not pullable, timeout,
                out of memory, or the container was killed or removed from
                outside; stdout/stderr so far are still written when possible.
        """
        try:
            self.validate(ctx.spec)
            params = DockerParams.from_spec(ctx.spec)
        except ValidationError as exc:
            raise ExecutorError(f"invalid docker job: {exc}") from None
        engine = await self._connect()
        await self._ensure_image(engine, params.image)
        config, host = self._container_config(ctx, params, engine.ncpu)
        with anyio.CancelScope(shield=True):
            container = await self._call(engine.create, params.image, config, host)
        try:
            return await self._run_container(engine, container, ctx)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._call(engine.remove, container)
                except ExecutorError as exc:  # the run's own outcome matters more
                    log.warning("container %s left behind: %s", container[:12], exc)

    async def _ensure_image(self, engine: _Engine, image: str) -> None:
        if await self._call(engine.image_present, image):
            return
        if self.local_images_only:
            raise ExecutorError(
                f"image {image} not found locally and could not be pulled: this node runs"
                " local images only (local_images_only)"
            )
        with anyio.move_on_after(self.pull_timeout) as scope:
            await anyio.to_thread.run_sync(engine.pull, image, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise ExecutorError(
                f"image {image} not found locally and could not be pulled within"
                f" {self.pull_timeout:g} s"
            )

    def _container_config(
        self, ctx: ExecutionContext, params: DockerParams, ncpu: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = ctx.spec
        guards = self.limits.guards
        root = ctx.work_dir.parent
        uid, gid, group_add = container_user(self.limits.docker_user) if guards else (0, 0, None)
        mounts: list[dict[str, Any]] = []
        for volume in ctx.volumes:
            if volume.host_path is None:
                raise ExecutorError(
                    f"input volume at {volume.spec.target} was not prepared as a host path;"
                    " the docker executor needs posix volumes"
                )
            source = _bind_source(volume.host_path, root, volume.spec.target, guards)
            mounts.append(
                {
                    "target": volume.spec.target,
                    "source": source,
                    "type": "bind",
                    "read_only": True,
                }
            )
        for output in spec.outputs:
            host_dir = ctx.outputs.get(output.name)
            if host_dir is None:
                raise ExecutorError(f"the runner gave no host dir for output {output.name!r}")
            host_dir.mkdir(parents=True, exist_ok=True)
            if guards:
                _share_output(host_dir, uid, gid)
            else:
                host_dir.chmod(0o777)
            mounts.append(
                {
                    "target": output.path,
                    "source": _bind_source(host_dir, root, output.path, guards),
                    "type": "bind",
                    "read_only": False,
                }
            )
        node_id = self.node_id or ctx.node_id
        name = _NAME_UNSAFE.sub("-", ctx.execution_id)[:40].strip("-._") or "job"
        config: dict[str, Any] = {
            "command": list(params.cmd) or None,
            "entrypoint": list(params.entrypoint) if params.entrypoint is not None else None,
            "working_dir": params.workdir,
            "environment": dict(spec.env),
            "labels": {
                LABEL_NODE: node_id,
                LABEL_JOB: ctx.job_id,
                LABEL_EXECUTION: ctx.execution_id,
            },
            "name": f"bacalhau-{name}-{secrets.token_hex(3)}",
            "detach": True,
            "tty": False,
            "stdin_open": False,
        }
        cpus = min(max(spec.resources.cpu, 0.01), float(ncpu))
        host: dict[str, Any] = {
            "mounts": mounts,
            "network_mode": "none",
            "mem_limit": spec.resources.memory,
            "memswap_limit": spec.resources.memory,
            "nano_cpus": int(cpus * 1e9),
            "security_opt": ["no-new-privileges"],
        }
        if spec.resources.gpu:  # passed as a device request (the NVIDIA runtime serves it)
            from docker.types import DeviceRequest

            host["device_requests"] = [
                DeviceRequest(count=spec.resources.gpu, capabilities=[["gpu"]])
            ]
        if guards:
            config["user"] = f"{uid}:{gid}"
            tmp_size = max(1024 * 1024, spec.resources.memory // 2)
            host.update(
                {
                    "pids_limit": self.limits.docker_pids_limit,
                    "cap_drop": ["ALL"],
                    "read_only": True,
                    "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size},mode=1777"},
                }
            )
            if group_add:
                host["group_add"] = group_add
        return config, host

    async def _run_container(
        self, engine: _Engine, container: str, ctx: ExecutionContext
    ) -> RunResult:
        timeout = ctx.spec.timeout
        await self._call(engine.start, container)
        failure: ExecutorError | None = None
        async with anyio.create_task_group() as tg:
            following = follow_output(tg, engine.client, container, ctx.output)
            try:
                with anyio.move_on_after(timeout) as scope:
                    # Abandoned on cancel: removing the container (in run) ends the wait.
                    reply = await anyio.to_thread.run_sync(
                        engine.wait, container, abandon_on_cancel=True
                    )
            except ExecutorError as exc:
                failure = exc
            finally:
                await following.stop()
        if failure is not None:
            raise failure
        if scope.cancelled_caught:
            with anyio.CancelScope(shield=True):
                await self._call(engine.kill, container)
                with contextlib.suppress(ExecutorError):  # best effort: keep what it printed
                    await self._collect(engine, container, ctx.results_dir)
            raise ExecutorError(
                f"job timed out after {timeout:g} s (spec.timeout); its container was killed"
            )
        state = await self._call(engine.state, container)
        truncated = await self._collect(engine, container, ctx.results_dir)
        if state.oom_killed and state.exit_code != 0:
            raise ExecutorError(
                f"job ran out of memory: killed at its limit of {_mib(ctx.spec.resources.memory)}"
                " (ask for more with resources.memory / --memory)"
            )
        error = (reply.get("Error") or {}).get("Message") if isinstance(reply, dict) else None
        if error or state.error:
            raise ExecutorError(
                f"Docker engine reports the container failed: {error or state.error}"
            )
        exit_code = int(reply.get("StatusCode", state.exit_code))
        if exit_code > 128:
            signals = await self._call(engine.kill_signals, container, state)
            if signals:
                raise ExecutorError(
                    f"container was killed from outside the executor (signal"
                    f" {', '.join(signals)}, exit code {exit_code}); the execution failed"
                )
        return RunResult(exit_code=exit_code, truncated=truncated)

    async def _collect(self, engine: _Engine, container: str, results_dir: Path) -> tuple[str, ...]:
        truncated: list[str] = []
        for stream in ("stdout", "stderr"):
            read = functools.partial(
                engine.logs, container, stdout=stream == "stdout", limit=MAX_LOG_BYTES
            )
            data = await self._call(read)
            if await self._call(write_capped, results_dir / stream, data):
                truncated.append(stream)
        return tuple(truncated)
