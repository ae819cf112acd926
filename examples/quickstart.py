"""Quickstart: a 3-node network runs a WebAssembly job next to the data.

Bob holds a text file, addressed by its CID. Alice submits a word count compiled
from C to WebAssembly (examples/wasm/wordcount.c). Three nodes run it, prove to
Alice that they got the same result (the deterministic verifier: each sends a
sealed hash only she can open), and only then publish it. Carol, who ran
nothing, fetches the result by its CID.

    python examples/quickstart.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import bacalhau
from bacalhau import Deal, InputSpec, JobSpec, OutputSpec, StorageSpec

HERE = Path(__file__).parent
MODULE = HERE / "wasm" / "prebuilt" / "wordcount.wasm"
POEM = b"""\
Tudo vale a pena
Se a alma nao e pequena.
Quem quer passar alem do Bojador
Tem que passar alem da dor.
"""


async def main() -> int:
    async with bacalhau.Network.in_memory(3) as net:
        alice, bob, carol = net.nodes
        print(f"network up: {len(net.nodes)} nodes, {', '.join(n.node_id[-6:] for n in net.nodes)}")

        poem_cid = await bob.add_data(POEM)
        module_cid = await alice.add_data(MODULE)
        print(f"bob holds the poem at    {poem_cid}")
        print(f"alice holds the module at {module_cid}")

        spec = JobSpec.wasm(
            module_cid,
            args=["/inputs/poem.txt", "/outputs"],
            inputs=[InputSpec(StorageSpec.ipfs(poem_cid), "/inputs/poem.txt")],
            outputs=[OutputSpec("counts", "/outputs")],
            deal=Deal(concurrency=3, confidence=2, min_bids=3),
            verifier="deterministic",
            timeout=60,
        )
        handle = await alice.submit(spec)
        print(f"submitted {handle.job_id}")
        async for event in handle.events():
            who = f" {event.node_id[-6:]}" if event.node_id else ""
            print(f"  {event.kind:<17}{who}  {event.detail}".rstrip())
        result = await handle.wait()
        if not result.ok:
            print(f"job {result.state.value}: {result.reason}", file=sys.stderr)
            return 1

        print(f"\n{len(result.accepted)} nodes agreed; results published at {result.cid}")
        print(f"stdout: {result.accepted[0].stdout.strip()}")
        counts = await carol.cat(f"{result.cid}/counts/counts.txt")
        print(f"carol fetched counts/counts.txt by CID:\n  {counts.decode().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
