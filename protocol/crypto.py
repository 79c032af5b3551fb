"""Keys, signatures and boxes: everything cryptographic, on `cryptography`, nothing else.

Owns: Ed25519 signing keys (command authorisation), X25519 key agreement, HKDF-SHA256 key
derivation, ChaCha20-Poly1305 boxes (random nonce, or a nonce derived from a message id for
the server→recipient layer), and the raw 32-byte serialisation of public and private keys.
Must not: know any wire format beyond raw key bytes, or do I/O.

A failed verification or decryption raises `CryptoError`; callers turn it into the protocol
error that fits (`AUTH` on the server, a typed error in the agent), never a crash.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import CryptoError

try:  # libsodium, if installed: Ed25519 in about half the time of OpenSSL (see `verify`)
    from nacl.bindings import crypto_sign as _sodium_sign
    from nacl.bindings import crypto_sign_open as _sodium_open
    from nacl.bindings import crypto_sign_seed_keypair as _sodium_seed_keypair
    from nacl.exceptions import CryptoError as _SodiumError
except ImportError:  # pragma: no cover - PyNaCl is a dependency; OpenSSL does it all then
    _sodium_sign = _sodium_open = _sodium_seed_keypair = None
    _SodiumError = Exception

T = TypeVar("T")

KEY_SIZE = 32
SIGNATURE_SIZE = 64
NONCE_SIZE = 12
TAG_SIZE = 16

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NO_ENCRYPTION = serialization.NoEncryption()


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


# ---------------------------------------------------------------------- signatures (Ed25519)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key; `public` is the 32 raw bytes the server stores."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(
            key.private_bytes(_RAW, _RAW_PRIVATE, _NO_ENCRYPTION),
            key.public_key().public_bytes(_RAW, _RAW_PUBLIC),
        )

    @classmethod
    def from_private(cls, private: bytes) -> SigningKey:
        key = _load(Ed25519PrivateKey.from_private_bytes, private)
        return cls(private, key.public_key().public_bytes(_RAW, _RAW_PUBLIC))

    def sign(self, data: bytes) -> bytes:
        if _sodium_sign is not None:
            return _sodium_sign(data, _sodium_secret_key(self.private))[:SIGNATURE_SIZE]
        return _signing_key(self.private).sign(data)

    def __repr__(self) -> str:  # never print private key material
        return f"SigningKey(public={self.public.hex()[:16]}…)"


def verify(public: bytes, signature: bytes, data: bytes) -> None:
    """Raise CryptoError unless `signature` is `public`'s signature of `data`.

    Through libsodium (PyNaCl) when it is installed: it verifies in about half the time
    OpenSSL takes here, and a queue server makes two verifications per message.
    """
    if _sodium_open is not None:
        if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            raise CryptoError("bad signature")
        try:
            _sodium_open(bytes(signature) + data, bytes(public))
        except (_SodiumError, ValueError, TypeError) as exc:
            raise CryptoError("bad signature") from exc
        return
    key = _verifying_key(bytes(public)) if len(public) == KEY_SIZE else None
    if key is None:
        raise CryptoError(f"a key is {KEY_SIZE} raw bytes")
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise CryptoError("bad signature") from exc


# Ed25519 on the twisted Edwards curve -x² + y² = 1 + d·x²·y² over GF(p) (RFC 8032).
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def is_weak_signing_key(public: bytes) -> bool:
    """Whether an Ed25519 public key must never be accepted as someone's key.

    A point of small order (or a non-canonical or invalid encoding) lets signatures be
    forged without any private key — some verify every message — so a server must refuse
    such a key when it is registered (NEW, KEY, SKEY). Checked once per key, in Python:
    decode the point and test whether eight times it is the identity (about 0.15 ms).
    """
    if len(public) != KEY_SIZE:
        return True
    encoded = int.from_bytes(public, "little")
    y, sign = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= _P:
        return True
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P  # sqrt(u / v)
    if (v * x * x - u) % _P:
        x = x * _SQRT_M1 % _P
    if (v * x * x - u) % _P or (x == 0 and sign):
        return True
    if x & 1 != sign:
        x = _P - x
    # Three doublings in projective coordinates (no inversions); identity is (0 : Z : Z).
    big_x, big_y, big_z = x, y, 1
    for _ in range(3):
        b = (big_x + big_y) ** 2
        c, d, h = big_x * big_x, big_y * big_y, big_z * big_z
        e = -c
        f = e + d
        j = f - 2 * h
        big_x, big_y, big_z = (b - c - d) * j % _P, f * (e - d) % _P, f * j % _P
    return big_x == 0 and (big_y - big_z) % _P == 0


def is_valid_signature(public: bytes, signature: bytes, data: bytes) -> bool:
    try:
        verify(public, signature, data)
    except CryptoError:
        return False
    return True


# ---------------------------------------------------------------------- key agreement (X25519)


@dataclass(frozen=True, slots=True)
class DhKey:
    """An X25519 private key with its 32 raw public bytes."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> DhKey:
        key = X25519PrivateKey.generate()
        return cls(
            key.private_bytes(_RAW, _RAW_PRIVATE, _NO_ENCRYPTION),
            key.public_key().public_bytes(_RAW, _RAW_PUBLIC),
        )

    @classmethod
    def from_private(cls, private: bytes) -> DhKey:
        key = _load(X25519PrivateKey.from_private_bytes, private)
        return cls(private, key.public_key().public_bytes(_RAW, _RAW_PUBLIC))

    def shared_secret(self, peer_public: bytes) -> bytes:
        peer = _load(X25519PublicKey.from_public_bytes, peer_public)
        try:
            secret = X25519PrivateKey.from_private_bytes(self.private).exchange(peer)
        except ValueError as exc:  # OpenSSL refuses some low-order points itself
            raise CryptoError(f"unusable X25519 public key: {exc}") from exc
        if secret == bytes(KEY_SIZE):  # a low-order peer key: refuse, never use zeros
            raise CryptoError("degenerate X25519 public key")
        return secret

    def __repr__(self) -> str:
        return f"DhKey(public={self.public.hex()[:16]}…)"


def hkdf(secret: bytes, info: bytes, length: int = KEY_SIZE, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


# Both ends of a queue derive the box key of its MSG bodies: the server from its DH key and
# the recipient's public one, the recipient from the other pair.
SERVER_RECIPIENT_INFO = b"duplex/server-recipient/v1"


def server_recipient_key(srv_dh_public: bytes, rcv_dh: DhKey) -> bytes:
    """The recipient's side of the box key: what opens `MSG` bodies of its queue."""
    return hkdf(rcv_dh.shared_secret(srv_dh_public), SERVER_RECIPIENT_INFO)


# ---------------------------------------------------------------------- boxes (ChaCha20-Poly1305)


def seal(key: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
    """Encrypt with a random nonce; the nonce travels in front of the ciphertext."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes = b"") -> bytes:
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise CryptoError("box too short")
    try:
        return ChaCha20Poly1305(key).decrypt(
            sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], associated_data
        )
    except InvalidTag as exc:
        raise CryptoError("box does not open with this key") from exc


def nonce_for(message_id: bytes) -> bytes:
    """A nonce derived from a unique message id (the server→recipient layer)."""
    return hashlib.sha256(b"duplex/msg-nonce" + message_id).digest()[:NONCE_SIZE]


def seal_with_id(key: bytes, message_id: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce_for(message_id), plaintext, message_id)


def open_with_id(key: bytes, message_id: bytes, sealed: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce_for(message_id), sealed, message_id)
    except InvalidTag as exc:
        raise CryptoError("message body does not open with this queue's key") from exc


def fingerprint(der_certificate: bytes) -> bytes:
    """The SHA-256 of a DER certificate: what clients pin."""
    return hashlib.sha256(der_certificate).digest()


# Loading a raw key costs as much as a signature (about 80 µs): queue servers verify with the
# same few keys again and again, and clients sign with theirs, so loaded keys are kept.
@functools.lru_cache(maxsize=16384)
def _verifying_key(public: bytes) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(public)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _signing_key(private: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(private)


@functools.lru_cache(maxsize=4096)
def _sodium_secret_key(private: bytes) -> bytes:
    """libsodium's 64-byte signing key (seed ‖ public) for a raw 32-byte private key."""
    assert _sodium_seed_keypair is not None
    return _sodium_seed_keypair(private)[1]


def _load(loader: Callable[[bytes], T], raw: bytes) -> T:
    if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_SIZE:
        raise CryptoError(f"a key is {KEY_SIZE} raw bytes")
    try:
        return loader(bytes(raw))
    except ValueError as exc:
        raise CryptoError(f"malformed key: {exc}") from exc
