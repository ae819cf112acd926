"""Run the wordcount C program as a job on a 3-node in-process network.

    examples/wasm/build.sh && python examples/wasm/wordcount_network.py [FILE_OR_DIR]

The module and the input are added to the first node's block store; all three
nodes fetch them by CID, run the module, and the deterministic verifier (when
installed; else noop) accepts the results only if all three results folders
hash the same. Prints each node's stdout, the published CID and counts.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from bacalhau.models import Deal, InputSpec, JobSpec, OutputSpec, StorageSpec
from bacalhau.network import Network
from bacalhau.storage.ipfs import exporter
from bacalhau.storage.ipfs.importer import add_bytes, add_path

HERE = Path(__file__).resolve().parent


async def main(argv: list[str]) -> int:
    module = HERE / "build" / "wordcount.wasm"
    if not module.exists():
        print(f"{module} is missing: run examples/wasm/build.sh first", file=sys.stderr)
        return 1
    source = Path(argv[0]) if argv else HERE / "wordcount.c"
    async with Network.in_memory(3) as net:
        node = net.nodes[0]
        module_cid = await add_bytes(node.blockstore, module.read_bytes())
        input_cid = await add_path(node.blockstore, source)
        target = "/inputs" if source.is_dir() else f"/inputs/{source.name}"
        verifier = "deterministic" if "deterministic" in node.plugins.verifiers else "noop"
        spec = JobSpec.wasm(
            module_cid,
            args=[target, "/outputs"],
            inputs=[InputSpec(StorageSpec.ipfs(input_cid), target)],
            outputs=[OutputSpec("counts", "/outputs")],
            deal=Deal(concurrency=3, confidence=3 if verifier == "deterministic" else 0),
            verifier=verifier,
            publisher="ipfs",
        )
        result = await node.run_job(spec, timeout=120)
        print(f"job {result.job_id}: {result.state.value} {result.reason} (verifier {verifier})")
        for execution in result.executions:
            print(f"  {execution.node_id[:16]}  {execution.state.value:<10} {execution.stdout!r}")
        if result.cid is None:
            return 1
        print(f"results: {result.cid}")
        counts = await exporter.resolve(node.blocks, result.cid, "counts/counts.txt")
        print((await exporter.read_all(node.blocks, counts)).decode(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
