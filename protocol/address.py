"""Queue server addresses: `duplex://<fingerprint>@host:port`.

The fingerprint is the base64url (unpadded) SHA-256 of the server's TLS certificate; clients
pin it, so an address names one server key, not just a host. Parsing is strict: anything
else is a `ConfigurationError` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from protocol.errors import ConfigurationError

SCHEME = "duplex://"
_ADDRESS = re.compile(
    r"^duplex://([A-Za-z0-9_-]{43})@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$"
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"not base64url: {text[:40]!r}") from exc


@dataclass(frozen=True, slots=True, order=True)
class ServerAddress:
    """Where a queue server listens and which certificate it must present."""

    fingerprint: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        if len(self.fingerprint) != 32:
            raise ConfigurationError("a server fingerprint is 32 bytes (SHA-256)")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"port out of range: {self.port}")

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        match = _ADDRESS.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ConfigurationError(
                f"not a server address (duplex://<fingerprint>@host:port): {str(text)[:80]!r}"
            )
        fingerprint, host, port = match.groups()
        return cls(from_b64url(fingerprint), host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{b64url(self.fingerprint)}@{host}:{self.port}"
