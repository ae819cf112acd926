"""422 answers name the field at fault (``error.field``), as the docs say."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bacalhau import Network
from bacalhau.api.server import create_app
from bacalhau.convert import from_json_data
from bacalhau.errors import ValidationError
from bacalhau.models import JobSpec

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"engine": {"type": "noop"}, "deal": {"confidence": -1}}, "spec.deal.confidence"),
        ({"engine": {"type": "noop"}, "deal": {"concurrency": "x"}}, "spec.deal.concurrency"),
        ({"engine": 5}, "spec.engine"),
    ],
)
async def test_a_bad_spec_is_a_422_naming_the_field(spec: dict[str, Any], field: str) -> None:
    async with Network.in_memory(1) as net:
        app = create_app(net.nodes[0])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            answer = await c.post("/api/v1/jobs", json={"spec": spec})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(f"$.{field}: ")


def test_decoding_errors_carry_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        from_json_data({"engine": {"type": "noop"}, "deal": {"min_bids": "many"}}, JobSpec)
    assert info.value.field == "deal.min_bids"
