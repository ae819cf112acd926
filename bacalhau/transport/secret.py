"""Network secrets: 256-bit keys, or passphrases stretched by a memory-hard KDF.

A private network is one whose nodes share a secret. What a secret protects
against decides its form, and both transports agree on one derivation:

* **A generated key** (``bacalhau secret new``): 256 random bits, written
  ``bacalhau-psk-1:`` followed by 64 hex digits. A bare string of 64 hex digits
  (``secrets.token_hex(32)``) and the content of a libp2p ``swarm.key`` file
  (``/key/swarm/psk/1.0.0/``, ``/base16/``, 64 hex digits) are read as keys too.
  No guessing, online or offline, can find one: this is the recommended form,
  as it is for libp2p private networks.
* **A passphrase**, anything else of at least :data:`MIN_PASSPHRASE` characters
  (shorter ones are refused). It is stretched with scrypt (N=2**15, r=8, p=1:
  32 MiB and a noticeable fraction of a second per guess) salted with the
  network's name, so one precomputed dictionary does not serve every network
  and each offline guess costs an attacker what it costs a node at start.

Where a guess could be checked:

* **Gossip** (TCP) proves the secret with SPAKE2 (a password-authenticated key
  exchange, :mod:`bacalhau.transport.gossip_handshake`): a recorded handshake
  gives nothing to test guesses against, and an active stranger gets one guess
  per connection, which the connection limits and cut-off rules make slow.
* **NATS** tags every packet with an HMAC under a key derived from the network
  key. Anyone who can subscribe on the NATS server sees tags, so on NATS a
  passphrase is only as strong as its stretching: use a generated key there.
* **mDNS** records carry a short tag derived from the network key (so nodes of
  other networks skip each other without a handshake); it costs the same
  scrypt per guess as a NATS tag.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets

import attrs

from ..errors import ValidationError

__all__ = [
    "MIN_PASSPHRASE",
    "PSK_PREFIX",
    "SCRYPT_N",
    "NetworkSecret",
    "new_secret",
    "parse_secret",
]

PSK_PREFIX = "bacalhau-psk-1:"
MIN_PASSPHRASE = 12
"""Shortest passphrase accepted (characters). Shorter secrets are refused outright."""
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
DEFAULT_NETWORK = "bacalhau"
"""The network name (the scrypt salt) when none is given."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SWARM_KEY = re.compile(r"/key/swarm/psk/1\.0\.0/\s*/base16/\s*([0-9a-fA-F]{64})\s*")


@attrs.frozen(kw_only=True)
class NetworkSecret:
    """The 32-byte network key a secret stands for.

    Attributes:
        key: the key both transports derive their proofs and tags from.
        kind: ``"key"`` (a generated 256-bit key) or ``"passphrase"`` (stretched).
        network: the network name the key was derived for (the scrypt salt).
    """

    key: bytes = attrs.field(repr=False)
    kind: str
    network: str

    def derive(self, purpose: str) -> bytes:
        """An independent 32-byte key for one ``purpose`` (HKDF-style, SHA-256)."""
        return hashlib.sha256(
            b"bacalhau/network-key/v1\x00" + purpose.encode() + b"\x00" + self.key
        ).digest()

    @property
    def tag(self) -> str:
        """A short public tag of the network, for discovery records."""
        return self.derive("discovery-tag").hex()[:16]


def new_secret() -> str:
    """A fresh 256-bit network key, as ``bacalhau secret new`` prints it."""
    return PSK_PREFIX + secrets.token_hex(32)


def parse_secret(secret: str | bytes, *, network: str = DEFAULT_NETWORK) -> NetworkSecret:
    """The network key for ``secret`` on ``network``.

    Args:
        secret: a generated key (see the module docs) or a passphrase; bytes are
            read as UTF-8 text when they decode, else as a passphrase of raw bytes.
        network: the network's name; passphrases are salted with it.

    Raises:
        ValidationError: (field ``secret``) an empty secret or a passphrase shorter
            than :data:`MIN_PASSPHRASE` characters.
    """
    if not isinstance(network, str) or not network:
        raise ValidationError("the network name must be a non-empty string", field="network")
    if isinstance(secret, bytes):
        try:
            secret = secret.decode()
        except UnicodeDecodeError:
            return _stretched(secret, network)
    if not isinstance(secret, str):
        raise ValidationError("expected text", field="secret")
    text = secret.strip()
    if text.startswith(PSK_PREFIX):
        body = text[len(PSK_PREFIX) :]
        if not _HEX64.fullmatch(body):
            raise ValidationError(
                f"a key written {PSK_PREFIX}... needs exactly 64 hex digits after the prefix",
                field="secret",
            )
        return NetworkSecret(key=bytes.fromhex(body), kind="key", network=network)
    if _HEX64.fullmatch(text):
        return NetworkSecret(key=bytes.fromhex(text), kind="key", network=network)
    swarm = _SWARM_KEY.fullmatch(text)
    if swarm is not None:
        return NetworkSecret(key=bytes.fromhex(swarm.group(1)), kind="key", network=network)
    if len(secret) < MIN_PASSPHRASE:
        raise ValidationError(
            f"a passphrase of {len(secret)} characters is too easy to guess (at least "
            f"{MIN_PASSPHRASE}); make a key with `bacalhau secret new`",
            field="secret",
        )
    return _stretched(secret.encode(), network)


@functools.lru_cache(maxsize=16)
def _stretched(passphrase: bytes, network: str) -> NetworkSecret:
    salt = hashlib.sha256(b"bacalhau/network-salt/v1\x00" + network.encode()).digest()
    key = hashlib.scrypt(
        passphrase,
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=2 * 128 * SCRYPT_R * SCRYPT_N,
        dklen=32,
    )
    return NetworkSecret(key=key, kind="passphrase", network=network)
