"""Resource accounting for one compute node: never oversubscribed, fair in arrival order."""

from __future__ import annotations

import os
from collections import deque

import anyio
import attrs

from ..models import Resources
from .limits import DEFAULT_JOB_LIMITS, JobLimits

__all__ = ["Capacity", "ComputeConfig", "machine_resources"]


def machine_resources() -> Resources:
    """This machine's cores and memory (the default capacity of ``serve``)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 4 * 1024**3
    return Resources(cpu=float(os.cpu_count() or 1), memory=int(memory), disk=0, gpu=0)


@attrs.frozen
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
        limits: the host-side limits on every job (URL policy, DAG, WASM, Docker,
            disk): :class:`~bacalhau.compute.limits.JobLimits`.
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

    @property
    def queued(self) -> int:
        return len(self._waiting)

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
        return self.running >= self.max_executions and self.queued >= self.queue_size

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
