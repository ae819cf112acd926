"""``bacalhau wasm run`` argument handling (bacalhau.cli.wasm)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bacalhau.cli.wasm import (
    DEFAULT_OUTPUT,
    add_wasm_parser,
    build_wasm_job,
    parse_env,
    parse_output,
    parse_volume,
    resolve_module,
    spec_from_args,
)
from bacalhau.errors import ValidationError
from bacalhau.executor.wasm import WasmParams
from bacalhau.models import OutputSpec, StorageSpec

CID = "QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="bacalhau")
    add_wasm_parser(top.add_subparsers(dest="command"))
    return top


def test_volume_output_and_env_forms() -> None:
    volume = parse_volume(f"{CID}:/inputs")
    assert volume.source == StorageSpec.ipfs(CID)
    assert volume.target == "/inputs"
    assert parse_volume(f"{CID}/dir/file.txt:/in.txt").source.path == "dir/file.txt"
    assert parse_output("results:/outputs/r") == OutputSpec("results", "/outputs/r")
    assert parse_env("A=b=c") == ("A", "b=c")
    for bad in (CID, f"{CID}:", "notacid:/x", f"{CID}:relative"):
        with pytest.raises(ValidationError):
            parse_volume(bad)
    for bad in ("noslash", "../x:/p", "stdout:/p"):
        with pytest.raises(ValidationError):
            parse_output(bad)
    with pytest.raises(ValidationError, match="NAME=value"):
        parse_env("NOVALUE")


def test_build_job_defaults_to_one_outputs_volume() -> None:
    spec = build_wasm_job(StorageSpec.inline(b"\0asm"), ["x"])
    assert spec.outputs == (DEFAULT_OUTPUT,)
    params = WasmParams.from_spec(spec)
    assert params.args == ("x",)
    assert params.entry_point == "_start"


def test_build_job_with_limits_and_deal() -> None:
    spec = build_wasm_job(
        StorageSpec.ipfs(CID),
        memory="64Mi",
        timeout=12,
        concurrency=3,
        confidence=2,
        verifier="deterministic",
        env=["K=V"],
    )
    assert spec.resources.memory == 64 * 1024 * 1024
    assert spec.timeout == 12
    assert (spec.deal.concurrency, spec.deal.confidence) == (3, 2)
    assert spec.verifier == "deterministic"
    assert spec.env == {"K": "V"}


@pytest.mark.anyio
async def test_local_module_is_added_to_the_store_when_possible(tmp_path: Path) -> None:
    wasm = tmp_path / "prog.wasm"
    wasm.write_bytes(b"\0asm\1\0\0\0")
    added: list[Path] = []

    async def add_file(path: Path) -> str:
        added.append(path)
        return CID

    assert await resolve_module(str(wasm), add_file=add_file) == StorageSpec.ipfs(CID)
    assert added == [wasm]
    assert await resolve_module(str(wasm)) == StorageSpec.inline(b"\0asm\1\0\0\0")
    assert await resolve_module(CID) == StorageSpec.ipfs(CID)
    with pytest.raises(ValidationError, match="neither a file nor a CID"):
        await resolve_module(str(tmp_path / "missing.wasm"))
    big = tmp_path / "big.wasm"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    with pytest.raises(ValidationError, match="too big to send inline"):
        await resolve_module(str(big))


@pytest.mark.anyio
async def test_command_line_to_spec(tmp_path: Path) -> None:
    wasm = tmp_path / "prog.wasm"
    wasm.write_bytes(b"\0asm\1\0\0\0")
    ns = parser().parse_args(
        ["wasm", "run", "-v", f"{CID}:/in", "-o", "out:/out", "--env", "A=1",
         "--entry-point", "main", str(wasm), "first", "--", "-dash"]
    )  # fmt: skip
    assert ns.wasm_command == "run"
    spec = await spec_from_args(ns)
    params = WasmParams.from_spec(spec)
    assert params.args == ("first", "-dash")
    assert params.entry_point == "main"
    assert params.module == StorageSpec.inline(wasm.read_bytes())
    assert [i.target for i in spec.inputs] == ["/in"]
    assert spec.outputs == (OutputSpec("out", "/out"),)
    assert spec.env == {"A": "1"}


def test_wasm_without_subcommand_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["wasm"])
    assert "run" in capsys.readouterr().err
