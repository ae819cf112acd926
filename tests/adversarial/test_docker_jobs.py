"""Attacks run as real Docker jobs on a real (in-process) node, against the shared engine.

What a container may reach is proven from inside it: its user, capabilities, root
filesystem, pids limit, the absence of the engine's socket; then the attacks (links in
inputs, a fork bomb, deep trees, filling the disk) fail the job and the node keeps
serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from bacalhau.compute.capacity import ComputeConfig
from bacalhau.errors import ExecutorError
from bacalhau.executor.base import PreparedVolume
from bacalhau.executor.docker import DockerExecutor
from bacalhau.limits import JobLimits
from bacalhau.models import InputSpec, JobSpec, JobState, OutputSpec, Resources, StorageSpec
from bacalhau.network import Network
from bacalhau.node.node import Node
from bacalhau.protocol.requester import RequesterConfig
from bacalhau.testing import hostile
from bacalhau.testing.docker import require_docker_engine
from bacalhau.testing.executors import execution_context

from .conftest import assert_refused, why

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

MiB = 1024 * 1024
PIDS = 64


@pytest.fixture(scope="module")
def image() -> str:
    return require_docker_engine().image


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    config = ComputeConfig(docker_local_images_only=True, limits=JobLimits(docker_pids_limit=PIDS))
    async with Network.in_memory(1, compute=config, requester=RequesterConfig()) as net:
        yield net.nodes[0]


def sh(image: str, script: str, **kwargs: object) -> JobSpec:
    kwargs.setdefault("timeout", 60.0)
    kwargs.setdefault("retries", 0)
    return JobSpec.docker(image, ["sh", "-c", script], **kwargs)  # type: ignore[arg-type]


async def still_serving(node: Node, image: str) -> None:
    result = await node.run_job(sh(image, "echo fine"), timeout=120)
    assert result.state is JobState.COMPLETED, why(result)
    assert result.executions[0].stdout == "fine\n"


PROBE = """
id -u; id -g
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
if touch /rootfs-write 2>/dev/null; then echo ROOTFS-WRITABLE; fi
touch /tmp/x && echo tmp-ok
cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max
if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then echo SOCKET; fi
stat -c %a /out
"""


async def test_container_is_hardened(node: Node, image: str) -> None:
    spec = sh(image, PROBE, outputs=[OutputSpec("out", "/out")])
    result = await node.run_job(spec, timeout=120)
    assert result.state is JobState.COMPLETED, why(result)
    lines = result.executions[0].stdout.split("\n")
    uid, gid = lines[0], lines[1]
    assert uid != "0" and gid != "0", lines
    assert "CapEff:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    assert "ROOTFS-WRITABLE" not in lines
    assert "tmp-ok" in lines
    assert str(PIDS) in lines
    assert "SOCKET" not in lines
    mode = int(lines[lines.index(str(PIDS)) + 1], 8)
    assert mode & 0o002 == 0, f"output folder is world-writable ({mode:o})"


async def test_fork_bomb_is_contained(node: Node, image: str) -> None:
    script = "i=0; while [ $i -lt 300 ]; do sleep 20 & i=$((i+1)); done; echo spawned"
    result = await node.run_job(sh(image, script, timeout=30), timeout=120)
    assert "can't fork" in why(result) or "Resource temporarily unavailable" in why(result), why(
        result
    )
    await still_serving(node, image)


async def test_symlink_in_an_input_is_refused(node: Node, image: str) -> None:
    store = node.blockstore
    assert store is not None
    cid = hostile.symlink_dir(store, "/var/run/docker.sock", name="sock")
    spec = sh(image, "ls -la /in/sock", inputs=[InputSpec(StorageSpec.ipfs(cid), "/in")])
    result = await node.run_job(spec, timeout=120)
    assert_refused(result, "sock is a symbolic link", "refused in job inputs")
    await still_serving(node, image)


async def test_deep_tree_fails_the_job_not_the_node(node: Node, image: str) -> None:
    script = "cd /out; i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done"
    result = await node.run_job(sh(image, script, outputs=[OutputSpec("out", "/out")]), timeout=120)
    assert_refused(result, "nest deeper than 128 levels")
    await still_serving(node, image)


async def test_disk_is_enforced_for_docker(node: Node, image: str) -> None:
    script = "head -c 50000000 /dev/zero > /out/big; sleep 5"
    spec = sh(image, script, outputs=[OutputSpec("out", "/out")], resources=Resources(disk=8 * MiB))
    result = await node.run_job(spec, timeout=120)
    assert_refused(result, "resources.disk")
    await still_serving(node, image)


async def test_binds_only_paths_inside_the_execution_folder(image: str, tmp_path: Path) -> None:
    executor = DockerExecutor(node_id="adv-binds", local_images_only=True)
    secret = tmp_path / "outside.txt"
    secret.write_text("host secret\n")
    spec = sh(image, "cat /in/data", inputs=[InputSpec(StorageSpec.inline("x"), "/in/data")])
    ctx = execution_context(tmp_path / "run", spec)
    # What a buggy or hostile storage plugin could hand back: a link inside the
    # execution folder pointing at a host file, or a host path outside it.
    link = ctx.work_dir.parent / "inputs" / "0"
    link.symlink_to(secret)
    try:
        for host, said in ((link, "symbolic link"), (secret, "outside the execution folder")):
            bad = attrs.evolve(ctx, volumes=(PreparedVolume(spec=spec.inputs[0], host_path=host),))
            with pytest.raises(ExecutorError, match=said):
                await executor.run(bad)
    finally:
        await executor.close()
