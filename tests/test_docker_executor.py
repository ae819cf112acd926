"""The Docker executor against a real engine (``@pytest.mark.docker``), plus the
engine-free parts: params validation and behaviour when no engine answers.

Docker tests use the engine at DOCKER_HOST; without one they skip with the reason,
unless BACALHAU_REQUIRE_DOCKER=1 (set by scripts/docker-engine.sh), where they fail.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker.errors
import pytest

from bacalhau.errors import ExecutorError, ExecutorUnavailable, ValidationError
from bacalhau.executor.base import MAX_LOG_BYTES, ExecutionContext, PreparedVolume
from bacalhau.executor.docker import (
    LABEL_EXECUTION,
    LABEL_JOB,
    LABEL_NODE,
    DockerExecutor,
    DockerParams,
)
from bacalhau.models import InputSpec, JobSpec, OutputSpec, Resources, StorageSpec
from bacalhau.testing.docker import DockerEngine, require_docker_engine
from bacalhau.testing.executors import execution_context

MiB = 1024 * 1024


# --- helpers ---------------------------------------------------------------------------------


def make_ctx(
    tmp_path: Path,
    spec: JobSpec,
    *,
    inputs: dict[str, Path] | None = None,
    node_id: str = "",
) -> ExecutionContext:
    """A context as the node's runner builds it: inputs by target, fresh output dirs."""
    inputs = inputs or {}
    volumes = [PreparedVolume(spec=i, host_path=inputs[i.target]) for i in spec.inputs]
    return execution_context(
        tmp_path / ("run-" + secrets.token_hex(4)),
        spec,
        volumes,
        job_id="job-" + secrets.token_hex(4),
        execution_id="exec-" + secrets.token_hex(4),
        node_id=node_id,
    )


def inline_input(target: str) -> InputSpec:
    return InputSpec(StorageSpec.inline("placeholder"), target)


def containers_with(engine: DockerEngine, label: str) -> list[dict[str, Any]]:
    client = engine.client()
    try:
        found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": label})
        return found
    finally:
        client.close()


async def wait_running(engine: DockerEngine, execution_id: str) -> dict[str, Any]:
    """The execution's container, once the engine says it is running."""
    label = f"{LABEL_EXECUTION}={execution_id}"
    with anyio.fail_after(30):
        while True:
            found = await anyio.to_thread.run_sync(containers_with, engine, label)
            if found and found[0]["State"] == "running":
                return found[0]
            await anyio.sleep(0.05)


# --- engine-free tests -----------------------------------------------------------------------


def test_params_are_checked_with_named_fields() -> None:
    ok = JobSpec.docker("busybox:1.36", ["echo", "hi"], entrypoint=["/bin/sh"], workdir="/w")
    assert DockerParams.from_spec(ok) == DockerParams(
        image="busybox:1.36", cmd=("echo", "hi"), entrypoint=("/bin/sh",), workdir="/w"
    )
    with pytest.raises(ValidationError, match=r"engine\.params\.image"):
        DockerParams.from_spec(JobSpec.docker(""))
    with pytest.raises(ValidationError, match=r"engine\.params\.image"):
        DockerParams.from_spec(JobSpec.docker("two words"))
    with pytest.raises(ValidationError, match=r"engine\.params\.workdir"):
        DockerParams.from_spec(JobSpec.docker("busybox", workdir="relative"))
    bad_cmd = attrs_evolve_params(ok, cmd="echo hi")
    with pytest.raises(ValidationError, match=r"engine\.params\.cmd: must be a list of strings"):
        DockerParams.from_spec(bad_cmd)
    with pytest.raises(ValidationError, match="unknown docker param"):
        DockerParams.from_spec(attrs_evolve_params(ok, volumes=["/x"]))


def attrs_evolve_params(spec: JobSpec, **params: Any) -> JobSpec:
    from bacalhau.models import EngineSpec

    return JobSpec(engine=EngineSpec("docker", {**spec.engine.params, **params}))


def test_validate_refuses_memory_below_docker_minimum() -> None:
    spec = JobSpec.docker("busybox", resources=Resources(memory=2 * MiB))
    with pytest.raises(ValidationError, match=r"resources\.memory: docker needs at least 6 MiB"):
        DockerExecutor().validate(spec)


@pytest.mark.anyio
async def test_no_engine_means_unavailable(tmp_path: Path) -> None:
    executor = DockerExecutor(base_url=f"unix://{tmp_path}/no-such-docker.sock")
    try:
        assert not await executor.is_installed()
        reason = await executor.unsupported_reason(JobSpec.docker("busybox"))
        assert reason is not None
        assert "no Docker engine answers" in reason
        assert str(tmp_path) in reason
        await executor.start()  # nothing to clean, and no error
        with pytest.raises(ExecutorUnavailable, match="no Docker engine answers"):
            await executor.run(make_ctx(tmp_path, JobSpec.docker("busybox")))
    finally:
        await executor.close()


# --- against a real engine -------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_engine() -> DockerEngine:
    return require_docker_engine()


@pytest.fixture
def node_id() -> str:
    return "test-node-" + secrets.token_hex(6)


@pytest.fixture
async def executor(docker_engine: DockerEngine, node_id: str) -> AsyncIterator[DockerExecutor]:
    executor = DockerExecutor(node_id=node_id, local_images_only=True)
    await executor.start()
    try:
        yield executor
        # No run may leave its container behind, however it ended.
        assert await executor.leftovers() == []
    finally:
        await executor.close()


@pytest.fixture
def image(docker_engine: DockerEngine) -> str:
    return docker_engine.image


@pytest.fixture
def sweep(docker_engine: DockerEngine) -> Iterator[list[str]]:
    """Container ids a test created by hand; removed afterwards whatever happened."""
    created: list[str] = []
    yield created
    client = docker_engine.client()
    try:
        for container in created:
            with contextlib.suppress(docker.errors.NotFound):  # the test removed it already
                client.api.remove_container(container, force=True, v=True)
    finally:
        client.close()


needs_docker = pytest.mark.docker


@needs_docker
@pytest.mark.anyio
async def test_a_gpu_job_on_an_engine_without_a_gpu_runtime_fails_clearly(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    spec = JobSpec.docker(image, ["true"], resources=Resources(gpu=1))
    assert await executor.unsupported_reason(spec) is None  # the node offers GPUs: it tries
    with pytest.raises(ExecutorError, match="has no GPU runtime") as err:
        await executor.run(make_ctx(tmp_path, spec))
    assert "NVIDIA Container Toolkit" in str(err.value)


@needs_docker
@pytest.mark.anyio
async def test_runs_command_with_env_workdir_and_exit_code(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    spec = JobSpec.docker(
        image,
        ["-c", 'echo "out $GREETING $(pwd)"; echo err >&2; exit 3'],
        entrypoint=["/bin/sh"],
        workdir="/tmp",
        env={"GREETING": "hello"},
    )
    ctx = make_ctx(tmp_path, spec)
    result = await executor.run(ctx)
    assert result.exit_code == 3
    assert result.truncated == ()
    assert (ctx.results_dir / "stdout").read_text() == "out hello /tmp\n"
    assert (ctx.results_dir / "stderr").read_text() == "err\n"
    assert sorted(p.name for p in ctx.results_dir.iterdir()) == ["stderr", "stdout"]
    assert list(ctx.work_dir.iterdir()) == []  # no scratch left behind


@needs_docker
@pytest.mark.anyio
async def test_inputs_are_read_only_and_outputs_writable(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "file.txt").write_text("apples\n")
    (data / "dir").mkdir()
    (data / "dir" / "inner.txt").write_text("pears\n")
    script = (
        "cat /file.txt /in/inner.txt > /output_folder/file.txt;"
        " if echo x > /file.txt; then echo WROTE-FILE; fi;"
        " if touch /in/new; then echo WROTE-DIR; fi;"
        " mkdir -p /output_folder/sub && echo deep > /output_folder/sub/f"
    )
    spec = JobSpec.docker(
        image,
        ["sh", "-c", script],
        inputs=[inline_input("/file.txt"), inline_input("/in")],
        outputs=[OutputSpec("apples", "/output_folder")],
    )
    ctx = make_ctx(tmp_path, spec, inputs={"/file.txt": data / "file.txt", "/in": data / "dir"})
    result = await executor.run(ctx)
    assert result.exit_code == 0
    stdout = (ctx.results_dir / "stdout").read_text()
    assert "WROTE" not in stdout
    assert (ctx.results_dir / "stderr").read_text().count("Read-only file system") == 2
    assert (ctx.outputs["apples"] / "file.txt").read_text() == "apples\npears\n"
    assert (ctx.outputs["apples"] / "sub" / "f").read_text() == "deep\n"
    assert (data / "file.txt").read_text() == "apples\n"
    assert sorted(p.name for p in (data / "dir").iterdir()) == ["inner.txt"]


@needs_docker
@pytest.mark.anyio
async def test_no_network_inside_the_container(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    # Only the loopback interface exists, so any connection off the box fails at once.
    script = (
        "grep -v -e Inter -e face /proc/net/dev | cut -d: -f1 | tr -d ' ';"
        " if nc -w 2 192.0.2.1 80 </dev/null; then echo CONNECTED; else echo connect-failed; fi"
    )
    ctx = make_ctx(tmp_path, JobSpec.docker(image, ["sh", "-c", script]))
    result = await executor.run(ctx)
    assert result.exit_code == 0
    assert (ctx.results_dir / "stdout").read_text().split() == ["lo", "connect-failed"]
    assert "unreachable" in (ctx.results_dir / "stderr").read_text().lower()


@needs_docker
@pytest.mark.anyio
async def test_memory_limit_is_enforced(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    # tail holds a newline-free line in memory: 100 MB cannot fit in 32 MiB.
    spec = JobSpec.docker(
        image,
        ["sh", "-c", "head -c 100000000 /dev/zero | tail"],
        resources=Resources(memory=32 * MiB, cpu=1),
    )
    with pytest.raises(ExecutorError, match="ran out of memory: killed at its limit of 32 MiB"):
        await executor.run(make_ctx(tmp_path, spec))
    # The same job within its limit runs fine.
    fits = JobSpec.docker(
        image,
        ["sh", "-c", "head -c 1000000 /dev/zero | tail | wc -c"],
        resources=Resources(memory=32 * MiB, cpu=1),
    )
    ctx = make_ctx(tmp_path, fits)
    assert (await executor.run(ctx)).exit_code == 0
    assert (ctx.results_dir / "stdout").read_text().strip() == "1000000"


@needs_docker
@pytest.mark.anyio
async def test_timeout_kills_the_container(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    # 3 s: the line printed first must be out before the kill, and a loaded machine can
    # take a while to start the container's shell
    spec = JobSpec.docker(image, ["sh", "-c", "echo started; sleep 60"], timeout=3.0)
    ctx = make_ctx(tmp_path, spec)
    with pytest.raises(ExecutorError, match=r"timed out after 3 s .*container was killed"):
        await executor.run(ctx)
    assert (ctx.results_dir / "stdout").read_text() == "started\n"
    assert await executor.leftovers() == []


@needs_docker
@pytest.mark.anyio
async def test_cancelling_the_run_removes_its_container(
    executor: DockerExecutor, docker_engine: DockerEngine, image: str, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, JobSpec.docker(image, ["sleep", "60"]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run, ctx)
        await wait_running(docker_engine, ctx.execution_id)
        tg.cancel_scope.cancel()
    label = f"{LABEL_EXECUTION}={ctx.execution_id}"
    assert await anyio.to_thread.run_sync(containers_with, docker_engine, label) == []


@needs_docker
@pytest.mark.anyio
async def test_container_killed_from_outside_fails_and_executor_carries_on(
    executor: DockerExecutor, docker_engine: DockerEngine, image: str, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, JobSpec.docker(image, ["sleep", "60"]))

    async def kill_it() -> None:
        found = await wait_running(docker_engine, ctx.execution_id)
        client = docker_engine.client()
        try:
            await anyio.to_thread.run_sync(client.api.kill, found["Id"])
        finally:
            client.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_it)
        with pytest.raises(ExecutorError, match=r"killed from outside .*signal 9"):
            await executor.run(ctx)
    # A job that kills itself is a result, not an outside kill.
    ctx2 = make_ctx(tmp_path, JobSpec.docker(image, ["sh", "-c", "sleep 60 & kill -9 $!; wait $!"]))
    assert (await executor.run(ctx2)).exit_code == 137


@needs_docker
@pytest.mark.anyio
async def test_containers_carry_labels_and_are_removed(
    executor: DockerExecutor,
    docker_engine: DockerEngine,
    image: str,
    node_id: str,
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path, JobSpec.docker(image, ["sleep", "60"], timeout=30))
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run, ctx)
        found = await wait_running(docker_engine, ctx.execution_id)
        tg.cancel_scope.cancel()
    assert found["Labels"][LABEL_NODE] == node_id
    assert found["Labels"][LABEL_JOB] == ctx.job_id
    assert found["Labels"][LABEL_EXECUTION] == ctx.execution_id
    assert found["HostConfig"]["NetworkMode"] == "none"
    assert await executor.leftovers() == []


@needs_docker
@pytest.mark.anyio
async def test_start_removes_leftovers_of_its_own_node_only(
    docker_engine: DockerEngine, image: str, sweep: list[str]
) -> None:
    mine, other = "crashed-" + secrets.token_hex(4), "other-" + secrets.token_hex(4)
    client = docker_engine.client()
    try:
        for node in (mine, mine, other):
            created = client.api.create_container(
                image,
                ["sleep", "60"],
                labels={LABEL_NODE: node},
                host_config=client.api.create_host_config(network_mode="none"),
            )
            sweep.append(created["Id"])
            client.api.start(created["Id"])
    finally:
        client.close()
    executor = DockerExecutor(node_id=mine)
    try:
        assert len(await executor.leftovers()) == 2
        await executor.start()
        assert await executor.leftovers() == []
        assert len(await executor.leftovers(other)) == 1
    finally:
        await executor.close()


@needs_docker
@pytest.mark.anyio
async def test_missing_image_local_only(executor: DockerExecutor, tmp_path: Path) -> None:
    spec = JobSpec.docker("bacalhau-test/not-there:" + secrets.token_hex(4), ["true"])
    reason = await executor.unsupported_reason(spec)
    assert reason is not None
    assert "is not present locally and this node runs local images only" in reason
    with pytest.raises(ExecutorError, match="not found locally and could not be pulled"):
        await executor.run(make_ctx(tmp_path, spec))


@needs_docker
@pytest.mark.anyio
async def test_missing_image_unreachable_registry(
    docker_engine: DockerEngine, image: str, tmp_path: Path
) -> None:
    # A registry on a closed local port: the pull is tried and fails at once.
    missing = f"127.0.0.1:9/bacalhau-test/missing:{secrets.token_hex(4)}"
    executor = DockerExecutor()
    try:
        assert await executor.unsupported_reason(JobSpec.docker(missing)) is None
        assert await executor.unsupported_reason(JobSpec.docker(image)) is None
        with pytest.raises(
            ExecutorError, match=rf"image {missing} not found locally and could not be pulled: ."
        ):
            await executor.run(make_ctx(tmp_path, JobSpec.docker(missing, ["true"])))
    finally:
        await executor.close()


@needs_docker
@pytest.mark.anyio
async def test_output_is_capped_and_truncation_noted(
    executor: DockerExecutor, image: str, tmp_path: Path
) -> None:
    spec = JobSpec.docker(image, ["sh", "-c", "head -c 1500000 /dev/zero | tr '\\0' a; echo e >&2"])
    ctx = make_ctx(tmp_path, spec)
    result = await executor.run(ctx)
    assert result.exit_code == 0
    assert result.truncated == ("stdout",)
    assert (ctx.results_dir / "stdout").read_bytes() == b"a" * MAX_LOG_BYTES
    assert (ctx.results_dir / "stderr").read_bytes() == b"e\n"
