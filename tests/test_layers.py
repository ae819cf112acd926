"""The import layers of docs/architecture.md are the code's, and the core stays pure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_layers", ROOT / "docs" / "gen_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_layers"] = module
    spec.loader.exec_module(module)
    return module


gen = load()
ARROWS: dict[str, set[str]] = gen.graph()  # read once: every test below looks at it


def test_the_page_shows_the_layers_as_they_stand() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert gen.render(page, gen.section(ARROWS)) == page, (
        "docs/architecture.md's import layers are out of date: run python docs/gen_layers.py"
    )


def test_the_protocol_core_imports_only_values_and_errors() -> None:
    arrows = ARROWS
    assert arrows[gen.CORE] <= gen.CORE_MAY_IMPORT, arrows[gen.CORE] - gen.CORE_MAY_IMPORT
    for part in gen.CORE_MAY_IMPORT & set(arrows):
        assert gen.CORE not in arrows[part], f"{part} imports the core it serves"


def test_no_cycle_between_parts() -> None:
    assert gen.cycles(ARROWS) == []


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "bacalhau"


def test_the_generator_finds_arrows_layers_and_cycles(tmp_path: Path) -> None:
    package = write(
        tmp_path,
        {
            "bacalhau/__init__.py": "from .a import A\n",
            "bacalhau/errors.py": "",
            "bacalhau/a/__init__.py": "from ..errors import E\nfrom .. import b\n",
            "bacalhau/b.py": "def f():\n    from bacalhau.c import x\n",
            "bacalhau/c/__init__.py": "",
            "bacalhau/c/x.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from ..d import D\n"
                "try:\n    from ..missing import M\nexcept ImportError:\n    pass\n"
                "from ..b import f\n"
            ),
            "bacalhau/d.py": "import bacalhau.errors\n",
        },
    )
    arrows = gen.graph(package)
    assert arrows == {
        "a": {"errors", "b"},
        "b": {"c"},
        "c": {"b"},  # the TYPE_CHECKING import of d and the missing part are left out
        "d": {"errors"},
        "errors": set(),
    }
    assert gen.cycles(arrows) == [["b", "c"]]
    assert gen.layers(arrows) == {"errors": 0, "d": 1, "b": 0, "c": 0, "a": 1}
    text = gen.section(arrows)
    assert "Cycles: {b, c}." in text
    assert "| 1 | `a` | `b`, `errors` |" in text


def test_no_module_over_800_lines() -> None:
    """A module past 800 lines is doing more than one job: split it (STYLE.md)."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in (ROOT / "bacalhau").rglob("*.py")
    }
    assert sizes, "no modules found"
    assert {p: n for p, n in sizes.items() if n > 800} == {}
