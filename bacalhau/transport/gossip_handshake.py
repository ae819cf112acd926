"""The gossip handshake: prove node keys, and on a private network the secret, by SPAKE2.

Both sides start at once with::

    HELLO = [PROTOCOL, public_key(32), nonce(32), listen_port, advertise_host | nil,
             spake2_message(33) | nil]

``spake2_message`` is present exactly when the side has a network secret
(:class:`~bacalhau.transport.secret.NetworkSecret`); a side refuses a peer whose
HELLO disagrees with it about being private. Then each side sends::

    AUTH = [signature(64), confirmation(32) | b""]

where the signature is the side's Ed25519 signature over the transcript (the
context, both nonces, both node keys and both SPAKE2 messages, the signer's
first) and the confirmation is HMAC-SHA256 of the same transcript under the
SPAKE2 session key. Either side may send ``[BYE, reason]`` instead.

**Who speaks first.** On a public network both AUTHs cross at once. On a private
one the dialer sends its AUTH first and the listener answers only after checking
it: a stranger that dials a node learns nothing but "refused". A stranger that
is dialed (it advertised an address) does get the dialer's confirmation, but
SPAKE2 lets it test only the one password it ran the exchange with.

**Why SPAKE2.** The earlier handshake sent an HMAC keyed by a hash of the secret,
before checking the other side: one recorded exchange let anyone test password
guesses offline at the speed of SHA-256. With SPAKE2 the messages on the wire
are group elements blinded by the password, and the session key needs one side's
ephemeral scalar, so a recorded handshake gives an eavesdropper nothing to test a
guess against, and an active attacker one guess per connection. The secret is
first turned into a 32-byte key (:func:`~bacalhau.transport.secret.parse_secret`:
generated keys as they are, passphrases through scrypt), which is the SPAKE2
password; SPAKE2 (``spake2``, the implementation magic-wormhole uses) costs a few
tens of milliseconds per side, paid only on private networks and bounded by the
pending-handshake limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import msgpack
from spake2 import SPAKE2_Symmetric  # type: ignore[import-untyped]

from ..errors import DecodeError, WireError
from ..identity import Identity, node_id_from_public_key, verify_signature
from .errors import SelfConnection
from .gossip_conn import BYE, HANDSHAKE_MAX, FrameReader, encode
from .secret import NetworkSecret, parse_secret

__all__ = [
    "AUTH_CONTEXT",
    "HANDSHAKE_MAX",
    "PROTOCOL",
    "Hello",
    "SelfConnection",
    "handshake",
    "network_key",
    "network_tag",
]

PROTOCOL = "bacalhau-gossip/2"
AUTH_CONTEXT = b"bacalhau-gossip/2 auth\x00"
_PAKE_ID = b"bacalhau-gossip/2 spake2"
_PAKE_SIZE = 33


@attrs.frozen(kw_only=True)
class Hello:
    """What the handshake proved about the peer."""

    node_id: str
    listen_port: int | None
    advertise_host: str | None


def network_key(secret: str | bytes | NetworkSecret, network: str = "bacalhau") -> bytes:
    """The 32-byte key a network secret stands for (see :func:`parse_secret`)."""
    if isinstance(secret, NetworkSecret):
        return secret.key
    return parse_secret(secret, network=network).key


def network_tag(secret: str | bytes | NetworkSecret | None, network: str = "bacalhau") -> str:
    """A short public tag of the network (``public`` without a secret), for discovery."""
    if secret is None:
        return "public"
    parsed = secret if isinstance(secret, NetworkSecret) else parse_secret(secret, network=network)
    return parsed.tag


def _transcript(
    signer_key: bytes,
    other_key: bytes,
    signer_nonce: bytes,
    other_nonce: bytes,
    signer_pake: bytes,
    other_pake: bytes,
) -> bytes:
    return b"".join(
        (
            AUTH_CONTEXT,
            other_nonce,
            signer_nonce,
            signer_key,
            other_key,
            len(signer_pake).to_bytes(1, "big"),
            signer_pake,
            len(other_pake).to_bytes(1, "big"),
            other_pake,
        )
    )


def _confirmation(session_key: bytes | None, transcript: bytes) -> bytes:
    if session_key is None:
        return b""
    return hmac.digest(session_key, b"confirm\x00" + transcript, "sha256")


def _pake_start(key: bytes) -> tuple[SPAKE2_Symmetric, bytes]:
    pake = SPAKE2_Symmetric(key, idSymmetric=_PAKE_ID)
    return pake, pake.start()


def _pake_finish(pake: SPAKE2_Symmetric, own: bytes, theirs: bytes) -> bytes:
    if theirs == own:
        raise WireError("peer reflected this node's SPAKE2 message")
    try:
        session: bytes = pake.finish(theirs)
    except (AssertionError, ValueError, TypeError) as exc:
        raise DecodeError(f"peer's SPAKE2 message is not a group element ({exc})") from None
    return hashlib.sha256(b"bacalhau-gossip/2 session\x00" + session).digest()


async def handshake(
    stream: anyio.abc.ByteStream,
    reader: FrameReader,
    identity: Identity,
    *,
    secret_key: bytes | None,
    listen_port: int | None,
    advertise_host: str | None = None,
    expected_id: str | None = None,
    time_limit: float,
    outbound: bool = True,
) -> Hello:
    """Run the handshake on a fresh connection (the same code on both ends).

    Args:
        secret_key: the 32-byte network key (:func:`network_key`), or None on a
            public network.
        outbound: this side dialed (on a private network it proves itself first).

    Raises:
        SelfConnection: the peer is this node.
        WireError: the peer is not who ``expected_id`` says, fails to prove its
            key or the network secret, speaks another protocol, or is too slow.
    """
    nonce = os.urandom(32)

    async def read() -> list[Any]:
        frame = await reader.read(max_size=HANDSHAKE_MAX)
        try:
            msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
        except Exception as exc:
            raise DecodeError(f"malformed handshake frame ({type(exc).__name__})") from None
        if not isinstance(msg, list):
            raise DecodeError("handshake frame is not an array")
        if len(msg) == 2 and msg[0] == BYE and isinstance(msg[1], str):
            raise WireError(f"peer refused the connection: {msg[1][:200]}")
        return msg

    async def refuse(reason: str) -> None:
        closed = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
        with anyio.move_on_after(1), contextlib.suppress(*closed):
            await stream.send(encode([BYE, reason]))

    pake: SPAKE2_Symmetric | None = None
    own_pake = b""
    if secret_key is not None:
        pake, own_pake = await anyio.to_thread.run_sync(_pake_start, secret_key)
    try:
        with anyio.fail_after(time_limit):
            await stream.send(
                encode(
                    [
                        PROTOCOL,
                        identity.public_key,
                        nonce,
                        listen_port or 0,
                        advertise_host,
                        own_pake or None,
                    ]
                )
            )
            hello = await read()
            if not (len(hello) == 6 and hello[0] == PROTOCOL):
                raise DecodeError(f"peer does not speak {PROTOCOL}")
            _, peer_key, peer_nonce, port, host, peer_pake = hello
            if not (isinstance(peer_key, bytes) and len(peer_key) == 32):
                raise DecodeError("peer key must be 32 bytes")
            if not (isinstance(peer_nonce, bytes) and len(peer_nonce) == 32):
                raise DecodeError("peer nonce must be 32 bytes")
            if not (type(port) is int and 0 <= port <= 65535):
                raise DecodeError("peer listen port is not a port number")
            if not (host is None or (isinstance(host, str) and 0 < len(host) <= 255)):
                raise DecodeError("peer advertised host is not a host name")
            if not (
                peer_pake is None or (isinstance(peer_pake, bytes) and len(peer_pake) == _PAKE_SIZE)
            ):
                raise DecodeError(f"peer's SPAKE2 message must be {_PAKE_SIZE} bytes")
            peer_id = node_id_from_public_key(peer_key)
            if peer_id == identity.node_id:
                raise SelfConnection("connected to this node itself")
            if expected_id is not None and peer_id != expected_id:
                raise WireError(f"expected node {expected_id} at this address, found {peer_id}")
            if pake is None and peer_pake is not None:
                raise WireError(
                    f"peer {peer_id} is on a private network; this node has no --secret"
                )
            if pake is not None and peer_pake is None:
                await refuse("this node is on a private network")
                raise WireError(f"peer {peer_id} has no network secret: refused (private network)")
            session = None
            theirs_pake: bytes = peer_pake or b""
            if pake is not None:
                session = await anyio.to_thread.run_sync(_pake_finish, pake, own_pake, theirs_pake)
            mine = _transcript(
                identity.public_key, peer_key, nonce, peer_nonce, own_pake, theirs_pake
            )
            theirs = _transcript(
                peer_key, identity.public_key, peer_nonce, nonce, theirs_pake, own_pake
            )
            my_auth = encode([identity.sign(mine), _confirmation(session, mine)])
            if session is None or outbound:
                await stream.send(my_auth)
            auth = await read()
            if not (len(auth) == 2 and isinstance(auth[0], bytes) and isinstance(auth[1], bytes)):
                raise DecodeError("malformed handshake AUTH")
            if not verify_signature(peer_id, auth[0], theirs):
                raise WireError(f"peer {peer_id} failed to prove its node key")
            if session is not None:
                if not hmac.compare_digest(auth[1], _confirmation(session, theirs)):
                    if not outbound:
                        await refuse("wrong network secret")
                    raise WireError(
                        f"peer {peer_id} has another network secret: refused (private network)"
                    )
                if not outbound:
                    await stream.send(my_auth)
            elif auth[1]:
                raise DecodeError("a confirmation on a public network")
    except TimeoutError:
        raise WireError(f"handshake did not finish within {time_limit:g}s") from None
    return Hello(node_id=peer_id, listen_port=port or None, advertise_host=host)
