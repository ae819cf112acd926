"""``bacalhau get`` into a folder that exists: refused with the way out, or --force."""

from __future__ import annotations

from pathlib import Path

import pytest

from bacalhau.cli.jobs import _clear_destination
from bacalhau.errors import ValidationError


def test_new_or_empty_folders_are_fine(tmp_path: Path) -> None:
    _clear_destination(tmp_path / "new", force=False)
    (tmp_path / "empty").mkdir()
    _clear_destination(tmp_path / "empty", force=False)
    assert (tmp_path / "empty").is_dir()


def test_a_folder_with_files_is_refused_saying_how_to_go_on(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    (dest / "counts").mkdir(parents=True)
    (dest / "counts" / "counts.txt").write_text("old")
    with pytest.raises(ValidationError, match="pass --force to replace it") as info:
        _clear_destination(dest, force=False)
    assert info.value.field == "--output-dir"
    assert (dest / "counts" / "counts.txt").read_text() == "old", "nothing is lost"


def test_force_replaces_what_is_there(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    (dest / "deep" / "er").mkdir(parents=True)
    (dest / "deep" / "er" / "f").write_text("old")
    _clear_destination(dest, force=True)
    assert not dest.exists()
    dest.write_text("a file where the folder goes")
    _clear_destination(dest, force=True)
    assert not dest.exists()
