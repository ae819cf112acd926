"""Real ``nats-server`` processes on loopback ports, for tests and benchmarks.

Importable without pytest. :func:`start_server` and :func:`start_cluster` run
servers as subprocesses (each with a config file in a directory of its own) and
return handles that can kill (SIGKILL), restart and stop them. With pytest
installed the module also defines the fixtures ``nats_server``,
``nats_cluster`` and ``nats_factory``: use them with ``@pytest.mark.nats``.

Where the binary comes from: ``$BACALHAU_NATS_SERVER``, else ``nats-server`` on
``PATH``, else ``/usr/sbin/nats-server`` and ``/usr/bin/nats-server`` (Debian's
package; ``scripts/nats-server.sh`` installs it). When none is found the
fixtures skip with the reason, unless ``BACALHAU_REQUIRE_NATS=1`` is set (CI
after provisioning): then they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .ports import PortClash, free_port, is_port_clash, with_fresh_ports

__all__ = [
    "NatsCluster",
    "NatsServer",
    "find_nats_server",
    "free_port",
    "make_tls_files",
    "require_nats_server",
    "start_cluster",
    "start_server",
]

_CANDIDATES = ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server")


def find_nats_server() -> str | None:
    """Path of a ``nats-server`` binary, or None."""
    env = os.environ.get("BACALHAU_NATS_SERVER")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("nats-server")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def require_nats_server() -> str:
    """The binary's path; else skip the calling test (fail it under BACALHAU_REQUIRE_NATS=1)."""
    import pytest

    path = find_nats_server()
    if path is not None:
        return path
    reason = (
        "no nats-server binary (set BACALHAU_NATS_SERVER, or run scripts/nats-server.sh "
        "as root to install Debian's nats-server)"
    )
    if os.environ.get("BACALHAU_REQUIRE_NATS") == "1":
        pytest.fail(f"BACALHAU_REQUIRE_NATS=1 but {reason}")
    pytest.skip(reason)
    raise AssertionError("unreachable")


def _conf(value: Any) -> str:
    """Render a Python value in nats-server's config syntax (JSON-like)."""
    if isinstance(value, dict):
        return "{\n" + "\n".join(f"  {k}: {_conf(v)}" for k, v in value.items()) + "\n}"
    if isinstance(value, list):
        return "[" + ", ".join(_conf(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


@attrs.define(eq=False, kw_only=True)
class NatsServer:
    """One ``nats-server`` process bound to 127.0.0.1.

    ``config`` is extra configuration (``max_payload``, ``authorization``, ``tls``,
    ...) merged into the generated file. ``port`` and ``http_port`` 0 (the default)
    mean "a free port": chosen by :func:`~bacalhau.testing.ports.free_port`, and chosen
    afresh if the server finds it taken when it first starts. A restarted server keeps
    its ports (its clients know them).
    """

    directory: Path
    port: int = 0
    http_port: int = 0
    cluster_port: int | None = None
    routes: list[int] = attrs.Factory(list)
    name: str = "n1"
    jetstream: bool = False
    config: dict[str, Any] = attrs.Factory(dict)
    binary: str | None = None
    process: subprocess.Popen[bytes] | None = None
    _pick_port: bool = attrs.field(default=False, init=False)
    _pick_http_port: bool = attrs.field(default=False, init=False)
    _launched: bool = attrs.field(default=False, init=False)
    _log_offset: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._pick_port, self._pick_http_port = self.port == 0, self.http_port == 0
        self._choose_ports()

    def _choose_ports(self) -> None:
        if self._pick_port:
            self.port = free_port()
        if self._pick_http_port:
            self.http_port = free_port()

    @property
    def url(self) -> str:
        scheme = "tls" if "tls" in self.config else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def write_config(self) -> Path:
        conf: dict[str, Any] = {
            "server_name": self.name,
            "listen": f"127.0.0.1:{self.port}",
            "http": f"127.0.0.1:{self.http_port}",
        }
        if self.cluster_port is not None:
            conf["cluster"] = {
                "name": "bacalhau-test",
                "listen": f"127.0.0.1:{self.cluster_port}",
                "routes": [f"nats-route://127.0.0.1:{p}" for p in self.routes],
            }
        if self.jetstream:
            conf["jetstream"] = {
                "store_dir": str(self.directory / "js"),
                "max_memory_store": 256 * 1024 * 1024,
                "max_file_store": 1024 * 1024 * 1024,
            }
        conf.update(self.config)
        path = self.directory / "server.conf"
        path.write_text("\n".join(f"{k}: {_conf(v)}" for k, v in conf.items()) + "\n")
        return path

    def start(self, *, wait: float = 20.0) -> None:
        """Start the process (again) and wait until it answers its health check.

        A first start that finds a port taken starts again on fresh ports (see the class
        docstring); a restart retries its own ports a few times, then raises
        :class:`~bacalhau.testing.ports.PortClash`.
        """
        if self.process is not None and self.process.poll() is None:
            return
        if self._launched:
            for attempt in range(5):
                try:
                    self._start_once(wait)
                    return
                except PortClash:
                    if attempt == 4:
                        raise
                    time.sleep(0.5)  # bounded back-off: the port's holder may be leaving

        def fresh() -> None:
            try:
                self._start_once(wait)
            except PortClash:
                if not (self._pick_port or self._pick_http_port):
                    raise
                self._choose_ports()
                raise

        with_fresh_ports(fresh)

    def _start_once(self, wait: float) -> None:
        self.spawn()
        self.wait_healthy(wait)

    def spawn(self) -> None:
        """Start the process without waiting for it (see :meth:`wait_healthy`)."""
        binary = self.binary or find_nats_server()
        if binary is None:
            raise RuntimeError("no nats-server binary found (see scripts/nats-server.sh)")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.write_config()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._launched = True

    def check_alive(self) -> None:
        """Raise if the process has ended: :class:`PortClash` when it could not bind."""
        if self.process is not None and self.process.poll() is None:
            return
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                since_start = log.read().decode(errors="replace")
        except OSError:
            since_start = ""
        if is_port_clash(since_start):
            self.process = None
            raise PortClash(f"nats-server {self.name}: a port was taken; log:\n{since_start}")
        raise RuntimeError(f"nats-server {self.name} exited; log:\n{self.tail_log()}")

    def wait_healthy(self, wait: float = 20.0) -> None:
        """Block until the server's /healthz says ok (JetStream ready too, when on)."""
        deadline = time.monotonic() + wait
        while True:
            self.check_alive()
            if self.get("/healthz").get("status") == "ok":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nats-server {self.name} not healthy in {wait}s; log:\n{self.tail_log()}"
                )
            time.sleep(0.05)

    def get(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``/varz``, ``/routez``, ``/connz``...); {} on failure."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                data = json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def connections(self) -> int:
        """Client connections currently open on this server."""
        return int(self.get("/connz").get("num_connections", 0))

    def kill(self) -> None:
        """SIGKILL the server (a crash: no goodbye to clients or routes)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@attrs.define(eq=False)
class NatsCluster:
    """Servers joined by routes on loopback."""

    servers: list[NatsServer]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def wait_routed(self, wait: float = 20.0) -> None:
        """Block until every server has a route to every other (and JetStream is ready)."""
        deadline = time.monotonic() + wait
        want = len(self.servers) - 1
        alive = [s for s in self.servers if s.process is not None and s.process.poll() is None]
        while any(s.get("/routez").get("num_routes", 0) < len(alive) - 1 for s in alive):
            for s in alive:
                s.check_alive()  # one that could not bind a port ends the wait at once
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster routes not up in {wait}s (want {want} each)")
            time.sleep(0.05)
        for s in alive:
            s.wait_healthy(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def start_server(directory: Path | None = None, **kwargs: Any) -> NatsServer:
    """Start one server (see :class:`NatsServer` for the keyword arguments)."""
    server = NatsServer(
        directory=directory or Path(tempfile.mkdtemp(prefix="bacalhau-nats-")), **kwargs
    )
    server.start()
    return server


def start_cluster(
    n: int = 3,
    directory: Path | None = None,
    *,
    jetstream: bool = False,
    config: dict[str, Any] | None = None,
) -> NatsCluster:
    """Start ``n`` servers, each routed to all others, and wait until the mesh is up.

    When any server finds one of its ports taken, the whole cluster starts again on
    fresh ports (routes name each other's ports, so one cannot move alone).
    """
    base = directory or Path(tempfile.mkdtemp(prefix="bacalhau-nats-cluster-"))
    attempts = 0

    def attempt() -> NatsCluster:
        nonlocal attempts
        attempts += 1
        suffix = "" if attempts == 1 else f"-retry{attempts - 1}"  # no state from a failed try
        cluster_ports = [free_port() for _ in range(n)]
        servers = [
            NatsServer(
                directory=base / f"n{i + 1}{suffix}",
                name=f"n{i + 1}",
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
                jetstream=jetstream,
                config=dict(config or {}),
            )
            for i in range(n)
        ]
        cluster = NatsCluster(servers)
        try:
            for s in servers:
                s.spawn()
            cluster.wait_routed()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    return with_fresh_ports(attempt)


def make_tls_files(directory: Path) -> dict[str, str]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate.

    Returns paths: ``ca``, ``server_cert``, ``server_key``, ``client_cert``, ``client_key``
    (and ``other_ca``, a CA that signed nothing here, to test a wrong trust root).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(
        cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None, **kind: Any
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer[0] if issuer else name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if issuer is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        else:
            builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([kind["usage"]]), False)
            if "ip" in kind:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(kind["ip"]))]),
                    False,
                )
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = issue("bacalhau test CA", ca_key, None)
    write("ca", ca, ca_key)
    write("other-ca", issue("another CA", other_key, None), other_key)
    server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    signer = (ca.subject, ca_key)
    write(
        "server",
        issue(
            "127.0.0.1", server_key, signer, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1"
        ),
        server_key,
    )
    write(
        "client",
        issue("bacalhau node", client_key, signer, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        client_key,
    )
    return {
        "ca": str(directory / "ca.pem"),
        "other_ca": str(directory / "other-ca.pem"),
        "server_cert": str(directory / "server.pem"),
        "server_key": str(directory / "server-key.pem"),
        "client_cert": str(directory / "client.pem"),
        "client_key": str(directory / "client-key.pem"),
    }


@contextlib.contextmanager
def running_server(directory: Path | None = None, **kwargs: Any) -> Iterator[NatsServer]:
    """A server for the duration of a ``with`` block."""
    server = start_server(directory, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_cluster(
    n: int = 3, directory: Path | None = None, **kwargs: Any
) -> Iterator[NatsCluster]:
    """A cluster for the duration of a ``with`` block."""
    cluster = start_cluster(n, directory, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


# --- nodes in a process of their own -----------------------------------------------------------


def _digest_executor() -> Any:
    """A test executor ``digest``: prints the sha256 of its one input volume."""
    import hashlib

    import anyio.to_thread

    from ..executor.base import ExecutionContext, Executor, RunResult

    class DigestExecutor(Executor):
        name = "digest"
        storage_mode = "posix"

        async def run(self, ctx: ExecutionContext) -> RunResult:
            def work() -> None:
                path = ctx.volumes[0].host_path
                assert path is not None
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                (ctx.results_dir / "stdout").write_text(digest)

            await anyio.to_thread.run_sync(work)
            return RunResult(exit_code=0)

    return DigestExecutor()


async def _serve_nodes(args: Any) -> None:
    import signal
    import sys

    import anyio

    from ..network import Network
    from ..storage.ipfs import add_bytes
    from ..transport.nats import nats_transport_factory

    factory = nats_transport_factory(
        args.nats_url,
        subject=args.subject,
        jetstream=args.jetstream,
        heartbeat=1.0,
        reconnect_wait=0.1,
    )
    options = [{"requester": None} for _ in range(args.count)]
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with Network.custom(args.count, factory, per_node_options=options) as net:
            cid = None
            if args.digest:
                for node in net.nodes:
                    node.plugins.add(_digest_executor())
            if args.hold:
                data = await anyio.Path(args.hold).read_bytes()
                cid = await add_bytes(net.nodes[0].blockstore, data, pin=True)
            ready = {
                "nodes": [n.node_id for n in net.nodes],
                "servers": [n.transport.status()["server"] for n in net.nodes],
                "cid": cid,
                "pid": os.getpid(),
            }
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> None:
    """``python -m bacalhau.testing.nats nodes ...``: compute-only nodes on NATS in this
    process (for multi-process tests and benchmarks). Prints one JSON line when they run
    (node ids, their servers, the CID of ``--hold``), then serves until SIGTERM."""
    import argparse

    import anyio

    parser = argparse.ArgumentParser(prog="python -m bacalhau.testing.nats")
    sub = parser.add_subparsers(dest="command", required=True)
    nodes = sub.add_parser("nodes", help="run compute nodes on NATS until SIGTERM")
    nodes.add_argument("--nats-url", action="append", required=True, help="repeatable")
    nodes.add_argument("--subject", default="bacalhau.default")
    nodes.add_argument("--count", type=int, default=1)
    nodes.add_argument("--jetstream", action="store_true")
    nodes.add_argument("--digest", action="store_true", help="add the test executor 'digest'")
    nodes.add_argument("--hold", default=None, metavar="FILE", help="first node holds FILE")
    args = parser.parse_args(argv)
    anyio.run(_serve_nodes, args)


try:
    import pytest
except ImportError:  # pragma: no cover - the module works without pytest
    pass
else:

    @pytest.fixture
    def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
        """A single nats-server with JetStream on a free loopback port."""
        require_nats_server()
        with running_server(tmp_path / "nats", jetstream=True) as server:
            yield server

    @pytest.fixture
    def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
        """Three nats-servers routed together on loopback, JetStream on."""
        require_nats_server()
        with running_cluster(3, tmp_path / "nats-cluster", jetstream=True) as cluster:
            yield cluster

    @pytest.fixture
    def nats_factory(tmp_path: Path) -> Iterator[Any]:
        """A function starting servers with custom settings (all stopped at teardown)::

        server = nats_factory(config={"max_payload": 65536})
        cluster = nats_factory(n=3)
        """
        require_nats_server()
        started: list[NatsServer | NatsCluster] = []

        def make(n: int = 1, **kwargs: Any) -> Any:
            where = tmp_path / f"nats-{len(started)}"
            handle: NatsServer | NatsCluster = (
                start_server(where, **kwargs) if n == 1 else start_cluster(n, where, **kwargs)
            )
            started.append(handle)
            return handle

        try:
            yield make
        finally:
            for handle in started:
                handle.stop()


if __name__ == "__main__":
    main()
