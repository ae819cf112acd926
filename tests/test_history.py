"""Job history: finished jobs leave memory, listing is an indexed query with keyset
pages, retention expires records and says so, and a compute node that restarts with its
results on disk publishes them instead of failing."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest

from bacalhau import ExecutionState, JobSpec, JobState, Network, RequesterConfig
from bacalhau.api.server import serve_api
from bacalhau.errors import JobNotFound, ValidationError
from bacalhau.identity import Identity
from bacalhau.models import JobEvent, JobResult, StorageRef
from bacalhau.node.clock import VirtualClock
from bacalhau.node.history import ORDERS, SORTS, JobQuery, JobRow, page_in_memory
from bacalhau.node.plugins import Plugins, default_plugins
from bacalhau.node.services import NodeServices
from bacalhau.protocol import commands as c
from bacalhau.protocol import messages as m
from bacalhau.protocol.compute import ComputeJob, ComputeJobState, ComputeState
from bacalhau.protocol.requester import RequesterJob
from bacalhau.protocol.timers import ComputeTimer, TimerKey
from bacalhau.publisher.base import Publisher

pytestmark = pytest.mark.anyio

REQ = Identity.generate().node_id


async def test_finished_jobs_leave_memory_and_page_by_key() -> None:
    async with Network.in_memory(2, seed=31, durable=True) as net:
        node = net.nodes[0]
        ids = []
        for i in range(7):
            spec = JobSpec.noop(stdout=f"job {i}", labels=("even",) if i % 2 == 0 else ())
            ids.append((await node.run_job(spec, timeout=20)).job_id)
        assert not node.requester.jobs, "finished jobs are in the store only"
        assert node.describe(ids[0]).state is JobState.COMPLETED
        assert node.describe(ids[3][:12]).job_id == ids[3]

        seen: list[str] = []
        after = None
        for _ in range(10):  # bounded: 7 jobs in pages of 3
            page = await node.query_jobs(JobQuery(limit=3, after=after))
            assert page.total == 7
            seen += [r.job_id for r in page.rows]
            after = page.next
            if after is None:
                break
        assert seen == ids[::-1], "newest first, every job once"

        oldest = await node.query_jobs(JobQuery(order="oldest", limit=2))
        assert [r.job_id for r in oldest.rows] == ids[:2]
        even = await node.query_jobs(JobQuery(label="even", limit=10))
        assert [r.job_id for r in even.rows] == [ids[6], ids[4], ids[2], ids[0]]
        done = await node.query_jobs(JobQuery(states=frozenset({JobState.FAILED})))
        assert done.total == 0 and done.rows == ()
        worker = net.nodes[1].node_id
        on_worker = await node.query_jobs(JobQuery(node=worker, limit=10))
        assert all(worker in r.nodes for r in on_worker.rows)

        before = node.describe(ids[5])
        reborn = await net.restart_node(node)
        assert not reborn.requester.jobs, "a restart loads no finished job"
        assert reborn.describe(ids[5]).events == before.events


async def test_retention_expires_records_and_describe_says_when() -> None:
    clock = VirtualClock()
    async with Network.in_memory(
        1, durable=True, clock=clock, job_retention=3600.0, gc_interval=10_000.0
    ) as net:
        node = net.nodes[0]
        old = await node.run_job(JobSpec.noop(stdout="old"), timeout=20)
        clock.advance(2 * 3600)
        new = await node.run_job(JobSpec.noop(stdout="new"), timeout=20)
        assert await node.collect_garbage() == 1
        with pytest.raises(JobNotFound, match=f"job {old.job_id} expired on 20"):
            node.describe(old.job_id)
        assert node.describe(new.job_id).state is JobState.COMPLETED
        page = await node.query_jobs(JobQuery())
        assert [r.job_id for r in page.rows] == [new.job_id]
        assert await node.collect_garbage() == 0


def test_recover_keeps_results_that_survived_a_restart() -> None:
    state = ComputeState(Identity.generate().node_id)
    spec = JobSpec.noop()
    for s in (ComputeJobState.PROPOSED, ComputeJobState.PUBLISHING, ComputeJobState.ENDED):
        job = ComputeJob(
            job_id=f"j-{s.value}", spec=spec, requester_id=REQ, seal_key=b"k" * 32, state=s
        )
        state.jobs[job.job_id] = attrs.evolve(job, proposal=b"p", commitment=b"c")
    kept = {"j-proposed", "j-publishing"}
    out = state.recover(100.0, results_kept=kept)
    assert out == [
        c.Send(REQ, m.ResultsProposed(job_id="j-proposed", proposal=b"p", commitment=b"c")),
        c.PublishResults("j-publishing", spec),
        c.SetTimer(TimerKey("j-ended", ComputeTimer.FORGET), 100.0 + 600.0),
    ]
    assert state.jobs["j-publishing"].state is ComputeJobState.PUBLISHING


class HangOnce(Publisher):
    """Publishes on the second call; the first hangs until the node is crashed."""

    name = "hang-once"

    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, job_id: str, execution_id: str, results_dir: Path) -> StorageRef:
        self.calls += 1
        if self.calls == 1:
            await anyio.sleep_forever()
        return StorageRef(type="noop")


async def test_compute_node_crashed_while_publishing_publishes_after_restart() -> None:
    publisher = HangOnce()

    def plugins(services: NodeServices) -> Plugins:
        found = default_plugins(services, entry_points_too=False)
        found.add(publisher)
        return found

    config = RequesterConfig(bid_timeout=3, execution_grace=3, publish_timeout=60)
    async with Network.in_memory(
        2,
        seed=41,
        durable=True,
        requester=config,
        per_node_options=[{"compute": None}, {"plugins": plugins}],
    ) as net:
        requester, worker = net.nodes
        handle = await requester.submit(JobSpec.noop(stdout="kept", publisher="hang-once"))
        with anyio.fail_after(20):
            while publisher.calls == 0:
                await anyio.sleep(0.01)
        assert worker.store is not None
        await worker.store.flush()  # the crash comes after the node recorded the acceptance
        await net.restart_node(worker)
        result = await handle.wait(30)
        await net.wait_idle()
    assert result.state is JobState.COMPLETED, result.reason
    assert publisher.calls == 2, "published from the results kept on disk"
    assert [e.node_id for e in result.accepted] == [worker.node_id]
    assert not [e for e in result.executions if e.state is ExecutionState.FAILED]


def test_serve_job_retention_option(tmp_path: Path) -> None:
    import argparse

    from bacalhau.cli.serve import add_serve_parser, build_node

    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="bacalhau", exit_on_error=False)
        add_serve_parser(parser.add_subparsers(dest="command"))
        return parser.parse_args(["serve", "--data-dir", str(tmp_path), "--port", "0", *argv])

    assert build_node(parse()).job_retention == 30 * 86400, "30 days by default"
    assert build_node(parse("--job-retention", "0.5")).job_retention == 43200
    assert build_node(parse("--job-retention", "0")).job_retention is None
    with pytest.raises(ValidationError, match="--job-retention"):
        build_node(parse("--job-retention", "-1"))


def stored_job(i: int, state: JobState = JobState.COMPLETED) -> RequesterJob:
    """A finished job's record as the requester leaves it (written straight to the store)."""
    return RequesterJob(
        job_id=f"j-{i:05d}-{'ab'[i % 2]}",
        spec=JobSpec.noop(stdout=f"{i}", name=f"n{(i * 7) % 50:02d}"),
        created_at=1_000.0 + i,
        state=state,
        history=[
            JobEvent(time=1_000.0 + i, kind="submitted"),
            JobEvent(time=5_000.0 - i, kind=state.value),
        ],
    )


async def test_v1_listing_pages_many_stored_jobs_by_key_off_the_loop() -> None:
    """Bacalhau's ``GET /api/v1/orchestrator/jobs`` reads the history index a page at a
    time: 300 finished jobs in the store only, walked in pages of 40 in every order."""
    async with Network.in_memory(1, durable=True) as net, anyio.create_task_group() as tg:
        node = net.nodes[0]
        assert node.store is not None
        jobs = [stored_job(i) for i in range(300)]
        for job in jobs:
            node.store.save_requester(job)
        live = await node.submit(JobSpec.noop(delay=30))
        await node.store.flush()
        assert len(node.requester.jobs) == 1, "only the live job is in memory"

        def no_full_scan() -> list[JobResult]:
            raise AssertionError("the listing must not read every job")

        node.list_jobs = no_full_scan  # type: ignore[method-assign]
        address = await tg.start(functools.partial(serve_api, node, port=0))

        async def walk(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            token = ""
            for _ in range(20):  # bounded: 301 jobs in pages of 40
                got = await http.get(
                    "/api/v1/orchestrator/jobs",
                    params={"limit": "40", "next_token": token, **params},
                )
                assert got.status_code == 200, got.text
                body = got.json()
                assert len(body["Items"]) <= 40
                items += body["Items"]
                token = body["NextToken"]
                if not token:
                    return items
            raise AssertionError("the pages never ended")

        async with httpx.AsyncClient(base_url=address.url) as http:
            oldest = await walk(http)
            ids = [j.job_id for j in jobs] + [live.job_id]
            assert [i["ID"] for i in oldest] == ids, "every job once, oldest first"
            assert oldest[0]["State"]["StateType"] == "Completed"
            assert oldest[-1]["State"]["StateType"] != "Completed"
            newest = await walk(http, reverse="True")
            assert [i["ID"] for i in newest] == ids[::-1]
            by_id = await walk(http, order_by="id")
            assert [i["ID"] for i in by_id] == sorted(ids)
            by_name = await walk(http, order_by="name", reverse="true")
            keys = [(i["Name"], i["ID"]) for i in by_name]
            assert keys == sorted(keys, reverse=True) and len(keys) == 301
            modified = await walk(http, order_by="modify_time")
            assert [i["ID"] for i in modified][:3] == [
                jobs[299].job_id,
                jobs[298].job_id,
                jobs[297].job_id,
            ]
            by_offset = await http.get(
                "/api/v1/orchestrator/jobs", params={"limit": "5", "next_token": "295"}
            )
            assert [i["ID"] for i in by_offset.json()["Items"]] == ids[295:300]
            ours = await http.get("/api/v1/jobs", params={"sort": "id", "limit": "3"})
            assert [j["job_id"] for j in ours.json()["jobs"]] == sorted(ids, reverse=True)[:3]
            for field, bad in (("next_token", "x"), ("order_by", "colour")):
                refused = await http.get("/api/v1/orchestrator/jobs", params={field: bad})
                assert refused.status_code == 400, refused.text
                assert field in refused.json()["error"]["message"]
        await node.cancel(live.job_id)
        tg.cancel_scope.cancel()


async def test_history_sorts_by_change_id_and_name_in_memory_and_in_the_store() -> None:
    jobs = [stored_job(i) for i in range(30)]
    rows = [JobRow.of(j) for j in jobs]
    async with Network.in_memory(1, durable=True) as net:
        store = net.nodes[0].store
        assert store is not None
        for job in jobs:
            store.save_requester(job)
        await store.flush()
        for sort in SORTS:
            for order in ORDERS:
                pages: dict[str, list[str]] = {"memory": [], "store": []}
                for where in pages:
                    after = None
                    for _ in range(10):  # bounded: 30 rows in pages of 7
                        query = JobQuery(sort=sort, order=order, limit=7, after=after)
                        page = (
                            page_in_memory(rows, query) if where == "memory" else store.query(query)
                        )
                        pages[where] += [r.job_id for r in page.rows]
                        after = page.next
                        if after is None:
                            break
                expected = sorted(rows, key=lambda r: r.sort_key(sort), reverse=order == "newest")
                assert pages["memory"] == pages["store"] == [r.job_id for r in expected], sort
    with pytest.raises(ValidationError, match="sort"):
        JobQuery(sort="colour")
