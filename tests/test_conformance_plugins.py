"""The storage, publisher and verifier conformance suites against every implementation:
ipfs, url and inline storage; ipfs, local and noop publishers; noop and deterministic
verifiers. (Executors: tests/test_conformance_executors.py; transports: their own files.)"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import anyio.to_thread
import httpx
import pytest

from bacalhau.identity import Identity
from bacalhau.limits import JobLimits
from bacalhau.models import StorageRef, StorageSpec
from bacalhau.publisher.base import Publisher
from bacalhau.publisher.ipfs import IpfsPublisher
from bacalhau.publisher.local import LocalPublisher
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.storage.base import StorageProvider
from bacalhau.storage.inline import InlineStorage
from bacalhau.storage.ipfs import BlockStore, IpfsStorage, add_bytes, add_path, export_to_path
from bacalhau.storage.url import UrlStorage
from bacalhau.testing.conformance import publisher as publishers
from bacalhau.testing.conformance import storage
from bacalhau.testing.conformance import verifier as verifiers
from bacalhau.verifier.base import Verifier
from bacalhau.verifier.deterministic import DeterministicVerifier
from bacalhau.verifier.noop import NoopVerifier

pytestmark = pytest.mark.anyio

# --- storage ------------------------------------------------------------------------------------


class InlineHarness(storage.StorageHarness):
    async def make(self, folder: Path) -> StorageProvider:
        return InlineStorage()

    async def source(self, data: bytes) -> StorageSpec:
        return StorageSpec.inline(data)


class IpfsStorageHarness(storage.StorageHarness):
    features: ClassVar[frozenset[str]] = frozenset({"directories", "missing"})
    store: BlockStore

    async def make(self, folder: Path) -> StorageProvider:
        self.store = BlockStore(folder / "blocks")
        self.scratch = folder / "scratch"
        return IpfsStorage(self.store)

    async def source(self, data: bytes) -> StorageSpec:
        return StorageSpec.ipfs(await add_bytes(self.store, data))

    async def directory(self, files: dict[str, bytes]) -> StorageSpec:
        root = self.scratch / hashlib.sha256(repr(sorted(files)).encode()).hexdigest()[:12]
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return StorageSpec.ipfs(await add_path(self.store, root, hidden=True))

    async def missing(self) -> StorageSpec:
        return StorageSpec.ipfs(await add_bytes(None, b"never stored here"))


class UrlHarness(storage.StorageHarness):
    """Downloads from an in-memory web server (httpx's MockTransport): no socket at all."""

    features: ClassVar[frozenset[str]] = frozenset({"missing"})

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}

    def _serve(self, request: httpx.Request) -> httpx.Response:
        body = self.pages.get(request.url.path)
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)

    async def make(self, folder: Path) -> StorageProvider:
        return UrlStorage(
            transport=httpx.MockTransport(self._serve),
            limits=JobLimits(url_allow_domains=("data.example",)),
        )

    async def source(self, data: bytes) -> StorageSpec:
        path = f"/files/{len(self.pages)}"
        self.pages[path] = data
        return StorageSpec(type="url", url=f"https://data.example{path}")

    async def missing(self) -> StorageSpec:
        return StorageSpec(type="url", url="https://data.example/no-such-file")


STORAGE: dict[str, Callable[[], storage.StorageHarness]] = {
    "inline": InlineHarness,
    "ipfs": IpfsStorageHarness,
    "url": UrlHarness,
}


@pytest.mark.parametrize(
    ("kind", "check"), [(k, c) for k, h in STORAGE.items() for c in storage.checks_for(h)]
)
async def test_storage(kind: str, check: str, tmp_path: Path) -> None:
    await storage.CHECKS[check](STORAGE[kind](), tmp_path)


# --- publishers ---------------------------------------------------------------------------------


class IpfsPublisherHarness(publishers.PublisherHarness):
    features: ClassVar[frozenset[str]] = frozenset({"retrievable", "reads_results"})
    store: BlockStore

    async def make(self, folder: Path) -> Publisher:
        self.store = BlockStore(folder / "blocks")
        return IpfsPublisher(self.store)

    async def fetch(self, ref: StorageRef, dest: Path) -> None:
        assert ref.cid is not None
        await export_to_path(self.store, ref.cid, dest)


class LocalPublisherHarness(publishers.PublisherHarness):
    features: ClassVar[frozenset[str]] = frozenset({"retrievable", "reads_results"})

    async def make(self, folder: Path) -> Publisher:
        return LocalPublisher(folder / "published")

    async def fetch(self, ref: StorageRef, dest: Path) -> None:
        assert ref.path is not None
        await anyio.to_thread.run_sync(shutil.copytree, ref.path, dest)


class NoopPublisherHarness(publishers.PublisherHarness):
    async def make(self, folder: Path) -> Publisher:
        return NoopPublisher()


PUBLISHERS: dict[str, Callable[[], publishers.PublisherHarness]] = {
    "ipfs": IpfsPublisherHarness,
    "local": LocalPublisherHarness,
    "noop": NoopPublisherHarness,
}


@pytest.mark.parametrize(
    ("kind", "check"), [(k, c) for k, h in PUBLISHERS.items() for c in publishers.checks_for(h)]
)
async def test_publisher(kind: str, check: str, tmp_path: Path) -> None:
    await publishers.CHECKS[check](PUBLISHERS[kind](), tmp_path)


# --- verifiers ----------------------------------------------------------------------------------


class NoopVerifierHarness(verifiers.VerifierHarness):
    async def make(self, identity: Identity) -> Verifier:
        return NoopVerifier()


class DeterministicHarness(verifiers.VerifierHarness):
    features: ClassVar[frozenset[str]] = frozenset({"compares", "sealed"})

    async def make(self, identity: Identity) -> Verifier:
        return DeterministicVerifier(identity=identity)


VERIFIERS: dict[str, Callable[[], verifiers.VerifierHarness]] = {
    "noop": NoopVerifierHarness,
    "deterministic": DeterministicHarness,
}


@pytest.mark.parametrize(
    ("kind", "check"), [(k, c) for k, h in VERIFIERS.items() for c in verifiers.checks_for(h)]
)
async def test_verifier(kind: str, check: str, tmp_path: Path) -> None:
    await verifiers.CHECKS[check](VERIFIERS[kind](), tmp_path)


# --- the suites can fail ------------------------------------------------------------------------


class LeakyInline(InlineStorage):
    """Broken on purpose: leaves the prepared file writable."""

    async def prepare(self, spec: StorageSpec, dest: Path) -> Path:
        path = await super().prepare(spec, dest)
        path.chmod(0o644)
        return path


class LeakyInlineHarness(InlineHarness):
    async def make(self, folder: Path) -> StorageProvider:
        return LeakyInline()


class OverwritingPublisher(LocalPublisher):
    """Broken on purpose: every execution of a job lands in the same place."""

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        return await super().publish(job_id, job_id + "/same", results_dir)


class OverwritingHarness(LocalPublisherHarness):
    async def make(self, folder: Path) -> Publisher:
        return OverwritingPublisher(folder / "published")


class TrustingVerifier(DeterministicVerifier):
    """Broken on purpose: opens proposals without checking who sent them for which job."""

    def open(self, *, job_id: str, node_id: str, proposal: bytes) -> bytes | None:
        from bacalhau.verifier.deterministic import read_header

        header = read_header(proposal)
        return super().open(job_id=header.job_id, node_id=header.node_id, proposal=proposal)


class TrustingHarness(DeterministicHarness):
    async def make(self, identity: Identity) -> Verifier:
        return TrustingVerifier(identity=identity)


async def test_the_suites_catch_broken_implementations(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="writable"):
        await storage.CHECKS["files_round_trip_read_only"](LeakyInlineHarness(), tmp_path / "s")
    with pytest.raises(AssertionError):
        await publishers.CHECKS["executions_are_kept_apart"](OverwritingHarness(), tmp_path / "p")
    with pytest.raises(AssertionError, match="opened as"):
        await verifiers.CHECKS["a_proposal_is_bound_to_its_job_and_node"](
            TrustingHarness(), tmp_path / "v"
        )


def test_every_check_runs_somewhere() -> None:
    for suite, harnesses in (
        (storage, STORAGE.values()),
        (publishers, PUBLISHERS.values()),
        (verifiers, VERIFIERS.values()),
    ):
        covered = {c for h in harnesses for c in suite.checks_for(h)}
        assert covered == set(suite.CHECKS), suite.__name__
