"""Every shell session of the README tour and the how-tos runs as written (see
tests/docs_sessions.py for how), and the harness fails when a command breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_sessions import (
    INSTALLED,
    DocsSessionError,
    expected_pattern,
    expected_status,
    prepare_copy,
    run_page,
    sessions,
    substitute,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "README.md",
    "docs/index.md",
    "docs/concepts.md",
    "docs/docker.md",
    "docs/wasm.md",
    "docs/howto-plugin.md",
    "docs/howto-private-network.md",
    "docs/howto-testing.md",
    "docs/cli.md",
    "docs/api.md",
    "docs/bacalhau-users.md",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared copy of the repository; each page runs in a fresh copy of it."""
    return prepare_copy(tmp_path_factory.mktemp("docs-template") / "repo")


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page: str, tmp_path: Path, template: Path) -> None:
    from bacalhau.testing.docker import require_docker_engine

    require_docker_engine()  # the tour runs a docker job on the provisioned engine
    log = run_page(ROOT / page, tmp_path, template=template)
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


def test_the_harness_fails_when_a_command_breaks(tmp_path: Path, template: Path) -> None:
    """A working page passes; the same page with one command broken on purpose fails,
    naming the line and the command."""
    good = write_page(tmp_path, "$ echo hello > f.txt\n$ cat f.txt\nhello\n")
    assert run_page(good, tmp_path / "good", template=template)
    broken = write_page(tmp_path, "$ echo hello > f.txt\n$ cat no-such-file.txt\nhello\n")
    with pytest.raises(DocsSessionError, match=r"page.md:5: `cat no-such-file.txt` exited 1"):
        run_page(broken, tmp_path / "broken", template=template)


def test_the_harness_fails_when_the_output_differs(tmp_path: Path, template: Path) -> None:
    page = write_page(tmp_path, "$ echo goodbye\nhello\n")
    with pytest.raises(DocsSessionError, match="did not print 'hello'"):
        run_page(page, tmp_path / "run", template=template)


def test_the_harness_runs_the_cli_from_the_activated_venv(tmp_path: Path, template: Path) -> None:
    """As the README's first command leaves it: `bacalhau` is there once .venv is active,
    and not before (the pages must say to activate it). The venv is the copy's own, not
    the template's it was copied from."""
    page = write_page(
        tmp_path,
        "$ command -v bacalhau || echo none\nnone\n$ source .venv/bin/activate\n"
        "$ bacalhau --version\nbacalhau-py ...\n"
        "$ echo $VIRTUAL_ENV; head -n1 $(command -v bacalhau)\n"
        f"{tmp_path}/run/repo/.venv\n#!{tmp_path}/run/repo/.venv/bin/python\n",
    )
    run_page(page, tmp_path / "run", template=template)
    assert str(template) not in (tmp_path / "run" / "repo" / ".venv" / "bin" / "pip").read_text()


def test_saved_files_and_exit_statuses(tmp_path: Path, template: Path) -> None:
    """A fence marked ``save NAME`` is written where the page reaches it; ``[exit N]``
    is the status a command must end with (and any other fails it)."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-test: save hello.py -->\n```python\nprint('hello from a file')\n```\n\n"
        "```console\n$ python3 hello.py\nhello from a file\n$ python3 -c 'raise SystemExit(3)'\n"
        "[exit 3]\n```\n"
    )
    saved, run = sessions(page.read_text())
    assert saved.save == ("hello.py", "print('hello from a file')\n") and not saved.commands
    assert [expected_status(c) for c in run.commands] == [0, 3]
    assert expected_pattern("[exit 3]") is None
    assert run_page(page, tmp_path / "good", template=template)
    page.write_text(page.read_text().replace("[exit 3]", "[exit 2]"))
    with pytest.raises(DocsSessionError, match="exited 3"):
        run_page(page, tmp_path / "bad", template=template)


def test_the_extras_pages_install_exist_and_hold_what_they_promise() -> None:
    """``pip install -e '.[EXTRA]'`` is not run again in a page's copy (its .venv has the
    suite's packages, every extra among them): each extra a page installs is in
    pyproject.toml, and the test extra holds pytest and every plugin the project's pytest
    configuration needs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    named: set[str] = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for session in sessions(page.read_text()):
            for command in session.commands:
                found = INSTALLED.match(command.text)
                if found and found.group(1):
                    named.update(found.group(1).strip("[]").split(","))
    assert named and named <= set(extras), named - set(extras)
    test = {r.split(">")[0].split("[")[0].split(";")[0].strip() for r in extras["test"]}
    assert {"pytest", "pytest-timeout"} <= test  # `timeout = 300` in [tool.pytest.ini_options]
    assert "timeout" in project["tool"]["pytest"]["ini_options"]
