"""Attacks run as real WASM jobs on a real (in-process) node; the node must keep serving.

Every test submits the attack as a job, asserts it fails with a reason a person can act
on (in the job's reason and events), then runs an honest job on the same node and
asserts it completes: a job can fail, never the node.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from bacalhau.api.server import serve_api
from bacalhau.compute.capacity import ComputeConfig
from bacalhau.errors import StorageError
from bacalhau.limits import DagLimits, JobLimits
from bacalhau.models import InputSpec, JobSpec, JobState, OutputSpec, Resources, StorageSpec
from bacalhau.network import Network
from bacalhau.node.node import Node
from bacalhau.paths import remove_tree
from bacalhau.protocol.requester import RequesterConfig
from bacalhau.storage.ipfs.blockstore import BlockStore
from bacalhau.testing import hostile

from .conftest import assert_refused, why

pytestmark = [pytest.mark.anyio, pytest.mark.wasm_c]

MiB = 1024 * 1024


def compute(**limits: object) -> ComputeConfig:
    return ComputeConfig(limits=JobLimits(**limits))  # type: ignore[arg-type]


# An attack fails for good (retries=0): the requester does not look for other bidders.
QUICK = RequesterConfig()


@pytest.fixture
async def network() -> AsyncIterator[Network]:
    config = compute(dag=DagLimits(max_entries=500), max_result_entries=100)
    async with Network.in_memory(1, compute=config, requester=QUICK) as net:
        yield net


def attack(module: bytes, *args: str, **kwargs: object) -> JobSpec:
    kwargs.setdefault("timeout", 60.0)
    kwargs.setdefault("retries", 0)
    return JobSpec.wasm(module, args=list(args), **kwargs)  # type: ignore[arg-type]


def store_of(node: Node) -> BlockStore:
    store = node.blockstore
    assert store is not None
    return store


async def still_serving(node: Node, module: bytes) -> None:
    """An honest job on ``node`` completes, with its output."""
    spec = attack(module, "wide", "/out", "3", outputs=[OutputSpec("out", "/out")])
    result = await node.run_job(spec, timeout=60)
    assert result.state is JobState.COMPLETED, why(result)


# --- inputs never lead out of the input tree ------------------------------------------------


async def test_symlink_to_root_in_an_input_is_refused(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    cid = hostile.symlink_dir(store_of(node), "/")
    spec = attack(
        attack_wasm,
        "cat",
        "/in/root/etc/passwd",
        inputs=[InputSpec(StorageSpec.ipfs(cid), "/in")],
    )
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, "root is a symbolic link", "refused in job inputs")
    assert "root:" not in why(result)
    # `get` of the same CID writes no link that points out of the output folder.
    with pytest.raises(StorageError, match="pointing outside"):
        await node.get_data(cid, Path(node.data_dir) / "got")
    await still_serving(node, attack_wasm)


async def test_absolute_paths_outside_the_preopens_are_not_readable(
    network: Network, attack_wasm: bytes
) -> None:
    node = network.nodes[0]
    key = str(Path(node.data_dir) / "node.key")
    for path in ("/etc/passwd", key, "/in/../../etc/passwd"):
        result = await node.run_job(attack(attack_wasm, "cat", path), timeout=60)
        assert result.state is JobState.COMPLETED, why(result)
        assert result.executions[0].exit_code == 1, why(result)
        assert "root:" not in why(result)


async def test_shared_folder_bomb_as_an_input(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    cid = hostile.shared_dir_bomb(store_of(node), 14)  # 16,384 files from 1 KB of blocks
    spec = attack(attack_wasm, "cat", "/in/a/a/x", inputs=[InputSpec(StorageSpec.ipfs(cid), "/in")])
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, "more than 500 entries")
    await still_serving(node, attack_wasm)


async def test_hamt_bomb_as_an_input(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    cid = hostile.hamt_bomb(store_of(node), fanout=256, levels=4)
    spec = attack(attack_wasm, "cat", "/in/x", inputs=[InputSpec(StorageSpec.ipfs(cid), "/in")])
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, "entries")
    await still_serving(node, attack_wasm)


# --- URL inputs under a destination policy ------------------------------------------------


@pytest.fixture
def redirector() -> Iterator[str]:
    """A server on 127.0.0.1 whose every answer redirects to the cloud metadata address."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/ok":
                body = b"public data\n"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path == "/slow":
                self.send_response(200)
                self.send_header("content-length", "1000000")
                self.end_headers()
                try:
                    for _ in range(600):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        threading.Event().wait(0.1)
                except OSError:
                    pass
                return
            self.send_response(302)
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def url_job(module: bytes, url: str, **kwargs: object) -> JobSpec:
    return attack(
        module,
        "cat",
        "/in/data",
        inputs=[InputSpec(StorageSpec.from_url(url), "/in/data")],
        **kwargs,
    )


async def test_url_input_to_the_nodes_own_api_is_refused(
    network: Network, attack_wasm: bytes
) -> None:
    node = network.nodes[0]
    async with anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, node, host="127.0.0.1", port=0))
        result = await node.run_job(url_job(attack_wasm, f"{address.url}/api/v1/jobs"), timeout=60)
        tg.cancel_scope.cancel()
    assert_refused(result, "127.0.0.1, a loopback address", "--allow-url-network")
    await still_serving(node, attack_wasm)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:127.0.0.1]:9/", "loopback"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://10.1.2.3/", "private"),
        ("http://[::1]:9/", "loopback"),
        ("http://2130706433:9/", "loopback"),  # 127.0.0.1 as one decimal number
        ("http://localhost:9/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.0.1/", "not globally routable"),
    ],
)
async def test_url_destination_forms(url: str, kind: str, tmp_path: Path) -> None:
    from bacalhau.storage.url import UrlStorage

    with pytest.raises(StorageError, match=kind):
        await UrlStorage().prepare(StorageSpec.from_url(url), tmp_path / "f")
    assert not os.listdir(tmp_path)


async def test_redirect_hop_to_metadata_is_refused(attack_wasm: bytes, redirector: str) -> None:
    # The first hop is allowed (the node trusts 127.0.0.1); the redirect is not.
    config = compute(url_allow_networks=("127.0.0.1/32",))
    async with Network.in_memory(1, compute=config, requester=QUICK) as net:
        node = net.nodes[0]
        ok = await node.run_job(url_job(attack_wasm, redirector + "/ok"), timeout=60)
        assert ok.state is JobState.COMPLETED, why(ok)
        result = await node.run_job(url_job(attack_wasm, redirector + "/moved"), timeout=60)
        assert_refused(result, "169.254.169.254, a link-local address")


async def test_url_download_is_bounded_by_the_job_timeout(
    attack_wasm: bytes, redirector: str
) -> None:
    config = compute(url_allow_networks=("127.0.0.1/32",))
    async with Network.in_memory(1, compute=config, requester=QUICK) as net:
        node = net.nodes[0]
        spec = url_job(attack_wasm, redirector + "/slow", timeout=1.0)
        result = await node.run_job(spec, timeout=60)
        assert_refused(result, "preparing the inputs took longer than the job's timeout")
        await still_serving(node, attack_wasm)


# --- the job's own output -----------------------------------------------------------------


async def test_deep_output_fails_the_job_not_the_node(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    # deep, then spin: the running job's watcher meets the depth (a plain "deep" may end
    # before the watcher's first look, and then the results check counts >100 entries
    # first: a refusal too, but not the one this test is about)
    spec = attack(attack_wasm, "deep-spin", "/out", "3000", outputs=[OutputSpec("out", "/out")])
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, "nest deeper than 128 levels")
    await network.wait_idle()
    assert not any((Path(node.data_dir) / "executions").iterdir())
    await still_serving(node, attack_wasm)


async def test_empty_folders_count_as_entries(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    spec = attack(attack_wasm, "wide", "/out", "101", outputs=[OutputSpec("out", "/out")])
    result = await node.run_job(spec, timeout=120)
    assert_refused(result, "more than 100 files and folders")
    await still_serving(node, attack_wasm)


async def test_disk_is_enforced_while_the_job_runs(network: Network, attack_wasm: bytes) -> None:
    node = network.nodes[0]
    spec = attack(
        attack_wasm,
        "fill",
        "/out/big",
        outputs=[OutputSpec("out", "/out")],
        resources=Resources(disk=8 * MiB),
    )
    result = await node.run_job(spec, timeout=120)
    assert_refused(result, f"more than its disk of {8 * MiB} bytes (resources.disk)")
    await still_serving(node, attack_wasm)


def _plant_deep(root: Path, depth: int) -> None:
    """``depth`` nested ``d`` folders under ``root`` (through descriptors: the path
    is longer than PATH_MAX), as a job could have left them."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


async def test_restart_with_a_deep_leftover_never_crash_loops(
    attack_wasm: bytes, tmp_path: Path
) -> None:
    async with Network.in_memory(
        1, data_dir=tmp_path, durable=True, compute=compute(), requester=QUICK
    ) as net:
        node = net.nodes[0]
        identity, data_dir = node.identity, node.data_dir
        spec = attack(attack_wasm, "deep-spin", "/out", "1", outputs=[OutputSpec("out", "/out")])
        handle = await node.submit(spec)
        folder = node.runner.folder(handle.job_id)
        with anyio.fail_after(60):
            while not await anyio.to_thread.run_sync((folder / "results" / "out" / "d").exists):
                await anyio.sleep(0.05)
        # The node dies mid-job leaving 3,000 nested folders (deeper than Python's
        # recursion limit, longer than PATH_MAX); each restart recovers the job and
        # removes them, and serves.
        try:
            for _ in range(2):
                await net.stop_node(node)
                await anyio.to_thread.run_sync(_plant_deep, folder / "results" / "out" / "x", 3000)
                node = await net.add_node(identity=identity, data_dir=data_dir)
                with anyio.fail_after(60):
                    while await anyio.to_thread.run_sync(folder.exists):
                        await anyio.sleep(0.05)
        finally:  # pytest's own clean-up of tmp_path would recurse into what is left
            await anyio.to_thread.run_sync(remove_tree, folder)
        result = await node.handle(handle.job_id).wait(timeout=60)
        assert_refused(result, "node restarted")
        await still_serving(node, attack_wasm)


# --- WASM host-side limits ----------------------------------------------------------------

TABLE_GROW = """
(module
  (memory (export "memory") 1)
  (table $t 0 funcref)
  (func (export "_start")
    (if (i32.eq (table.grow $t (ref.null func) (i32.const 100000000)) (i32.const -1))
      (then unreachable))))
"""

BIG_TABLE = (
    '(module (memory (export "memory") 1) (table 50000000 funcref) (func (export "_start")))'
)
TWO_MEMORIES = '(module (memory (export "memory") 1) (memory 1) (func (export "_start")))'
MANY_TABLES = (
    '(module (memory (export "memory") 1) '
    + " ".join(f"(table {10000} funcref)" for _ in range(8))
    + ' (func (export "_start")))'
)


@pytest.mark.parametrize(
    ("module", "said"),
    [
        (TABLE_GROW, "unreachable"),
        (BIG_TABLE, "could not be instantiated"),
        (TWO_MEMORIES, "memory count too high"),
        (MANY_TABLES, "could not be instantiated"),
    ],
    ids=["table-grow", "big-table", "two-memories", "many-tables"],
)
async def test_wasm_tables_instances_memories_are_limited(
    network: Network, attack_wasm: bytes, module: str, said: str
) -> None:
    node = network.nodes[0]
    spec = JobSpec.wasm(module, resources=Resources(memory=MiB), timeout=30, retries=0)
    result = await node.run_job(spec, timeout=60)
    assert_refused(result, said)
    await still_serving(node, attack_wasm)


def _compile_bomb() -> bytes:
    """One function with 20,000 i64 locals mixed 100,000 times: a 1 MB module whose
    compilation needs far more than 64 MiB."""

    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def section(kind: int, payload: bytes) -> bytes:
        return bytes([kind]) + leb(len(payload)) + payload

    locals_ = 20_000
    body = bytearray(leb(1) + leb(locals_) + b"\x7e")
    for i in range(100_000):
        a, b = i % locals_, (i * 7 + 3) % locals_
        body += b"\x20" + leb(a) + b"\x20" + leb(b) + b"\x7c" + b"\x21" + leb((a + 1) % locals_)
    body += b"\x0b"
    return (
        b"\0asm\x01\0\0\0"
        + section(1, leb(1) + b"\x60\x00\x00")
        + section(3, leb(1) + b"\x00")
        + section(7, leb(1) + leb(6) + b"_start\x00" + leb(0))
        + section(10, leb(1) + leb(len(body)) + bytes(body))
    )


async def test_compiling_a_hostile_module_costs_the_job_not_the_node(
    network: Network, attack_wasm: bytes
) -> None:
    node = network.nodes[0]
    cid = await node.add_data(_compile_bomb())  # 1 MB: more than a spec may carry inline
    spec = JobSpec.wasm(
        StorageSpec.ipfs(cid), resources=Resources(memory=16 * MiB), timeout=60, retries=0
    )
    result = await node.run_job(spec, timeout=120)
    assert_refused(result, "compiling the wasm module needed more than the job's memory")
    await still_serving(node, attack_wasm)


async def test_module_size_is_a_node_option(attack_wasm: bytes) -> None:
    async with Network.in_memory(
        1, compute=compute(wasm_max_module_bytes=10_000), requester=QUICK
    ) as net:
        node = net.nodes[0]
        result = await node.run_job(attack(attack_wasm, "wide", "/tmp", "1"), timeout=60)
        assert_refused(result, "accepts modules of at most 10000 bytes")
