"""Developer tasks: ``nox -s tests lint typecheck bench docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite. Engines (Docker, NATS, clang) must be provisioned already;
    ``bash scripts/test.sh`` provisions them and is what CI runs."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "bacalhau", "tests", "benchmarks", "examples", "docs")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "-p", "bacalhau")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark: one table of ratios, JSON in benchmarks/results, a PNG plot."""
    session.install("-e", ".[bench,nats]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs (fails on warnings)."""
    session.install("-e", ".[docs]")
    session.run("python", "docs/gen_reference.py")
    session.run("mkdocs", "build", "--strict")
