"""Command-line options of the NATS transport (``bacalhau serve --transport nats ...``).

``bacalhau serve`` calls :func:`add_nats_options` on its parser and, when
``--transport nats`` is chosen, :func:`nats_transport_from_args` to build the
transport. Secrets can come from the environment instead of the command line
(where other users of the machine could read them in ``ps``):
``BACALHAU_NATS_TOKEN``, ``BACALHAU_NATS_PASSWORD``, ``BACALHAU_NATS_NKEY_SEED``;
and the servers from ``BACALHAU_NATS_URL`` (comma-separated).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..identity import Identity

if TYPE_CHECKING:
    from ..transport.nats import NatsOptions, NatsTransport

NATS_EXTRA_HINT = "pip install 'bacalhau-py[nats]'"


def _nats_transport_module() -> Any:
    """``bacalhau.transport.nats``, or a clear error naming the extra it needs."""
    try:
        from ..transport import nats
    except ImportError as exc:
        raise ValidationError(
            f"the NATS transport needs the 'nats' extra ({exc.name or 'nats-py'} is not "
            f"installed): {NATS_EXTRA_HINT}",
            field="--transport",
        ) from None
    return nats


__all__ = ["add_nats_options", "nats_options_from_args", "nats_transport_from_args"]

DEFAULT_URL = "nats://127.0.0.1:4222"


def add_nats_options(parser: argparse.ArgumentParser | Any) -> Any:
    """Add the ``--nats-*`` options (as one argument group) to ``parser``; return the group."""
    group = parser.add_argument_group(
        "NATS transport", "used with --transport nats: the nodes talk through a NATS cluster"
    )
    group.add_argument(
        "--nats-url",
        action="append",
        default=None,
        metavar="URL",
        help="a NATS server (nats://HOST:PORT or tls://...); repeat for a cluster, the first "
        f"is this node's home server (default: $BACALHAU_NATS_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--nats-subject",
        default="bacalhau.default",
        metavar="SUBJECT",
        help="the network's broadcast subject (default: %(default)s)",
    )
    group.add_argument(
        "--nats-token",
        default=None,
        metavar="TOKEN",
        help="authentication token (or $BACALHAU_NATS_TOKEN)",
    )
    group.add_argument("--nats-user", default=None, metavar="USER")
    group.add_argument(
        "--nats-password",
        default=None,
        metavar="PASSWORD",
        help="password of --nats-user (or $BACALHAU_NATS_PASSWORD)",
    )
    group.add_argument(
        "--nats-nkey-seed",
        default=None,
        metavar="SEED_OR_FILE",
        help="an nkey seed (SU...) or a file holding one (or $BACALHAU_NATS_NKEY_SEED)",
    )
    group.add_argument(
        "--nats-creds", default=None, metavar="FILE", help="a .creds file (user JWT and nkey seed)"
    )
    group.add_argument(
        "--nats-tls-ca", default=None, metavar="FILE", help="CA bundle to verify the servers with"
    )
    group.add_argument(
        "--nats-tls-cert",
        default=None,
        metavar="FILE",
        help="client certificate (for servers that verify clients)",
    )
    group.add_argument(
        "--nats-tls-key", default=None, metavar="FILE", help="key of --nats-tls-cert"
    )
    group.add_argument(
        "--nats-jetstream",
        action="store_true",
        help="also keep events in a JetStream stream, so a node that was away "
        "catches up (needs JetStream on the servers)",
    )
    group.add_argument(
        "--nats-jetstream-replicas",
        type=int,
        default=1,
        metavar="N",
        help="replicas of the stream in a JetStream cluster (default: 1)",
    )
    group.add_argument(
        "--nats-buffer",
        type=int,
        default=1024,
        metavar="EVENTS",
        help="outgoing events held while disconnected (default: %(default)s)",
    )
    return group


def nats_options_from_args(args: argparse.Namespace) -> NatsOptions:
    """The :class:`NatsOptions` the parsed ``--nats-*`` options describe.

    Raises:
        ValidationError: a file named does not exist, or the options contradict each other.
    """
    env = os.environ
    urls = args.nats_url or [env.get("BACALHAU_NATS_URL") or DEFAULT_URL]
    for name in ("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key"):
        path = getattr(args, name, None)
        if path is not None and not Path(path).is_file():
            flag = "--" + name.replace("_", "-")
            raise ValidationError(f"{flag}: no file at {path}", field=flag)
    nats = _nats_transport_module()
    return nats.NatsOptions(  # type: ignore[no-any-return]
        servers=nats.parse_servers(urls),
        subject=args.nats_subject,
        token=args.nats_token or env.get("BACALHAU_NATS_TOKEN") or None,
        user=args.nats_user,
        password=args.nats_password or env.get("BACALHAU_NATS_PASSWORD") or None,
        nkey_seed=args.nats_nkey_seed or env.get("BACALHAU_NATS_NKEY_SEED") or None,
        creds=args.nats_creds,
        tls_ca=args.nats_tls_ca,
        tls_cert=args.nats_tls_cert,
        tls_key=args.nats_tls_key,
        jetstream=args.nats_jetstream,
        jetstream_replicas=args.nats_jetstream_replicas,
        buffer_frames=args.nats_buffer,
    )


def nats_transport_from_args(
    args: argparse.Namespace, identity: Identity, *, secret: bytes | str | None = None
) -> NatsTransport:
    """The NATS transport for a node started with these options.

    The network secret is ``secret`` if given, else ``args.network_secret`` or
    ``args.secret`` when the ``serve`` parser defines one of them.
    """
    if secret is None:
        secret = getattr(args, "network_secret", None) or getattr(args, "secret", None)
    if isinstance(secret, str):
        secret = secret.encode()
    options = nats_options_from_args(args)
    nats = _nats_transport_module()
    return nats.NatsTransport(identity, options, secret=secret or None)  # type: ignore[no-any-return]
