"""What a long-running node keeps per finished job is bounded: counted in entries, not
timed. A durable node's finished jobs leave memory, and nothing keyed by job id stays
behind for them, except what is bounded by design (compute tombstones for
``tombstone_ttl``, the replay window, fixed-size caches)."""

from __future__ import annotations

import anyio
import pytest

from bacalhau import JobSpec, Network
from bacalhau.live.events import EventHub
from bacalhau.models import JobEvent
from bacalhau.protocol.compute import ComputeJobState
from bacalhau.protocol.timers import RequesterTimer

pytestmark = pytest.mark.anyio

JOBS = 24


async def test_finished_jobs_leave_nothing_keyed_by_job_behind_on_a_durable_node() -> None:
    async with Network.in_memory(2, seed=5, durable=True) as net:
        node = net.nodes[0]

        async def one(i: int) -> None:
            await node.run_job(JobSpec.noop(stdout=f"job {i}"), timeout=30)

        async with anyio.create_task_group() as tg:
            for i in range(JOBS):
                tg.start_soon(one, i)
        tombstones = 0
        for each in net.nodes:
            assert not each.requester.jobs, "finished jobs are in the store only"
            assert each.watch.events.tracked_jobs() == 0, "published-line counts forgotten"
            requester_timers = [
                k for k in each.driver.timers.pending() if isinstance(k.name, RequesterTimer)
            ]
            assert requester_timers == [], "no requester timer outlives its job"
            assert each.runner.active == 0, "no execution scope left"
            for cj in each.compute.jobs.values():  # tombstones until tombstone_ttl passes
                if cj.state is ComputeJobState.ENDED:
                    tombstones += 1
                    assert (cj.stdout, cj.stderr, cj.proposal, cj.commitment) == ("", "", b"", b"")
        assert tombstones >= JOBS, "each run left a tombstone without its outputs"
        # the live event stream still told the whole story of each job
        events = node.watch.events.read(0, limit=100_000).events
        published: dict[str, list[str]] = {}
        for e in events:
            if e.job_id is not None:
                published.setdefault(e.job_id, []).append(e.kind)
        assert len(published) == JOBS
        for job_id, kinds in published.items():
            assert kinds == [e.kind for e in node.describe(job_id).events], "each line once"


def test_the_event_log_counts_only_jobs_it_was_not_told_to_forget() -> None:
    log = EventHub(clock=lambda: 0.0)
    history = [JobEvent(time=0.0, kind="created", node_id="n")]
    for i in range(100):
        log.job_changed(f"j-{i}", history, "running")
        log.job_changed(f"j-{i}", [*history, JobEvent(time=1.0, kind="completed")], "completed")
        log.forget_job(f"j-{i}")
    assert log.tracked_jobs() == 0
    assert len(log.read(0).events) == 200, "every line published once"


def test_a_lone_node_keeps_a_small_verified_cache_and_a_network_shares_a_large_one() -> None:
    """A node with a cache of its own (``bacalhau serve``) sees each frame once: 65,536
    digests (10 MB, filled over minutes by a busy node) would only delay its RSS level."""
    from bacalhau.identity import Identity
    from bacalhau.node.node import Node
    from bacalhau.transport.memory import MemoryHub
    from bacalhau.wire import LONE_DECODED, LONE_FRAMES, VerifiedCache

    identity = Identity.generate()
    node = Node(transport=MemoryHub().transport(identity.node_id), identity=identity)
    assert (node.verify_cache.maxsize, node.verify_cache.decoded_max) == (
        LONE_FRAMES,
        LONE_DECODED,
    )
    assert Network.in_memory(2).verify_cache.maxsize == VerifiedCache().maxsize > LONE_FRAMES
    cache = VerifiedCache(4, decoded_max=2)
    for i in range(10):
        cache.add(b"frame %d" % i, decoded=i)
    assert len(cache._digests) == 4 and len(cache._decoded) == 2
    assert cache.decoded(b"frame 9") == 9 and cache.decoded(b"frame 7") is None


def test_the_replay_cache_keeps_a_small_digest_per_message() -> None:
    """A busy node remembers 100,000 message ids or more for ``max_message_age``: each is a
    16-byte digest of (sender, id), which no other pair shares, not a tuple of both."""
    import sys

    from bacalhau.node.gate import replay_key

    keys = {replay_key(s, m) for s, m in (("ab", b"c"), ("a", b"bc"), ("ab", b"d"), ("b", b"c"))}
    assert len(keys) == 4, "the sender is length-prefixed: 'ab'+'c' is not 'a'+'bc'"
    assert replay_key("ab", b"c") == replay_key("ab", b"c")
    assert all(len(k) == 16 and sys.getsizeof(k) < 64 for k in keys)
