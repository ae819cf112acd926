"""The node and network commands of the ``bacalhau`` CLI: ``node`` (``list``,
``describe``), ``version`` and ``devstack``. Parsers are registered by
:func:`bacalhau.cli.jobs.add_job_parsers`.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import anyio

from ..errors import ValidationError
from .jobs import EXIT_OK, client_from_args, emit, short_node

__all__ = ["cmd_devstack", "cmd_node", "cmd_node_describe", "cmd_node_list", "cmd_version"]


def _out() -> IO[str]:
    return sys.stdout


async def cmd_node_list(ns: argparse.Namespace) -> int:
    async with client_from_args(ns) as client:
        page = await client.list_nodes()
    if ns.format != "text":
        emit(page, ns.format)
        return EXIT_OK
    rows = [("ID", "LABELS", "EXECUTORS", "FREE", "GPU", "QUEUED", "SEEN")]
    now = time.time()
    for info in page.nodes:
        cpu = f"{info.free_cpu:g}/{info.capacity.cpu:g} CPU" if info.capacity else "-"
        gpus = f"{info.free_gpu}/{info.capacity.gpu}" if info.capacity else "-"
        rows.append(
            (
                short_node(info.node_id),
                ",".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "-",
                ",".join(info.executors) if info.compute else "(requester only)",
                f"{cpu}, {info.free_slots} slots",
                gpus,
                str(info.queued),
                f"{max(0.0, now - page.last_seen.get(info.node_id, now)):.0f}s ago",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=_out())
    return EXIT_OK


async def cmd_node_describe(ns: argparse.Namespace) -> int:
    async with client_from_args(ns) as client:
        info = await client.describe_node(ns.node_id)
    emit(info, "json" if ns.format == "json" else "yaml")
    return EXIT_OK


async def cmd_node(ns: argparse.Namespace) -> int:
    if getattr(ns, "node_command", None) == "list":
        return await cmd_node_list(ns)
    if getattr(ns, "node_command", None) == "describe":
        return await cmd_node_describe(ns)
    async with client_from_args(ns) as client:
        info = await client.node_info()
    if ns.format != "text":
        emit(info, ns.format)
        return EXIT_OK
    out = _out()
    print(f"Node      {info.node_id}  (bacalhau-py {info.version})", file=out)
    print(f"Peers     {len(info.peers)}", file=out)
    for peer in info.peers:
        print(f"            {peer}", file=out)
    if info.capacity is not None:
        cap = info.capacity
        print(
            f"Capacity  {cap.cpu:g} CPU, {cap.memory / 2**30:.1f} GiB memory, "
            f"{cap.gpu} GPU; {info.running} running",
            file=out,
        )
    down = f"  (no engine answers: {', '.join(info.unavailable)})" if info.unavailable else ""
    print(f"Executors {', '.join(info.executors)}{down}", file=out)
    print(f"Storage   {', '.join(info.storage)}", file=out)
    print(f"Verifiers {', '.join(info.verifiers)}", file=out)
    print(f"Publishers {', '.join(info.publishers)}", file=out)
    return EXIT_OK


async def cmd_version(ns: argparse.Namespace) -> int:
    from .. import __version__
    from ..errors import ApiError

    server: str | None = None
    problem = ""
    if not ns.client_only:
        try:
            async with client_from_args(ns) as client:
                server = (await client.health()).version
        except ApiError as exc:
            problem = str(exc)
    if ns.format != "text":
        emit({"client": __version__, "server": server}, ns.format)
    else:
        print(f"Client: bacalhau-py {__version__}", file=_out())
        if not ns.client_only:
            print(f"Server: {'bacalhau-py ' + server if server else 'unreachable'}", file=_out())
            if problem:
                print(f"  ({problem})", file=sys.stderr)
    return EXIT_OK


# --- devstack ----------------------------------------------------------------------------


async def cmd_devstack(ns: argparse.Namespace) -> int:
    """A whole network in this process, node 0's API on ``--host:--port``, until Ctrl-C."""
    from ..api.server import serve_api
    from ..network import Network

    if ns.nodes < 1:
        raise ValidationError(f"--nodes must be at least 1, got {ns.nodes}", field="nodes")
    options: dict[str, Any] = {}
    if ns.data_dir:
        options["data_dir"] = Path(ns.data_dir)
    net = Network.in_memory(ns.nodes, seed=ns.seed, **options)
    net.check_on_exit = False  # Ctrl-C may stop executions midway; that is fine here
    out = _out()
    async with net, anyio.create_task_group() as tg:
        address = await tg.start(
            functools.partial(
                serve_api, net.nodes[0], host=ns.host, port=ns.port, token=ns.api_token_serve
            )
        )
        print(f"Devstack: {ns.nodes} node(s) in one process", file=out)
        for i, node in enumerate(net.nodes):
            info = node.info()
            down = f"; no engine answers: {', '.join(info.unavailable)}" if info.unavailable else ""
            print(f"  node {i}: {node.node_id}  [{', '.join(info.executors)}{down}]", file=out)
        print(f"API of node 0 on {address.url}", file=out)
        print(f"  export BACALHAU_API={address}", file=out)
        print("Ctrl-C stops the devstack.", file=out, flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        print("Stopping the devstack...", file=out, flush=True)
        tg.cancel_scope.cancel()
    return EXIT_OK
