"""Every example runs, as a newcomer would run it: a subprocess from the repository root.

Each test checks what the example prints (or writes), not only its exit status, so an
example that "succeeds" while doing the wrong thing fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from bacalhau import Identity, Node
from bacalhau.testing.docker import require_docker_engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLUGIN = EXAMPLES / "plugin_executor"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(
    script: str | Path,
    *args: str,
    timeout: float = 120,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    expect: int = 0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script args`` and check its exit status; show its output if wrong."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.returncode == expect, (
        f"{script} exited {proc.returncode}, expected {expect}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def load(path: Path) -> ModuleType:
    """Import an example file as a module (to reuse its constants in checks)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- quickstart -------------------------------------------------------------------------


def test_quickstart() -> None:
    out = run(EXAMPLES / "quickstart.py").stdout
    assert "3 nodes agreed" in out
    assert re.search(r"results published at Qm\w{44}", out)
    assert "poem.txt 4 22 103" in out  # carol's copy of counts.txt, fetched by CID


# --- embedding ----------------------------------------------------------------------------

EMBED_COUNTS = ("fernando.txt 1 7 40", "camoes.txt 2 11 65", "sophia.txt 2 14 77")


def test_embed_asyncio() -> None:
    out = run(EXAMPLES / "embed_asyncio.py").stdout
    for line in EMBED_COUNTS:
        assert line in out
    assert "the API lists 3 jobs, 3 completed" in out


@pytest.mark.anyio
async def test_embed_asyncio_joins_a_network_over_gossip() -> None:
    """The embedded node joins a node listening here (TCP on 127.0.0.1): our node hears
    every job the application submits, and the application still gets right answers."""
    from bacalhau.transport.gossip import GossipTransport

    identity = Identity.generate()
    async with Node(
        transport=GossipTransport(identity, host="127.0.0.1", port=0), identity=identity
    ) as node:
        host, port = node.transport.address  # type: ignore[attr-defined]
        proc = await anyio.run_process(
            [sys.executable, str(EXAMPLES / "embed_asyncio.py"), "--peer", f"{host}:{port}"],
            cwd=ROOT,
            check=False,
        )
        out, err = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
        assert "connected to 1 peer(s)" in out
        for line in EMBED_COUNTS:
            assert line in out
        assert len(node.compute.jobs) == 3, "our node should have heard the 3 jobs"


# --- plugin executor ----------------------------------------------------------------------

UPPER_POEM = "> O MAR SALGADO,\n> QUANTO DO TEU SAL\n> SAO LAGRIMAS DE PORTUGAL!\n"


def test_plugin_executor_with_plugins_add() -> None:
    out = run(PLUGIN / "run_upper.py").stdout
    executors = re.search(r"node 0 executors: (.*)", out)
    assert executors is not None
    assert {"upper", "wasm", "noop"} <= set(executors.group(1).split(", "))  # built-ins kept
    assert out.count("upper-cased 1 file(s), 3 line(s), 59 byte(s)") == 2  # concurrency 2
    assert re.search(r"results at Qm\w{44}; upper/poem.txt:", out)
    assert out.endswith(UPPER_POEM)


def fake_install(target: Path) -> None:
    """What ``pip install`` leaves that matters for entry points: the package and a
    dist-info with the entry points declared in its pyproject.toml."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    shutil.copytree(PLUGIN / "bacalhau_upper", target / "bacalhau_upper")
    info = target / f"bacalhau_upper-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def test_plugin_executor_found_by_entry_point(tmp_path: Path) -> None:
    fake_install(tmp_path)
    out = run(PLUGIN / "run_upper.py", "--installed", env={"PYTHONPATH": str(tmp_path)}).stdout
    executors = re.search(r"node 0 executors: (.*)", out)
    assert executors is not None
    assert {"upper", "wasm", "noop"} <= set(executors.group(1).split(", "))
    assert re.search(r"results at Qm\w{44}; upper/poem.txt:", out)
    assert out.endswith(UPPER_POEM)


def test_plugin_executor_passes_the_executor_conformance_suite() -> None:
    """The plugin's own test module (what a third party ships) runs bacalhau's suite."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN)],
        cwd=PLUGIN,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from bacalhau.testing.conformance import executor as suite

    sys.path.insert(0, str(PLUGIN))
    try:
        import test_upper
    finally:
        sys.path.remove(str(PLUGIN))
    applicable = suite.checks_for(test_upper.UpperHarness)
    assert {"success", "a_job_that_cannot_run_raises_executor_error"} <= set(applicable)
    assert f"{len(applicable)} passed" in proc.stdout


def test_plugin_executor_not_installed_says_how() -> None:
    proc = run(PLUGIN / "run_upper.py", "--installed", expect=1)
    assert "pip install ./examples/plugin_executor" in proc.stderr


@pytest.mark.slow
def test_plugin_executor_pip_install(tmp_path: Path) -> None:
    """The real thing: ``pip install`` the example package, then default nodes have it."""
    source = tmp_path / "src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr
    out = run(PLUGIN / "run_upper.py", "--installed", env={"PYTHONPATH": str(target)}).stdout
    assert out.endswith(UPPER_POEM)


def test_upper_executor_refuses_bad_params() -> None:
    from bacalhau import EngineSpec, JobSpec, ValidationError

    sys.path.insert(0, str(PLUGIN))
    try:
        from bacalhau_upper import UpperExecutor
    finally:
        sys.path.remove(str(PLUGIN))
    executor = UpperExecutor()
    executor.validate(JobSpec(engine=EngineSpec("upper", {"prefix": "> "})))
    with pytest.raises(ValidationError, match="unknown upper parameter"):
        executor.validate(JobSpec(engine=EngineSpec("upper", {"shout": True})))
    with pytest.raises(ValidationError, match=r"engine\.params\.prefix"):
        executor.validate(JobSpec(engine=EngineSpec("upper", {"prefix": 3})))


# --- the pytest fixture example -----------------------------------------------------------


def test_fixture_example_passes_under_pytest() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_with_fixture.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # five tests, on every async backend installed (trio arrives with selenium)
    backends = 2 if importlib.util.find_spec("trio") else 1
    assert re.search(rf"\b{5 * backends} passed\b", proc.stdout), proc.stdout


# --- docker with an IPFS input ------------------------------------------------------------


@pytest.mark.docker
def test_docker_ipfs() -> None:
    engine = require_docker_engine()
    out = run(EXAMPLES / "docker_ipfs.py", "--image", engine.image, timeout=300).stdout
    assert out.count("results_accepted") == 2  # two nodes agreed
    assert out.endswith("3 lisbon.txt\n2 porto.txt\n1 coimbra.txt\n")


def test_docker_ipfs_without_an_engine_skips_with_the_reason(tmp_path: Path) -> None:
    proc = run(
        EXAMPLES / "docker_ipfs.py",
        expect=77,
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert "no Docker engine answers" in proc.stderr
    assert "scripts/docker-engine.sh start" in proc.stderr


# --- map over many CIDs -------------------------------------------------------------------


def expected_words(jobs: int) -> int:
    demo = load(EXAMPLES / "map_cids.py")
    return sum(len(text.split()) for text in demo.demo_files(jobs))


def test_map_cids_100_jobs(tmp_path: Path) -> None:
    out_file = tmp_path / "results.json"
    proc = run(EXAMPLES / "map_cids.py", "--out", str(out_file), timeout=180)
    results = json.loads(out_file.read_text())
    assert len(results) == 100
    assert {r["state"] for r in results} == {"completed"}
    assert len({r["cid"] for r in results}) == 100  # 100 different inputs
    assert all(r["files"] == 1 and r["lines"] == 1 for r in results)
    total = sum(r["words"] for r in results)
    assert total == expected_words(100)
    assert "100/100 jobs completed" in proc.stdout and f"{total} words in all" in proc.stdout
    assert "[" + "#" * 30 + "] 100/100 jobs, 0 failed" in proc.stderr  # the progress bar


def test_map_cids_progress_bar_redraws_in_place_on_a_terminal() -> None:
    import io

    demo = load(EXAMPLES / "map_cids.py")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = demo.Progress(4, stream=screen, width=4)
    for ok in (True, False, True, True):
        bar.advance(ok)
    text = screen.getvalue()
    assert text.count("\r") == 4  # every update redraws the same line
    assert re.search(r"\r\[#---\] 1/4 jobs, 0 failed, [0-9.]+s\r\[##--\] 2/4 jobs, 1 failed", text)
    assert re.search(r"\r\[####\] 4/4 jobs, 1 failed, [0-9.]+s\n$", text)
    assert text.count("\n") == 1  # only the last draw ends the line


@pytest.mark.slow
def test_map_cids_through_a_devstack_api(tmp_path: Path) -> None:
    """The same script against ``bacalhau devstack``, through the HTTP API."""
    with subprocess.Popen(
        [sys.executable, "-m", "bacalhau", "devstack", "--nodes", "3", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as devstack:
        try:
            assert devstack.stdout is not None
            address = None
            for line in devstack.stdout:
                found = re.search(r"export BACALHAU_API=(\S+)", line)
                if found:
                    address = found.group(1)
                    break
            assert address, "devstack did not print its API address"
            out_file = tmp_path / "results.json"
            run(EXAMPLES / "map_cids.py", "--api", address, "--jobs", "20", "--out", str(out_file))
            results = json.loads(out_file.read_text())
            assert [r["state"] for r in results] == ["completed"] * 20
            assert sum(r["words"] for r in results) == expected_words(20)
        finally:
            devstack.send_signal(signal.SIGINT)
            try:
                devstack.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                devstack.kill()
                devstack.communicate()


# --- the benchmark runner (benchmarks/run.py) -------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/run.py, writing its results into a temporary folder."""
    module = load(ROOT / "benchmarks" / "run.py")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


def test_runner_reads_headline_ratios(runner: ModuleType) -> None:
    data = {
        "ratios": {"median_latency": 2.0, "p99_latency": 0.5, "throughput": 4.0},
        "sleep1": {"job_ratio": 1.02, "goal_ratio": 1.1},
    }
    core = runner.extract_ratios("core", data)
    assert [(r.metric, r.cost) for r in core] == [
        ("no-op job latency, median", 2.0),
        ("no-op job latency, p99", 0.5),
        ("no-op jobs per second", 0.25),
    ]  # 4x the throughput costs a quarter
    assert [r.verdict() for r in core] == ["2x slower", "2x faster", "4x faster"]
    docker = runner.extract_ratios("docker", data)  # the trivial case is missing: left out
    assert [(r.metric, r.goal, r.verdict()) for r in docker] == [
        ("1 s container as a job", 1.1, "on par")
    ]


def test_runner_reads_declared_and_unknown_ratios(runner: ModuleType) -> None:
    declared = {"ratios": {"a": {"value": 3.0, "better": "higher", "reference": "R"}, "b": 2.0}}
    ratios = runner.extract_ratios("newbench", declared)
    assert [(r.metric, r.reference, r.cost) for r in ratios] == [
        ("a", "R", pytest.approx(1 / 3)),
        ("b", "reference", None),
    ]
    walked = runner.extract_ratios(
        "other", {"x": [{"y_vs_z": 1.5, "goal_ratio": 2, "samples": {"ratio": 9}}]}
    )
    assert [(r.metric, r.value, r.better) for r in walked] == [("x.0.y_vs_z", 1.5, "?")]


def write_bench(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench_{name}.py"
    path.write_text(
        f'"""The {name} benchmark."""\nimport os, sys, time, subprocess\n\n'
        f"def main(argv=None):\n{body}\n"
    )
    return path


@pytest.mark.anyio
async def test_runner_reports_each_outcome(runner: ModuleType, tmp_path: Path) -> None:
    benches = tmp_path / "benches"
    ok = write_bench(
        benches,
        "ok",
        '    return {"quick": "--quick" in argv, "ratios": '
        '{"speed": {"value": 0.5, "better": "lower", "reference": "them"}}}',
    )
    boom = write_bench(benches, "boom", '    print("working"); raise RuntimeError("boom")')
    skip = write_bench(benches, "skip", '    return {"skipped": "no engine here"}')
    pid_file = tmp_path / "child.pid"
    hang = write_bench(
        benches,
        "hang",
        "    child = subprocess.Popen(['sleep', '300'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "    time.sleep(300)",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    outcomes = [await runner.run_one(b, quick=True, timeout=15, env=env) for b in (ok, boom, skip)]
    # 6 s: the worker (a Python start and the runner) must start its child first, and a
    # loaded machine can take a few seconds for that
    outcomes.append(await runner.run_one(hang, quick=True, timeout=6, env=env))
    assert [o.status for o in outcomes] == ["ok", "failed", "skipped", "failed"]
    assert outcomes[0].description == "The ok benchmark"
    assert [(r.metric, r.cost) for r in outcomes[0].ratios] == [("speed", 0.5)]
    assert "RuntimeError: boom" in outcomes[1].reason
    assert outcomes[2].reason == "no engine here"
    assert outcomes[3].reason == "timed out after 6 s"
    child = int(pid_file.read_text())
    for _ in range(200):  # the whole session was killed, the bench's own child too
        if _proc_state(child) in ("gone", "Z"):
            break
        await anyio.sleep(0.05)
    assert _proc_state(child) in ("gone", "Z"), "the benchmark's child process survived"

    page, plot, summary = tmp_path / "bench.md", tmp_path / "ratios.png", tmp_path / "s.json"
    data = runner.report(
        outcomes, quick=True, ran=True, plot_path=plot, page_path=page, summary_path=summary
    )
    assert json.loads(summary.read_text()) == data
    assert [b["status"] for b in data["benchmarks"]] == ["ok", "failed", "skipped", "failed"]
    text = page.read_text()
    assert "| ok | speed | them | 0.5 | 2x faster |" in text
    assert "- **boom** (failed): exit status 1: RuntimeError: boom" in text
    assert "- **skip** (skipped): no engine here" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
