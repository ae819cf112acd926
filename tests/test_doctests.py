"""Every ``>>>`` example in the package's docstrings runs, and says what it shows."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import bacalhau

PACKAGE = Path(bacalhau.__file__).parent


def modules_with_examples() -> list[str]:
    """Dotted names of the package's modules whose source holds a ``>>>`` example."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join(parts))
    return found


MODULES = modules_with_examples()


def test_the_examples_are_found() -> None:
    # Known ones, so a broken discovery cannot pass by finding nothing.
    assert {"bacalhau.verifier.canonical", "bacalhau.paths"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.attempted > 0, f"{name} mentions >>> but has no example doctest can run"
    assert result.failed == 0, f"{result.failed} example(s) in {name} failed (output above)"


def test_a_wrong_example_fails() -> None:
    """The runner is not a no-op: an example with the wrong answer is reported."""

    def sample() -> None:
        """>>> 1 + 1
        3
        """

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(verbose=False)
    for test in finder.find(sample, "sample", globs={}):
        runner.run(test, out=lambda _text: None)
    assert runner.summarize(verbose=False).failed == 1
