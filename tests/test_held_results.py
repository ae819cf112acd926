"""Small no-op results held in memory: the same digest as on disk, no folder, and a
folder after all for a verifier or publisher that reads one."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from bacalhau import JobSpec, Network
from bacalhau.compute.capacity import Capacity
from bacalhau.compute.runner import ExecutionRunner
from bacalhau.executor.noop import NoopExecutor
from bacalhau.identity import Identity
from bacalhau.models import Resources
from bacalhau.protocol.events import Event, ExecutionDone
from bacalhau.publisher.base import Publisher
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.verifier.base import Verifier
from bacalhau.verifier.canonical import hash_tree
from bacalhau.verifier.deterministic import DeterministicVerifier
from bacalhau.verifier.noop import NoopVerifier

NODE = Identity.from_seed(bytes(range(32)))
REQ = Identity.from_seed(bytes(range(1, 33)))


class ReadsFolder(Verifier):
    """A reads-only verifier with no digest shortcut: it reads the results folder."""

    name = "reads-folder"
    reads_only = True

    def __init__(self) -> None:
        self.seen: dict[str, bytes] = {}

    async def propose(
        self, *, job_id: str, node_id: str, results_dir: Path, requester_key: bytes
    ) -> bytes:
        def read() -> dict[str, bytes]:
            return {p.name: p.read_bytes() for p in results_dir.iterdir()}

        self.seen = await anyio.to_thread.run_sync(read)
        return b"read"

    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        return None


class ReadingPublisher(NoopPublisher):
    name = "reading"
    reads_results = True


def runner(
    tmp_path: Path, verifier: Verifier | None = None, fed: list[Event] | None = None
) -> ExecutionRunner:
    return ExecutionRunner(
        node_id=NODE.node_id,
        root=tmp_path / "executions",
        executors={"noop": NoopExecutor()},
        storage={},
        verifiers={
            "noop": verifier or NoopVerifier(),
            "deterministic": DeterministicVerifier(identity=REQ),
        },
        publishers={"noop": NoopPublisher(), "reading": ReadingPublisher()},
        capacity=Capacity(Resources(cpu=1, memory=1 << 30), 1, 1),
        feed=(fed if fed is not None else []).append,
        sign=NODE.sign,
    )


SPECS = [
    JobSpec.noop(),
    JobSpec.noop(stdout="hello\n", stderr="oops", exit_code=3),
    JobSpec.noop(stdout="ünïcode ✓ " * 100),
    JobSpec.noop(stdout="checked", verifier="deterministic"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("spec", SPECS)
async def test_held_results_hash_as_the_folder_the_executor_writes(
    tmp_path: Path, spec: JobSpec
) -> None:
    r = runner(tmp_path)
    held = r._hold("j-held", spec, NoopExecutor())
    assert held is not None
    on_disk = await r.produce("j-disk", spec, r.folder("j-disk"), digest=True)
    assert held[3] == on_disk.digest == hash_tree(on_disk.results)
    assert held == (on_disk.exit_code, on_disk.stdout, on_disk.stderr, on_disk.digest)
    assert not r.folder("j-held").exists()  # nothing written
    assert r.has_results("j-held")
    r.discard("j-held")
    assert not r.has_results("j-held")
    assert r.has_results("j-held", spec)  # made again from the spec after a restart


def test_jobs_that_need_a_folder_are_not_held(tmp_path: Path) -> None:
    r, noop = runner(tmp_path), NoopExecutor()
    assert r._hold("j", JobSpec.noop(publisher="reading"), noop) is None  # reads the folder
    assert r._hold("j", JobSpec.noop(files={"out/a": "x"}), noop) is None
    assert r._hold("j", JobSpec.noop(delay=0.1), noop) is None
    assert r._hold("j", JobSpec.noop(error="no"), noop) is None
    assert r._hold("j", JobSpec.noop(stdout="x" * 20_000), noop) is None
    assert not r.has_results("j", JobSpec.noop(publisher="reading"))


@pytest.mark.anyio
async def test_a_verifier_without_the_digest_shortcut_reads_a_written_folder(
    tmp_path: Path,
) -> None:
    verifier = ReadsFolder()
    spec = JobSpec.noop(stdout="out", stderr="err", exit_code=2)
    r = runner(tmp_path, verifier)
    done = await r._execute("j-1", spec, REQ.seal_public_key)
    assert isinstance(done, ExecutionDone)
    assert done.proposal == b"read"
    assert verifier.seen == {"stdout": b"out", "stderr": b"err", "exitCode": b"2"}
    assert r.has_results("j-1")
    r.discard("j-1")


@pytest.mark.anyio
async def test_publishing_held_results_writes_nothing(tmp_path: Path) -> None:
    fed: list[Event] = []
    r = runner(tmp_path, fed=fed)
    spec = JobSpec.noop(stdout="x")
    done = await r._execute("j-1", spec, REQ.seal_public_key)
    assert isinstance(done, ExecutionDone)
    await r._publish("j-1", spec)
    assert [type(e).__name__ for e in fed] == ["PublishDone"]
    assert not r.has_results("j-1")
    assert not (tmp_path / "executions").exists()


@pytest.mark.anyio
async def test_a_network_runs_noop_jobs_without_execution_folders() -> None:
    async with Network.in_memory(3, seed=3) as net:
        for i in range(3):
            result = await net.nodes[i].run_job(JobSpec.noop(stdout=f"hi {i}"), timeout=30)
            assert result.ok, result.reason
            assert [e.stdout for e in result.accepted] == [f"hi {i}"]
        for node in net.nodes:
            assert not (node.data_dir / "executions").exists()  # no folder was ever made


def test_a_publisher_that_reads_results_says_so() -> None:
    assert Publisher.reads_results
    assert not NoopPublisher.reads_results


@pytest.mark.anyio
async def test_a_held_job_with_room_runs_and_publishes_before_start_returns(
    tmp_path: Path,
) -> None:
    fed: list[Event] = []
    r = runner(tmp_path, fed=fed)
    spec = JobSpec.noop(stdout="now")
    async with anyio.create_task_group() as tg:
        r.bind(tg)
        r.capacity.reserve("j-1")  # the bid held its room
        r.start("j-1", spec, REQ.seal_public_key)
        assert [type(e).__name__ for e in fed] == ["ExecutionDone"]  # no task, no wait
        assert r.active == 0
        assert not r.capacity.reserved
        assert r.capacity.running == 0
        assert r.has_results("j-1")
        r.publish("j-1", spec)
        assert [type(e).__name__ for e in fed] == ["ExecutionDone", "PublishDone"]
        assert not r.has_results("j-1")
        tg.cancel_scope.cancel()
    assert not (tmp_path / "executions").exists()


@pytest.mark.anyio
async def test_a_held_job_without_room_waits_its_turn(tmp_path: Path) -> None:
    arrived = anyio.Event()
    fed: list[Event] = []

    def feed(event: Event) -> None:
        fed.append(event)
        arrived.set()

    r = runner(tmp_path)
    r.feed = feed
    spec = JobSpec.noop(stdout="later")
    async with anyio.create_task_group() as tg:
        r.bind(tg)
        assert r.capacity.try_acquire(spec.resources)  # another execution holds the slot
        r.start("j-2", spec, REQ.seal_public_key)
        assert fed == []
        assert r.active == 1
        r.capacity.release(spec.resources)
        with anyio.fail_after(10):
            await arrived.wait()
        assert [type(e).__name__ for e in fed] == ["ExecutionDone"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_verifier_that_reads_a_folder_runs_the_job_in_a_task(tmp_path: Path) -> None:
    arrived = anyio.Event()
    fed: list[Event] = []

    def feed(event: Event) -> None:
        fed.append(event)
        arrived.set()

    verifier = ReadsFolder()
    r = runner(tmp_path, verifier)
    r.feed = feed
    async with anyio.create_task_group() as tg:
        r.bind(tg)
        r.start("j-3", JobSpec.noop(stdout="out"), REQ.seal_public_key)
        assert fed == []  # not at once: the verifier reads the folder
        assert r.capacity.running == 0  # the room taken for a try was given back
        with anyio.fail_after(10):
            await arrived.wait()
        (done,) = fed
        assert isinstance(done, ExecutionDone)
        assert done.proposal == b"read"
        assert verifier.seen["stdout"] == b"out"
        tg.cancel_scope.cancel()
