"""``bacalhau serve`` options: parsing, and the node and transport they build."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bacalhau.cli.serve import add_serve_parser, build_node
from bacalhau.transport.gossip import GossipTransport


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bacalhau", exit_on_error=False)
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_defaults() -> None:
    ns = parse()
    assert ns.node_type == {"requester", "compute"}
    assert (ns.host, ns.port, ns.api_host, ns.api_port) == ("0.0.0.0", 1235, "127.0.0.1", 1234)
    assert ns.mdns is True
    assert ns.peers == []
    assert ns.transport == "gossip"


def test_peers_roles_and_mdns_options() -> None:
    ns = parse(
        *("--peer", "10.1.2.3:4000", "--peer", "[::1]:5000", "--node-type", "compute"),
        *("--no-mdns", "--mdns-interface", "127.0.0.1", "--secret", "s"),
    )
    assert ns.peers == [("10.1.2.3", 4000), ("::1", 5000)]
    assert ns.node_type == {"compute"}
    assert ns.mdns is False
    assert ns.mdns_interfaces == ["127.0.0.1"]
    assert ns.secret == "s"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--peer", "no-port"), "HOST:PORT"),
        (("--peer", "host:99999"), "1-65535"),
        (("--peer", "::1:5"), "[HOST]:PORT"),
        (("--node-type", "miner"), "requester, compute"),
    ],
)
def test_bad_options_are_refused_with_a_reason(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_build_node_persists_its_key_and_wires_the_gossip_transport(tmp_path: Path) -> None:
    argv = ("--data-dir", str(tmp_path), "--node-type", "compute", "--peer", "127.0.0.1:9")
    first = build_node(parse(*argv, "--secret", "correct horse battery staple", "--port", "0"))
    again = build_node(parse(*argv))
    assert first.node_id == again.node_id, "the key file in the data dir is reused"
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    assert first.requester_config is None
    assert first.compute_config is not None
    transport = first.transport
    assert isinstance(transport, GossipTransport)
    assert transport.static_peers == [("127.0.0.1", 9)]
    assert transport.network_tag != "public"
    assert isinstance(again.transport, GossipTransport)
    assert again.transport.network_tag == "public"


def test_max_executions_must_be_positive(tmp_path: Path) -> None:
    from bacalhau.errors import ValidationError

    with pytest.raises(ValidationError, match="at least 1"):
        build_node(parse("--data-dir", str(tmp_path), "--max-executions", "0"))


def test_bidding_options_reach_the_node(tmp_path: Path) -> None:
    node = build_node(
        parse(
            "--data-dir",
            str(tmp_path),
            "--job-selection-data-locality",
            "local",
            "--job-selection-probe-http",
            "http://127.0.0.1:9/bid",
            "--job-selection-probe-exec",
            "true",
            "--job-selection-probe-timeout",
            "2",
            "--job-selection-local-images-only",
            "--cpu",
            "1.5",
            "--memory",
            "1Gi",
            "--gpu",
            "1",
            "--queue-size",
            "3",
            "--max-executions",
            "2",
            "--bid-acceptance-probe-exec",
            "true",
            "--bid-timeout",
            "4",
            "--selection",
            "reputation",
        )
    )
    c = node.compute_config
    assert c is not None
    assert (c.data_locality, c.probe_http, c.probe_exec, c.probe_timeout) == (
        "local",
        "http://127.0.0.1:9/bid",
        "true",
        2.0,
    )
    assert c.docker_local_images_only
    assert (c.capacity.cpu, c.capacity.memory, c.capacity.gpu) == (1.5, 2**30, 1)
    assert (c.max_executions, c.queue_size) == (2, 3)
    r = node.requester.config
    assert (r.bid_timeout, r.selection, r.bid_review) == (4.0, "reputation", True)
    assert node.acceptance, "the acceptance probe is one of the node's bid reviewers"


def test_compute_only_and_requester_only(tmp_path: Path) -> None:
    compute_only = build_node(parse("--data-dir", str(tmp_path / "c"), "--node-type", "compute"))
    assert compute_only.requester_config is None and compute_only.compute_config is not None
    requester_only = build_node(
        parse("--data-dir", str(tmp_path / "r"), "--node-type", "requester")
    )
    assert requester_only.compute_config is None
