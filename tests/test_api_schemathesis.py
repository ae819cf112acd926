"""Schemathesis against ``/openapi.json`` of a live node: for every operation, generated
requests (valid and invalid per the document) never get a 5xx, and the answers match
the document (status codes, content types, response schemas).

The node is requester-only, so the generated jobs are recorded but never run (no
random docker image is ever pulled); everything else (data, pins, gc) is real.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

import anyio
import anyio.abc
import anyio.from_thread
import hypothesis
import pytest
import schemathesis  # in the test extra: a missing one is an error, not a skip

from bacalhau.api.server import serve_api
from bacalhau.network import Network

pytestmark = pytest.mark.slow

# CAR uploads are bytes like any other binary body.
schemathesis.serializer.alias("application/vnd.ipld.car", "application/octet-stream")


@pytest.fixture(scope="module")
def api_schema() -> Iterator[object]:
    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[str] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with Network.in_memory(1, compute=None) as net, anyio.create_task_group() as tg:
                address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
                box.append(address.url)
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            yield schemathesis.openapi.from_url(f"{box[0]}/openapi.json")
        finally:
            future.cancel()


MODES = ["positive", "negative"]


@pytest.mark.parametrize("mode", MODES)
def test_no_server_errors_and_answers_match_the_document(api_schema: object, mode: str) -> None:
    # schemathesis' own pytest plugin does not run on this pytest; drive its strategies
    # with Hypothesis directly, one operation at a time.
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error]
    if mode == "positive":
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [r.ok() for r in api_schema.get_all_operations()]  # type: ignore[attr-defined]
    # every route but /openapi.json and the dashboard (the node table added two, receipts one)
    assert len(operations) == 24
    statuses: Counter[int] = Counter()
    exercised = set()
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

        @hypothesis.given(case=strategy)
        @hypothesis.settings(
            max_examples=20,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def run(case: object) -> None:
            query = case.query  # type: ignore[attr-defined]
            if case.operation.path == "/api/v1/events" and query:  # type: ignore[attr-defined]
                query.pop("follow", None)  # a followed node stream never ends
            response = case.call_and_validate(checks=checks)  # type: ignore[attr-defined]
            statuses[response.status_code] += 1
            exercised.add(case.operation.label)  # type: ignore[attr-defined]

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode == "negative"  # nothing invalid can be said to e.g. GET /health
    assert not [code for code in statuses if code >= 500]
    if mode == "positive":
        assert len(exercised) == len(operations)
        assert statuses[200] + statuses[201] > 40
    else:
        assert len(exercised) >= 12
        assert sum(n for code, n in statuses.items() if 400 <= code < 500) > 100
