"""A Docker job whose input is a directory addressed by its CID.

Bob adds a folder of text files to his node's block store and gets its CID (the
one ``ipfs add -r`` prints). Alice submits a container job that mounts that CID
read-only at ``/inputs`` and writes a summary to the output volume ``/outputs``.
Two nodes fetch the folder from Bob block by block (every block checked against
its hash), run the container without network access, and must produce identical
results (the deterministic verifier) before either may publish. Carol fetches the
summary by the results CID.

    python examples/docker_ipfs.py [--image busybox:latest]

Needs a Docker engine at DOCKER_HOST (or the default socket) with the image, or
able to pull it. Without an engine it says so and exits with status 77 ("skipped").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

import bacalhau
from bacalhau import Deal, InputSpec, JobSpec, OutputSpec, Resources, StorageSpec
from bacalhau.executor.docker import DockerExecutor

EXIT_SKIPPED = 77
FILES = {
    "lisbon.txt": "tram 28\npasteis de nata\nfado\n",
    "porto.txt": "ribeira\nfrancesinha\n",
    "coimbra.txt": "universidade\n",
}
SCRIPT = (
    'for f in /inputs/*.txt; do echo "$(wc -l < "$f") $(basename "$f")"; done '
    "| sort -rn > /outputs/lines.txt && cat /outputs/lines.txt"
)


async def engine_answers() -> bool:
    """Whether a Docker engine answers (the nodes would not bid on docker jobs otherwise)."""
    probe = DockerExecutor()
    try:
        return await probe.is_installed()
    finally:
        await probe.close()


async def main(image: str) -> int:
    if not await engine_answers():
        print(
            "skipped: no Docker engine answers at DOCKER_HOST (or the default socket); "
            'as root, start one with: eval "$(scripts/docker-engine.sh start)"',
            file=sys.stderr,
        )
        return EXIT_SKIPPED
    async with bacalhau.Network.in_memory(3) as net:
        alice, bob, carol = net.nodes
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "cities"
            folder.mkdir()
            for name, text in FILES.items():
                (folder / name).write_text(text)
            cid = await bob.add_data(folder)  # recursive, pinned on bob's node
        print(f"bob added the folder as {cid}")

        spec = JobSpec.docker(
            image,
            ["sh", "-c", SCRIPT],
            inputs=[InputSpec(StorageSpec.ipfs(cid), "/inputs")],
            outputs=[OutputSpec("summary", "/outputs")],
            resources=Resources(cpu=0.5, memory=64 * 1024 * 1024),
            deal=Deal(concurrency=2, confidence=2),
            verifier="deterministic",
            timeout=120,
        )
        result = await alice.run_job(spec, timeout=300)
        print(f"job {result.job_id}: {result.state.value} {result.reason}".rstrip())
        for event in result.events:
            who = event.node_id[-6:] if event.node_id else ""
            print(f"  {event.kind:<17} {who}  {event.detail}".rstrip())
        if not result.ok:
            return 1
        summary = await carol.cat(f"{result.cid}/summary/lines.txt")
        print(f"results at {result.cid}; carol reads summary/lines.txt:")
        print(summary.decode(), end="")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image",
        default="busybox:latest",
        help="an image with sh, wc, sort (default busybox:latest)",
    )
    sys.exit(anyio.run(main, parser.parse_args().image))
