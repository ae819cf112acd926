"""Resource accounting for one compute node: never oversubscribed, fair in arrival order."""

from __future__ import annotations

import os
from collections import deque

import anyio
import attrs

from ..limits import DEFAULT_JOB_LIMITS, JobLimits
from ..models import GpuInfo, Resources
from ..selectors import check_labels

__all__ = ["Capacity", "ComputeConfig", "detect_gpus", "machine_resources"]


def machine_resources() -> Resources:
    """This machine's cores and memory (the default capacity of ``serve``)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 4 * 1024**3
    return Resources(cpu=float(os.cpu_count() or 1), memory=int(memory), disk=0, gpu=0)


def detect_gpus(timeout: float = 5.0) -> tuple[GpuInfo, ...]:
    """The NVIDIA GPUs ``nvidia-smi`` lists (vendor, model, memory); none without it."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.splitlines()[:64]:
        name, _, mib = line.partition(",")
        memory = int(mib.strip()) * 2**20 if mib.strip().isdigit() else 0
        gpus.append(GpuInfo(vendor="nvidia", model=name.strip()[:128], memory=memory))
    return tuple(gpus)


@attrs.frozen(kw_only=True)
class ComputeConfig:
    """The compute side's limits and bidding policy.

    Args:
        capacity: total resources offered to jobs (defaults to this machine's).
        max_executions: most jobs running at once.
        queue_size: accepted jobs that may wait for capacity; a node whose queue is
            full does not bid.
        data_locality: ``anywhere`` (bid regardless), ``local`` (bid only when every
            input CID is already in this node's block store) or ``nearby`` (also when
            a peer announced it and the provider record is live).
        docker_local_images_only: bid on docker jobs only when their image is present
            here (never pull).
        probe_http / probe_exec / probe_timeout: external bid hooks, see
            :mod:`bacalhau.compute.hooks`.
        labels: ``key=value`` pairs announced to requesters; job selectors match them.
        gpus: the GPUs offered, announced with vendor and model (``capacity.gpu`` is
            how many jobs may use).
        limits: the host-side limits on every job (URL policy, DAG, WASM, Docker,
            disk): :class:`~bacalhau.limits.JobLimits`.
    """

    capacity: Resources = attrs.Factory(machine_resources)
    max_executions: int = 4
    queue_size: int = 64
    data_locality: str = "anywhere"
    docker_local_images_only: bool = False
    probe_http: str | None = None
    probe_exec: str | None = None
    probe_timeout: float = 5.0
    reject_stateless: bool = False
    limits: JobLimits = DEFAULT_JOB_LIMITS
    labels: dict[str, str] = attrs.field(factory=dict, hash=False, converter=check_labels)
    gpus: tuple[GpuInfo, ...] = ()
    """The GPUs offered (``capacity.gpu`` counts them); vendor and model where known."""


@attrs.define(eq=False)
class Capacity:
    """Admits executions while their resources fit; the rest wait in arrival order."""

    total: Resources
    max_executions: int
    queue_size: int
    running: int = 0
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0
    _waiting: deque[tuple[Resources, anyio.Event]] = attrs.Factory(deque)
    peak_running: int = 0
    reserved: set[str] = attrs.Factory(set)
    """Jobs we bid on and hold room for until the requester answers."""

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def free_slots(self) -> int:
        """How many more jobs this node takes now (running, queued and bids count)."""
        used = self.running + self.queued + len(self.reserved)
        return max(0, self.max_executions + self.queue_size - used)

    def room(self) -> tuple[bool, bool]:
        """Whether a slot and a GPU are free: what a requester's table keeps of this
        node's room between announcements (see :class:`~bacalhau.protocol.nodes.Announcer`)."""
        return self.free_slots > 0, self.total.gpu > self.gpu

    def reserve(self, job_id: str) -> bool:
        """Hold a slot for a bid. False: no room (the node is busy)."""
        if job_id in self.reserved:
            return True
        if self.free_slots <= 0:
            return False
        self.reserved.add(job_id)
        return True

    def unreserve(self, job_id: str) -> None:
        self.reserved.discard(job_id)

    def fits_ever(self, want: Resources) -> str | None:
        """Why a job could never run here, or None."""
        t = self.total
        if want.cpu > t.cpu:
            return f"needs {want.cpu:g} CPUs, node has {t.cpu:g}"
        if want.memory > t.memory:
            return f"needs {want.memory} bytes of memory, node has {t.memory}"
        if want.gpu > t.gpu:
            return f"needs {want.gpu} GPUs, node has {t.gpu}"
        if t.disk and want.disk > t.disk:
            return f"needs {want.disk} bytes of disk, node has {t.disk}"
        return None

    def queue_full(self) -> bool:
        return self.free_slots <= 0

    def _fits_now(self, want: Resources) -> bool:
        t = self.total
        return (
            self.running < self.max_executions
            and self.cpu + want.cpu <= t.cpu + 1e-9
            and self.memory + want.memory <= t.memory
            and self.gpu + want.gpu <= t.gpu
        )

    def _take(self, want: Resources) -> None:
        self.running += 1
        self.cpu += want.cpu
        self.memory += want.memory
        self.gpu += want.gpu
        self.peak_running = max(self.peak_running, self.running)

    def try_acquire(self, want: Resources) -> bool:
        """Hold ``want`` now if it fits and no execution waits before it; else False
        (nothing held)."""
        if not self._waiting and self._fits_now(want):
            self._take(want)
            return True
        return False

    async def acquire(self, want: Resources) -> None:
        """Wait until ``want`` fits (first come, first served), then hold it."""
        if not self._waiting and self._fits_now(want):
            self._take(want)
            return
        ready = anyio.Event()
        entry = (want, ready)
        self._waiting.append(entry)
        try:
            await ready.wait()
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif ready.is_set():  # admitted, then cancelled before running
                self.release(want)
            raise

    def release(self, want: Resources) -> None:
        self.running -= 1
        self.cpu -= want.cpu
        self.memory -= want.memory
        self.gpu -= want.gpu
        while self._waiting and self._fits_now(self._waiting[0][0]):
            want_next, ready = self._waiting.popleft()
            self._take(want_next)
            ready.set()
