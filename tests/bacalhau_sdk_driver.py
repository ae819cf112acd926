"""Drive a node through Bacalhau's official Python client, and nothing else.

Run with the interpreter of the venv that holds ``bacalhau-sdk`` and
``bacalhau-apiclient`` from PyPI (``tests/test_bacalhau_sdk.py`` provisions it); the
node is found the way the SDK finds one, by ``BACALHAU_API_HOST`` and
``BACALHAU_API_PORT``. ``argv[1]`` is a JSON object of inputs (the docker image, a
WASM module as base64, an input CID, an optional bearer token); the report, every
answer as the client's models turn it into dicts, is printed as JSON on stdout.

This file cannot import bacalhau-py: the client's pins clash with ours, so it lives
in an environment of its own and talks to the node over HTTP only.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bacalhau_apiclient.api.ops_api import OpsApi  # type: ignore[import-not-found]
from bacalhau_apiclient.api.orchestrator_api import (  # type: ignore[import-not-found]
    OrchestratorApi,
)
from bacalhau_apiclient.models.api_put_job_request import (  # type: ignore[import-not-found]
    ApiPutJobRequest,
)
from bacalhau_apiclient.models.input_source import InputSource  # type: ignore[import-not-found]
from bacalhau_apiclient.models.job import Job  # type: ignore[import-not-found]
from bacalhau_apiclient.models.resources_config import (  # type: ignore[import-not-found]
    ResourcesConfig,
)
from bacalhau_apiclient.models.result_path import ResultPath  # type: ignore[import-not-found]
from bacalhau_apiclient.models.spec_config import SpecConfig  # type: ignore[import-not-found]
from bacalhau_apiclient.models.task import Task  # type: ignore[import-not-found]
from bacalhau_apiclient.models.timeout_config import (  # type: ignore[import-not-found]
    TimeoutConfig,
)
from bacalhau_sdk.jobs import Jobs  # type: ignore[import-not-found]

TERMINAL = ("Completed", "Failed", "Stopped")


def plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def state_of(jobs: Any, job_id: str) -> str:
    response = jobs.get(job_id)
    assert response is not None, f"get {job_id} returned nothing"
    return str(response.job.state.state_type)


def wait(jobs: Any, job_id: str, *, want: tuple[str, ...] = TERMINAL) -> str:
    """Poll as a Bacalhau script would (the client has no event stream); bounded."""
    state = ""
    for _ in range(1200):
        state = state_of(jobs, job_id)
        if state in want:
            return state
        time.sleep(0.1)
    raise SystemExit(f"job {job_id} still {state} after two minutes")


def main() -> None:
    started = time.monotonic()
    inputs = json.loads(sys.argv[1])
    jobs = Jobs()
    client = jobs.orchestrator_service.api_client
    if inputs.get("token"):
        # how a token-protected node is used with the client: one default header
        client.set_default_header("Authorization", f"Bearer {inputs['token']}")
    report: dict[str, Any] = {}
    if inputs.get("mode") == "token":
        task = Task(name="main", engine=SpecConfig(type="noop"), publisher=SpecConfig(type="noop"))
        put = jobs.put(ApiPutJobRequest(job=Job(type="batch", count=1, tasks=[task])))
        assert put is not None, "put with the token returned nothing"
        report["state"] = wait(jobs, put.job_id)
        report["listed"] = [j.id for j in jobs.list(limit=10).items]
        report["job_id"] = put.job_id
        print(json.dumps(report))
        return
    ops = OpsApi(client)
    report["alive"] = ops.agentalive()
    report["version"] = plain(ops.agentversion())
    report["nodes"] = plain(OrchestratorApi(client).orchestratorlist_nodes())

    docker_task = Task(
        name="main",
        engine=SpecConfig(
            type="docker",
            params={
                "Image": inputs["image"],
                "Entrypoint": ["sh", "-c"],
                "Parameters": ["cat /inputs/data.txt > /outputs/copy.txt; echo hello docker"],
            },
        ),
        publisher=SpecConfig(type="ipfs"),
        input_sources=[
            InputSource(
                source=SpecConfig(type="ipfs", params={"CID": inputs["cid"]}),
                target="/inputs/data.txt",
            )
        ],
        result_paths=[ResultPath(name="outputs", path="/outputs")],
        resources=ResourcesConfig(cpu="500m", memory="256Mi"),
        timeouts=TimeoutConfig(execution_timeout=60),
    )
    docker_job = Job(name="sdk docker", type="batch", count=1, tasks=[docker_task])
    put = jobs.put(ApiPutJobRequest(job=docker_job))
    assert put is not None, "put of the docker job returned nothing"
    report["docker_put"] = plain(put)

    wasm_task = Task(
        name="main",
        engine=SpecConfig(
            type="wasm",
            params={
                "EntryModule": {
                    "Source": {
                        "Type": "inline",
                        "Params": {"URL": "data:application/wasm;base64," + inputs["wasm"]},
                    }
                },
                "Parameters": ["hello", "wasm"],
            },
        ),
        publisher=SpecConfig(type="ipfs"),
    )
    wasm_put = jobs.put(ApiPutJobRequest(job=Job(type="batch", count=1, tasks=[wasm_task])))
    assert wasm_put is not None, "put of the wasm job returned nothing"
    report["wasm_put"] = plain(wasm_put)

    report["docker_state"] = wait(jobs, put.job_id)
    report["wasm_state"] = wait(jobs, wasm_put.job_id)
    report["list"] = plain(jobs.list(limit=10))
    report["docker_get"] = plain(jobs.get(put.job_id, include="executions,history", limit=100))
    report["wasm_get"] = plain(jobs.get(wasm_put.job_id, include="executions,history"))
    report["docker_results"] = plain(jobs.results(put.job_id))
    report["wasm_results"] = plain(jobs.results(wasm_put.job_id))
    report["docker_executions"] = plain(jobs.executions(put.job_id, reverse=True))
    report["docker_history"] = plain(jobs.history(put.job_id, event_type="all"))
    report["docker_logs"] = OrchestratorApi(client).orchestratorlogs(put.job_id)

    sleeper = Task(
        name="main",
        engine=SpecConfig(type="docker", params={"Image": inputs["image"]}),
    )
    sleeper.engine.params["Parameters"] = ["sleep", "60"]
    long_put = jobs.put(ApiPutJobRequest(job=Job(type="batch", count=1, tasks=[sleeper])))
    assert long_put is not None, "put of the long job returned nothing"
    wait(jobs, long_put.job_id, want=("Running", *TERMINAL))
    report["stop"] = plain(jobs.stop(long_put.job_id, reason="enough"))
    report["stopped_state"] = wait(jobs, long_put.job_id)
    report["stopped_get"] = plain(jobs.get(long_put.job_id))
    report["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
