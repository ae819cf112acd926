"""The ``bacalhau`` CLI in-process (``cli.main``) against a node's API served on a thread."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.from_thread
import pytest
import yaml

from bacalhau import cli
from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.convert import to_json_data
from bacalhau.models import JobSpec, OutputSpec
from bacalhau.network import Network

HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # "hello world\n"

COPY_WAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "file.txt")
  ;; cat /file.txt > /output_folder/file.txt : fd 3 is the input's parent, fd 4 the output
  (func (export "_start") (local $in i32) (local $out i32) (local $n i32) (local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 8)
                     (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 100) (local.get $err)))))
    (local.set $in (i32.load (i32.const 64)))
    (local.set $err (call $path_open (i32.const 4) (i32.const 0) (i32.const 1024) (i32.const 8)
                     (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 200) (local.get $err)))))
    (local.set $out (i32.load (i32.const 64)))
    (block $done (loop $copy
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 60000))
      (if (call $fd_read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 3))))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $done (i32.eqz (local.get $n)))
      (i32.store (i32.const 4) (local.get $n))
      (drop (call $fd_write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $copy)))))
"""
"""A WASI module doing what the architecture's docker example does with ``sh -c``."""


def write_copy_module(path: Path) -> Path:
    import wasmtime

    path.write_bytes(wasmtime.wat2wasm(COPY_WAT))
    return path


@pytest.fixture(scope="module")
def node_api() -> Iterator[ApiAddress]:
    """A 2-node network with node 0's API, run on a worker thread (the CLI runs its own loop)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        box: list[ApiAddress] = []

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with Network.in_memory(2) as net, anyio.create_task_group() as tg:
                box.append(await tg.start(functools.partial(serve_api, net.nodes[0], port=0)))
                task_status.started()
                await anyio.sleep_forever()

        future, _ = portal.start_task(serve)
        try:
            yield box[0]
        finally:
            future.cancel()


@pytest.fixture
def bac(
    node_api: ApiAddress, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Bac:
    monkeypatch.setenv("BACALHAU_API", str(node_api))
    monkeypatch.delenv("BACALHAU_API_TOKEN", raising=False)
    return Bac(capsys)


class Bac:
    """Runs ``bacalhau ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str | Path) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err


def write_spec(path: Path, spec: JobSpec, fmt: str = "yaml") -> Path:
    data = json.loads(json.dumps(to_json_data(spec)))
    path.write_text(yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data))
    return path


# --- validate and job run ----------------------------------------------------------------


def test_validate_accepts_a_good_spec_and_names_the_bad_field(bac: Bac, tmp_path: Path) -> None:
    good = write_spec(tmp_path / "job.yaml", JobSpec.noop(stdout="hi"))
    assert bac("validate", good)[:2] == (0, f"{good}: a valid noop job spec\n")
    as_json = write_spec(tmp_path / "job.json", JobSpec.noop(stdout="hi"), fmt="json")
    code, out, _ = bac("validate", as_json, "--output", "json")
    assert code == 0
    assert json.loads(out)["engine"]["params"]["stdout"] == "hi"
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: {type: noop}\ndeal: {concurrency: 0}\n")
    code, _, err = bac("validate", bad)
    assert code == cli.EXIT_BAD_INPUT
    assert "$.deal.concurrency" in err
    bad.write_text("engine: {type: noop}\ncolour: red\n")
    assert "unknown field(s): colour" in bac("validate", bad)[2]
    bad.write_text("- just\n- a list\n")
    assert bac("validate", bad)[0] == cli.EXIT_BAD_INPUT
    code, _, err = bac("validate", tmp_path / "missing.yaml")
    assert code == cli.EXIT_BAD_INPUT
    assert "cannot read" in err


def test_job_run_shows_the_lifecycle_and_ends_with_the_results_cid(
    bac: Bac, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "job.yaml", JobSpec.noop(stdout="hello\n", publisher="ipfs"))
    code, out, _ = bac("job", "run", spec)
    assert code == 0
    for phase in ("submitted", "bidding", "running", "verifying", "publishing"):
        assert re.search(rf"^\s+\d\d:\d\d:\d\d\s+{phase}\s", out, re.M), (phase, out)
    assert re.search(r"^Results CID: Qm\w{44}$", out.splitlines()[-2], re.M)
    assert out.splitlines()[-1].strip().startswith("get them:  bacalhau get j-")


def test_a_failed_job_exits_1_and_says_why(bac: Bac, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job.yaml", JobSpec.noop(error="disk on fire", retries=0))
    code, out, _ = bac("job", "run", spec)
    assert code == cli.EXIT_JOB_FAILED
    assert "disk on fire" in out.splitlines()[-1]
    code, out, _ = bac("job", "run", "--output", "json", spec)
    assert code == cli.EXIT_JOB_FAILED
    assert json.loads(out)["state"] == "failed"


def test_no_wait_id_only_then_describe_list_logs(bac: Bac, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "job.yaml",
        JobSpec.noop(
            stdout="out text\n", stderr="err text\n", publisher="ipfs", labels=("cli-test",)
        ),
    )
    code, out, _ = bac("job", "run", "--no-wait", "--id-only", spec)
    assert code == 0
    job_id = out.strip()
    assert re.fullmatch(r"j-[0-9a-f-]{36}", job_id)
    code, out, _ = bac("job", "run", "--id-only", spec)  # waits, then prints only the id
    assert code == 0
    assert re.fullmatch(r"j-[0-9a-f-]{36}\n", out)
    code, out, _ = bac("logs", "--follow", job_id[:8])  # waits for the first job to finish
    assert (code, out) == (0, "out text\n")
    code, out, _ = bac("describe", job_id[:8], "--output", "json")
    described = json.loads(out)
    assert (code, described["job_id"], described["state"]) == (0, job_id, "completed")
    assert described["cid"].startswith("Qm")
    assert yaml.safe_load(bac("describe", job_id)[1])["state"] == "completed"
    code, out, _ = bac("list", "--id-only", "--state", "completed")
    assert job_id in out.split()
    code, out, _ = bac("list")
    assert out.splitlines()[0].split() == ["ID", "CREATED", "ENGINE", "STATE", "RESULTS"]
    assert any(line.startswith(job_id[:10]) for line in out.splitlines())
    listed = yaml.safe_load(bac("list", "--output", "yaml", "--limit", "1")[1])
    assert listed["limit"] == 1
    assert len(listed["jobs"]) == 1


def test_cancel_then_cancel_again(bac: Bac, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job.yaml", JobSpec.noop(delay=60))
    job_id = bac("job", "run", "--no-wait", "--id-only", spec)[1].strip()
    code, out, _ = bac("cancel", job_id, "--reason", "enough")
    assert (code, out) == (0, f"Job {job_id} cancelled\n")
    code, _, err = bac("cancel", job_id)
    assert code == cli.EXIT_BAD_INPUT
    assert "already cancelled" in err


def test_get_downloads_and_verifies_the_results(bac: Bac, tmp_path: Path) -> None:
    spec = JobSpec.noop(
        stdout="x\n",
        files={"apples/file.txt": "an apple\n"},
        publisher="ipfs",
        outputs=[OutputSpec("apples", "/out")],
    )
    job_id = bac("job", "run", "--id-only", write_spec(tmp_path / "j.yaml", spec))[1].strip()
    code, _out, err = bac("get", job_id[:9], "--output-dir", tmp_path / "res")
    assert code == 0
    assert "Fetched and verified Qm" in err
    assert (tmp_path / "res" / "apples" / "file.txt").read_text() == "an apple\n"
    assert (tmp_path / "res" / "stdout").read_text() == "x\n"
    code, _, err = bac("get", job_id, "--output-dir", tmp_path / "res")
    assert code == cli.EXIT_BAD_INPUT  # the folder is not empty: nothing is overwritten
    assert "already exists" in err and "--force" in err
    assert (tmp_path / "res" / "stdout").read_text() == "x\n"
    code, _, err = bac("get", job_id, "--output-dir", tmp_path / "res", "--force")
    assert code == 0, err
    assert (tmp_path / "res" / "apples" / "file.txt").read_text() == "an apple\n"
    failed = write_spec(tmp_path / "f.yaml", JobSpec.noop(error="nope", retries=0))
    failed_id = bac("job", "run", "--id-only", failed)[1].strip()
    code, _, err = bac("get", failed_id, "--output-dir", tmp_path / "none")
    assert code == cli.EXIT_JOB_FAILED
    assert "no results" in err


def test_exit_codes_for_bad_input_and_unreachable_nodes(bac: Bac) -> None:
    code, _, err = bac("describe", "j-no-such-job")
    assert code == cli.EXIT_BAD_INPUT
    assert "no job 'j-no-such-job'" in err
    assert bac("list", "--state", "sleepy")[0] == cli.EXIT_BAD_INPUT  # argparse
    code, _, err = bac("--api", "127.0.0.1:9", "list")
    assert code == cli.EXIT_UNREACHABLE
    assert "could not be reached" in err
    assert bac("list", "--api", "127.0.0.1:9")[0] == cli.EXIT_UNREACHABLE
    assert bac("--api", "nonsense:port", "list")[0] == cli.EXIT_BAD_INPUT


def test_version_and_node(bac: Bac) -> None:
    code, out, _ = bac("version")
    assert code == 0
    assert out.splitlines() == ["Client: bacalhau-py 0.1.0", "Server: bacalhau-py 0.1.0"]
    code, out, _ = bac("--api", "127.0.0.1:9", "version")
    assert (code, out.splitlines()[-1]) == (0, "Server: unreachable")
    code, out, _ = bac("node", "--output", "json")
    info = json.loads(out)
    assert code == 0
    assert len(info["peers"]) == 1
    assert "noop" in info["executors"]


# --- data through the node ---------------------------------------------------------------


def test_data_commands_go_through_the_node(bac: Bac, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello world\n")
    code, out, _ = bac("data", "add", tmp_path / "hello.txt")
    assert (code, out.splitlines()) == (0, [f"added {HELLO_CID} hello.txt", HELLO_CID])
    assert bac("data", "cat", HELLO_CID)[:2] == (0, "hello world\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.txt").write_text("bee\n")
    code, out, _ = bac("data", "add", "-r", tree)
    root = out.splitlines()[-1]
    assert code == 0
    assert f"added {root} tree" in out
    code, out, _ = bac("data", "ls", root)
    assert (code, out.split()[1:]) == (0, ["-", "sub/"])
    assert bac("data", "get", root, "-o", tmp_path / "back")[0] == 0
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "bee\n"
    assert f"{root} recursive" in bac("data", "pin")[1]
    assert bac("data", "add", tree)[0] == cli.EXIT_BAD_INPUT  # a directory without -r
    # --only-hash needs no node; --data-dir works on a local directory
    code, out, _ = bac(
        "--api", "127.0.0.1:9", "data", "add", "-Q", "--only-hash", tmp_path / "hello.txt"
    )
    assert (code, out) == (0, HELLO_CID + "\n")
    code, out, _ = bac("data", "add", "--data-dir", tmp_path / "local", tmp_path / "hello.txt")
    assert (code, out.splitlines()[-1]) == (0, HELLO_CID)
    assert bac("data", "cat", "--data-dir", tmp_path / "local", HELLO_CID)[1] == "hello world\n"
    assert bac("data", "cat", "QmNotACid")[0] == cli.EXIT_BAD_INPUT
    # --api before or after the command picks the node
    assert bac("--api", "127.0.0.1:9", "data", "cat", HELLO_CID)[0] == cli.EXIT_UNREACHABLE
    assert bac("data", "cat", "--api", "127.0.0.1:9", HELLO_CID)[0] == cli.EXIT_UNREACHABLE


def test_wasm_run_the_architecture_example(bac: Bac, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("the file's contents\n")
    cid = bac("data", "add", "-Q", tmp_path / "file.txt")[1].strip()
    module = write_copy_module(tmp_path / "copy.wasm")
    code, out, err = bac(
        "wasm", "run", "-v", f"{cid}:/file.txt", "-o", "apples:/output_folder", module
    )
    assert code == 0, (out, err)
    assert "Results CID: " in out
    job_id = out.splitlines()[0].split()[1]
    assert bac("get", job_id, "--output-dir", tmp_path / "results")[0] == 0
    copied = tmp_path / "results" / "apples" / "file.txt"
    assert copied.read_text() == "the file's contents\n"


# --- nodes by the short id the CLI shows --------------------------------------------------


def test_a_node_is_named_by_the_short_id_lists_show(bac: Bac, tmp_path: Path) -> None:
    """`node list` and a job's output show a node as ``…`` and the end of its id (every
    node id starts with ``12D3KooW``): `node describe`, `logs --node` and `logs
    --execution` take that, with or without the ellipsis."""
    for _ in range(200):  # a bound on a hang only: the 2 nodes announce at start
        code, out, _ = bac("node", "list")
        rows = out.splitlines()[1:]
        if code == 0 and len(rows) == 2:
            break
        time.sleep(0.05)
    shown = [row.split()[0] for row in rows]
    assert all(s.startswith("…") and len(s) == 9 for s in shown), shown
    ids = []
    for short in shown:
        code, out, err = bac("node", "describe", short, "--output", "json")
        assert code == 0, err
        ids.append(json.loads(out)["node_id"])
        assert ids[-1].endswith(short[1:])
        # the same node (not the same text: a heartbeat may land between the calls)
        for other_form in (short[1:], ids[-1][:20]):
            code, again, err = bac("node", "describe", other_form, "--output", "json")
            assert (code, json.loads(again)["node_id"]) == (0, ids[-1]), err
    assert len(set(ids)) == 2
    code, _, err = bac("node", "describe", "12D3KooW")
    assert code == cli.EXIT_BAD_INPUT
    assert "names 2 nodes" in err
    code, _, err = bac("node", "describe", "…zzzzzzzz")
    assert code == cli.EXIT_BAD_INPUT
    assert "no live node" in err

    spec = write_spec(tmp_path / "j.yaml", JobSpec.noop(stdout="hello\n"))
    job_id = bac("job", "run", "--id-only", spec)[1].strip()
    described = json.loads(bac("describe", job_id, "--output", "json")[1])
    ran = described["executions"][0]["node_id"]
    other = next(i for i in ids if i != ran)
    assert bac("logs", job_id, "--node", f"…{ran[-8:]}")[1] == "hello\n"
    assert bac("logs", job_id, "--node", ran[-8:])[1] == "hello\n"
    assert bac("logs", job_id, "--node", f"…{other[-8:]}")[1] == ""
    code, out, err = bac("logs", job_id, "--execution", f"…{ran[-8:]}")
    assert (code, out) == (0, "hello\n"), err
    code, out, err = bac("logs", job_id, "--execution", f"…{other[-8:]}")
    assert (code, out) == (0, ""), err
