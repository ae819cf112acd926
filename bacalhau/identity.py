"""Node identity: an Ed25519 signing key and an X25519 sealing key.

The node id is a libp2p peer id: base58btc of the identity multihash of the
protobuf-encoded Ed25519 public key (``12D3KooW...``). It embeds the public
key, so any node can check a signature from the id alone, with no key
directory. The X25519 key lets others seal data that only this node can open
(the deterministic verifier's proposals); requesters announce it in each job.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from multiformats import multibase

from .cid import _b58encode
from .errors import BacalhauError, ValidationError

__all__ = ["Identity", "node_id_from_public_key", "public_key_from_node_id", "verify_signature"]

log = logging.getLogger("bacalhau.identity")

# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}, then identity multihash (0x00, len 36)
_KEY_PREFIX = b"\x08\x01\x12\x20"
_MH_PREFIX = b"\x00\x24"
_KEY_CACHE: dict[str, Ed25519PublicKey] = {}
_RAW_KEYS: dict[str, bytes] = {}
"""Node ids known to decode, with their keys (every message names a few node ids, and
base58 decoding costs about 50 us; a bounded memo, cleared when full)."""


def node_id_from_public_key(public: bytes) -> str:
    """The libp2p peer id of a raw 32-byte Ed25519 public key."""
    if len(public) != 32:
        raise ValidationError("an Ed25519 public key is 32 bytes")
    return _b58encode(_MH_PREFIX + _KEY_PREFIX + public)  # as multibase's, 200x faster


def public_key_from_node_id(node_id: str) -> bytes:
    """The raw Ed25519 public key inside a peer id; ValidationError if it is not one."""
    raw = _RAW_KEYS.get(node_id)
    if raw is not None:
        return raw
    raw = _decode_node_id(node_id)
    if len(_RAW_KEYS) > 65536:
        _RAW_KEYS.clear()
    _RAW_KEYS[node_id] = raw
    return raw


def _decode_node_id(node_id: str) -> bytes:
    try:
        raw = multibase.decode("z" + node_id)
    except (ValueError, KeyError) as exc:
        raise ValidationError(f"not a node id: {node_id!r} ({exc})") from None
    if len(raw) != 38 or not raw.startswith(_MH_PREFIX + _KEY_PREFIX):
        raise ValidationError(f"not an Ed25519 node id: {node_id!r}")
    return bytes(raw[6:])


def _public_key(node_id: str) -> Ed25519PublicKey:
    key = _KEY_CACHE.get(node_id)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(public_key_from_node_id(node_id))
        if len(_KEY_CACHE) > 65536:
            _KEY_CACHE.clear()
        _KEY_CACHE[node_id] = key
    return key


def verify_signature(node_id: str, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` over ``data`` was made by ``node_id``'s key."""
    try:
        _public_key(node_id).verify(signature, data)
    except (InvalidSignature, ValidationError, ValueError):
        return False
    return True


class Identity:
    """A node's keys. Create with :meth:`generate`, or :meth:`load_or_create` in a data dir."""

    __slots__ = ("_seal", "_sign", "node_id", "public_key", "seal_public_key")

    def __init__(self, sign_key: Ed25519PrivateKey, seal_key: X25519PrivateKey) -> None:
        self._sign = sign_key
        self._seal = seal_key
        self.public_key = sign_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.seal_public_key = seal_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id = node_id_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic keys from 32 bytes (tests and reproducible benchmarks only)."""
        if len(seed) != 32:
            raise ValidationError("seed must be 32 bytes")
        return cls(
            Ed25519PrivateKey.from_private_bytes(seed),
            X25519PrivateKey.from_private_bytes(bytes(b ^ 0x5A for b in seed)),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the 64-byte key file at ``path``, creating it (mode 0600) if absent.

        An existing key file readable or writable by anyone but its owner is made
        0600, with a warning (its key may already have leaked: consider a new one);
        a key file that is a symbolic link, or not a regular file, is refused.

        Raises:
            BacalhauError: the file is damaged, a link, or its mode cannot be fixed.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise BacalhauError(
                    f"node key file {path} is not a regular file (a link or a device); refused"
                )
            if st.st_mode & 0o077:
                try:
                    os.chmod(path, 0o600)
                except OSError as exc:
                    raise BacalhauError(
                        f"node key file {path} has mode {stat.S_IMODE(st.st_mode):04o} and "
                        f"cannot be made 0600: {exc.strerror}"
                    ) from None
                log.warning(
                    "node key file %s had mode %04o (readable by others); made it 0600. "
                    "If others could read it, replace the key.",
                    path,
                    stat.S_IMODE(st.st_mode),
                )
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            ident = cls.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(ident.private_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return ident
        if len(raw) != 64:
            raise BacalhauError(f"node key file {path} is damaged ({len(raw)} bytes, expected 64)")
        return cls(
            Ed25519PrivateKey.from_private_bytes(raw[:32]),
            X25519PrivateKey.from_private_bytes(raw[32:]),
        )

    def private_bytes(self) -> bytes:
        raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw
        none = serialization.NoEncryption()
        return self._sign.private_bytes(*raw, none) + self._seal.private_bytes(*raw, none)

    def sign(self, data: bytes) -> bytes:
        return self._sign.sign(data)

    def seal_exchange(self, peer_public: bytes) -> bytes:
        """X25519 shared secret with ``peer_public`` (for sealed proposals)."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        return self._seal.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"
