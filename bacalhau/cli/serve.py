"""``bacalhau serve``: run one node in this process until SIGINT or SIGTERM.

The node joins a network over the TCP gossip transport (peers found by mDNS on
the LAN and by ``--peer HOST:PORT``) or, with ``--transport nats``, through a
NATS cluster; it serves the JSON API on ``--api-host:--api-port`` and keeps its
keys, blocks and executions in ``--data-dir``. Once up it prints its node id
and addresses, one per line::

    Node id: 12D3KooW...
    Roles: requester, compute
    Gossip: 0.0.0.0:1235 (mDNS on)
    API: http://127.0.0.1:1234
    export BACALHAU_API=127.0.0.1:1234
    Ready.

Secrets belong in a file or the environment, not on the command line (where
other users of the machine can read them in ``ps``): ``--token-file`` /
``BACALHAU_API_TOKEN`` and ``--secret-file`` / ``BACALHAU_NETWORK_SECRET``.
``--token`` and ``--secret`` still work, with a warning.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from ..errors import ValidationError
from ..transport.discovery import parse_peer_address

__all__ = [
    "add_serve_parser",
    "build_node",
    "build_transport",
    "limits_from_args",
    "read_secret",
    "serve",
]

log = logging.getLogger("bacalhau.serve")

DEFAULT_GOSSIP_PORT = 1235
ROLES = ("requester", "compute")


def _roles(text: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = roles - set(ROLES)
    if not roles or unknown:
        raise argparse.ArgumentTypeError(
            f"node type must be requester, compute or requester,compute (got {text!r})"
        )
    return roles


def _peer(text: str) -> tuple[str, int]:
    try:
        return parse_peer_address(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the top-level subparsers; return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run a node (requester and compute) until Ctrl-C",
        description="Run a bacalhau node: it joins the network, bids on and runs jobs, and "
        "serves the JSON API. Stops cleanly on SIGINT or SIGTERM.",
    )
    p.add_argument(
        "--node-type",
        type=_roles,
        default=frozenset(ROLES),
        metavar="ROLES",
        help="requester, compute, or requester,compute (default: both)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="node key, blocks and executions (default $BACALHAU_DIR or ~/.bacalhau)",
    )
    api = p.add_argument_group("API", "the JSON API that clients and the CLI talk to")
    api.add_argument("--api-host", default="127.0.0.1", help="default 127.0.0.1")
    api.add_argument("--api-port", type=int, default=1234, help="default 1234 (0: any free port)")
    api.add_argument(
        "--api-token",
        "--token",
        dest="serve_api_token",
        default=None,
        metavar="TOKEN",
        help="require this bearer token on the API (needed when --api-host is beyond "
        "loopback); visible in ps: prefer --token-file or $BACALHAU_API_TOKEN",
    )
    api.add_argument(
        "--token-file",
        dest="serve_api_token_file",
        default=None,
        metavar="FILE",
        help="read the API token from FILE (its first line)",
    )
    net = p.add_argument_group("network", "how this node reaches the others")
    net.add_argument(
        "--transport",
        choices=("gossip", "nats"),
        default="gossip",
        help="gossip: TCP mesh with mDNS (default); nats: through NATS servers",
    )
    net.add_argument(
        "--host", default="0.0.0.0", help="gossip listen address (default 0.0.0.0: all)"
    )
    net.add_argument(
        "--port",
        type=int,
        default=DEFAULT_GOSSIP_PORT,
        help=f"gossip listen port (default {DEFAULT_GOSSIP_PORT}; 0: any free port)",
    )
    net.add_argument(
        "--peer",
        dest="peers",
        action="append",
        type=_peer,
        default=[],
        metavar="HOST:PORT",
        help="a node to connect to (repeatable); the others are learned from it",
    )
    net.add_argument(
        "--secret",
        default=None,
        metavar="SECRET",
        help="network secret: only nodes with the same one can connect; visible in ps: "
        "prefer --secret-file or $BACALHAU_NETWORK_SECRET; make one with `bacalhau secret new`",
    )
    net.add_argument(
        "--secret-file",
        default=None,
        metavar="FILE",
        help="read the network secret from FILE (its first line)",
    )
    net.add_argument(
        "--network-name",
        default=os.environ.get("BACALHAU_NETWORK_NAME", "bacalhau"),
        metavar="NAME",
        help="the network's name: salts a passphrase secret (or $BACALHAU_NETWORK_NAME)",
    )
    net.add_argument(
        "--mdns",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find nodes on the LAN by mDNS (default: on)",
    )
    net.add_argument(
        "--mdns-interface",
        dest="mdns_interfaces",
        action="append",
        default=None,
        metavar="IF",
        help="an interface (address or name) mDNS uses (repeatable; default: all)",
    )
    net.add_argument(
        "--advertise",
        default=None,
        metavar="HOST",
        help="the address other nodes should dial (default: the one they see)",
    )
    compute = p.add_argument_group("compute", "what this node offers")
    compute.add_argument(
        "--max-executions", type=int, default=None, help="jobs run at once (default 4)"
    )
    compute.add_argument(
        "--data-locality",
        "--job-selection-data-locality",
        dest="data_locality",
        choices=("anywhere", "local", "nearby"),
        default="anywhere",
        help="local: bid only on jobs whose inputs are in this node's block store;"
        " nearby: or that a peer announced it holds (a live provider record)",
    )
    compute.add_argument(
        "--queue-size",
        type=int,
        default=None,
        help="accepted jobs that may wait for capacity (default 64)",
    )
    compute.add_argument(
        "--cpu",
        type=float,
        default=None,
        metavar="CORES",
        help="CPU offered to jobs (default: this machine's cores)",
    )
    compute.add_argument(
        "--memory",
        default=None,
        metavar="SIZE",
        help="memory offered to jobs, e.g. 8Gi (default: this machine's)",
    )
    compute.add_argument(
        "--disk", default=None, metavar="SIZE", help="disk offered to jobs (default: unlimited)"
    )
    compute.add_argument(
        "--gpu",
        type=int,
        default=None,
        help="GPUs offered (default: the NVIDIA GPUs nvidia-smi lists, else 0)",
    )
    compute.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="K=V,...",
        help="labels job selectors match, e.g. region=eu,tier=2 (repeatable)",
    )
    compute.add_argument(
        "--job-selection-probe-http",
        default=None,
        metavar="URL",
        help='POST each job here; {"shouldBid": bool} decides',
    )
    compute.add_argument(
        "--job-selection-probe-exec",
        default=None,
        metavar="CMD",
        help="run CMD with the job as JSON on stdin; exit 0 means bid",
    )
    compute.add_argument(
        "--job-selection-probe-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a probe slower than this means no bid",
    )
    compute.add_argument(
        "--job-selection-local-images-only",
        action="store_true",
        help="bid on docker jobs only when the image is already here",
    )
    _add_limit_options(p)
    requester = p.add_argument_group("requester", "how this node hands out its jobs")
    requester.add_argument(
        "--bid-acceptance-probe-http",
        default=None,
        metavar="URL",
        help='POST each bid here; {"shouldBid": bool} decides',
    )
    requester.add_argument(
        "--bid-acceptance-probe-exec",
        default=None,
        metavar="CMD",
        help="run CMD with the bid as JSON on stdin; exit 0 accepts",
    )
    requester.add_argument(
        "--job-retention",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="finished jobs' records are removed this many days after they ended; asking "
        "for one then answers 'expired on ...' (default 30; 0 keeps them forever)",
    )
    disk = p.add_argument_group("disk", "how much disk the node keeps, and for how long")
    disk.add_argument(
        "--disk-budget",
        default="10GiB",
        metavar="SIZE",
        help="the block store's size (e.g. 10GiB, 500MB); above it, blocks no pin holds "
        "(cached inputs and fetched data, results whose pin expired) are removed least "
        "recently used first (default 10GiB; 0 for no budget)",
    )
    disk.add_argument(
        "--pin-retention",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="results this node publishes stay pinned this many days, then count as cached "
        "blocks (default 30; 0 pins them until 'data unpin')",
    )
    disk.add_argument(
        "--execution-retention",
        type=float,
        default=1.0,
        metavar="HOURS",
        help="execution folders that no execution uses any more (left by a failed clean-up "
        "or a lost execution) are removed this many hours after their last change "
        "(default 1); folders normally go as soon as their job ends",
    )
    net.add_argument(
        "--max-message-age",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="messages sent longer ago than this are refused as replays (node clocks must "
        "agree within it); message ids and ended jobs' compute records are kept this long, "
        "so memory and state.db level off after it (default 600)",
    )
    p.add_argument(
        "--bid-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long bids are collected (default 10)",
    )
    requester.add_argument(
        "--selection",
        choices=("random", "reputation", "broadcast"),
        default="random",
        help="how bidders are chosen (default random); broadcast: offer every job to "
        "every node and choose at random (the original protocol) instead of asking only "
        "the best-ranked known nodes",
    )
    from .nats import add_nats_options  # the options exist with or without the nats extra

    add_nats_options(p)
    return p


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    limits = p.add_argument_group(
        "job limits", "what one job may reach and use on this node (see docs/security.md)"
    )
    limits.add_argument(
        "--allow-url-network",
        dest="allow_url_networks",
        action="append",
        default=[],
        metavar="CIDR",
        help="let URL inputs reach this non-public network, e.g. 10.1.0.0/16 (repeatable; "
        "loopback, link-local, private and multicast addresses are refused otherwise)",
    )
    limits.add_argument(
        "--allow-url-domain",
        dest="allow_url_domains",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="let URL inputs reach this host and its subdomains whatever they resolve to "
        "(repeatable)",
    )
    limits.add_argument("--max-url-size", default=None, metavar="SIZE", help="default 1Gi")
    limits.add_argument(
        "--max-dag-entries",
        type=int,
        default=None,
        help="entries one DAG may expand to (default 100000)",
    )
    limits.add_argument(
        "--max-dag-depth", type=int, default=None, help="folder/file DAG depth (default 128)"
    )
    limits.add_argument(
        "--max-dag-size",
        default=None,
        metavar="SIZE",
        help="bytes one DAG may expand to (default 64Gi)",
    )
    limits.add_argument(
        "--max-hamt-fanout", type=int, default=None, help="largest HAMT fan-out (default 1024)"
    )
    limits.add_argument("--wasm-max-module-size", default=None, metavar="SIZE", help="default 64Mi")
    limits.add_argument(
        "--docker-user",
        default=None,
        metavar="UID[:GID]",
        help="containers run as this user (default: the node's own; nobody when root)",
    )
    limits.add_argument(
        "--docker-pids-limit", type=int, default=None, help="processes per container (default 1024)"
    )
    limits.add_argument(
        "--default-job-disk",
        default=None,
        metavar="SIZE",
        help="disk a job may fill when it asks for none (default 4Gi)",
    )


def limits_from_args(args: argparse.Namespace) -> Any:
    """The JobLimits the ``job limits`` options describe.

    Raises:
        ValidationError: naming the option at fault.
    """
    from ..limits import DagLimits, JobLimits
    from ..models import parse_size

    def size(flag: str, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value)
        except (ValidationError, ValueError) as exc:
            raise ValidationError(f"{flag}: {exc}") from None

    dag: dict[str, Any] = {}
    for key, value in (
        ("max_entries", args.max_dag_entries),
        ("max_depth", args.max_dag_depth),
        ("max_size", size("--max-dag-size", args.max_dag_size)),
        ("max_fanout", args.max_hamt_fanout),
    ):
        if value is not None:
            dag[key] = value
    options: dict[str, Any] = {
        "url_allow_networks": tuple(args.allow_url_networks),
        "url_allow_domains": tuple(args.allow_url_domains),
        "dag": DagLimits(**dag),
        "docker_user": args.docker_user,
    }
    for key, value in (
        ("url_max_size", size("--max-url-size", args.max_url_size)),
        ("wasm_max_module_bytes", size("--wasm-max-module-size", args.wasm_max_module_size)),
        ("docker_pids_limit", args.docker_pids_limit),
        ("default_disk", size("--default-job-disk", args.default_job_disk)),
    ):
        if value is not None:
            options[key] = value
    if args.docker_user is not None:
        from ..executor.docker import container_user

        try:
            container_user(args.docker_user)
        except Exception as exc:
            raise ValidationError(f"--docker-user: {exc}") from None
    return JobLimits(**options)


def read_secret(
    args: argparse.Namespace, *, flag: str, value: str | None, file: str | None, env: str
) -> str | None:
    """A secret from ``--X-file`` (first line), the command line (with a warning), or ``env``.

    Raises:
        ValidationError: the file cannot be read or is empty.
    """
    if file is not None:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.readline().strip()
        except OSError as exc:
            raise ValidationError(f"{flag}-file: cannot read {file}: {exc.strerror}") from None
        if not text:
            raise ValidationError(f"{flag}-file: {file} is empty")
        return text
    if value:
        print(
            f"warning: {flag} on the command line is visible to every user of this machine "
            f"(ps); use {flag}-file or ${env} instead",
            file=sys.stderr,
        )
        return value
    return os.environ.get(env) or None


def build_transport(args: argparse.Namespace, identity: Any) -> Any:
    """The transport the parsed options ask for."""
    secret = read_secret(
        args,
        flag="--secret",
        value=args.secret,
        file=getattr(args, "secret_file", None),
        env="BACALHAU_NETWORK_SECRET",
    )
    if args.transport == "nats":
        from .nats import nats_transport_from_args

        return nats_transport_from_args(args, identity, secret=secret)
    from ..transport.gossip import GossipTransport

    return GossipTransport(
        identity,
        host=args.host,
        port=args.port,
        peers=list(args.peers),
        secret=secret,
        network=args.network_name,
        mdns=args.mdns,
        mdns_interfaces=args.mdns_interfaces,
        advertise_host=args.advertise,
    )


def build_node(args: argparse.Namespace) -> Any:
    """The Node the parsed options describe (not started)."""
    from ..compute.capacity import ComputeConfig
    from ..identity import Identity
    from ..node.node import Node
    from ..protocol.requester import RequesterConfig

    data_dir = Path(args.data_dir) if args.data_dir else _default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = Identity.load_or_create(data_dir / "node.key")
    compute: ComputeConfig | None = None
    if "compute" in args.node_type:
        compute = compute_config_from_args(args)
    requester: RequesterConfig | None = None
    if "requester" in args.node_type:
        r_options: dict[str, Any] = {
            "acceptance_probe_http": args.bid_acceptance_probe_http,
            "acceptance_probe_exec": args.bid_acceptance_probe_exec,
            "selection": "random" if args.selection == "broadcast" else args.selection,
            "offers": "broadcast" if args.selection == "broadcast" else "targeted",
        }
        if args.bid_timeout is not None:
            if args.bid_timeout <= 0:
                raise ValidationError("--bid-timeout must be positive")
            r_options["bid_timeout"] = args.bid_timeout
        requester = RequesterConfig(**r_options)
    if args.job_retention < 0:
        raise ValidationError("--job-retention must be 0 (keep forever) or a number of days")
    disk = disk_retention_from_args(args)
    if not 0 < args.max_message_age < math.inf:
        raise ValidationError("--max-message-age must be a positive number of seconds")
    return Node(
        transport=build_transport(args, identity),
        identity=identity,
        data_dir=data_dir,
        requester=requester,
        compute=compute,
        job_retention=args.job_retention * 86400 if args.job_retention else None,
        disk=disk,
        max_message_age=args.max_message_age,
    )


def disk_retention_from_args(args: argparse.Namespace) -> Any:
    """The DiskRetention the ``disk`` options describe."""
    from ..models import parse_size
    from ..node.retention import DiskRetention

    try:
        budget = parse_size(args.disk_budget)
    except ValidationError as exc:
        raise ValidationError(f"--disk-budget: {exc}", field="--disk-budget") from None
    if args.pin_retention < 0:
        raise ValidationError("--pin-retention must be 0 (pin forever) or a number of days")
    if args.execution_retention < 0:
        raise ValidationError("--execution-retention must be a number of hours, 0 or more")
    return DiskRetention(
        block_budget=budget or None,
        pin_retention=args.pin_retention * 86400 if args.pin_retention else None,
        execution_retention=args.execution_retention * 3600,
    )


def compute_config_from_args(args: argparse.Namespace) -> Any:
    """The ComputeConfig the ``compute`` options describe; machine defaults otherwise."""
    import attrs

    from ..compute.capacity import ComputeConfig, detect_gpus, machine_resources
    from ..models import parse_size
    from ..selectors import parse_labels

    machine = machine_resources()
    gpus = detect_gpus() if args.gpu is None else ()
    capacity = attrs.evolve(
        machine,
        cpu=machine.cpu if args.cpu is None else args.cpu,
        memory=machine.memory if args.memory is None else parse_size(args.memory),
        disk=0 if args.disk is None else parse_size(args.disk),
        gpu=len(gpus) if args.gpu is None else args.gpu,
    )
    if args.gpu is not None and args.gpu < 0:
        raise ValidationError("--gpu must not be negative", field="gpu")
    options: dict[str, Any] = {
        "capacity": capacity,
        "data_locality": args.data_locality,
        "probe_http": args.job_selection_probe_http,
        "probe_exec": args.job_selection_probe_exec,
        "probe_timeout": args.job_selection_probe_timeout,
        "docker_local_images_only": args.job_selection_local_images_only,
        "limits": limits_from_args(args),
        "labels": parse_labels(args.labels),
        "gpus": gpus,
    }
    for name, least in (("max_executions", 1), ("queue_size", 0)):
        value = getattr(args, name)
        if value is not None:
            if value < least:
                raise ValidationError(f"--{name.replace('_', '-')} must be at least {least}")
            options[name] = value
    return ComputeConfig(**options)


def _default_data_dir() -> Path:
    env = os.environ.get("BACALHAU_DIR")
    return Path(env) if env else Path.home() / ".bacalhau"


async def serve(args: argparse.Namespace) -> int:
    """Run the node until SIGINT or SIGTERM; return the exit code (0 after a clean stop)."""
    from ..api.server import serve_api

    token = read_secret(
        args,
        flag="--api-token",
        value=args.serve_api_token,
        file=args.serve_api_token_file,
        env="BACALHAU_API_TOKEN",
    )
    node = build_node(args)
    out = sys.stdout
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            address = await tg.start(
                functools.partial(
                    serve_api, node, host=args.api_host, port=args.api_port, token=token
                )
            )
            roles = ", ".join(r for r in ROLES if r in args.node_type)
            print(f"Node id: {node.node_id}", file=out)
            print(f"Roles: {roles}", file=out)
            transport = node.transport
            if hasattr(transport, "address"):
                host, port = transport.address
                mdns = "on" if args.mdns else "off"
                print(f"Gossip: {host}:{port} (mDNS {mdns})", file=out)
            else:
                print(f"Transport: {args.transport}", file=out)
            print(f"API: {address.url}", file=out)
            print(f"  export BACALHAU_API={address}", file=out)
            print("Ready.", file=out, flush=True)
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
            print("Stopping...", file=out, flush=True)
            tg.cancel_scope.cancel()
    return 0
