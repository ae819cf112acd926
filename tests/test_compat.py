"""Bacalhau compatibility: job documents of three shapes, Bacalhau's units, the v1 API's
answers and refusals, and the CLI's Bacalhau syntax (no engine needed: noop jobs)."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import httpx
import pytest

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.cli.common import parse_input, parse_url_input
from bacalhau.cli.jobs import api_address
from bacalhau.compat import (
    detect,
    job_from_v1,
    parse_bytes,
    parse_cpu,
    parse_duration,
    spec_from_v03,
    spec_to_v1,
    translate,
)
from bacalhau.compat.render import execution_id
from bacalhau.convert import to_json_data
from bacalhau.errors import ValidationError
from bacalhau.models import Deal, EngineSpec, InputSpec, JobSpec, OutputSpec, Resources, StorageSpec
from bacalhau.network import Network

CID = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u"


def v1_job(**task: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Engine": {"Type": "docker", "Params": {"Image": "ubuntu"}}}
    base.update(task)
    return {"Type": "batch", "Count": 1, "Tasks": [base]}


# --- units -------------------------------------------------------------------------------


def test_units_as_bacalhau_reads_them() -> None:
    assert [parse_cpu(t) for t in ("500m", "0.25", "2", "1500m", 3)] == [0.5, 0.25, 2, 1.5, 3]
    assert parse_bytes("1gb") == parse_bytes("1GB") == 10**9
    assert parse_bytes("1Gi") == parse_bytes("1GiB") == 2**30
    assert parse_bytes("512Mi") == 512 * 2**20
    assert parse_bytes("100") == 100
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("90") == 90
    for bad, fn in (("lots", parse_cpu), ("0", parse_cpu), ("-1m", parse_cpu), ("1x", parse_bytes)):
        with pytest.raises(ValidationError):
            fn(bad)
    with pytest.raises(ValidationError, match="duration"):
        parse_duration("5 minutes")


# --- documents ---------------------------------------------------------------------------


def test_a_v1_job_maps_field_by_field() -> None:
    job = {
        "Name": "my job",
        "Type": "batch",
        "Count": 2,
        "Labels": {"env": "prod", "gpu": ""},
        "Meta": {"bacalhau.org/requester.id": "n-1", "owner": "ann"},
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": "ubuntu:22.04",
                        "Entrypoint": ["/bin/sh", "-c"],
                        "Parameters": ["echo hi"],
                        "EnvironmentVariables": ["A=1"],
                        "WorkingDirectory": "/work",
                    },
                },
                "Publisher": {"Type": "local"},
                "Env": {"B": "2"},
                "InputSources": [
                    {
                        "Alias": "data",
                        "Target": "/in",
                        "Source": {"Type": "ipfs", "Params": {"CID": CID}},
                    },
                    {
                        "Target": "/url.csv",
                        "Source": {
                            "Type": "urlDownload",
                            "Params": {"URL": "https://example.org/a.csv"},
                        },
                    },
                    {
                        "Target": "/inline.txt",
                        "Source": {
                            "Type": "inline",
                            "Params": {"URL": "data:text/plain;base64,aGk="},
                        },
                    },
                ],
                "ResultPaths": [{"Name": "out", "Path": "/outputs"}],
                "Resources": {"CPU": "500m", "Memory": "1gb", "Disk": "2Gi", "GPU": "1"},
                "Network": {"Type": "None"},
                "Timeouts": {"ExecutionTimeout": 90, "TotalTimeout": 300},
            }
        ],
    }
    done = job_from_v1(job)
    spec = done.spec
    assert spec.name == "my job"
    assert spec.deal == Deal(concurrency=2)
    assert set(spec.labels) == {"env=prod", "gpu"}
    assert spec.engine.params == {
        "image": "ubuntu:22.04",
        "entrypoint": ["/bin/sh", "-c"],
        "cmd": ["echo hi"],
        "workdir": "/work",
    }
    assert spec.env == {"A": "1", "B": "2"}
    assert spec.publisher == "local"
    assert spec.inputs == (
        InputSpec(StorageSpec.ipfs(CID), "/in"),
        InputSpec(StorageSpec.from_url("https://example.org/a.csv"), "/url.csv"),
        InputSpec(StorageSpec.inline(b"hi"), "/inline.txt"),
    )
    assert spec.outputs == (OutputSpec("out", "/outputs"),)
    assert spec.resources == Resources(cpu=0.5, memory=10**9, disk=2**31, gpu=1)
    assert spec.timeout == 90
    # what only describes the job and cannot be kept is said, not dropped silently
    assert done.warnings == (
        "Meta.owner: metadata is not kept",
        "Tasks[0].InputSources[0].Alias: input aliases are not kept ('data')",
    )


def test_keys_match_without_regard_to_case_as_go_reads_them() -> None:
    lower = {"type": "batch", "count": 1, "tasks": [{"engine": {"type": "noop"}}]}
    assert job_from_v1(lower).spec.engine.type == "noop"
    with pytest.raises(ValidationError, match="given twice"):
        job_from_v1({"Count": 1, "count": 2, "Tasks": []})


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"Type": "service", "Tasks": []}, "Type"),
        ({"Type": "batch", "Priority": 3, "Tasks": []}, "Priority"),
        ({"Namespace": "team-a", "Tasks": []}, "Namespace"),
        ({"Colour": "red", "Tasks": []}, "Colour"),
        ({"Tasks": []}, "Tasks"),
        (v1_job(Network={"Type": "Full"}), "Tasks[0].Network.Type"),
        (v1_job(Publisher={"Type": "s3"}), "Tasks[0].Publisher.Type"),
        (v1_job(Resources={"CPU": "lots"}), "Tasks[0].Resources.CPU"),
        (v1_job(Resources={"Memory": "1 potato"}), "Tasks[0].Resources.Memory"),
        (
            v1_job(InputSources=[{"Target": "/in", "Source": {"Type": "s3", "Params": {}}}]),
            "Tasks[0].InputSources[0].Source.Type",
        ),
        (
            v1_job(
                InputSources=[{"Target": "/in", "Source": {"Type": "ipfs", "Params": {"CID": "x"}}}]
            ),
            "Tasks[0].InputSources[0].Source.Params.CID",
        ),
        (
            v1_job(Engine={"Type": "docker", "Params": {"Image": "u", "Imagee": "v"}}),
            "Tasks[0].Engine.Params.Imagee",
        ),
        (v1_job(Engine={"Type": "docker", "Params": {}}), "Tasks[0].Engine.Params.Image"),
        (v1_job(ResultPaths=[{"Name": "../x", "Path": "/o"}]), "Tasks[0].ResultPaths[0]"),
    ],
)
def test_v1_refusals_name_the_key(job: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        job_from_v1(job)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_our_spec_round_trips_through_bacalhau_shape() -> None:
    spec = JobSpec.docker(
        "ubuntu",
        ["echo", "hi"],
        entrypoint=["/bin/sh"],
        inputs=[InputSpec(StorageSpec.ipfs(CID, path="a/b"), "/in")],
        outputs=[OutputSpec("outputs", "/outputs")],
        env={"A": "1"},
        resources=Resources(cpu=0.25, memory=512 * 2**20),
        deal=Deal(concurrency=3, confidence=2, min_bids=3),
        verifier="deterministic",
        retries=1,
        timeout=120,
        labels=("gpu", "env=prod"),
        name="round trip",
    )
    back = job_from_v1(json.loads(json.dumps(spec_to_v1(spec))))
    assert back.spec == spec
    assert back.warnings == ()
    wasm = JobSpec.wasm(StorageSpec.inline(b"\0asm\1\0\0\0"), args=["x"], entry_point="main")
    assert job_from_v1(spec_to_v1(wasm)).spec == wasm
    # params a plugin or an old client wrote are shown as they are, never a failed GET
    odd = JobSpec(engine=EngineSpec("wasm", {"module": "not a source"}))
    assert spec_to_v1(odd)["Tasks"][0]["Engine"] == {
        "Type": "wasm",
        "Params": {"module": "not a source"},
    }


def test_constraints_become_selectors_where_the_node_has_them() -> None:
    job = v1_job()
    job["Constraints"] = [
        {"Key": "region", "Operator": "=", "Values": ["eu"]},
        {"Key": "zone", "Operator": "in", "Values": ["a", "b"]},
        {"Key": "spot", "Operator": "!"},
        {"Key": "mem", "Operator": "gt", "Values": ["16"]},
    ]
    if not any(f.name == "selectors" for f in attrs.fields(JobSpec)):
        with pytest.raises(ValidationError) as caught:
            job_from_v1(job)
        assert caught.value.field == "Constraints[0]"
        return
    spec = job_from_v1(job).spec
    selectors = spec.selectors  # type: ignore[attr-defined,unused-ignore]
    assert [str(s) for s in selectors] == ["region=eu", "zone in (a,b)", "!spot", "mem>16"]
    assert job_from_v1(spec_to_v1(spec)).spec == spec
    assert spec_to_v1(spec)["Constraints"][2] == {"Key": "spot", "Operator": "!", "Values": []}
    job["Constraints"][0]["Operator"] = "near"
    with pytest.raises(ValidationError) as caught:
        job_from_v1(job)
    assert caught.value.field == "Constraints[0].Operator"


def test_a_v03_spec() -> None:
    legacy = {
        "APIVersion": "V1beta1",
        "Spec": {
            "Engine": "Docker",
            "Verifier": "Deterministic",
            "Publisher": "Estuary",
            "Docker": {
                "Image": "ubuntu",
                "Entrypoint": ["echo", "hi"],
                "EnvironmentVariables": ["A=1"],
            },
            "Resources": {"CPU": "500m", "Memory": "1Gb"},
            "Timeout": 1800,
            "inputs": [{"StorageSource": "IPFS", "CID": CID, "path": "/inputs"}],
            "outputs": [{"StorageSource": "IPFS", "Name": "outputs", "path": "/outputs"}],
            "Annotations": ["demo"],
            "Deal": {"Concurrency": 3, "Confidence": 2},
        },
    }
    done = spec_from_v03(legacy)
    spec = done.spec
    assert spec.engine.params == {"image": "ubuntu", "entrypoint": ["echo", "hi"], "cmd": []}
    assert spec.env == {"A": "1"}
    assert spec.verifier == "deterministic"
    assert spec.publisher == "ipfs"
    assert spec.resources.cpu == 0.5 and spec.resources.memory == 10**9
    assert spec.timeout == 1800
    assert spec.inputs == (InputSpec(StorageSpec.ipfs(CID), "/inputs"),)
    assert spec.outputs == (OutputSpec("outputs", "/outputs"),)
    assert spec.labels == ("demo",)
    assert spec.deal == Deal(concurrency=3, confidence=2)
    assert done.warnings == ("Spec.Publisher: Estuary is gone; results are published to IPFS",)
    with pytest.raises(ValidationError) as caught:
        spec_from_v03(
            {
                "APIVersion": "V1beta1",
                "Spec": {"Engine": "Docker", "Docker": {"Image": "u", "Sharding": 1}},
            }
        )
    assert caught.value.field == "Spec.Docker.Sharding"
    with pytest.raises(ValidationError) as caught:
        spec_from_v03({"Spec": {"Engine": "Language"}})
    assert caught.value.field == "Spec.Engine"


def test_shapes_are_told_apart() -> None:
    ours = to_json_data(JobSpec.noop(stdout="x"))
    assert detect(ours) == "ours"
    assert detect({"spec": ours}) == "ours"
    described = {"job_id": "j-1", "state": "completed", "spec": ours, "cid": None}
    assert translate(described).spec == JobSpec.noop(stdout="x")
    assert detect({"Job": v1_job(), "Executions": {}}) == "bacalhau-v1"
    assert translate({"Job": v1_job()}).spec.engine.params["image"] == "ubuntu"
    assert detect({"Spec": {"Engine": "Docker"}}) == "bacalhau-v0.3"
    assert detect({"Engine": "Wasm"}) == "bacalhau-v0.3"
    bads: list[Any] = [[], {"hello": 1}]
    for bad in bads:
        with pytest.raises(ValidationError, match="job"):
            detect(bad)


# --- CLI syntax --------------------------------------------------------------------------


def test_input_forms() -> None:
    assert parse_input(f"ipfs://{CID}") == InputSpec(StorageSpec.ipfs(CID), "/inputs")
    assert parse_input(f"ipfs://{CID}/a/b:/data") == InputSpec(
        StorageSpec.ipfs(CID, path="a/b"), "/data"
    )
    assert parse_input(f"{CID}:/data") == InputSpec(StorageSpec.ipfs(CID), "/data")
    assert parse_input(f"src=ipfs://{CID},dst=/mnt") == InputSpec(StorageSpec.ipfs(CID), "/mnt")
    url = StorageSpec.from_url("https://example.org:8443/d/a.csv")
    assert parse_input("https://example.org:8443/d/a.csv") == InputSpec(url, "/inputs/a.csv")
    assert parse_input("https://example.org:8443/d/a.csv:/x.csv") == InputSpec(url, "/x.csv")
    assert parse_url_input("https://example.org:8443/d/a.csv:/x.csv") == InputSpec(url, "/x.csv")
    for bad, words in (
        ("s3://bucket/key", "s3://"),
        (f"src=ipfs://{CID},opt=x=y", "'opt'"),
        ("ipfs://nope", "CID"),
        (f"ipfs://{CID}:relative", "absolute"),
    ):
        with pytest.raises(ValidationError, match=words):
            parse_input(bad)
    with pytest.raises(ValidationError, match="http"):
        parse_url_input("ftp://example.org/a")


def test_api_address_from_bacalhau_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACALHAU_API", "BACALHAU_API_HOST", "BACALHAU_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    ns = argparse.Namespace(api=None)
    assert api_address(ns) is None
    monkeypatch.setenv("BACALHAU_API_HOST", "127.0.0.2")
    assert api_address(ns) == "127.0.0.2:1234"
    monkeypatch.setenv("BACALHAU_API_PORT", "4321")
    assert api_address(ns) == "127.0.0.2:4321"
    monkeypatch.setenv("BACALHAU_API_HOST", "::1")
    assert api_address(ns) == "[::1]:4321"
    monkeypatch.setenv("BACALHAU_API", "127.0.0.3:1")
    assert api_address(ns) == "127.0.0.3:1"  # ours wins
    assert api_address(argparse.Namespace(api="h:2")) == "h:2"


# --- the v1 API --------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[Network, ApiAddress]]:
    async with Network.in_memory(2, seed=3) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        yield net, address
        await net.wait_idle()
        tg.cancel_scope.cancel()


def noop_job(**params: Any) -> dict[str, Any]:
    return {
        "Job": {
            "Type": "batch",
            "Count": 1,
            "Tasks": [
                {"Engine": {"Type": "noop", "Params": params}, "Publisher": {"Type": "noop"}}
            ],
        }
    }


async def finished(net: Network, job_id: str) -> None:
    await net.nodes[0].handle(job_id).wait(30)


@pytest.mark.anyio
async def test_v1_routes_answer_in_bacalhau_shapes(api: tuple[Network, ApiAddress]) -> None:
    net, address = api
    async with httpx.AsyncClient(base_url=address.url) as http:
        put = await http.put("/api/v1/orchestrator/jobs", json=noop_job(stdout="hi\n"))
        assert put.status_code == 200, put.text
        job_id = put.json()["JobID"]
        assert put.json()["Warnings"] == []
        await finished(net, job_id)
        got = (
            await http.get(
                f"/api/v1/orchestrator/jobs/{job_id}",
                params={"include": "executions,history", "limit": "5"},
            )
        ).json()
        assert got["Job"]["State"]["StateType"] == "Completed"
        assert got["Job"]["Name"] == job_id  # Bacalhau's default name is the id
        (ex,) = got["Executions"]["Items"]
        assert ex["ID"] == execution_id(job_id, ex["NodeID"])
        assert ex["ComputeState"]["StateType"] == "Completed"
        assert ex["RunOutput"]["Stdout"] == "hi\n"
        assert got["History"]["Items"][0]["JobState"] == {"Previous": "Undefined", "New": "Pending"}
        history = (
            await http.get(
                f"/api/v1/orchestrator/jobs/{job_id}/history",
                params={"event_type": "execution", "execution_id": ex["ID"]},
            )
        ).json()["Items"]
        assert history and {h["Type"] for h in history} == {"ExecutionLevel"}
        assert history[-1]["ExecutionState"]["New"] == "Completed"
        # booleans as the Python client sends them; paging by limit and next_token
        for i in range(2):
            await http.put("/api/v1/orchestrator/jobs", json=noop_job(stdout=f"{i}"))
        page = (
            await http.get("/api/v1/orchestrator/jobs", params={"limit": "2", "reverse": "True"})
        ).json()
        assert len(page["Items"]) == 2 and page["NextToken"]
        rest = (
            await http.get(
                "/api/v1/orchestrator/jobs",
                params={"limit": "2", "reverse": "True", "next_token": page["NextToken"]},
            )
        ).json()
        assert len(rest["Items"]) == 1 and rest["NextToken"] == ""
        assert rest["Items"][0]["ID"] == job_id  # the oldest, last in reverse order
        nodes = (await http.get("/api/v1/orchestrator/nodes")).json()
        assert {n["Info"]["NodeID"] for n in nodes["Nodes"]} == {n.node_id for n in net.nodes}
        node = (await http.get(f"/api/v1/orchestrator/nodes/{net.nodes[1].node_id}")).json()
        assert node["Node"]["Info"]["NodeID"] == net.nodes[1].node_id
        assert (await http.get("/api/v1/agent/alive")).json() == {"Status": "OK"}
        assert (await http.get("/api/v1/agent/node")).json()["NodeID"] == net.nodes[0].node_id
        assert (await http.post("/api/v1/version", json={})).json()["build_version_info"]["Major"]
        assert "root" in (await http.get("/api/v1/healthz")).json()["FreeSpace"]
        assert (await http.get("/api/v1/livez")).text == "OK"
        assert (await http.get("/api/v1/id")).json() == net.nodes[0].node_id
        logs = await http.get(f"/api/v1/orchestrator/jobs/{job_id}/logs", params={"follow": "True"})
        assert logs.text == "hi\n"


@pytest.mark.anyio
async def test_v1_refusals_are_4xx_naming_the_field(api: tuple[Network, ApiAddress]) -> None:
    net, address = api
    async with httpx.AsyncClient(base_url=address.url) as http:

        async def refused(body: Any, status: int = 422) -> dict[str, Any]:
            response = await http.put("/api/v1/orchestrator/jobs", json=body)
            assert response.status_code == status, response.text
            error: dict[str, Any] = response.json()["error"]
            return error

        error = await refused({"Job": {"Type": "daemon", "Tasks": []}})
        assert error["field"] == "Job.Type" and "daemon" in error["message"]
        error = await refused(noop_job() | {"Colour": 1})
        assert error["field"] == "Colour"
        error = await refused({"Jobb": {}})
        assert error["field"] == "Jobb"
        job = noop_job()
        job["Job"]["Tasks"][0]["Resources"] = {"CPU": "-5"}
        assert (await refused(job))["field"] == "Job.Tasks[0].Resources.CPU"
        job = noop_job()
        job["Job"]["Tasks"][0]["Engine"] = {"Type": "docker", "Params": {"Image": "u", "Cmd": []}}
        assert (await refused(job))["field"] == "Job.Tasks[0].Engine.Params.Cmd"
        bad_include = await http.get("/api/v1/orchestrator/jobs/j-x", params={"include": "all"})
        assert bad_include.status_code == 404  # the job comes first
        slow = await http.put("/api/v1/orchestrator/jobs", json=noop_job(delay=30))
        job_id = slow.json()["JobID"]
        bad = await http.get(f"/api/v1/orchestrator/jobs/{job_id}", params={"include": "all"})
        assert bad.status_code == 400 and "include" in bad.json()["error"]["message"]
        token = await http.get("/api/v1/orchestrator/jobs", params={"next_token": "x"})
        assert token.status_code == 400
        stopped = await http.delete(f"/api/v1/orchestrator/jobs/{job_id}", params={"reason": "bye"})
        assert stopped.json() == {"EvaluationID": ""}
        await finished(net, job_id)
        state = (await http.get(f"/api/v1/orchestrator/jobs/{job_id}")).json()["Job"]["State"]
        assert state == {"StateType": "Stopped", "Message": "bye"}
        again = await http.delete(f"/api/v1/orchestrator/jobs/{job_id}")
        assert again.status_code == 409 and "Stopped" in again.json()["error"]["message"]
        ours_404 = await http.delete("/api/v1/jobs")  # our routes keep their answers
        assert ours_404.status_code == 405


@pytest.mark.anyio
async def test_v1_routes_need_the_token_where_ours_do() -> None:
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0, token="s3cret"))
        async with httpx.AsyncClient(base_url=address.url) as http:
            assert (await http.get("/api/v1/agent/alive")).status_code == 200
            assert (await http.get("/api/v1/orchestrator/jobs")).status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert (await http.get("/api/v1/orchestrator/jobs", headers=auth)).status_code == 200
        tg.cancel_scope.cancel()
