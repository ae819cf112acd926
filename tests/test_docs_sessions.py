"""Every shell session of the README tour and the how-tos runs as written (see
tests/docs_sessions.py for how), and the harness fails when a command breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_sessions import (
    DocsSessionError,
    expected_pattern,
    run_page,
    sessions,
    substitute,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/index.md", "docs/howto-plugin.md", "docs/howto-private-network.md"]


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page: str, tmp_path: Path) -> None:
    from bacalhau.testing.docker import require_docker_engine

    require_docker_engine()  # the tour runs a docker job on the provisioned engine
    log = run_page(ROOT / page, tmp_path)
    assert log, f"{page} has no shell session"


def test_sessions_are_parsed_as_a_reader_reads_them() -> None:
    page = (
        "text\n```console\n$ echo one \\\n    two\none two\n$ true\n```\n"
        "<!-- docs-test: skip shown for three machines -->\n```console\n$ false\n```\n"
    )
    first, second = sessions(page)
    assert [c.text for c in first.commands] == ["echo one \\\n    two", "true"]
    assert first.commands[0].expected == ("one two",)
    assert first.commands[0].line == 3
    assert second.skip == "shown for three machines"


def test_placeholders_come_from_earlier_output() -> None:
    seen = (
        "added QmbHjxTWKXg4xo8ASLNZxFLonY8CHWE7yyqNjVP8ZfzASf poem.txt\n"
        "Job j-37a1a91e-3c4f-4d53-bd8f-775993c85952 completed\n"
    )
    assert substitute("bacalhau get JOB_ID", seen) == (
        "bacalhau get j-37a1a91e-3c4f-4d53-bd8f-775993c85952"
    )
    assert substitute("run -v QmbHjxTW...:/in", seen) == (
        "run -v QmbHjxTWKXg4xo8ASLNZxFLonY8CHWE7yyqNjVP8ZfzASf:/in"
    )
    with pytest.raises(DocsSessionError, match="starts with 'QmNothere'"):
        substitute("cat QmNothere...", seen)
    pattern = expected_pattern("Job j-... completed")
    assert pattern is not None and pattern.fullmatch("Job j-1234 completed")
    assert expected_pattern("...") is None


def write_page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n```console\n{body}```\n")
    return page


def test_the_harness_fails_when_a_command_breaks(tmp_path: Path) -> None:
    """A working page passes; the same page with one command broken on purpose fails,
    naming the line and the command."""
    good = write_page(tmp_path, "$ echo hello > f.txt\n$ cat f.txt\nhello\n")
    assert run_page(good, tmp_path / "good")
    broken = write_page(tmp_path, "$ echo hello > f.txt\n$ cat no-such-file.txt\nhello\n")
    with pytest.raises(DocsSessionError, match=r"page.md:5: `cat no-such-file.txt` exited 1"):
        run_page(broken, tmp_path / "broken")


def test_the_harness_fails_when_the_output_differs(tmp_path: Path) -> None:
    page = write_page(tmp_path, "$ echo goodbye\nhello\n")
    with pytest.raises(DocsSessionError, match="did not print 'hello'"):
        run_page(page, tmp_path / "run")


def test_the_harness_runs_the_cli_from_the_activated_venv(tmp_path: Path) -> None:
    """As the README's first command leaves it: `bacalhau` is there once .venv is active,
    and not before (the pages must say to activate it)."""
    page = write_page(
        tmp_path,
        "$ command -v bacalhau || echo none\nnone\n$ source .venv/bin/activate\n"
        "$ bacalhau --version\nbacalhau-py ...\n",
    )
    run_page(page, tmp_path / "run")
