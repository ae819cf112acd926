"""A spec object's digest (commitments, receipts) and its weight (heard jobs) are
worked out once per object, and are the same as for an equal spec made afresh."""

from __future__ import annotations

import attrs

from bacalhau import commitment
from bacalhau.models import JobSpec
from bacalhau.protocol import compute
from bacalhau.protocol.compute import ComputeState, spec_weight


def test_a_spec_digest_is_remembered_per_object_and_equal_specs_agree() -> None:
    spec = JobSpec.noop(stdout="hi", publisher="noop")
    twin = JobSpec.noop(stdout="hi", publisher="noop")
    other = attrs.evolve(spec, timeout=spec.timeout + 1)
    digest = commitment.spec_digest(spec)
    assert commitment._DIGESTS[id(spec)] == (spec, digest)
    assert commitment.spec_digest(spec) == digest == commitment.spec_digest(twin)
    assert commitment.spec_digest(other) != digest
    for i in range(commitment._DIGESTS_KEPT + 10):  # bounded
        commitment.spec_digest(JobSpec.noop(stdout=str(i)))
    assert len(commitment._DIGESTS) <= commitment._DIGESTS_KEPT
    assert commitment.spec_digest(spec) == digest  # recomputed, the same


def test_a_heard_spec_is_weighed_once_per_object() -> None:
    state = ComputeState("node")
    spec = JobSpec.noop(stdout="x" * 1000)
    assert state._weigh(spec) == spec_weight(spec) > 1000
    assert state._weigh(spec) == spec_weight(spec)
    for i in range(compute.WEIGHTS_KEPT + 10):
        state._weigh(JobSpec.noop(stdout=str(i)))
    assert len(state._weights) <= compute.WEIGHTS_KEPT
