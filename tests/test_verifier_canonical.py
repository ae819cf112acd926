"""Canonical hashing of results folders: same tree -> same hash; any real change -> another."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacalhau.errors import VerificationError
from bacalhau.verifier.canonical import HEADER, TreeEntry, digest_manifest, hash_tree, manifest

TREE = {
    "stdout": b"hello\n",
    "stderr": b"",
    "exitCode": b"0",
    "outputs/a.txt": b"alpha",
    "outputs/sub/b.bin": bytes(range(256)) * 10,
    "outputs/sub/deeper/c": b"c",
    "outputs/empty/": None,  # an empty directory
    ".hidden": b"secret",
}


def build(root: Path, tree: dict[str, bytes | None], order: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in order or list(tree):
        content = tree[name]
        path = root / name
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build(tmp_path / "r", TREE)


def test_same_tree_same_hash_whatever_the_creation_order(tmp_path: Path) -> None:
    names = list(TREE)
    digests = set()
    for i in range(6):
        order = names[:]
        random.Random(i).shuffle(order)
        root = build(tmp_path / f"t{i}", TREE, order)
        # different timestamps and non-exec permission bits (umask) do not matter either
        os.utime(root / "stdout", (1_000_000 + i, 1_000_000 + i))
        (root / "outputs/a.txt").chmod(0o600 if i % 2 else 0o664)
        digests.add(hash_tree(root))
    assert len(digests) == 1


def test_hash_is_sha256_of_the_documented_manifest(tree: Path) -> None:
    import hashlib

    entries = manifest(tree)
    assert [e.path for e in entries] == sorted((e.path for e in entries), key=os.fsencode)
    assert {e.path for e in entries} == {
        ".hidden",
        "exitCode",
        "outputs",
        "outputs/a.txt",
        "outputs/empty",
        "outputs/sub",
        "outputs/sub/b.bin",
        "outputs/sub/deeper",
        "outputs/sub/deeper/c",
        "stderr",
        "stdout",
    }
    a = next(e for e in entries if e.path == "outputs/a.txt")
    assert a == TreeEntry(
        kind="F", path="outputs/a.txt", size=5, sha256=hashlib.sha256(b"alpha").digest()
    )
    assert (
        a.record()
        == b"F"
        + (13).to_bytes(4, "big")
        + b"outputs/a.txt"
        + (5).to_bytes(8, "big")
        + hashlib.sha256(b"alpha").digest()
    )
    expected = hashlib.sha256(HEADER + b"".join(e.record() for e in entries)).digest()
    assert hash_tree(tree) == digest_manifest(entries) == expected


# Golden digests, computed once outside this code base and pinned: a short script of
# hashlib + struct that writes each manifest out record by record from the format table
# (no bacalhau import), checked for the first two against coreutils:
#   { printf 'bacalhau/results-tree/v1\n'
#     printf 'F\x00\x00\x00\x06stdout\x00\x00\x00\x00\x00\x00\x00\x06'
#     printf 'hello\n' | sha256sum | cut -c1-64 | xxd -r -p; } | sha256sum
# A change to any of them is a change of the results format: every node of a network must
# agree on it, so it needs a new HEADER version, not a new golden value.
GOLDEN: dict[str, tuple[dict[str, bytes | None], str]] = {
    "empty": ({}, "6093bf57cb2142e1b3359fb6c84ce8eeacec6d50fe1e71e425b831f21a9315db"),
    "hello": (
        {"stdout": b"hello\n"},
        "3de1c92677282adb48dfb22c7773fbdd0039c465dabdaecf6d59ebe68e9d341f",
    ),
    "tree with an executable": (
        {**TREE, "run.sh": b"#!/bin/sh\necho hi\n"},
        "886fd2d927ae5200c6c7b274724376d033999af5443b0cbe221c440876244f1f",
    ),
    "bytewise order of non-ASCII names": (
        {"\u00e9": b"3", "a": b"2", "B": b"1"},
        "7edfbd1c41d71ac93622b272570c97a4b2b3e0608295b69ee26a5366077575f5",
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_digests(tmp_path: Path, name: str) -> None:
    files, digest = GOLDEN[name]
    root = build(tmp_path / "r", files)
    if "run.sh" in files:
        (root / "run.sh").chmod(0o755)
    assert hash_tree(root).hex() == digest


@pytest.mark.parametrize(
    "change",
    [
        "byte",
        "append",
        "truncate",
        "rename",
        "rename_dir",
        "add_empty_file",
        "add_empty_dir",
        "remove_empty_dir",
        "exec_bit",
        "file_to_dir",
        "move_between_dirs",
    ],
)
def test_any_change_changes_the_hash(tree: Path, change: str) -> None:
    before = hash_tree(tree)
    if change == "byte":
        data = bytearray((tree / "outputs/sub/b.bin").read_bytes())
        data[1234] ^= 1
        (tree / "outputs/sub/b.bin").write_bytes(bytes(data))
    elif change == "append":
        (tree / "stdout").write_bytes(b"hello\n\n")
    elif change == "truncate":
        (tree / "stdout").write_bytes(b"hello")
    elif change == "rename":
        (tree / "outputs/a.txt").rename(tree / "outputs/A.txt")
    elif change == "rename_dir":
        (tree / "outputs/sub").rename(tree / "outputs/sub2")
    elif change == "add_empty_file":
        (tree / "outputs/new").write_bytes(b"")
    elif change == "add_empty_dir":
        (tree / "outputs/newdir").mkdir()
    elif change == "remove_empty_dir":
        (tree / "outputs/empty").rmdir()
    elif change == "exec_bit":
        (tree / "outputs/a.txt").chmod(0o755)
    elif change == "file_to_dir":
        (tree / "outputs/sub/deeper/c").unlink()
        (tree / "outputs/sub/deeper/c").mkdir()
    elif change == "move_between_dirs":
        (tree / "outputs/sub/deeper/c").rename(tree / "outputs/sub/c")
    assert hash_tree(tree) != before


def test_contents_cannot_shift_between_files(tmp_path: Path) -> None:
    """Length prefixes: moving a byte from one file to the next is a different tree."""
    one = build(tmp_path / "1", {"a": b"xy", "b": b"z"})
    two = build(tmp_path / "2", {"a": b"x", "b": b"yz"})
    names = build(tmp_path / "3", {"ab": b"", "a/b": None})
    names2 = build(tmp_path / "4", {"a/b": b""})
    assert hash_tree(one) != hash_tree(two)
    assert hash_tree(names) != hash_tree(names2)


def test_root_name_and_location_do_not_matter(tmp_path: Path) -> None:
    assert hash_tree(build(tmp_path / "x" / "results", TREE)) == hash_tree(
        build(tmp_path / "elsewhere", TREE)
    )


def test_empty_folder_has_a_fixed_hash(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "e").mkdir()
    assert hash_tree(tmp_path / "e") == hashlib.sha256(HEADER).digest()


def test_non_utf8_names_are_hashed_as_bytes(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    raw = b"caf\xe9"  # latin-1, not UTF-8
    with open(os.path.join(os.fsencode(root), raw), "wb") as f:
        f.write(b"x")
    entries = manifest(root)
    assert os.fsencode(entries[0].path) == raw
    assert raw in entries[0].record()


def test_symlinks_are_refused(tree: Path) -> None:
    (tree / "outputs/link").symlink_to("/etc/passwd")
    with pytest.raises(VerificationError, match="symlink at 'outputs/link'"):
        hash_tree(tree)


def test_symlink_to_a_directory_is_refused_not_followed(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tree / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(VerificationError, match="symlink at 'escape'"):
        hash_tree(tree)


def test_root_that_is_a_symlink_or_file_is_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tree, target_is_directory=True)
    with pytest.raises(VerificationError, match="is a symlink"):
        hash_tree(tmp_path / "link")
    with pytest.raises(VerificationError, match="not a directory"):
        hash_tree(tree / "stdout")
    with pytest.raises(VerificationError, match="cannot be read"):
        hash_tree(tmp_path / "missing")


def test_fifo_is_refused(tree: Path) -> None:
    os.mkfifo(tree / "outputs/pipe")
    with pytest.raises(VerificationError, match="special file \\(FIFO\\) at 'outputs/pipe'"):
        hash_tree(tree)


def test_socket_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    path = root / "s"
    cwd = os.getcwd()
    os.chdir(root)  # AF_UNIX paths are short; bind relative to the folder
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind("s")
            with pytest.raises(VerificationError, match="socket"):
                hash_tree(root)
    finally:
        os.chdir(cwd)
        path.unlink(missing_ok=True)


def test_unreadable_file_is_refused_with_its_name(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def deny(path: object, flags: int, *args: object) -> int:
        if str(path).endswith("stdout"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(VerificationError, match="cannot read results file 'stdout'"):
        hash_tree(tree)


names = st.text(alphabet="abcXYZ019._- ", min_size=1, max_size=6).filter(
    lambda n: n not in (".", "..")
)
trees = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map("/".join),
    st.binary(max_size=64),
    max_size=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees, seed=st.integers(0, 2**32))
def test_property_creation_order_never_matters(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, bytes], seed: int
) -> None:
    # drop paths that are a prefix directory of another path (cannot be both file and dir)
    paths = sorted(tree)
    tree = {p: v for p, v in tree.items() if not any(q.startswith(p + "/") for q in paths)}
    base = tmp_path_factory.mktemp("prop")
    order = list(tree)
    random.Random(seed).shuffle(order)
    a = build(base / "a", dict(tree))
    b = build(base / "b", dict(tree), order)
    assert hash_tree(a) == hash_tree(b)
    if tree:
        victim = sorted(tree)[seed % len(tree)]
        (b / victim).write_bytes(tree[victim] + b"!")
        assert hash_tree(a) != hash_tree(b)
