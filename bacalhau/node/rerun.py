"""Re-running a job away from the network: what ``bacalhau verify`` does with a receipt.

- Executors: ``wasm`` and ``noop`` always; ``docker`` when an engine answers at
  ``DOCKER_HOST`` (or the default socket). Only jobs that re-run to the same results
  are re-run at all: WASM, noop, and jobs the submitter marked deterministic.
- Inputs: ``inline`` always; ``ipfs`` (inputs and a WASM module given by CID) from CAR
  files (``bacalhau data export CID``) and, when given, a fetch function (the CLI's
  ``--inputs-from NODE``: the DAG comes over that node's API). Every block is checked
  against its CID on import, and the CIDs come from the signed spec, so the source
  of the blocks need not be trusted. ``url`` inputs are fetched by HTTP(S) GET under
  the usual destination policy (``limits.url_allow_networks`` opens private ranges).
- Anything else (an input that is not here, an engine that does not answer, a
  storage type this module cannot read) raises :class:`CannotRerun`, naming what is
  missing and how to provide it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import attrs

from ..errors import BacalhauError, StorageError
from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..models import JobSpec, StorageSpec

if TYPE_CHECKING:
    from ..executor.base import Executor
    from ..storage.base import StorageProvider
    from ..storage.ipfs.blockstore import BlockStore

__all__ = ["CannotRerun", "Sources", "car_fetcher", "needed_cids", "rerun_offline"]

Fetch = Callable[[str, Path], Awaitable[Any]]
"""``fetch(cid, dest)``: write the DAG under ``cid`` to the CAR file ``dest``."""


class CannotRerun(BacalhauError):
    """The job cannot be re-run here (neither a match nor a mismatch): the message says
    what is missing."""


@attrs.frozen(kw_only=True)
class Sources:
    """Where a re-run may take what the job needs.

    Args:
        cars: CAR files holding the job's ``ipfs`` inputs (any number; extra blocks
            are harmless).
        fetch: fetches a CID's DAG as a CAR file when the CAR files lack it (None:
            never fetch).
        limits: the URL destination policy and input size limits.
        docker: whether a Docker job may use an engine found here.
    """

    cars: tuple[Path, ...] = ()
    fetch: Fetch | None = None
    limits: JobLimits = DEFAULT_JOB_LIMITS
    docker: bool = True


def car_fetcher(client: Any, *, max_bytes: int) -> Fetch:
    """``client.export_car`` (a :class:`~bacalhau.api.client.Client`'s) that gives up
    once the CAR passes ``max_bytes``: the node named by ``--inputs-from`` may stream
    without end, and the partial file is removed.

    Raises (from the returned callable):
        StorageError: the CAR passed ``max_bytes``.
    """

    async def fetch(cid: str, dest: Path) -> Any:
        def progress(done: int, total: int | None) -> None:
            if done > max_bytes or (total or 0) > max_bytes:
                raise StorageError(f"the CAR of {cid} passes {max_bytes} bytes (the input limit)")

        return await client.export_car(cid, dest, progress=progress)

    return fetch


def needed_cids(spec: JobSpec) -> list[str]:
    """The CIDs a run of ``spec`` reads: its ``ipfs`` inputs and a WASM module by CID."""
    sources = [i.source for i in spec.inputs]
    module = spec.engine.params.get("module") if spec.engine.type == "wasm" else None
    if isinstance(module, dict) and module.get("type") == "ipfs" and module.get("cid"):
        sources.append(StorageSpec.ipfs(str(module["cid"])))
    return list(dict.fromkeys(s.cid for s in sources if s.type == "ipfs" and s.cid))


async def _executors(spec: JobSpec, store: BlockStore | None, sources: Sources) -> dict[str, Any]:
    from ..executor.noop import NoopExecutor
    from ..executor.wasm import WasmExecutor

    executors: dict[str, Executor] = {
        "wasm": WasmExecutor(blocks=store, limits=sources.limits),
        "noop": NoopExecutor(),
    }
    kind = spec.engine.type
    if kind == "docker":
        from ..executor.docker import DockerExecutor

        docker = DockerExecutor(node_id="verify", limits=sources.limits)
        if not sources.docker or not await docker.is_installed():
            raise CannotRerun(
                "a docker job needs a Docker engine to re-run, and none answers here "
                "(set DOCKER_HOST, or start the engine)"
            )
        executors["docker"] = docker
    elif kind not in executors:
        raise CannotRerun(f"no {kind!r} executor here (re-runs use wasm, noop and docker)")
    return executors


async def _blocks(spec: JobSpec, root: Path, sources: Sources) -> BlockStore | None:
    """A scratch block store holding every DAG the job reads (None: it reads none)."""
    from ..storage.ipfs.blockstore import BlockStore
    from ..storage.ipfs.car import import_car

    cids = needed_cids(spec)
    if not cids:
        return None
    store = BlockStore(root / "blocks")
    for car in sources.cars:
        try:
            await import_car(store, car, pin=False)
        except (BacalhauError, OSError) as exc:
            raise CannotRerun(f"cannot read the CAR file {car}: {exc}") from None
    for cid in cids:
        if await anyio.to_thread.run_sync(store.has_dag, cid):
            continue
        if sources.fetch is not None:
            dest = root / f"fetched-{cids.index(cid)}.car"
            try:
                await sources.fetch(cid, dest)
                await import_car(store, dest, pin=False)
            except (BacalhauError, OSError) as exc:
                raise CannotRerun(f"cannot fetch the input {cid}: {exc}") from None
        if not await anyio.to_thread.run_sync(store.has_dag, cid):
            raise CannotRerun(
                f"the input {cid} is not here: pass --car FILE (made with 'bacalhau data "
                f"export {cid}') or --inputs-from NODE"
            )
    return store


def _storage(spec: JobSpec, store: BlockStore | None, sources: Sources) -> dict[str, Any]:
    from ..storage.inline import InlineStorage
    from ..storage.ipfs.provider import IpfsStorage
    from ..storage.url import UrlStorage

    storage: dict[str, StorageProvider] = {
        "inline": InlineStorage(),
        "url": UrlStorage(limits=sources.limits),
    }
    if store is not None:
        storage["ipfs"] = IpfsStorage(store, limits=sources.limits.dag)
    for i, volume in enumerate(spec.inputs):
        kind = volume.source.type
        if kind not in storage:
            raise CannotRerun(f"input {i} is a {kind!r} source, which re-runs cannot read")
    return storage


async def rerun_offline(
    job_id: str, spec: JobSpec, root: Path, sources: Sources | None = None
) -> bytes:
    """Run ``spec`` here under ``job_id`` in ``root``: its canonical results digest.

    Raises:
        CannotRerun: the job cannot run here (see the module docs).
        BacalhauError: the run itself failed (an input could not be fetched, ...).
    """
    from ..compute.capacity import Capacity, ComputeConfig
    from ..compute.runner import ExecutionRunner
    from .fraud import rerun_digest

    sources = sources or Sources()
    if not spec.rerunnable:
        raise CannotRerun(f"a {spec.engine.type} job not marked deterministic cannot be re-run")
    store = await _blocks(spec, root, sources)
    executors = await _executors(spec, store, sources)
    compute = ComputeConfig()

    def feed(_: Any) -> None:
        return None

    runner = ExecutionRunner(
        node_id="local",
        root=root / "runs",
        executors=executors,
        storage=_storage(spec, store, sources),
        verifiers={},
        publishers={},
        capacity=Capacity(compute.capacity, compute.max_executions, compute.queue_size),
        feed=feed,
        limits=sources.limits,
    )
    try:
        return await rerun_digest(runner, job_id, spec)
    finally:
        for executor in executors.values():
            await executor.close()


async def rerun_in_scratch(job_id: str, spec: JobSpec, sources: Sources | None = None) -> bytes:
    """:func:`rerun_offline` in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bacalhau-verify-") as tmp:
        return await rerun_offline(job_id, spec, Path(tmp), sources)
