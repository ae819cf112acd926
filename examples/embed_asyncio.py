"""Embed a bacalhau node in an existing asyncio application.

The "application" is ordinary asyncio: ``asyncio.run``, an ``asyncio.Queue`` of
documents, an ``asyncio.TaskGroup`` of a producer and a worker. The node lives
inside it: ``async with Node(...)`` starts it on the application's own event loop
(anyio runs on asyncio; no thread, no second loop), and the worker turns each
document into a WebAssembly word-count job and reads the result back by CID.
The node also serves its HTTP API on 127.0.0.1, so the ``bacalhau`` CLI or any
other program can watch the same jobs.

    python examples/embed_asyncio.py                        # a node on its own
    python examples/embed_asyncio.py --gossip               # same, listening on TCP gossip
    python examples/embed_asyncio.py --peer HOST:PORT [--secret S]
                                                            # join a network (implies --gossip)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path

import anyio

import bacalhau
from bacalhau import Identity, InputSpec, JobSpec, Node, OutputSpec, StorageSpec
from bacalhau.api.server import serve_api
from bacalhau.transport.base import Transport
from bacalhau.transport.memory import MemoryHub

WORDCOUNT = Path(__file__).parent / "wasm" / "prebuilt" / "wordcount.wasm"
DOCUMENTS = {
    "fernando.txt": "Navegar e preciso; viver nao e preciso.\n",
    "camoes.txt": "As armas e os baroes assinalados\nque da ocidental praia lusitana\n",
    "sophia.txt": "Quando eu morrer voltarei para buscar\nos instantes que nao vivi junto do mar\n",
}


def make_transport(identity: Identity, args: argparse.Namespace) -> Transport:
    """An in-process transport for a node on its own, or TCP gossip to join others."""
    if not (args.gossip or args.peer):
        return MemoryHub().transport(identity.node_id)
    from bacalhau.transport.gossip import GossipTransport

    return GossipTransport(
        identity, host="127.0.0.1", port=args.listen_port, peers=args.peer, secret=args.secret
    )


async def word_count(node: Node, module_cid: str, name: str, text: str) -> str:
    """One document -> one job; returns the module's counts line for it."""
    target = f"/inputs/{name}"
    spec = JobSpec.wasm(
        module_cid,
        args=[target, "/outputs"],
        inputs=[InputSpec(StorageSpec.inline(text), target)],
        outputs=[OutputSpec("counts", "/outputs")],
        labels=["embedded-demo"],
        timeout=60,
    )
    result = (await node.run_job(spec, timeout=120)).raise_for_state()
    return (await node.cat(f"{result.cid}/counts/counts.txt")).decode().strip()


async def producer(queue: asyncio.Queue[tuple[str, str] | None]) -> None:
    """Stands for whatever feeds the application (uploads, a message bus, ...)."""
    for name, text in DOCUMENTS.items():
        await queue.put((name, text))
        await asyncio.sleep(0.01)
    await queue.put(None)


async def worker(
    node: Node, module_cid: str, queue: asyncio.Queue[tuple[str, str] | None]
) -> dict[str, str]:
    counts: dict[str, str] = {}
    while (item := await queue.get()) is not None:
        name, text = item
        counts[name] = await word_count(node, module_cid, name, text)
        print(f"  {counts[name]}")
    return counts


async def app(args: argparse.Namespace) -> int:
    identity = Identity.generate()
    async with Node(transport=make_transport(identity, args), identity=identity) as node:
        print(f"embedded node {node.node_id}")
        if args.gossip or args.peer:
            host, port = node.transport.address  # type: ignore[attr-defined]
            print(f"  gossip on {host}:{port}; other nodes add --peer {host}:{port}")
        if args.peer:  # jobs broadcast before the first connection would reach no one else
            for _ in range(600):  # up to 30 s (the transport exposes no "connected" event)
                if node.peers():
                    break
                await anyio.sleep(0.05)
            if not node.peers():
                print(f"no peer answered at {', '.join(args.peer)} within 30 s", file=sys.stderr)
                return 1
            print(f"  connected to {len(node.peers())} peer(s)")
        async with anyio.create_task_group() as services:
            address = await services.start(functools.partial(serve_api, node, port=args.api_port))
            print(f"  API on {address.url}; try: bacalhau --api {address} list")

            module_cid = await node.add_data(WORDCOUNT)
            print("  file lines words bytes")
            queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
            async with asyncio.TaskGroup() as tg:  # the application's own structure
                tg.create_task(producer(queue))
                done = tg.create_task(worker(node, module_cid, queue))
            counts = done.result()

            async with bacalhau.Client(str(address)) as client:  # what other programs see
                listed = await client.list_jobs(label="embedded-demo")
            print(
                f"the API lists {listed.total} jobs, "
                f"{sum(j.state.value == 'completed' for j in listed.jobs)} completed"
            )
            services.cancel_scope.cancel()  # stop the API; leaving `async with` stops the node
    return 0 if len(counts) == len(DOCUMENTS) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gossip", action="store_true", help="listen on TCP gossip")
    parser.add_argument("--listen-port", type=int, default=0, help="gossip port (0: any free)")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to join (repeatable; implies --gossip)",
    )
    parser.add_argument("--secret", default=None, help="the private network's secret")
    parser.add_argument("--api-port", type=int, default=0, help="HTTP API port (0: any free)")
    return asyncio.run(app(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
