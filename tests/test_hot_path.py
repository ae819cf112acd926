"""The per-job hot path's shortcuts keep their exact meaning."""

from __future__ import annotations

import typing

import pytest

from bacalhau import ids
from bacalhau.compute.bidding import BidRequest, SupportStrategy
from bacalhau.errors import ValidationError
from bacalhau.executor.noop import NoopExecutor
from bacalhau.identity import Identity
from bacalhau.live import LogHub
from bacalhau.models import JobSpec
from bacalhau.node import driver
from bacalhau.protocol import commands as c
from bacalhau.publisher.noop import NoopPublisher
from bacalhau.storage.inline import InlineStorage
from bacalhau.verifier.noop import NoopVerifier


def test_the_driver_carries_out_every_kind_of_command() -> None:
    kinds = set(typing.get_args(c.Command))
    assert kinds == set(driver._HANDLERS)
    assert all(callable(h) for h in driver._HANDLERS.values())


def test_an_id_that_passed_once_passes_again_and_only_for_its_kind() -> None:
    job_id = "j-0123456789abcdef"
    assert ids.check("job_id", job_id) == job_id
    assert ids.check("job_id", job_id) == job_id  # from the cache
    with pytest.raises(ValidationError, match="node_id"):
        ids.check("node_id", job_id)  # passing as a job id says nothing of node ids
    node_id = Identity.generate().node_id
    assert ids.check("node_id", node_id) == node_id
    assert ids.check("node_id", node_id) == node_id
    for _ in range(2):  # a refusal is never remembered as a pass
        with pytest.raises(ValidationError, match="field_x"):
            ids.check("job_id", "not/an id", field="field_x")
        with pytest.raises(ValidationError):
            ids.check("job_id", 7)


def test_the_id_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_GOOD_MAX", 3)
    monkeypatch.setitem(ids._GOOD, "name", set())
    for i in range(10):
        ids.check("name", f"name-{i}")
        assert len(ids._GOOD["name"]) <= 3
    assert ids.check("name", "name-0") == "name-0"


@pytest.mark.anyio
async def test_the_hub_drops_only_ended_buffers_however_many_run() -> None:
    hub = LogHub(keep=1)
    running = hub.open("running")
    first, second = hub.open("first"), hub.open("second")
    first.close()
    second.close()
    last = hub.open("last")  # four buffers, keep one: both ended ones go, running stay
    assert hub.get("running") is running
    assert hub.get("last") is last
    assert hub.get("first") is None and hub.get("second") is None
    assert len(hub) == 2
    last.close()
    hub.open("next")  # one ended too many: only the oldest ended one goes
    assert hub.get("last") is None and hub.get("running") is running


def test_a_batch_carries_out_one_change_per_job_the_last() -> None:
    from bacalhau.protocol.timers import RequesterTimer, TimerKey

    timer = c.SetTimer(TimerKey("j-a", RequesterTimer.JOB), 5.0)
    batch: list[c.Command] = [
        c.JobChanged("j-a"),
        c.Send("n1", None),  # type: ignore[arg-type]
        c.JobChanged("j-b"),
        timer,
        c.JobChanged("j-a", terminal=True),
    ]
    kept = driver.last_changes(batch)
    assert kept == [batch[1], batch[2], timer, batch[4]]  # order of the rest unchanged
    single: list[c.Command] = [c.JobChanged("j-a"), c.JobChanged("j-b")]
    assert driver.last_changes(single) is single  # nothing repeated: the batch as is
    assert driver.last_changes([]) == []


class _SwitchedEngine(NoopExecutor):
    """An engine whose presence is asked (it overrides ``is_installed``)."""

    async def is_installed(self) -> bool:
        return True


def test_an_engine_that_is_always_there_is_answered_at_once_however_late() -> None:
    """A node asked for the first time, or long after its last bid, answers a job on an
    engine without its own ``is_installed`` at once (no task); an engine that can go
    missing still waits for a fresh answer."""
    now = [0.0]

    def support(executor: NoopExecutor) -> SupportStrategy:
        return SupportStrategy(
            executors={"noop": executor},
            storage={"inline": InlineStorage()},
            verifiers={"noop": NoopVerifier()},
            publishers={"noop": NoopPublisher()},
            recheck_after=5.0,
            clock=lambda: now[0],
        )

    request = BidRequest(job_id="j-1", spec=JobSpec.noop(), requester_id="r", node_id="me")
    plain, switched = support(NoopExecutor()), support(_SwitchedEngine())
    for _ in range(3):
        answer = plain.decide_now(request)
        assert answer is not None and answer.bid
        assert switched.decide_now(request) is None  # never asked: it must ask first
        now[0] += 60.0
    bad = BidRequest(job_id="j-2", spec=JobSpec.noop(exit_code=999), requester_id="r", node_id="me")
    answer = plain.decide_now(bad)  # the spec is still checked
    assert answer is not None and not answer.bid and "invalid noop job" in answer.reason
