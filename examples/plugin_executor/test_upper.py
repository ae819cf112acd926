"""The ``upper`` plugin against bacalhau's executor conformance suite.

What a third party's executor package ships as its tests::

    pip install ./examples/plugin_executor pytest
    pytest examples/plugin_executor

The harness says how to make the executor and how to write the jobs the suite asks for;
``features`` lists the optional programs ``upper`` can express (it cannot echo arbitrary
text or choose its exit status, so those checks do not apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from bacalhau_upper import UpperExecutor

from bacalhau.executor.base import Executor
from bacalhau.models import EngineSpec, InputSpec, JobSpec, OutputSpec, StorageSpec
from bacalhau.testing.conformance import executor as suite


class UpperHarness(suite.ExecutorHarness):
    features: ClassVar[frozenset[str]] = frozenset({"fail", "bad_params"})

    async def make(self) -> Executor:
        return UpperExecutor()

    def _job(self, data: str | bytes, **params: object) -> JobSpec:
        return JobSpec(
            engine=EngineSpec("upper", dict(params)),
            inputs=(InputSpec(StorageSpec.inline(data), "/inputs/text.txt"),),
            outputs=(OutputSpec("upper", "/outputs"),),
        )

    def succeed(self, tag: str) -> JobSpec:
        return self._job(f"the tag is {tag}\n", prefix="> ")

    def fail(self) -> JobSpec:
        return self._job(b"\xff\xfe not UTF-8 text")

    def bad_params(self) -> JobSpec:
        return JobSpec(engine=EngineSpec("upper", {"prefix": 42}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("check", suite.checks_for(UpperHarness))
async def test_upper_conformance(check: str, tmp_path: Path) -> None:
    await suite.CHECKS[check](UpperHarness(), tmp_path)
