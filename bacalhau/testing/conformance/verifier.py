"""The verifier conformance suite: what every :class:`~bacalhau.verifier.base.Verifier` does.

Write a :class:`VerifierHarness` and run the applicable checks::

    from bacalhau.testing.conformance import verifier as suite

    @pytest.mark.parametrize("check", suite.checks_for(MyHarness))
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await suite.CHECKS[check](MyHarness(), tmp_path)

Features: ``compares`` (``open`` returns a digest, equal exactly when the results are;
a proposal is bound to its job and its proposer) and ``sealed`` (a proposal can be opened
only by the requester it was made for, and two proposals of the same results do not
look alike).
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread

from ...errors import VerificationError
from ...identity import Identity
from ...verifier.base import Verifier
from ...verifier.canonical import hash_tree
from ._suite import Suite
from .publisher import results_tree

__all__ = ["CHECKS", "VerifierHarness", "checks_for"]


class VerifierHarness(abc.ABC):
    """How the suite makes your verifier for a node."""

    features: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    async def make(self, identity: Identity) -> Verifier:
        """The verifier of the node with ``identity`` (it proposes as a compute node and
        opens proposals as a requester)."""


_suite: Suite[VerifierHarness] = Suite()
CHECKS = _suite.checks
checks_for = _suite.checks_for

JOB = "j-conformance"


class _Nodes:
    """A requester and two compute nodes, each with its verifier."""

    def __init__(self) -> None:
        self.requester, self.alice, self.bob = (Identity.generate() for _ in range(3))

    async def verifiers(self, harness: VerifierHarness) -> tuple[Verifier, Verifier, Verifier]:
        return (
            await harness.make(self.requester),
            await harness.make(self.alice),
            await harness.make(self.bob),
        )


async def _propose(verifier: Verifier, node: Identity, to: Identity, results: Path) -> bytes:
    return await verifier.propose(
        job_id=JOB, node_id=node.node_id, results_dir=results, requester_key=to.seal_public_key
    )


async def _tree(root: Path, tag: str, *, reverse: bool = False) -> Path:
    path = await anyio.to_thread.run_sync(results_tree, root, tag)
    if reverse:  # the same content, other timestamps
        for p in path.rglob("*"):
            os.utime(p, (1_000_000, 1_000_000))
    return path


@_suite.check()
async def check_same_results_open_alike(harness: VerifierHarness, folder: Path) -> None:
    """Two nodes with identical results (made at other times) open to the same value."""
    nodes = _Nodes()
    requester, alice, bob = await nodes.verifiers(harness)
    a = await _propose(alice, nodes.alice, nodes.requester, await _tree(folder / "a", "x"))
    b = await _propose(
        bob, nodes.bob, nodes.requester, await _tree(folder / "b", "x", reverse=True)
    )
    assert isinstance(a, bytes)
    opened_a = requester.open(job_id=JOB, node_id=nodes.alice.node_id, proposal=a)
    opened_b = requester.open(job_id=JOB, node_id=nodes.bob.node_id, proposal=b)
    assert opened_a == opened_b


@_suite.check()
async def check_results_are_left_in_place(harness: VerifierHarness, folder: Path) -> None:
    nodes = _Nodes()
    _, alice, _ = await nodes.verifiers(harness)
    results = await _tree(folder / "a", "x")
    before = await anyio.to_thread.run_sync(hash_tree, results)
    await _propose(alice, nodes.alice, nodes.requester, results)
    assert await anyio.to_thread.run_sync(hash_tree, results) == before


@_suite.check()
async def check_garbage_is_refused_or_ignored(harness: VerifierHarness, folder: Path) -> None:
    """Bytes that are no proposal raise ``VerificationError`` (a comparing verifier must),
    or open to None (a verifier that compares nothing); never another exception."""
    nodes = _Nodes()
    requester, _, _ = await nodes.verifiers(harness)
    compares = "compares" in harness.features
    for garbage in (b"", b"\x00" * 200, os.urandom(300), b"BVP1" + os.urandom(100)):
        opened: bytes | None = b"?"
        try:
            opened = requester.open(job_id=JOB, node_id=nodes.alice.node_id, proposal=garbage)
        except VerificationError:
            continue
        assert not compares, f"a comparing verifier opened garbage {garbage[:8]!r}"
        assert opened is None


@_suite.check("compares")
async def check_different_results_open_differently(harness: VerifierHarness, folder: Path) -> None:
    nodes = _Nodes()
    requester, alice, bob = await nodes.verifiers(harness)
    a = await _propose(alice, nodes.alice, nodes.requester, await _tree(folder / "a", "x"))
    b = await _propose(bob, nodes.bob, nodes.requester, await _tree(folder / "b", "y"))
    opened_a = requester.open(job_id=JOB, node_id=nodes.alice.node_id, proposal=a)
    opened_b = requester.open(job_id=JOB, node_id=nodes.bob.node_id, proposal=b)
    assert opened_a is not None
    assert opened_b is not None
    assert opened_a != opened_b


@_suite.check("compares")
async def check_a_proposal_is_bound_to_its_job_and_node(
    harness: VerifierHarness, folder: Path
) -> None:
    """Replayed for another job, or sent by a node that copied it: refused."""
    nodes = _Nodes()
    requester, alice, _ = await nodes.verifiers(harness)
    a = await _propose(alice, nodes.alice, nodes.requester, await _tree(folder / "a", "x"))
    for job_id, node_id in ((JOB + "-other", nodes.alice.node_id), (JOB, nodes.bob.node_id)):
        refused = False
        try:
            requester.open(job_id=job_id, node_id=node_id, proposal=a)
        except VerificationError:
            refused = True
        assert refused, f"a proposal of ({JOB}, alice) opened as ({job_id}, {node_id[-6:]})"


@_suite.check("compares")
async def check_unverifiable_results_are_refused(harness: VerifierHarness, folder: Path) -> None:
    """A results folder holding a symlink cannot be proposed."""
    nodes = _Nodes()
    _, alice, _ = await nodes.verifiers(harness)
    results = await _tree(folder / "a", "x")
    (results / "outputs" / "link").symlink_to("/etc/hostname")
    refused = False
    try:
        await _propose(alice, nodes.alice, nodes.requester, results)
    except VerificationError:
        refused = True
    assert refused, "results with a symlink were proposed"


@_suite.check("sealed")
async def check_only_its_requester_opens_a_proposal(harness: VerifierHarness, folder: Path) -> None:
    nodes = _Nodes()
    requester, alice, bob = await nodes.verifiers(harness)
    results = await _tree(folder / "a", "x")
    a1 = await _propose(alice, nodes.alice, nodes.requester, results)
    a2 = await _propose(alice, nodes.alice, nodes.requester, results)
    assert a1 != a2, "two proposals of the same results look alike (a digest shows through)"
    refused = False
    try:
        bob.open(job_id=JOB, node_id=nodes.alice.node_id, proposal=a1)  # bob is no requester
    except VerificationError:
        refused = True
    assert refused, "a node other than the requester opened a proposal"
    assert requester.open(job_id=JOB, node_id=nodes.alice.node_id, proposal=a2) is not None
