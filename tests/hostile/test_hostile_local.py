"""Hostile local paths: the WASM stdout FIFO swapped for a symlink.

The FIFO lives in the execution's work folder; anyone who can swap it for a symlink
between ``mkfifo`` and the opens (or before wasmtime opens it for the module's
stdout) must get neither a host file's bytes into the job's stdout nor the job's
stdout written over a host file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bacalhau.executor import wasm_output
from bacalhau.executor.wasm_output import PipedStdout

pytestmark = pytest.mark.skipif(not wasm_output.available(), reason="no FIFOs here")


def test_a_fifo_replaced_by_a_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "node.key"
    secret.write_bytes(b"SECRET KEY BYTES")
    work = tmp_path / "work"

    def swap(path: os.PathLike[str] | str, mode: int = 0o666) -> None:
        os.symlink(secret, path)  # the attacker wins the race: a link where the FIFO was

    monkeypatch.setattr(os, "mkfifo", swap)
    pipe = PipedStdout(work)
    got: list[bytes] = []
    pipe.sink = got.append
    try:
        with pytest.raises(OSError, match=r"symbolic links|replaced"):  # the callback then
            pipe.open()
        if pipe._fd >= 0:
            pipe.take()
    finally:
        pipe.close()
    assert b"SECRET" not in b"".join(got)
    assert secret.read_bytes() == b"SECRET KEY BYTES"
    assert not (work / "wasm-stdout").is_symlink()


def test_the_writer_opens_the_fifo_itself_not_its_name(tmp_path: Path) -> None:
    """wasmtime opens :attr:`PipedStdout.target` for the module's stdout: swapping the
    name afterwards must not redirect the module's output onto another file."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    pipe = PipedStdout(tmp_path / "work")
    got: list[bytes] = []
    pipe.sink = got.append
    pipe.open()
    try:
        pipe.path.unlink()
        os.symlink(victim, pipe.path)  # swapped after the node made and opened it
        fd = os.open(pipe.target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # as wasmtime does
        try:
            os.write(fd, b"job output\n")
        finally:
            os.close(fd)
        pipe.take()
    finally:
        pipe.close()
    assert victim.read_bytes() == b"keep me"
    assert b"".join(got) == b"job output\n"
