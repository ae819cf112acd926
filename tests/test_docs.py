"""The documentation tells the truth: every Python sample on the guide pages runs, the
reference pages come from the code, and the site builds without a warning."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import anyio.abc
import anyio.from_thread
import pytest

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.network import Network

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [
    "../README.md",
    "index.md",
    "architecture.md",
    "concepts.md",
    "howto-embed.md",
    "howto-plugin.md",
    "howto-testing.md",
    "durability.md",
    "security.md",
    "watching.md",
    "scheduling.md",
    "gossip.md",
    "verification.md",
    "content-addressing.md",
    "docker.md",
    "nats.md",
    "bacalhau-users.md",
]
DOCKER_PAGES = {"docker.md"}
"""Pages whose samples run Docker jobs: they run on the engine the suite provisions
(``DOCKER_HOST``, as ``scripts/test.sh`` exports it), like every docker test."""
NATS_PAGES = {"nats.md"}
"""Pages whose samples connect to NATS: the test starts a ``nats-server -js`` on a free
loopback port and hands it to the sample in ``$BACALHAU_NATS_URL``, where the CLI and the
page's sample look for it."""
SDK_PAGES = {"bacalhau-users.md"}
"""Pages whose samples use Bacalhau's official Python client: they run with the
interpreter of its own venv (``tests/bacalhau_sdk_env.py``), against a node served on a
free loopback port and named in ``$BACALHAU_API_HOST`` and ``$BACALHAU_API_PORT``, where
the client looks. Their docker job runs on the provisioned engine."""
FENCE = re.compile(
    r"^(?P<saved><!-- docs-test: save [^>]*-->\n)?```python\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def samples(*, saved: bool = False) -> list[tuple[str, int, str]]:
    """Each page's Python samples. Those the page saves to a file and runs in its shell
    session (``<!-- docs-test: save NAME -->``) run there, in ``test_docs_sessions.py``,
    and only there unless ``saved``."""
    found = []
    for page in PAGES:
        for i, match in enumerate(FENCE.finditer((DOCS / page).read_text())):
            if saved or not match.group("saved"):
                found.append((page, i, match.group("code")))
    return found


SAMPLES = samples()
PARAMS = [
    pytest.param(
        page,
        index,
        code,
        id=f"{page}[{index}]",
        marks=[pytest.mark.docker] * (page in DOCKER_PAGES | SDK_PAGES)
        + [pytest.mark.nats] * (page in NATS_PAGES),
    )
    for page, index, code in SAMPLES
]


def test_every_guide_page_has_samples() -> None:
    assert {page for page, _, _ in samples(saved=True)} == set(PAGES)


def test_every_python_sample_in_the_docs_is_run() -> None:
    """A page with a Python sample is in ``PAGES`` (its samples run here), and a page
    that saves one for its shell session is in ``test_docs_sessions.PAGES``."""
    from test_docs_sessions import PAGES as SESSION_PAGES

    unrun = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        page = "../README.md" if path.name == "README.md" else str(path.relative_to(DOCS))
        for match in FENCE.finditer(path.read_text()):
            if match.group("saved"):
                if str(path.relative_to(ROOT)) not in SESSION_PAGES:
                    unrun.append(f"{page} (saved for a session no test runs)")
            elif page not in PAGES:
                unrun.append(page)
    assert not unrun


@pytest.mark.parametrize(("page", "index", "code"), PARAMS)
def test_sample_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    """Run the sample as a reader would, from the repository root: a script with python,
    a test file (it defines ``test_`` functions) with pytest."""
    if page in DOCKER_PAGES | SDK_PAGES:
        from bacalhau.testing.docker import require_docker_engine

        require_docker_engine()  # skip visibly, or fail when BACALHAU_REQUIRE_DOCKER=1
    is_test = re.search(r"^(async )?def test_", code, re.MULTILINE) is not None
    script = tmp_path / (f"test_sample_{index}.py" if is_test else f"sample_{index}.py")
    script.write_text(code)
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
        if is_test
        else [sys.executable, str(script)]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / "plugin_executor")}
    with contextlib.ExitStack() as stack:
        if page in NATS_PAGES:
            from bacalhau.testing.nats import require_nats_server, running_server

            require_nats_server()  # skip visibly, or fail when BACALHAU_REQUIRE_NATS=1
            server = stack.enter_context(running_server(tmp_path / "nats", jetstream=True))
            env["BACALHAU_NATS_URL"] = server.url
        if page in SDK_PAGES:
            from bacalhau_sdk_env import require_sdk_python

            command = [str(require_sdk_python()), *command[1:]]
            address = stack.enter_context(served_node())
            env.update(
                HOME=str(tmp_path),  # the client keeps a key pair under ~/.bacalhau
                BACALHAU_DIR=str(tmp_path),
                BACALHAU_API_HOST=address.host,
                BACALHAU_API_PORT=str(address.port),
            )
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env, check=False
        )
    assert proc.returncode == 0, (
        f"sample {index} of docs/{page} failed:\n{code}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}"
    )


@contextlib.contextmanager
def served_node() -> Iterator[ApiAddress]:
    """A two-node network's API on a free loopback port, served from an event loop in a
    thread of its own for as long as the ``with`` block runs a sample in a subprocess."""

    async def serve(*, task_status: anyio.abc.TaskStatus[ApiAddress]) -> None:
        async with Network.in_memory(2) as net, anyio.create_task_group() as tg:
            address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
            task_status.started(address)
            await anyio.sleep_forever()

    with anyio.from_thread.start_blocking_portal() as portal:
        future, address = portal.start_task(serve)
        try:
            yield address
        finally:
            future.cancel()


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_covers_every_command_and_option() -> None:
    import argparse

    from bacalhau.cli import build_parser

    text = load_generator().cli_reference()
    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        if f"`{' '.join(path)}` {{#" not in text:
            missing.append(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.help != argparse.SUPPRESS:
                for option in action.option_strings:
                    if f"`{option}`" not in text:
                        missing.append(f"{' '.join(path)} {option}")

    walk(build_parser(), ["bacalhau"])
    assert not missing


def test_http_reference_covers_every_operation_and_schema() -> None:
    gen = load_generator()
    doc = gen.openapi()
    text = gen.http_reference(doc)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert f"`{method.upper()} {path}`" in text
            assert f"{{#op-{op['operationId'].lower()}}}" in text
    for name in doc["components"]["schemas"]:
        assert f"### {name} {{#schema-{name.lower()}}}" in text


def test_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (as the nox docs session runs it): no broken link or anchor
    on any page, every page in the navigation."""
    beside = Path(sys.executable).parent / "mkdocs"
    mkdocs = str(beside) if beside.exists() else shutil.which("mkdocs")
    if importlib.util.find_spec("material") is None or mkdocs is None:
        pytest.skip("mkdocs-material is not installed (pip install mkdocs-material)")
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    gen = load_generator()
    for path, content in gen.pages().items():  # the reference as the code has it now
        (docs / path.relative_to(DOCS)).write_text(content)
    config = (ROOT / "mkdocs.yml").read_text()
    (tmp_path / "mkdocs.yml").write_text(config)
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index", "architecture", "benchmarks", "reference/cli", "reference/http"):
        assert (tmp_path / "site" / page / "index.html").exists() or (
            tmp_path / "site" / f"{page}.html"
        ).exists()
