"""Nine nodes, three of them cheating, fifty jobs: no wrong result is ever accepted or published.

Each test runs :func:`bacalhau.testing.malicious.run_trial` with
``min_bids=9, concurrency=3, confidence=2`` and ``retries=0`` (so the three
first chosen nodes decide the job), and checks the rule of issue 6: a job
completes with the honest result if and only if at least two honest nodes were
chosen; otherwise it fails with a clear reason; no cheat's result is ever
accepted, and no results leave a node before its requester accepted them.
"""

from __future__ import annotations

import pytest

from bacalhau import Deal, RequesterConfig
from bacalhau.errors import BacalhauError
from bacalhau.testing.malicious import TrialReport, rigged, run_trial

pytestmark = pytest.mark.anyio

JOBS = 50
CLEAR_FAILURES = {
    "results disagree",  # every chosen node proposed a different result
    "only 1 agreeing result of 1",  # the others' proposals were invalid
    "only 1 agreeing result of 2",
    "no execution produced results",
}


def check_rule(report: TrialReport) -> None:
    """What must hold for every kind of cheat that cannot agree with other cheats."""
    assert report.jobs == JOBS
    assert report.unexpected == ()
    assert report.wrong_accepted == 0
    assert report.wrong_published == 0
    assert report.published_unaccepted == 0
    assert report.completed == report.honest_majority
    # with 6 of 9 nodes honest, about 77% of random choices hold an honest majority:
    # both outcomes happen in 50 jobs (all-majority has probability 2e-6)
    assert 0 < report.completed < JOBS
    assert report.identical_cids
    assert set(report.job_failures) <= CLEAR_FAILURES, report.job_failures
    assert report.cheats_rejected > 0


async def test_nodes_returning_wrong_results_are_outvoted() -> None:
    report = await run_trial("liar", jobs=JOBS, seed=1)
    check_rule(report)
    assert set(report.job_failures) == {"results disagree"}
    assert set(report.rejections) == {
        "results differ from the agreeing majority",
        "results disagree",
    }


async def test_nodes_copying_a_sealed_proposal_are_caught_as_copiers() -> None:
    report = await run_trial("copier", jobs=JOBS, seed=2, patience=0.5)
    check_rule(report)
    # every cheat that proposed was caught as a copier (a copier chosen with the requester
    # itself overhears nothing: the requester's own proposal never crosses the wire)
    assert report.rejections["copied"] == report.cheats_rejected > 0


async def test_nodes_replaying_an_earlier_proposal_are_caught_as_replayers() -> None:
    # every job has the same output, so a replayed proposal even carries the right digest:
    # only its binding to the earlier job gives it away
    report = await run_trial("replayer", jobs=JOBS, seed=3, same_output=True)
    check_rule(report)
    assert report.rejections["replayed"] == report.cheats_rejected > 0


async def test_nodes_forging_the_requesters_acceptance_change_nothing() -> None:
    report = await run_trial("forger", jobs=JOBS, seed=4)
    check_rule(report)
    assert report.forged_sent > 0
    # a forged acceptance signed by the forger is dropped as forged; one claiming the
    # requester's key fails its signature check
    assert report.forged_dropped > 0
    assert report.invalid_dropped > 0


async def test_colluding_majority_is_the_limit_of_voting() -> None:
    """Cheats that agree on one wrong result win when they hold a majority of the chosen
    nodes: majority voting cannot tell them from honest nodes. Reputation selection,
    once they have been outvoted, keeps them out."""
    report = await run_trial("colluder", jobs=JOBS, seed=5)
    assert report.completed == JOBS
    losing = JOBS - report.honest_majority
    assert losing > 0
    # two (or, rarely, all three) colluders accepted in each such job
    assert 2 * losing <= report.wrong_accepted <= 3 * losing
    assert len(report.unexpected) == losing
    assert report.published_unaccepted == 0


@pytest.mark.parametrize("behaviour", ["liar", "colluder", "copier"])
async def test_reputation_selection_avoids_exposed_cheats(behaviour: str) -> None:
    config = RequesterConfig(
        bid_timeout=5, execution_grace=3, publish_timeout=10, selection="reputation"
    )
    report = await run_trial(behaviour, jobs=20, seed=6, requester=config)
    # the warm-up job exposed every cheat; afterwards only honest nodes are chosen
    assert report.completed == report.honest_majority == 20
    assert report.wrong_accepted == 0


async def test_honest_network_completes_every_job() -> None:
    report = await run_trial("honest", jobs=10, seed=7)
    assert report.completed == 10
    assert report.unexpected == ()
    assert report.cheats_rejected == 0


async def test_retries_replace_rejected_copiers() -> None:
    report = await run_trial(
        "copier",
        jobs=20,
        seed=8,
        retries=2,
        patience=0.5,
        deal=Deal(concurrency=3, confidence=2, min_bids=9),
    )
    assert report.wrong_accepted == 0
    assert report.completed == 20, report.job_failures


def test_rigged_needs_a_known_behaviour_and_a_wiretap() -> None:
    with pytest.raises(BacalhauError, match="unknown behaviour 'saint'"):
        rigged("saint")
    with pytest.raises(BacalhauError, match="copier needs a wiretap"):
        rigged("copier")
