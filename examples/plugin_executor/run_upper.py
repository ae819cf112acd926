"""Run jobs on a custom executor: the ``upper`` plugin in this folder.

Two ways to give nodes a plugin:

    python examples/plugin_executor/run_upper.py
        each node's registry is the built-ins plus ``Plugins.add(UpperExecutor())``
        (nothing to install);

    pip install ./examples/plugin_executor
    python examples/plugin_executor/run_upper.py --installed
        nodes with default plugins find ``upper`` through its ``bacalhau.executors``
        entry point, next to every built-in (wasm, docker, ipfs storage and publisher).

Either way a 3-node network runs one ``upper`` job on two nodes and prints what came back.
"""

from __future__ import annotations

import argparse
import sys

import anyio

# Running this file puts its folder first on sys.path, so the package imports uninstalled.
from bacalhau_upper import UpperExecutor

import bacalhau
from bacalhau import Deal, EngineSpec, InputSpec, JobSpec, OutputSpec, Plugins, StorageSpec
from bacalhau.node.plugins import default_plugins
from bacalhau.node.services import NodeServices

POEM = "o mar salgado,\nquanto do teu sal\nsao lagrimas de portugal!\n"


def with_upper(services: NodeServices) -> Plugins:
    """A node's registries: every built-in (and installed plugin), plus ours.

    ``Node(plugins=...)`` takes a ``Plugins`` or, as here, a function the node calls
    with its services when it starts (built-ins need its data dir and block store).
    """
    plugins = default_plugins(services)
    plugins.add(UpperExecutor())  # lands in the registry of its base class: executors
    return plugins


def upper_job() -> JobSpec:
    return JobSpec(
        engine=EngineSpec("upper", {"prefix": "> "}),
        inputs=(InputSpec(StorageSpec.inline(POEM), "/inputs/poem.txt"),),
        outputs=(OutputSpec("upper", "/outputs"),),
        deal=Deal(concurrency=2),
        timeout=30,
    )


async def main(installed: bool) -> int:
    if installed:
        net = bacalhau.Network.in_memory(3)  # default plugins: entry points included
    else:
        net = bacalhau.Network.in_memory(3, plugins=with_upper)
    async with net:
        executors = net.nodes[0].info().executors
        print(f"node 0 executors: {', '.join(executors)}")
        if "upper" not in executors:
            print(
                "the upper executor is not installed: pip install ./examples/plugin_executor",
                file=sys.stderr,
            )
            return 1
        result = await net.nodes[0].run_job(upper_job(), timeout=60)
        print(f"job {result.job_id}: {result.state.value} {result.reason}".rstrip())
        if not result.ok:
            return 1
        for execution in result.accepted:
            print(f"  {execution.node_id[-8:]}: {execution.stdout.strip()}")
        text = (await net.nodes[2].cat(f"{result.cid}/upper/poem.txt")).decode()
        print(f"results at {result.cid}; upper/poem.txt:")
        print(text, end="")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="use the installed package's entry point instead of Plugins.add",
    )
    sys.exit(anyio.run(main, parser.parse_args().installed))
