"""The publisher conformance suite: what every :class:`~bacalhau.publisher.base.Publisher` does.

Write a :class:`PublisherHarness` and run the applicable checks::

    from bacalhau.testing.conformance import publisher as suite

    @pytest.mark.parametrize("check", suite.checks_for(MyHarness))
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await suite.CHECKS[check](MyHarness(), tmp_path)

Features: ``retrievable`` (:meth:`PublisherHarness.fetch` brings published results back,
so the suite can compare them with what was published) and ``reads_results`` (the
publisher reads the folder, so a folder that cannot be read is a ``PublishError``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread

from ...errors import PublishError
from ...models import StorageRef
from ...publisher.base import Publisher
from ...verifier.canonical import hash_tree
from ._suite import Suite

__all__ = ["CHECKS", "PublisherHarness", "checks_for", "results_tree"]


class PublisherHarness(abc.ABC):
    """How the suite makes your publisher and reads back what it published."""

    features: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    async def make(self, folder: Path) -> Publisher:
        """A fresh publisher; ``folder`` is the harness's to use."""

    async def fetch(self, ref: StorageRef, dest: Path) -> None:
        """Materialise the results ``ref`` points at as the folder ``dest``."""
        raise NotImplementedError


_suite: Suite[PublisherHarness] = Suite()
CHECKS = _suite.checks
checks_for = _suite.checks_for


def results_tree(root: Path, tag: str) -> Path:
    """A results folder like a run leaves (stdout, stderr, exitCode, an output with nested,
    empty and hidden files), its content depending on ``tag``."""
    files = {
        "stdout": f"out {tag}\n".encode(),
        "stderr": b"",
        "exitCode": b"0",
        "outputs/a.txt": f"alpha {tag}".encode(),
        "outputs/sub/b.bin": bytes(range(256)) * 1200,  # several chunks
        "outputs/sub/empty": b"",
        "outputs/.hidden": b"h",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


async def _tree(root: Path, tag: str) -> Path:
    return await anyio.to_thread.run_sync(results_tree, root, tag)


async def _hash(root: Path) -> bytes:
    return await anyio.to_thread.run_sync(hash_tree, root)


@_suite.check()
async def check_publish_returns_a_ref_of_its_kind(harness: PublisherHarness, folder: Path) -> None:
    publisher = await harness.make(folder / "publisher")
    results = await _tree(folder / "results", "x")
    ref = await publisher.publish("job-1", "job-1/node-a", results)
    assert isinstance(ref, StorageRef)
    assert ref.type == publisher.name, f"a {publisher.name} publisher returned a {ref.type} ref"


@_suite.check()
async def check_results_are_left_in_place(harness: PublisherHarness, folder: Path) -> None:
    """Publishing reads the results folder; it neither moves nor changes it."""
    publisher = await harness.make(folder / "publisher")
    results = await _tree(folder / "results", "x")
    before = await _hash(results)
    await publisher.publish("job-1", "job-1/node-a", results)
    assert await _hash(results) == before


@_suite.check()
async def check_concurrent_publishes(harness: PublisherHarness, folder: Path) -> None:
    publisher = await harness.make(folder / "publisher")
    refs: dict[int, StorageRef] = {}

    async def publish(i: int) -> None:
        results = await _tree(folder / f"results-{i}", str(i))
        refs[i] = await publisher.publish(f"job-{i}", f"job-{i}/node-a", results)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(publish, i)
    assert sorted(refs) == [0, 1, 2]


@_suite.check("retrievable")
async def check_published_results_round_trip(harness: PublisherHarness, folder: Path) -> None:
    publisher = await harness.make(folder / "publisher")
    results = await _tree(folder / "results", "x")
    ref = await publisher.publish("job-1", "job-1/node-a", results)
    await harness.fetch(ref, folder / "fetched")
    assert await _hash(folder / "fetched") == await _hash(results)


@_suite.check("retrievable")
async def check_executions_are_kept_apart(harness: PublisherHarness, folder: Path) -> None:
    """Two executions of one job (different results) publish to refs that each give back
    their own results; publishing the second does not replace the first."""
    publisher = await harness.make(folder / "publisher")
    first = await _tree(folder / "r1", "one")
    second = await _tree(folder / "r2", "two")
    ref1 = await publisher.publish("job-1", "job-1/node-a", first)
    ref2 = await publisher.publish("job-1", "job-1/node-b", second)
    await harness.fetch(ref1, folder / "f1")
    await harness.fetch(ref2, folder / "f2")
    assert await _hash(folder / "f1") == await _hash(first)
    assert await _hash(folder / "f2") == await _hash(second)


@_suite.check("reads_results")
async def check_unreadable_results_are_a_publish_error(
    harness: PublisherHarness, folder: Path
) -> None:
    publisher = await harness.make(folder / "publisher")
    error: PublishError | None = None
    try:
        await publisher.publish("job-1", "job-1/node-a", folder / "no-such-results")
    except PublishError as exc:
        error = exc
    assert error is not None, "publishing a missing folder did not raise PublishError"
    assert str(error).strip()
