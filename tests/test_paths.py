"""bacalhau.paths: untrusted names never build a path outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bacalhau.errors import ValidationError
from bacalhau.paths import check_name, is_within, safe_join


def test_plain_names_join_lexically(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "jobs", "j-1") == tmp_path / "jobs" / "j-1"
    assert safe_join(tmp_path, "outputs/a.txt") == tmp_path / "outputs" / "a.txt"
    assert safe_join(tmp_path) == tmp_path
    # The root need not exist.
    assert safe_join(tmp_path / "missing", "x") == tmp_path / "missing" / "x"


@pytest.mark.parametrize(
    "bad",
    ["..", "../etc", "a/../../b", "/etc/passwd", "", ".", "a//b", "a/./b", "a/", "nul\x00byte"],
)
def test_lexical_escapes_are_refused_naming_the_part(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        safe_join(tmp_path, "ok", bad, field="job_id")
    assert err.value.field == "job_id"
    assert str(err.value).startswith("job_id: ")


def test_overlong_component_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at most 255"):
        safe_join(tmp_path, "x" * 256)
    assert safe_join(tmp_path, "x" * 255).name == "x" * 255


def test_non_string_part_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="expected a string"):
        safe_join(tmp_path, 5)  # type: ignore[arg-type]


def test_link_in_an_ancestor_pointing_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    with pytest.raises(ValidationError, match="through a link"):
        safe_join(root, "evil", "file")
    with pytest.raises(ValidationError, match="through a link"):
        safe_join(root, "evil/deeper/still")
    # A dangling link pointing out is refused too.
    (root / "dangling").symlink_to("/nonexistent/place")
    with pytest.raises(ValidationError, match="through a link"):
        safe_join(root, "dangling", "x")


def test_link_inside_the_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert safe_join(tmp_path, "alias", "f") == tmp_path / "alias" / "f"


def test_final_symlink_is_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "leaf").symlink_to("/etc/passwd")
    with pytest.raises(ValidationError, match="symbolic link"):
        safe_join(tmp_path, "leaf")
    assert safe_join(tmp_path, "leaf", allow_symlink=True) == tmp_path / "leaf"


def test_root_that_is_itself_a_link_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "sub").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "root")
    assert safe_join(tmp_path / "root", "sub", "f") == tmp_path / "root" / "sub" / "f"


def test_check_name_and_is_within(tmp_path: Path) -> None:
    assert check_name("a.txt") == "a.txt"
    for bad in ("", ".", "..", "a/b", "x\x00"):
        with pytest.raises(ValidationError):
            check_name(bad, field="name")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").symlink_to("/")
    assert is_within(tmp_path, tmp_path / "in")
    assert is_within(tmp_path, tmp_path)
    assert not is_within(tmp_path, tmp_path / "out")
    assert not is_within(tmp_path / "in", tmp_path / "inx")


def test_remove_tree_deep_wide_readonly_and_links(tmp_path: Path) -> None:
    from bacalhau.paths import remove_tree

    top = tmp_path / "top"
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        os.mkdir("top", dir_fd=fd)
    finally:
        os.close(fd)
    # 1,500 nested folders: deeper than Python's recursion limit and than PATH_MAX
    cur = os.open(top, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("dd", dir_fd=cur)
        nxt = os.open("dd", os.O_RDONLY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    os.close(cur)
    wide = top / "wide"
    wide.mkdir()
    for i in range(200):
        (wide / f"f{i}").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    (wide / "link").symlink_to(outside, target_is_directory=True)
    wide.chmod(0o555)
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep").read_bytes() == b"keep"
    remove_tree(top)  # gone is fine
    (tmp_path / "file").write_bytes(b"x")
    remove_tree(tmp_path / "file")
    assert not (tmp_path / "file").exists()
