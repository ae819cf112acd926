"""The ``--nats-*`` command-line options build the transport they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bacalhau.cli.nats import add_nats_options, nats_options_from_args, nats_transport_from_args
from bacalhau.errors import ValidationError
from bacalhau.identity import Identity


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network-secret", default=None)
    add_nats_options(parser)
    return parser.parse_args(list(argv))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACALHAU_NATS_URL", raising=False)
    opts = nats_options_from_args(parse())
    assert opts.servers == ("nats://127.0.0.1:4222",)
    assert opts.subject == "bacalhau.default"
    assert not opts.jetstream
    assert opts.token is None


def test_every_option(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem", "u.creds")}
    for f in files.values():
        f.write_text("x")
    args = parse(
        "--nats-url", "nats://a:4222",
        "--nats-url", "b:4223,tls://c:4224",
        "--nats-subject", "bacalhau.lab",
        "--nats-token", "t0k",
        "--nats-user", "alice",
        "--nats-password", "pw",
        "--nats-nkey-seed", "SUABC",
        "--nats-creds", str(files["u.creds"]),
        "--nats-tls-ca", str(files["ca.pem"]),
        "--nats-tls-cert", str(files["cert.pem"]),
        "--nats-tls-key", str(files["key.pem"]),
        "--nats-jetstream",
        "--nats-jetstream-replicas", "3",
        "--nats-buffer", "50",
    )  # fmt: skip
    opts = nats_options_from_args(args)
    assert opts.servers == ("nats://a:4222", "nats://b:4223", "tls://c:4224")
    assert (opts.subject, opts.token, opts.user, opts.password) == (
        "bacalhau.lab",
        "t0k",
        "alice",
        "pw",
    )
    assert opts.nkey_seed == "SUABC"
    assert opts.creds == str(files["u.creds"])
    assert (opts.tls_ca, opts.tls_cert, opts.tls_key) == tuple(
        str(files[n]) for n in ("ca.pem", "cert.pem", "key.pem")
    )
    assert opts.jetstream
    assert opts.jetstream_replicas == 3
    assert opts.buffer_frames == 50
    assert opts.stream_name == "BACALHAU_BACALHAU_LAB"


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACALHAU_NATS_URL", "n1:4222,n2:4222")
    monkeypatch.setenv("BACALHAU_NATS_TOKEN", "from-env")
    monkeypatch.setenv("BACALHAU_NATS_PASSWORD", "env-pw")
    opts = nats_options_from_args(parse("--nats-user", "bob"))
    assert opts.servers == ("nats://n1:4222", "nats://n2:4222")
    assert (opts.token, opts.password) == ("from-env", "env-pw")
    assert nats_options_from_args(parse("--nats-user", "b", "--nats-token", "flag")).token == "flag"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--nats-tls-ca", "/no/such/ca.pem"], "--nats-tls-ca: no file"),
        (["--nats-creds", "/no/such.creds"], "--nats-creds: no file"),
        (["--nats-password", "pw"], "needs a user"),
        (["--nats-subject", "has space"], "not a plain NATS subject"),
        (["--nats-subject", "wild.*"], "not a plain NATS subject"),
        (["--nats-jetstream-replicas", "9"], "replicas"),
    ],
)
def test_mistakes_are_named(argv: list[str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        nats_options_from_args(parse(*argv))


def test_transport_takes_the_network_secret() -> None:
    ident = Identity.generate()
    t = nats_transport_from_args(parse("--network-secret", "correct horse battery staple"), ident)
    assert t.node_id == ident.node_id
    assert t.secret == b"correct horse battery staple"
    assert t.status()["private"] is True
    assert nats_transport_from_args(parse(), ident).secret is None
    assert (
        nats_transport_from_args(parse(), ident, secret="long enough secret").secret
        == b"long enough secret"
    )
