"""The C examples in examples/wasm, compiled with clang to wasm32-wasi, on the WASM executor
and as jobs on a 3-node network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import bacalhau
from bacalhau.executor.base import ExecutionContext, PreparedVolume
from bacalhau.executor.wasm import WasmExecutor
from bacalhau.models import Deal, InputSpec, JobSpec, JobState, OutputSpec, StorageSpec
from bacalhau.storage.ipfs import exporter
from bacalhau.storage.ipfs.importer import add_bytes, add_path
from bacalhau.testing.executors import execution_context

pytestmark = pytest.mark.wasm_c

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "wasm"


@pytest.fixture(scope="session")
def wasm_examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build every example with examples/wasm/build.sh (installs clang when root)."""
    out = tmp_path_factory.mktemp("wasm-build")
    proc = subprocess.run(
        [str(EXAMPLES / "build.sh"), str(out)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"examples/wasm/build.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return {p.stem: p for p in out.glob("*.wasm")}


def make_ctx(
    tmp_path: Path,
    spec: JobSpec,
    volumes: tuple[PreparedVolume, ...] = (),
    *,
    name: str = "run",
    job_id: str = "job-c",
) -> ExecutionContext:
    return execution_context(tmp_path / name, spec, volumes, job_id=job_id)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def probe_lines(ctx: ExecutionContext) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in (ctx.results_dir / "stdout").read_text().splitlines():
        key, _, value = line.partition(": ")
        lines.setdefault(key, []).append(value)
    return lines


@pytest.mark.anyio
async def test_sandbox_probe_sees_only_its_volumes(
    wasm_examples: dict[str, Path], tmp_path: Path
) -> None:
    spec = JobSpec.wasm(
        wasm_examples["sandbox_probe"].read_bytes(),
        args=["/inputs", "/outputs"],
        inputs=[InputSpec(StorageSpec.inline("x"), "/inputs")],
        outputs=[OutputSpec("out", "/outputs")],
    )
    host = tmp_path / "in"
    host.mkdir()
    (host / "b.txt").write_text("bb")
    (host / "a.txt").write_text("a")
    ctx = make_ctx(tmp_path, spec, (PreparedVolume(spec=spec.inputs[0], host_path=host),))
    result = await WasmExecutor().run(ctx)
    assert result.exit_code == 7
    seen = probe_lines(ctx)
    assert seen["write-input"] != ["ok"]
    assert not (host / "written-by-module").exists()
    assert seen["read-host"] != ["ok"]
    assert seen["write-output"] == ["ok"]
    assert (ctx.outputs["out"] / "probe.txt").read_text() == "written by sandbox_probe\n"
    before = float(seen["monotonic-before-sleep"][0])
    after = float(seen["monotonic-after-sleep"][0])
    assert after - before >= 5  # sleep(5) moved the virtual clock
    names = [entry.split()[0] for entry in seen["entry"]]
    assert names == [".", "a.txt", "b.txt"]  # sorted; '..' escapes the preopen, stat fails
    assert (ctx.results_dir / "stderr").read_text() == "probe done\n"


@pytest.mark.anyio
async def test_sandbox_probe_runs_are_byte_identical(
    wasm_examples: dict[str, Path], tmp_path: Path
) -> None:
    spec = JobSpec.wasm(
        wasm_examples["sandbox_probe"].read_bytes(),
        args=["/inputs", "/outputs"],
        inputs=[InputSpec(StorageSpec.inline("x"), "/inputs")],
        outputs=[OutputSpec("out", "/outputs")],
    )
    folders = []
    for name, order in (("first", ["a.txt", "b.txt"]), ("second", ["b.txt", "a.txt"])):
        host = tmp_path / f"in-{name}"
        host.mkdir()
        for fname in order:
            (host / fname).write_text(fname)
        ctx = make_ctx(
            tmp_path, spec, (PreparedVolume(spec=spec.inputs[0], host_path=host),), name=name
        )
        await WasmExecutor().run(ctx)
        folders.append(snapshot(ctx.results_dir))
    assert folders[0] == folders[1]
    assert b"random:" in folders[0]["stdout"]


@pytest.mark.anyio
async def test_wordcount_reads_a_directory_and_writes_an_output(
    wasm_examples: dict[str, Path], tmp_path: Path
) -> None:
    spec = JobSpec.wasm(
        wasm_examples["wordcount"].read_bytes(),
        args=["/inputs", "/outputs"],
        inputs=[InputSpec(StorageSpec.inline("x"), "/inputs")],
        outputs=[OutputSpec("counts", "/outputs")],
    )
    host = tmp_path / "texts"
    host.mkdir()
    (host / "b.txt").write_text("one two three\nfour\n")
    (host / "a.txt").write_text("hello world\n")
    ctx = make_ctx(tmp_path, spec, (PreparedVolume(spec=spec.inputs[0], host_path=host),))
    assert (await WasmExecutor().run(ctx)).exit_code == 0
    assert (ctx.outputs["counts"] / "counts.txt").read_text() == "a.txt 1 2 12\nb.txt 2 4 19\n"
    assert (ctx.results_dir / "stdout").read_text() == "2 files, 3 lines, 6 words, 31 bytes\n"


@pytest.mark.anyio
async def test_volume_cat_streams_a_library_volume(
    wasm_examples: dict[str, Path], tmp_path: Path
) -> None:
    content = bytes(range(256)) * 1000  # 256 kB: several reads of 64 KiB
    spec = JobSpec.wasm(
        wasm_examples["volume_cat"].read_bytes(),
        args=["/data/blob", "/outputs/copy.bin"],
        inputs=[InputSpec(StorageSpec.inline("x"), "/data/blob")],
        outputs=[OutputSpec("copy", "/outputs")],
    )
    volume = PreparedVolume(
        spec=spec.inputs[0], read=lambda off, size: content[off : off + size], size=len(content)
    )
    ctx = make_ctx(tmp_path, spec, (volume,))
    assert (await WasmExecutor().run(ctx)).exit_code == 0
    assert (ctx.outputs["copy"] / "copy.bin").read_bytes() == content
    assert (ctx.results_dir / "stdout").read_text().startswith("/data/blob 256000 bytes fnv1a64=")


@pytest.mark.anyio
async def test_wordcount_job_on_a_three_node_network(wasm_examples: dict[str, Path]) -> None:
    """The issue's example: a C program, fetched by CID, reads an input volume (a CID) and
    writes an output volume, run by all three nodes of a network with the deterministic
    verifier (all three must agree); every node publishes the same results CID."""
    async with bacalhau.Network.in_memory(3, seed=4) as net:
        node = net.nodes[0]
        module_cid = await add_bytes(node.blockstore, wasm_examples["wordcount"].read_bytes())
        text_cid = await add_bytes(node.blockstore, b"one two\nthree\n")
        spec = JobSpec.wasm(
            module_cid,
            args=["/inputs/text.txt", "/outputs"],
            inputs=[InputSpec(StorageSpec.ipfs(text_cid), "/inputs/text.txt")],
            outputs=[OutputSpec("counts", "/outputs")],
            deal=Deal(concurrency=3, confidence=3),
            verifier="deterministic",
            publisher="ipfs",
            timeout=30,
        )
        result = await node.run_job(spec, timeout=60)
        assert result.state is JobState.COMPLETED, result.reason
        assert len(result.accepted) == 3
        for execution in result.accepted:
            assert execution.exit_code == 0
            assert execution.stdout == "1 files, 2 lines, 3 words, 14 bytes\n"
        cids = {e.published.cid for e in result.accepted if e.published}
        assert len(cids) == 1
        assert result.cid is not None
        counts = await exporter.resolve(node.blocks, result.cid, "counts/counts.txt")
        assert await exporter.read_all(node.blocks, counts) == b"text.txt 2 3 14\n"


@pytest.mark.anyio
async def test_clock_and_random_reading_job_is_identical_on_three_nodes(
    wasm_examples: dict[str, Path], tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("b.txt", "a.txt"):
        (inputs / name).write_text(name)
    async with bacalhau.Network.in_memory(3, seed=5) as net:
        node = net.nodes[0]
        module_cid = await add_bytes(node.blockstore, wasm_examples["sandbox_probe"].read_bytes())
        dir_cid = await add_path(node.blockstore, inputs)
        spec = JobSpec.wasm(
            module_cid,
            args=["/inputs", "/outputs"],
            inputs=[InputSpec(StorageSpec.ipfs(dir_cid), "/inputs")],
            outputs=[OutputSpec("probe", "/outputs")],
            deal=Deal(concurrency=3, confidence=3),
            verifier="deterministic",
            publisher="ipfs",
            timeout=30,
        )
        result = await node.run_job(spec, timeout=60)
        assert result.state is JobState.COMPLETED, result.reason
        assert [e.exit_code for e in result.accepted] == [7, 7, 7]
        assert "random:" in result.accepted[0].stdout
        assert len({e.published.cid for e in result.accepted if e.published}) == 1
