"""Progress of long transfers: the client (and a local --data-dir) reports bytes as they
move; the CLI draws a rich bar on a terminal and nothing elsewhere."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import anyio
import pytest

from bacalhau.api.client import Client
from bacalhau.api.server import serve_api
from bacalhau.cli import main as cli_main
from bacalhau.cli.data import cmd_add, cmd_get
from bacalhau.cli.progress import MIN_BYTES, Progress, Tally, transfer_progress, tree_bytes
from bacalhau.network import Network


def test_a_bar_with_bytes_and_rate_on_a_terminal() -> None:
    out = io.StringIO()
    with transfer_progress("adding big.bin", stream=out, force_terminal=True) as progress:
        progress(0, 64 * 1024 * 1024)
        progress(32 * 1024 * 1024, 64 * 1024 * 1024)
        progress(64 * 1024 * 1024, 64 * 1024 * 1024)
    text = out.getvalue()
    assert "adding big.bin" in text
    assert "64.0/64.0 MiB" in text
    assert "/s" in text


def test_nothing_when_not_a_terminal_or_small() -> None:
    piped = io.StringIO()  # isatty() is False, as for a pipe or a file
    with transfer_progress("adding big.bin", stream=piped) as progress:
        progress(64 * 1024 * 1024, 64 * 1024 * 1024)
    assert piped.getvalue() == ""
    small = io.StringIO()
    with transfer_progress("adding small", stream=small, force_terminal=True) as progress:
        progress(10, MIN_BYTES - 1)
    assert small.getvalue() == ""


@pytest.mark.anyio
async def test_the_client_reports_uploads_and_downloads(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    async with Network.in_memory(1) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        async with Client(str(address)) as client:
            sent: list[tuple[int, int | None]] = []
            added = await client.add_file(big, progress=lambda d, t: sent.append((d, t)))
            assert sent[-1] == (big.stat().st_size, big.stat().st_size)
            assert [d for d, _ in sent] == sorted(d for d, _ in sent)
            got: list[tuple[int, int | None]] = []
            dest = await client.download(
                added.cid, tmp_path / "back.bin", progress=lambda d, t: got.append((d, t))
            )
            assert dest.read_bytes() == big.read_bytes()
            assert got[-1][0] == got[-1][1]  # the CAR's length was known and reached
            assert got[-1][0] > big.stat().st_size
        tg.cancel_scope.cancel()


# --- a local --data-dir (no node) ----------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _recorder() -> tuple[list[tuple[int, int | None]], Progress]:
    calls: list[tuple[int, int | None]] = []
    return calls, lambda done, total: calls.append((done, total))


def test_a_tally_adds_increments_and_ends_complete() -> None:
    calls, progress = _recorder()
    tally = Tally(progress, 100)
    tally(40)
    tally(50)
    tally(30)  # more than estimated: the total follows
    tally.finish()
    assert calls == [(0, 100), (40, 100), (90, 100), (120, 120), (120, 120)]
    calls, progress = _recorder()
    unknown = Tally(progress, None)
    unknown(7)
    unknown.finish()
    assert calls == [(0, None), (7, None), (7, 7)]


def test_tree_bytes_counts_what_add_reads(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "x.bin").write_bytes(b"x" * 1000)
    (tree / "y.txt").write_bytes(b"hello")
    (tree / ".hidden").write_bytes(b"zz")
    (tree / ".dot").mkdir()
    (tree / ".dot" / "z").write_bytes(b"z" * 50)
    (tree / "link").symlink_to(tree / "a" / "x.bin")  # a link, not its target's bytes
    assert tree_bytes([str(tree)]) == 1005
    assert tree_bytes([str(tree)], hidden=True) == 1057
    assert tree_bytes([str(tree / "y.txt"), str(tree)]) == 1010
    assert tree_bytes([str(tree), "-"]) is None  # stdin: unknown


def test_local_add_and_get_report_bytes_as_they_go(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024 + 5))
    size = big.stat().st_size
    calls, progress = _recorder()
    out = io.StringIO()
    assert cmd_add([str(big)], data_dir=data_dir, out=out, progress=progress) == 0
    cid = out.getvalue().split()[-1]
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    assert len(calls) > 3  # in batches as the chunks are hashed, not all at the end
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert {t for _, t in calls} == {size}
    hashed = io.StringIO()
    cmd_add([str(big)], only_hash=True, out=hashed)
    assert hashed.getvalue().split()[-1] == cid  # progress changes nothing added

    calls, progress = _recorder()
    back = tmp_path / "back.bin"
    cmd_get(cid, output=str(back), data_dir=data_dir, out=io.StringIO(), progress=progress)
    assert back.read_bytes() == big.read_bytes()
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "one.bin").write_bytes(os.urandom(600_000))
    (tree / "two.txt").write_bytes(b"two\n")
    (tree / ".skipped").write_bytes(b"not added")
    calls, progress = _recorder()
    out = io.StringIO()
    cmd_add([str(tree)], recursive=True, data_dir=data_dir, out=out, progress=progress)
    assert calls[0] == (0, 600_004)
    assert calls[-1] == (600_004, 600_004)
    calls, progress = _recorder()
    cmd_get(
        out.getvalue().split()[-1],
        output=str(tmp_path / "tree-back"),
        data_dir=data_dir,
        out=io.StringIO(),
        progress=progress,
    )
    first = calls[0][1]
    assert first is not None and 600_004 <= first < 600_004 + 4096  # links' sizes: a bit over
    assert calls[-1] == (600_004, 600_004)
    assert (tmp_path / "tree-back" / "sub" / "one.bin").stat().st_size == 600_000


def test_the_local_cli_draws_a_bar_only_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MIN_BYTES + 1024 * 1024))
    data_dir = str(tmp_path / "data")
    assert cli_main(["data", "add", "--data-dir", data_dir, str(big)]) == 0
    piped = capsys.readouterr()
    assert piped.err == ""  # captured stderr is no terminal: nothing extra
    cid = piped.out.split()[-1]

    terminal = _Tty()
    monkeypatch.setattr("sys.stderr", terminal)
    assert cli_main(["data", "add", "--data-dir", data_dir, str(big)]) == 0
    assert "adding big.bin" in terminal.getvalue()
    assert "5.0/5.0 MiB" in terminal.getvalue()
    assert capsys.readouterr().out.split()[-1] == cid
    terminal = _Tty()
    monkeypatch.setattr("sys.stderr", terminal)
    back = tmp_path / "back.bin"
    assert cli_main(["data", "get", "--data-dir", data_dir, cid, "-o", str(back)]) == 0
    assert f"getting {cid[:12]}" in terminal.getvalue()
    assert "5.0/5.0 MiB" in terminal.getvalue()
    assert back.read_bytes() == big.read_bytes()
