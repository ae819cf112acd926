"""``data cat/ls/get CID/path`` through the node's API: a path after the CID names a file or
folder inside it, for the client and the CLI alike."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bacalhau import Network
from bacalhau.api.client import Client, split_cid_path
from bacalhau.api.server import create_app
from bacalhau.errors import BlockNotFound
from bacalhau.storage.ipfs import add_path

pytestmark = pytest.mark.anyio


def test_split_cid_path() -> None:
    assert split_cid_path("Qm1", None) == ("Qm1", None)
    assert split_cid_path("Qm1/stdout", None) == ("Qm1", "stdout")
    assert split_cid_path("/ipfs/Qm1/a/b/", None) == ("Qm1", "a/b")
    assert split_cid_path("Qm1/a", "b") == ("Qm1", "a/b")


async def test_cat_ls_and_download_a_path_inside_a_cid(tmp_path: Path) -> None:
    tree = tmp_path / "results"
    (tree / "outputs" / "sub").mkdir(parents=True)
    (tree / "stdout").write_text("hello\n")
    (tree / "outputs" / "sub" / "f.txt").write_text("deep\n")
    async with Network.in_memory(1) as net:
        store = net.nodes[0].blockstore
        assert store is not None
        cid = await add_path(store, tree, pin=True)
        transport = httpx.ASGITransport(app=create_app(net.nodes[0]))
        async with Client("127.0.0.1:1234", transport=transport) as client:
            assert b"".join([p async for p in client.cat(f"{cid}/stdout")]) == b"hello\n"
            names = [e.name for e in await client.ls(f"{cid}/outputs")]
            assert names == ["sub"]
            got = await client.download(f"{cid}/outputs/sub", tmp_path / "sub")
            assert (got / "f.txt").read_text() == "deep\n"
            one = await client.download(f"/ipfs/{cid}/stdout", tmp_path / "stdout")
            assert one.read_text() == "hello\n"
            with pytest.raises(BlockNotFound, match="no such file or folder"):
                await client.download(f"{cid}/outputs/nope", tmp_path / "nope")


async def test_upload_with_a_name_says_both_cids() -> None:
    """``POST /api/v1/data?name=`` wraps the file in a folder (as ``ipfs add -w``) and says so:
    the folder's CID and the file's own, which is the CID of the same upload without a name."""
    async with Network.in_memory(1) as net:
        transport = httpx.ASGITransport(app=create_app(net.nodes[0]))
        headers = {"content-type": "application/octet-stream"}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            plain = (await c.post("/api/v1/data", content=b"poem\n", headers=headers)).json()
            named = await c.post("/api/v1/data?name=poem.txt", content=b"poem\n", headers=headers)
    assert named.status_code == 201
    body = named.json()
    assert plain["file_cid"] is None
    assert body["file_cid"] == plain["cid"]
    assert body["cid"] != plain["cid"]
