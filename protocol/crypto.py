"""Keys, signatures and boxes: everything cryptographic, on `cryptography`, nothing else.

Owns: Ed25519 signing keys (command authorisation), X25519 key agreement, HKDF-SHA256 key
derivation, ChaCha20-Poly1305 boxes (random nonce, or a nonce derived from a message id for
the server→recipient layer), and the raw 32-byte serialisation of public and private keys.
Must not: know any wire format beyond raw key bytes, or do I/O.

A failed verification or decryption raises `CryptoError`; callers turn it into the protocol
error that fits (`AUTH` on the server, a typed error in the agent), never a crash.
"""

from __future__ import annotations

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

from protocol.errors import DuplexError

T = TypeVar("T")

KEY_SIZE = 32
SIGNATURE_SIZE = 64
NONCE_SIZE = 12
TAG_SIZE = 16

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NO_ENCRYPTION = serialization.NoEncryption()


class CryptoError(DuplexError):
    """A signature did not verify, a box did not open, or key bytes were malformed."""

    code = "CRYPTO"


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
        return Ed25519PrivateKey.from_private_bytes(self.private).sign(data)

    def __repr__(self) -> str:  # never print private key material
        return f"SigningKey(public={self.public.hex()[:16]}…)"


def verify(public: bytes, signature: bytes, data: bytes) -> None:
    """Raise CryptoError unless `signature` is `public`'s signature of `data`."""
    key = _load(Ed25519PublicKey.from_public_bytes, public)
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise CryptoError("bad signature") from exc


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


def _load(loader: Callable[[bytes], T], raw: bytes) -> T:
    if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_SIZE:
        raise CryptoError(f"a key is {KEY_SIZE} raw bytes")
    try:
        return loader(bytes(raw))
    except ValueError as exc:
        raise CryptoError(f"malformed key: {exc}") from exc
