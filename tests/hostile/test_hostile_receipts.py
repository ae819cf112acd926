"""Hostile receipts and receipt requests: ``bacalhau verify`` reads a file anyone can
write and sign with a key of their own, and the receipt route sits behind the token."""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

import anyio
import httpx
import pytest

from bacalhau import JobSpec, Network
from bacalhau.api.server import serve_api
from bacalhau.cli import main
from bacalhau.commitment import spec_cid
from bacalhau.identity import Identity
from bacalhau.node.receipt import Receipt

LIAR = Identity.generate()
SPEC = JobSpec.noop()


def _receipt(**over: object) -> dict[str, object]:
    """A receipt's JSON with ``over`` applied, signed afterwards by the liar's own key
    (so the signature holds and only the changed field is wrong)."""
    made = Receipt(
        job_id="j-0b6e",
        spec=SPEC,
        spec_cid=spec_cid(SPEC),
        inputs=(),
        executor="noop",
        version="",
        results_cid=None,
        results_digest="00" * 32,
        nodes=(),
        worker=None,
        requester=LIAR.node_id,
    )
    data: dict[str, object] = json.loads(made.to_json())
    data.update(over)
    data.pop("signature")
    body = "bacalhau/receipt/v1" + json.dumps(data, sort_keys=True, separators=(",", ":"))
    data["signature"] = base64.b64encode(LIAR.sign(body.encode())).decode()
    return data


def test_the_forging_helper_makes_a_receipt_that_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(_receipt()))
    assert main(["verify", str(path)]) == 1  # signed fine; the digest is a lie
    assert "mismatch" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_id", "../../../../tmp/x"),
        ("job_id", "/etc"),
        ("job_id", "j-1\x1b[2J"),  # a terminal escape for the verifier's screen
        ("job_id", "j-" + "a" * 5000),
        ("requester", "../../x"),
        ("requester", ""),
    ],
)
def test_a_receipt_with_an_invalid_id_is_refused_naming_it(
    field: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(_receipt(**{field: value})))
    code = main(["verify", str(path)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, text
    assert field in text
    assert "Traceback" not in text
    assert not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"job_id": "j-1", "spec": []}',
        json.dumps(_receipt(signature="not base64 !!")),
        json.dumps(_receipt(nodes="abc")),
        json.dumps(_receipt(spec={"engine": {"type": "wasm"}})),
        "[" * 100_000,  # nested past the JSON decoder's recursion limit
    ],
)
def test_a_malformed_receipt_is_a_clear_error(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(text)
    code = main(["verify", str(path)])
    out = capsys.readouterr()
    assert code in (1, 2), out  # refused as malformed (2) or as tampered (1)
    assert "Traceback" not in out.out + out.err


TOKEN = "hostile-receipt-token"


@pytest.mark.anyio
async def test_the_receipt_route_refuses_strangers_and_odd_ids() -> None:
    """Another user's receipt without the token (or with a wrong one) is a 401; an id
    that is no job id is a 4xx naming no server path, never a 500."""
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        node = net.nodes[0]
        result = await node.run_job(JobSpec.noop(stdout="x"), timeout=30)
        assert result.ok, result.reason
        address = await tg.start(functools.partial(serve_api, node, port=0, token=TOKEN))
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as raw:
            path = f"/api/v1/jobs/{result.job_id}/receipt"
            assert (await raw.get(path)).status_code == 401
            wrong = {"Authorization": "Bearer not-the-token"}
            assert (await raw.get(path, headers=wrong)).status_code == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await raw.get(path, headers=bearer)).status_code == 200
            for odd in ("..%2F..%2Fetc", "%2Fetc%2Fpasswd", "j-", "%00", "j-" + "a" * 5000):
                reply = await raw.get(f"/api/v1/jobs/{odd}/receipt", headers=bearer)
                assert 400 <= reply.status_code < 500, (odd, reply.status_code)
                assert str(node.data_dir or "/nonexistent-dir") not in reply.text
                assert "Traceback" not in reply.text
        tg.cancel_scope.cancel()
