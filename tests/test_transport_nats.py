"""The NATS transport against real nats-server processes on loopback ports.

Conformance (single server, 3-server cluster, JetStream on and off, tiny
max_payload), fail-over after SIGKILL of a server, the bounded outgoing buffer,
authentication, the network secret, hostile packets, JetStream catch-up.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import nats
import pytest

from bacalhau.errors import PeerUnreachable, TransportError
from bacalhau.identity import Identity
from bacalhau.testing.conformance import CHECKS, RecordingHandler, running, status_count
from bacalhau.testing.nats import NatsCluster, NatsServer
from bacalhau.testing.ports import free_port
from bacalhau.transport.accept import serve_sockets
from bacalhau.transport.base import Transport
from bacalhau.transport.nats import NatsOptions, NatsTransport
from bacalhau.transport.nats_frames import Kind, encode_packets, request_extra

pytestmark = [pytest.mark.anyio, pytest.mark.nats]
pytest_plugins = ["bacalhau.testing.nats"]  # nats_server, nats_cluster, nats_factory

FAST: dict[str, Any] = {"heartbeat": 1.0, "reconnect_wait": 0.1, "connect_timeout": 10.0}


async def eventually(predicate: Callable[[], object], limit: float = 10.0) -> None:
    """Wait until ``predicate()`` is true (polling: the state belongs to another object)."""
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.02)


def factory_for(
    urls: list[str], *, spread: bool = True, secret: bytes | None = None, **options: Any
) -> Callable[[int], contextlib.AbstractAsyncContextManager[list[Transport]]]:
    """A conformance factory: node i connects first to server i (mod the cluster size)."""
    subject = "bacalhau.t" + os.urandom(4).hex()

    @contextlib.asynccontextmanager
    async def make(n: int) -> AsyncIterator[list[Transport]]:
        out: list[Transport] = []
        for i in range(n):
            first = i % len(urls) if spread else 0
            servers = tuple(urls[first:] + urls[:first])
            opts = NatsOptions(servers=servers, subject=subject, **{**FAST, **options})
            out.append(NatsTransport(Identity.generate(), opts, secret=secret))
        yield out

    return make


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance_single_server(nats_server: NatsServer, check: str) -> None:
    await CHECKS[check](factory_for([nats_server.url]))


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance_cluster(nats_cluster: NatsCluster, check: str) -> None:
    await CHECKS[check](factory_for(nats_cluster.urls))


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance_jetstream(nats_server: NatsServer, check: str) -> None:
    """With JetStream every frame arrives twice (core and stream); each is handed over once."""
    await CHECKS[check](factory_for([nats_server.url], jetstream=True, jetstream_memory=True))


@pytest.mark.parametrize(
    "check", ["large_frames", "concurrent_requests", "broadcasts_from_everyone"]
)
async def test_conformance_tiny_max_payload(nats_factory: Any, check: str) -> None:
    """A server whose max_payload is 8 KiB still carries 1 MiB frames (in chunks)."""
    server = nats_factory(config={"max_payload": 8192})
    await CHECKS[check](factory_for([server.url]))


async def test_max_frame_in_chunks_of_the_servers_max_payload(nats_factory: Any) -> None:
    server = nats_factory(config={"max_payload": 65536})
    biggest = os.urandom(4 * 1024 * 1024 - 3)  # the reply adds b"re:"
    async with running(factory_for([server.url]), 2) as (ts, hs):
        assert ts[0].status()["max_payload"] == 65536
        assert await ts[0].request(ts[1].node_id, biggest, timeout=30) == b"re:" + biggest
        await ts[1].broadcast(biggest)
        await hs[0].wait_for(lambda: biggest in hs[0].heard, timeout=30)
        with pytest.raises(TransportError, match="exceeds"):
            await ts[0].broadcast(biggest + b"four")


async def test_failover_when_a_server_is_killed(nats_cluster: NatsCluster) -> None:
    """kill -9 the server node 0 uses: it fails over, keeps its subscriptions, loses nothing."""
    async with running(factory_for(nats_cluster.urls), 3) as (ts, hs):
        home = ts[0].status()["server"]
        assert home == nats_cluster.urls[0]
        nats_cluster.servers[0].kill()
        for i in range(10):  # sent while node 0 is still reconnecting: buffered, then flushed
            await ts[0].broadcast(f"during-{i}".encode())
        want = {f"during-{i}".encode() for i in range(10)}
        for h in hs[1:]:
            await h.wait_heard(want, timeout=20)
        # connected comes first; the client's reconnect callback (which counts it and wakes
        # the flush of node 0's own buffer) runs after a round trip to the new server, and
        # the frames above may reach the others before it (sent from the client's buffer)
        await eventually(
            lambda: (
                ts[0].status()["connected"]
                and ts[0].status()["reconnects"]
                and not ts[0].status()["buffered"]
            ),
            20,
        )
        status = ts[0].status()
        assert status["server"] in nats_cluster.urls[1:]
        assert status["reconnects"] == 1
        assert status["buffered"] == 0
        assert status["dropped"] == 0
        # Its subscriptions survived: it still hears broadcasts and answers requests.
        await ts[2].broadcast(b"after")
        await hs[0].wait_for(lambda: b"after" in hs[0].heard)
        assert await ts[1].request(ts[0].node_id, b"ping") == b"re:ping"
        assert await ts[0].request(ts[2].node_id, b"pong") == b"re:pong"
        assert ts[1].peers() == {ts[0].node_id, ts[2].node_id}


class CutProxy:
    """A loopback TCP proxy the test can cut (connections closed, port refused) and restore."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0  # chosen at the first start; kept when restored (the client knows it)
        self._scope: anyio.CancelScope | None = None
        self._tg: Any = None

    async def _listen(self) -> anyio.abc.Listener[anyio.abc.SocketStream]:
        if self.port:  # restoring: the same port, a few tries if someone holds it briefly
            for attempt in range(5):
                try:
                    return await anyio.create_tcp_listener(
                        local_host="127.0.0.1", local_port=self.port
                    )
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE or attempt == 4:
                        raise
                    await anyio.sleep(0.5)
        for attempt in range(8):  # first start: a fresh port on a clash
            port = free_port()
            try:
                listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 7:
                    raise
                continue
            self.port = port
            return listener
        raise AssertionError("unreachable")

    async def _serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            listener = await self._listen()
            async with listener, anyio.create_task_group() as tg:
                task_status.started()
                # not listener.serve: its sock_accept can race a cut (transport/accept.py)
                raw = [listener.extra(anyio.abc.SocketAttribute.raw_socket)]  # 127.0.0.1 only
                await serve_sockets(raw, self._pipe, tg)

    async def _pipe(self, client: Any) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.target) as server:

            async def copy(a: Any, b: Any) -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    async for chunk in a:
                        await b.send(chunk)
                tg.cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(copy, client, server)
                tg.start_soon(copy, server, client)

    async def restore(self) -> None:
        await self._tg.start(self._serve)

    def cut(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CutProxy]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self.restore()
            yield self
            tg.cancel_scope.cancel()


async def test_a_reconnect_attempt_that_fails_its_handshake_closes_its_socket(
    nats_server: NatsServer,
) -> None:
    """nats-py reuses its transport object for the next reconnect attempt without closing
    the socket of one that connected but failed the handshake; the transport closes it.
    Left open, the socket leaked until the garbage collector found it, and its
    ``ResourceWarning`` failed an unrelated test in a CI run."""
    proxy = CutProxy(nats_server.port)
    accepted: list[anyio.abc.SocketStream] = []
    closed_by_client: list[int] = []

    async def mute(stream: anyio.abc.SocketStream) -> None:
        """Accept, never say INFO, and note when the client closes its end."""
        index = len(accepted)
        accepted.append(stream)
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive()
            closed_by_client.append(index)

    async with proxy.running(), anyio.create_task_group() as tg:
        opts = NatsOptions(
            servers=(f"nats://127.0.0.1:{proxy.port}",),
            subject="bacalhau.mute" + os.urandom(4).hex(),
            **{**FAST, "connect_timeout": 2.0},
        )
        node = NatsTransport(Identity.generate(), opts)
        await tg.start(node.run, RecordingHandler(node.node_id))
        proxy.cut()
        await eventually(lambda: not node.status()["connected"])
        # the proxy's port now answers with a server that never completes a handshake
        listener = await proxy._listen()
        async with listener, anyio.create_task_group() as muted:
            raw = [listener.extra(anyio.abc.SocketAttribute.raw_socket)]
            muted.start_soon(serve_sockets, raw, mute, muted)
            # the first attempt times out and the client moves on to a second one
            await eventually(lambda: len(accepted) >= 2, limit=30)
            await eventually(lambda: 0 in closed_by_client, limit=30)
            muted.cancel_scope.cancel()
        tg.cancel_scope.cancel()


async def test_bounded_buffer_while_disconnected(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    subject = "bacalhau.buf" + os.urandom(4).hex()
    proxy = CutProxy(nats_server.port)
    opts: dict[str, Any] = {**FAST, "subject": subject}
    receiver = NatsTransport(Identity.generate(), NatsOptions(servers=(nats_server.url,), **opts))
    hr = RecordingHandler(receiver.node_id)
    async with proxy.running(), anyio.create_task_group() as tg:
        sender = NatsTransport(
            Identity.generate(),
            NatsOptions(
                servers=(f"nats://127.0.0.1:{proxy.port}",),
                buffer_frames=5,
                resend_window=0,
                **opts,
            ),
        )
        hs = RecordingHandler(sender.node_id)
        await tg.start(sender.run, hs)
        await tg.start(receiver.run, hr)
        await sender.broadcast(b"before")  # no wait for peers: a started transport is subscribed
        await hr.wait_for(lambda: b"before" in hr.heard)
        proxy.cut()
        # nats-py marks itself disconnected, then (in another task, after closing the
        # socket) calls the transport's disconnect callback, which starts the outage
        await eventually(
            lambda: (
                not sender.status()["connected"] and sender.status()["disconnected_for"] is not None
            )
        )
        for i in range(8):
            await sender.broadcast(f"held-{i}".encode())
        status = sender.status()
        assert status["connected"] is False
        assert status["buffered"] == 5
        assert status["dropped"] == 3
        assert status["disconnected_for"] is not None
        assert "lost its NATS connection" in caplog.text
        assert "buffer full" in caplog.text
        await anyio.sleep(0.2)
        assert not any(f.startswith(b"held") for f in hr.heard), "nothing leaves while cut"
        await proxy.restore()
        want = [f"held-{i}".encode() for i in range(3, 8)]
        await hr.wait_for(lambda: want[-1] in hr.heard, timeout=20)
        await sender.broadcast(b"fresh")
        await hr.wait_for(lambda: b"fresh" in hr.heard)
        assert [f for f in hr.heard if f.startswith(b"held")] == want, (
            "the oldest were dropped, order kept"
        )
        assert sender.status()["buffered"] == 0
        assert sender.status()["connected"] is True
        assert "reconnected to NATS" in caplog.text
        tg.cancel_scope.cancel()


async def test_wrong_token_is_refused(nats_factory: Any) -> None:
    server = nats_factory(config={"authorization": {"token": "right-token"}})
    good = factory_for([server.url], token="right-token")
    async with running(good, 2) as (ts, _):
        assert await ts[0].request(ts[1].node_id, b"hi") == b"re:hi"
    for token in ("wrong-token", None):
        t = NatsTransport(
            Identity.generate(), NatsOptions(servers=(server.url,), token=token, **FAST)
        )
        with anyio.fail_after(15), pytest.raises(TransportError, match=r"(?i)authorization"):
            await t.run(RecordingHandler(t.node_id))


async def test_user_password(nats_factory: Any) -> None:
    server = nats_factory(config={"authorization": {"user": "alice", "password": "pw"}})
    async with running(factory_for([server.url], user="alice", password="pw"), 2) as (ts, _):
        assert await ts[1].request(ts[0].node_id, b"hi") == b"re:hi"
    t = NatsTransport(
        Identity.generate(), NatsOptions(servers=(server.url,), user="alice", password="no", **FAST)
    )
    with anyio.fail_after(15), pytest.raises(TransportError, match=r"(?i)authorization"):
        await t.run(RecordingHandler(t.node_id))


async def test_network_secret(nats_server: NatsServer) -> None:
    """Members hear members only; a node without (or with another) secret is refused both ways."""
    subject = "bacalhau.sec" + os.urandom(4).hex()
    opts = NatsOptions(servers=(nats_server.url,), subject=subject, **FAST)
    secrets = [
        b"correct horse battery staple",
        b"correct horse battery staple",
        b"correct horse battery staple",
        None,
        b"another long passphrase",
    ]
    ts = [NatsTransport(Identity.generate(), opts, secret=s) for s in secrets]
    hs = [RecordingHandler(t.node_id) for t in ts]
    members = {t.node_id for t in ts[:3]}
    async with anyio.create_task_group() as tg:
        for t, h in zip(ts, hs, strict=True):
            await tg.start(t.run, h)
        await eventually(lambda: all(t.peers() == members - {t.node_id} for t in ts[:3]))
        assert ts[3].peers() == frozenset()
        assert ts[4].peers() == frozenset()
        for t in ts:
            await t.broadcast(f"from-{t.node_id}".encode())
        for h in hs[:3]:
            want = {f"from-{m}".encode() for m in members - {h.node_id}}
            await h.wait_heard(want)
        await anyio.sleep(0.3)
        for i, h in enumerate(hs):
            if i < 3:
                assert len(h.heard) == 2, "outsiders' broadcasts are not heard"
            else:
                assert h.heard == [], "an outsider hears nothing of the private network"
        with pytest.raises(PeerUnreachable, match="network secret"):
            await ts[3].request(ts[0].node_id, b"let me in", timeout=5)
        with pytest.raises(PeerUnreachable):
            await ts[4].request(ts[0].node_id, b"let me in", timeout=1)
        with pytest.raises(PeerUnreachable):
            await ts[0].request(ts[3].node_id, b"hello?", timeout=1)
        assert hs[0].requests == []
        assert status_count(ts[0], "refused") > 0
        assert ts[0].status()["private"] is True
        assert await ts[1].request(ts[0].node_id, b"member") == b"re:member"
        tg.cancel_scope.cancel()


async def test_hostile_packets_are_dropped(nats_server: NatsServer) -> None:
    """Garbage, forged requests and impossible chunk headers: counted, dropped, no harm done."""
    factory = factory_for([nats_server.url])
    async with running(factory, 2) as (ts, hs):
        t0 = ts[0]
        assert isinstance(t0, NatsTransport)
        subject = t0.options.subject
        raw = await nats.connect(nats_server.url)
        try:
            liar = Identity.generate()
            await raw.publish(subject, b"garbage")
            await raw.publish(subject, b"\x01" * 60)
            # A request claiming to come from node 1, signed by someone else.
            forged = encode_packets(
                Kind.REQUEST,
                ts[1].identity.public_key,  # type: ignore[attr-defined]
                os.urandom(8),
                b"gimme",
                max_packet=65536,
                key=None,
                extra=request_extra(liar.sign(b"not the right bytes"), raw.new_inbox()),
            )
            inbox = raw.new_inbox()
            await raw.publish(f"{subject}.node.{t0.node_id}", forged[0], reply=inbox)
            # A chunk that declares a 4 GiB frame, and one out of range.
            bad = bytearray(
                encode_packets(
                    Kind.BROADCAST,
                    liar.public_key,
                    b"12345678",
                    b"x" * 2000,
                    max_packet=1024,
                    key=None,
                )[0]
            )
            bad[44:46] = (9999).to_bytes(2, "big")
            await raw.publish(subject, bytes(bad))
            await raw.flush()
        finally:
            await raw.close()
        await ts[1].broadcast(b"still fine")
        await hs[0].wait_for(lambda: b"still fine" in hs[0].heard)
        assert hs[0].heard == [b"still fine"]
        assert hs[0].requests == []
        # garbage, a bad header, a forged request, an impossible chunk count (another
        # connection: they may arrive after "still fine")
        await eventually(lambda: t0.status()["malformed"] == 4)
        assert await ts[1].request(t0.node_id, b"ok") == b"re:ok"


async def test_jetstream_catch_up_after_restart(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node restarted with the same key receives the broadcasts it missed, once each."""
    opts = NatsOptions(
        servers=(nats_server.url,),
        subject="bacalhau.js" + os.urandom(4).hex(),
        jetstream=True,
        **FAST,
    )
    alice, bob_key = NatsTransport(Identity.generate(), opts), Identity.generate()
    ha = RecordingHandler(alice.node_id)
    async with anyio.create_task_group() as tg:
        await tg.start(alice.run, ha)
        async with anyio.create_task_group() as bob_tg:
            bob = NatsTransport(bob_key, opts)
            hb = RecordingHandler(bob.node_id)
            await bob_tg.start(bob.run, hb)
            await alice.broadcast(b"seen")
            await hb.wait_for(lambda: b"seen" in hb.heard)
            await eventually(lambda: bob.status()["duplicates"] == 1)  # the stream's copy
            bob_tg.cancel_scope.cancel()
        assert alice._nc is not None
        nc, sent = alice._nc, []
        publish = nc.publish

        async def recording(subject: str, payload: bytes = b"", **kw: Any) -> None:
            if subject == opts.subject:
                sent.append(payload)
            await publish(subject, payload, **kw)

        monkeypatch.setattr(nc, "publish", recording)
        missed = [f"missed-{i}".encode() for i in range(5)] + [os.urandom(2_500_000)]
        for frame in missed:
            await alice.broadcast(frame)
        # The stream stores what reaches the server on its own time (a flush is not
        # enough): the newcomer must subscribe only once the last packet is stored.
        js = nc.jetstream(timeout=5)
        with anyio.fail_after(30):
            while (await js.get_last_msg(opts.stream_name, opts.subject)).data != sent[-1]:
                await anyio.sleep(0.02)
        newcomer = NatsTransport(Identity.generate(), opts)
        hn = RecordingHandler(newcomer.node_id)
        await tg.start(newcomer.run, hn)
        bob = NatsTransport(bob_key, opts)
        hb = RecordingHandler(bob.node_id)
        await tg.start(bob.run, hb)
        await hb.wait_for(lambda: set(missed) <= set(hb.heard))
        assert hb.heard == missed, "in order, once each, and not what it had already acked"
        assert bob.status()["replayed"] == len(missed)
        await alice.broadcast(b"live")
        await hb.wait_for(lambda: b"live" in hb.heard)
        await hn.wait_for(lambda: b"live" in hn.heard)
        assert hn.heard == [b"live"], "a new node starts from now, not from the stream's history"
        tg.cancel_scope.cancel()


async def test_jetstream_keeps_requests_for_a_node_that_is_away(nats_server: NatsServer) -> None:
    opts = NatsOptions(
        servers=(nats_server.url,),
        subject="bacalhau.jd" + os.urandom(4).hex(),
        jetstream=True,
        **FAST,
    )
    alice, bob_key = NatsTransport(Identity.generate(), opts), Identity.generate()
    async with anyio.create_task_group() as tg:
        await tg.start(alice.run, RecordingHandler(alice.node_id))
        async with anyio.create_task_group() as bob_tg:
            bob = NatsTransport(bob_key, opts)
            hb = RecordingHandler(bob.node_id)
            await bob_tg.start(bob.run, hb)
            await eventually(lambda: bob.node_id in alice.peers())
            assert await alice.request(bob.node_id, b"live") == b"re:live"
            await eventually(lambda: bob.status()["duplicates"] == 1)  # the stream's copy
            bob_tg.cancel_scope.cancel()
        await eventually(lambda: bob_key.node_id not in alice.peers())  # bob said bye
        with pytest.raises(PeerUnreachable, match="JetStream keeps"):
            await alice.request(bob_key.node_id, b"while away", timeout=5)
        bob = NatsTransport(bob_key, opts)
        hb = RecordingHandler(bob.node_id)
        await tg.start(bob.run, hb)
        await hb.wait_for(lambda: len(hb.requests) == 1)
        assert hb.requests == [(alice.node_id, b"while away")], "delivered once, on return"
        assert bob.status()["replayed"] == 1
        tg.cancel_scope.cancel()


async def test_jetstream_refused_without_jetstream(nats_factory: Any) -> None:
    server = nats_factory(jetstream=False)
    t = NatsTransport(
        Identity.generate(), NatsOptions(servers=(server.url,), jetstream=True, **FAST)
    )
    with anyio.fail_after(20), pytest.raises(TransportError, match="JetStream"):
        await t.run(RecordingHandler(t.node_id))


async def test_tls_with_client_certificates(nats_factory: Any, tmp_path: Any) -> None:
    from bacalhau.testing.nats import make_tls_files

    files = make_tls_files(tmp_path / "tls")
    server = nats_factory(
        config={
            "tls": {
                "cert_file": files["server_cert"],
                "key_file": files["server_key"],
                "ca_file": files["ca"],
                "verify": True,
            }
        }
    )
    assert server.url.startswith("tls://")
    tls: dict[str, Any] = {
        "tls_ca": files["ca"],
        "tls_cert": files["client_cert"],
        "tls_key": files["client_key"],
    }
    async with running(factory_for([server.url], **tls), 2) as (ts, _):
        assert await ts[0].request(ts[1].node_id, b"over tls") == b"re:over tls"
    refused: dict[str, dict[str, Any]] = {
        "no client certificate": {"tls_ca": files["ca"]},
        "server not trusted": {**tls, "tls_ca": files["other_ca"]},
    }
    for options in refused.values():
        t = NatsTransport(
            Identity.generate(), NatsOptions(servers=(server.url,), **options, **FAST)
        )
        with anyio.fail_after(20), pytest.raises(TransportError, match="could not connect"):
            await t.run(RecordingHandler(t.node_id))


def _user_nkey_seed(raw: bytes) -> str:
    """Encode 32 random bytes as an nkey user seed (``SU...``): base32 + CRC16/XMODEM."""
    import base64
    import binascii
    import struct

    seed_prefix, user_prefix = 18 << 3, 20 << 3
    head = bytes([seed_prefix | (user_prefix >> 5), (user_prefix & 31) << 3])
    body = head + raw
    crc = binascii.crc_hqx(body, 0)
    return base64.b32encode(body + struct.pack("<H", crc)).decode().rstrip("=")


async def test_nkey_authentication(nats_factory: Any, tmp_path: Any) -> None:
    import nkeys  # nats-py[nkeys], in the test extra: nkey auth needs it

    seed = _user_nkey_seed(os.urandom(32))
    public = nkeys.from_seed(seed.encode()).public_key.decode()
    server = nats_factory(config={"authorization": {"users": [{"nkey": public}]}})
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(seed + "\n")
    # One node gives the seed itself, the other the path of a file holding it.
    opts = [
        NatsOptions(servers=(server.url,), nkey_seed=seed, subject="bacalhau.nk", **FAST),
        NatsOptions(servers=(server.url,), nkey_seed=str(seed_file), subject="bacalhau.nk", **FAST),
    ]

    @contextlib.asynccontextmanager
    async def make(n: int) -> AsyncIterator[list[Transport]]:
        yield [NatsTransport(Identity.generate(), opts[i]) for i in range(n)]

    async with running(make, 2) as (ts, _):
        assert await ts[0].request(ts[1].node_id, b"nk") == b"re:nk"
    stranger = _user_nkey_seed(os.urandom(32))
    t = NatsTransport(
        Identity.generate(), NatsOptions(servers=(server.url,), nkey_seed=stranger, **FAST)
    )
    with anyio.fail_after(20), pytest.raises(TransportError, match=r"(?i)authorization"):
        await t.run(RecordingHandler(t.node_id))
