"""Run jobs on a custom executor: the ``upper`` plugin in this folder.

Two ways to give nodes a plugin:

    python examples/plugin_executor/run_upper.py
        builds each node's registry by hand with ``Plugins.add`` (nothing to install);

    pip install ./examples/plugin_executor
    python examples/plugin_executor/run_upper.py --installed
        nodes with default plugins find ``upper`` through its ``bacalhau.executors``
        entry point, next to every built-in (wasm, docker, ipfs storage and publisher).

Either way a 3-node network runs one ``upper`` job on two nodes and prints what came back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

# Running this file puts its folder first on sys.path, so the package imports uninstalled.
from bacalhau_upper import UpperExecutor

import bacalhau
from bacalhau import Deal, EngineSpec, InputSpec, JobSpec, OutputSpec, Plugins, StorageSpec
from bacalhau.publisher.local import LocalPublisher
from bacalhau.storage.inline import InlineStorage
from bacalhau.verifier.noop import NoopVerifier

POEM = "o mar salgado,\nquanto do teu sal\nsao lagrimas de portugal!\n"


def hand_made_plugins(publish_root: Path) -> Plugins:
    """A node registry holding exactly these plugins (``plugins=`` replaces the defaults)."""
    plugins = Plugins()
    for plugin in (UpperExecutor(), InlineStorage(), NoopVerifier(),
                   LocalPublisher(publish_root)):
        plugins.add(plugin)  # each lands in the registry of its base class
    return plugins


def upper_job(publisher: str) -> JobSpec:
    return JobSpec(
        engine=EngineSpec("upper", {"prefix": "> "}),
        inputs=(InputSpec(StorageSpec.inline(POEM), "/inputs/poem.txt"),),
        outputs=(OutputSpec("upper", "/outputs"),),
        deal=Deal(concurrency=2),
        publisher=publisher,
        timeout=30,
    )


async def main(installed: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="upper-published-") as tmp:
        if installed:
            net = bacalhau.Network.in_memory(3)
        else:
            per_node = [{"plugins": hand_made_plugins(Path(tmp) / f"node{i}")} for i in range(3)]
            net = bacalhau.Network.in_memory(3, per_node_options=per_node)
        async with net:
            executors = net.nodes[0].info().executors
            print(f"node 0 executors: {', '.join(executors)}")
            if "upper" not in executors:
                print("the upper executor is not installed: pip install ./examples/plugin_executor",
                      file=sys.stderr)
                return 1
            result = await net.nodes[0].run_job(upper_job("ipfs" if installed else "local"),
                                                timeout=60)
            print(f"job {result.job_id}: {result.state.value} {result.reason}".rstrip())
            if not result.ok:
                return 1
            for execution in result.accepted:
                print(f"  {execution.node_id[-8:]}: {execution.stdout.strip()}")
            published = result.accepted[0].published
            assert published is not None
            if installed:
                text = (await net.nodes[2].cat(f"{result.cid}/upper/poem.txt")).decode()
                print(f"results at {result.cid}; upper/poem.txt:")
            else:
                text = await anyio.Path(str(published.path), "upper", "poem.txt").read_text()
                print(f"results copied to {published.path}; upper/poem.txt:")
            print(text, end="")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--installed", action="store_true",
                        help="use the installed package's entry point instead of Plugins.add")
    sys.exit(anyio.run(main, parser.parse_args().installed))
