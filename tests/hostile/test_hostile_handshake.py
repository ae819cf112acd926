"""The private-network handshake gives an offline guesser nothing, and weak secrets are refused.

The property tested: from a recorded handshake between two members, an attacker
who guesses the secret cannot tell a right guess from a wrong one. The check
below is what an offline guesser would run; on the previous handshake (an HMAC
of the transcript under a hash of the secret) it picks out the right guess at
once, so this test fails against that design.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import anyio
import anyio.abc
import msgpack
import pytest
from spake2 import SPAKE2_Symmetric  # type: ignore[import-untyped]

from bacalhau.errors import ValidationError
from bacalhau.identity import Identity
from bacalhau.transport.gossip_conn import BYE, FrameReader, encode
from bacalhau.transport.gossip_handshake import (
    _PAKE_ID,
    PROTOCOL,
    _confirmation,
    _transcript,
    handshake,
    network_key,
)
from bacalhau.transport.secret import (
    MIN_PASSPHRASE,
    SCRYPT_N,
    new_secret,
    parse_secret,
)

pytestmark = pytest.mark.anyio

RIGHT = "members only passphrase"
WRONG = ["members only passphrasE", "correct horse battery staple", "password1234"]


class Recording(anyio.abc.ByteStream):
    """A byte stream that keeps a copy of everything it sends and receives."""

    def __init__(self, inner: anyio.abc.ByteStream) -> None:
        self.inner = inner
        self.sent = bytearray()
        self.received = bytearray()

    async def send(self, item: bytes) -> None:
        self.sent += item
        await self.inner.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self.inner.receive(max_bytes)
        self.received += data
        return data

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def frames(data: bytes) -> list[list[Any]]:
    out = []
    while data:
        size = int.from_bytes(data[:4], "big")
        out.append(msgpack.unpackb(data[4 : 4 + size], raw=False))
        data = data[4 + size :]
    return out


async def recorded_handshake(secret: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """A real handshake between two members over loopback TCP: (dialer's frames, listener's)."""
    key = network_key(secret)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    a, b = Identity.generate(), Identity.generate()
    async with listener, anyio.create_task_group() as tg:

        async def serve() -> None:
            stream = await listener.listeners[0].accept()  # type: ignore[attr-defined]
            async with stream:
                await handshake(
                    stream,
                    FrameReader(stream),
                    b,
                    secret_key=key,
                    listen_port=None,
                    time_limit=10,
                    outbound=False,
                )

        tg.start_soon(serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as raw:
            wire = Recording(raw)
            hello = await handshake(
                wire, FrameReader(wire), a, secret_key=key, listen_port=None, time_limit=10
            )
            assert hello.node_id == b.node_id
    return frames(bytes(wire.sent)), frames(bytes(wire.received))


def offline_guess_matches(guess: str, dialer: list[list[Any]], listener: list[list[Any]]) -> bool:
    """Everything an eavesdropper can compute from the transcript and a guess."""
    key = network_key(guess)
    (_, a_key, a_nonce, _, _, a_pake), a_auth = dialer
    (_, b_key, b_nonce, _, _, b_pake), b_auth = listener
    a_t = _transcript(a_key, b_key, a_nonce, b_nonce, a_pake, b_pake)
    b_t = _transcript(b_key, a_key, b_nonce, a_nonce, b_pake, a_pake)
    for transcript, auth in ((a_t, a_auth), (b_t, b_auth)):
        # the old design: an HMAC of the transcript under a key derived from the secret
        if hmac.compare_digest(auth[1], hmac.digest(key, transcript, "sha256")):
            return True
        # SPAKE2: the guesser can only finish an exchange of its own, against each message
        for theirs in (a_pake, b_pake):
            mine = SPAKE2_Symmetric(key, idSymmetric=_PAKE_ID)
            mine.start()
            try:
                session = hashlib.sha256(
                    b"bacalhau-gossip/2 session\x00" + mine.finish(theirs)
                ).digest()
            except Exception:
                continue
            if hmac.compare_digest(auth[1], _confirmation(session, transcript)):
                return True
    return False


async def test_a_recorded_handshake_gives_an_offline_guesser_nothing_to_check() -> None:
    dialer, listener = await recorded_handshake(RIGHT)
    assert [len(f) for f in dialer] == [6, 2] and [len(f) for f in listener] == [6, 2]
    # the right guess is as unconfirmable as every wrong one
    assert not offline_guess_matches(RIGHT, dialer, listener)
    for wrong in WRONG:
        assert not offline_guess_matches(wrong, dialer, listener)
    # and nothing on the wire is a function of the secret alone: two handshakes differ
    again, _ = await recorded_handshake(RIGHT)
    assert again[0][5] != dialer[0][5]
    assert len(dialer[0][5]) == 33


async def test_the_check_above_would_catch_a_guessable_design() -> None:
    """Sanity of the guesser: a transcript MAC'd with the secret's key is caught."""
    dialer, listener = await recorded_handshake(RIGHT)
    key = network_key(RIGHT)
    (_, a_key, a_nonce, _, _, a_pake), a_auth = dialer
    (_, b_key, b_nonce, _, _, b_pake), _ = listener
    a_t = _transcript(a_key, b_key, a_nonce, b_nonce, a_pake, b_pake)
    leaky = [dialer[0], [a_auth[0], hmac.digest(key, a_t, "sha256")]]
    assert offline_guess_matches(RIGHT, leaky, listener)
    assert not offline_guess_matches(WRONG[0], leaky, listener)


async def test_a_stranger_that_dials_learns_nothing_but_refused() -> None:
    """The listener answers a stranger's AUTH with BYE, never with its own confirmation."""
    key = network_key(RIGHT)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    member = Identity.generate()
    stranger = Identity.generate()
    errors: list[str] = []
    async with listener, anyio.create_task_group() as tg:

        async def serve() -> None:
            stream = await listener.listeners[0].accept()  # type: ignore[attr-defined]
            async with stream:
                try:
                    await handshake(
                        stream,
                        FrameReader(stream),
                        member,
                        secret_key=key,
                        listen_port=None,
                        time_limit=10,
                        outbound=False,
                    )
                except Exception as exc:
                    errors.append(str(exc))

        tg.start_soon(serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            # an online guess, done right: valid signature, SPAKE2 run with the guess
            guess = SPAKE2_Symmetric(network_key(WRONG[1]), idSymmetric=_PAKE_ID)
            own_pake, nonce = guess.start(), os.urandom(32)
            await s.send(encode([PROTOCOL, stranger.public_key, nonce, 0, None, own_pake]))
            reader = FrameReader(s)
            with anyio.fail_after(10):
                hello = msgpack.unpackb(await reader.read(max_size=4096), raw=False)
            _, member_key, member_nonce, _, _, member_pake = hello
            mine = _transcript(
                stranger.public_key, member_key, nonce, member_nonce, own_pake, member_pake
            )
            session = hashlib.sha256(
                b"bacalhau-gossip/2 session\x00" + guess.finish(member_pake)
            ).digest()
            await s.send(encode([stranger.sign(mine), _confirmation(session, mine)]))
            got = bytearray()
            with anyio.fail_after(10):
                try:
                    while True:
                        got += await s.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
    assert frames(bytes(got)) == [[BYE, "wrong network secret"]]  # no AUTH of the member's
    assert any("has another network secret" in e for e in errors)


def test_weak_secrets_are_refused() -> None:
    for weak in ["", "s3cret", "password", "x" * (MIN_PASSPHRASE - 1)]:
        with pytest.raises(ValidationError, match="secret"):
            parse_secret(weak)
    with pytest.raises(ValidationError, match="64 hex digits"):
        parse_secret("bacalhau-psk-1:abcd")


def test_passphrases_are_stretched_with_scrypt_salted_by_the_network() -> None:
    parsed = parse_secret(RIGHT, network="lab")
    assert parsed.kind == "passphrase"
    salt = hashlib.sha256(b"bacalhau/network-salt/v1\x00lab").digest()
    expected = hashlib.scrypt(
        RIGHT.encode(), salt=salt, n=SCRYPT_N, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32
    )
    assert parsed.key == expected
    assert SCRYPT_N >= 2**15  # 32 MiB per guess
    assert parse_secret(RIGHT, network="other").key != parsed.key


def test_generated_keys_are_256_bits_and_read_in_every_form() -> None:
    secret = new_secret()
    parsed = parse_secret(secret)
    assert parsed.kind == "key" and len(parsed.key) == 32
    hexed = parsed.key.hex()
    assert parse_secret(hexed).key == parsed.key
    swarm = f"/key/swarm/psk/1.0.0/\n/base16/\n{hexed}\n"
    assert parse_secret(swarm).key == parsed.key
    assert new_secret() != secret
