"""Harness servers retry on a port collision with a fresh port (never "address already in use").

Each collision is made on purpose: a socket of this test holds the port the harness is about
to be given, and the harness must notice and start again on another one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import bacalhau.testing.nats as nats_harness
from bacalhau.testing.nats import require_nats_server, start_cluster, start_server
from bacalhau.testing.ports import (
    PortClash,
    ephemeral_range,
    free_port,
    is_port_clash,
    with_fresh_ports,
)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port that this test holds (listening) for its whole duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_free_port_binds_and_avoids_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_ephemeral_range_reads_the_kernel_file_or_falls_back(tmp_path: Path) -> None:
    good = tmp_path / "range"
    good.write_text("40000\t50000\n")
    assert ephemeral_range(good) == (40000, 50000)
    bad = tmp_path / "bad"
    bad.write_text("not numbers")
    assert ephemeral_range(bad) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_clash_words() -> None:
    nats = "[FTL] Error listening on port: 127.0.0.1:4222, listen tcp: bind: address already in use"
    assert is_port_clash(nats)
    assert is_port_clash("Error: Address already in use")  # bacalhau serve
    assert is_port_clash("OSError: [Errno 98] EADDRINUSE")
    assert not is_port_clash("connection refused")


def test_with_fresh_ports_retries_a_bounded_number_of_times() -> None:
    calls: list[int] = []

    def start() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise PortClash("taken")
        return "up"

    assert with_fresh_ports(start) == "up"
    assert calls == [0, 1, 2]

    def always() -> str:
        calls.append(len(calls))
        raise PortClash("taken")

    calls.clear()
    with pytest.raises(PortClash):
        with_fresh_ports(always, attempts=4)
    assert len(calls) == 4

    def broken() -> str:
        raise RuntimeError("not a clash")

    with pytest.raises(RuntimeError, match="not a clash"):
        with_fresh_ports(broken)


def _give_first(monkeypatch: pytest.MonkeyPatch, port: int) -> list[int]:
    """The harness's next free_port() returns ``port`` (held); later calls are real."""
    given: list[int] = []

    def fake() -> int:
        chosen = port if not given else free_port()
        given.append(chosen)
        return chosen

    monkeypatch.setattr(nats_harness, "free_port", fake)
    return given


@pytest.mark.nats
def test_nats_server_moves_off_a_taken_port(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_nats_server()
    given = _give_first(monkeypatch, held_port)
    server = start_server(tmp_path / "nats")
    try:
        assert given[0] == held_port, "the harness was handed the taken port first"
        assert server.port != held_port
        assert server.get("/healthz").get("status") == "ok"
        assert "address already in use" in server.log_path.read_text()
        port = server.port
        server.kill()
        server.start()  # a restart keeps the port its clients know
        assert server.port == port
        assert server.get("/healthz").get("status") == "ok"
    finally:
        server.stop()


@pytest.mark.nats
def test_nats_server_with_a_fixed_taken_port_says_so(tmp_path: Path, held_port: int) -> None:
    require_nats_server()
    with pytest.raises(PortClash, match="port was taken"):
        start_server(tmp_path / "nats", port=held_port)


@pytest.mark.nats
def test_nats_cluster_starts_again_on_fresh_ports(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_nats_server()
    given = _give_first(monkeypatch, held_port)  # the first route port is taken
    cluster = start_cluster(2, tmp_path / "cluster")
    try:
        assert given[0] == held_port
        assert held_port not in [s.cluster_port for s in cluster.servers]
        assert all(s.get("/routez").get("num_routes") == 1 for s in cluster.servers)
        assert [s.directory.name for s in cluster.servers] == ["n1-retry1", "n2-retry1"]
    finally:
        cluster.stop()
