"""The queue server's identity: its self-signed certificate and the TLS context made from it.

Owns: generating the certificate (ECDSA P-256, `cryptography`) on a server's first start,
and the server-side `ssl.SSLContext`: TLS 1.3 only, so an older client is refused at once
with a `protocol_version` alert. Must not: store anything itself (the store keeps the
certificate and key, see `ServerStore.save_identity`) or leave the private key on disk.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A new (certificate PEM, private key PEM) pair, valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duplex queue server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_der(certificate_pem: bytes) -> bytes:
    """The DER bytes of a PEM certificate: what the address's fingerprint is taken of."""
    return x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)


def server_tls_context(certificate_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context for this identity that speaks TLS 1.3 and nothing older."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # ssl can only load a key from a file: write both to a private temp dir, load, delete.
    with tempfile.TemporaryDirectory(prefix="duplex-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(certificate_pem)
        with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context
