"""The one exception hierarchy of duplex, drawn here so it can be read in one place.

Every error a caller can see derives from `DuplexError` and carries a machine-readable
`code` (a short upper-case string) next to its human message::

    DuplexError                      code
    ├── ConfigurationError           CONFIG        bad argument or setting from the caller
    ├── StorageError                 STORAGE       the database failed or is unusable
    │   └── MigrationError           MIGRATION     a schema migration failed or is unknown
    ├── QueueFault                   QUEUE         talking to a queue server failed; `.temporary`
    │   │                                          says whether retrying the same request can help
    │   ├── ServerError              <ERR code>    the server answered ERR (AUTH, QUOTA, CMD …)
    │   ├── NetworkError             NETWORK       unreachable, refused, or the connection dropped
    │   ├── CommandTimeout           TIMEOUT       no reply within the command's timeout
    │   └── ServerIdentityError      IDENTITY      the certificate is not the pinned fingerprint
    ├── LinkError                    LINK          a link or link data that cannot be read or made
    ├── EnvelopeError                ENVELOPE      a peer's envelope or agent message that cannot be
    │                                              opened or read, or has an unexpected sender key
    └── RuntimeFault                 RUNTIME       the actor runtime cannot do what was asked
        ├── ActorUnavailable         UNAVAILABLE   no live actor at an address, runtime stopped
        └── AskTimeout               TIMEOUT       an `ask` got no answer within its timeout

Later layers add their own branches here (protocol errors, agent errors) so that the tree
stays whole. This module imports nothing from the project.
"""

from __future__ import annotations


class DuplexError(Exception):
    """Base of every error duplex raises on purpose; `code` is stable, the message is not."""

    code: str = "ERROR"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"


class ConfigurationError(DuplexError):
    """A caller passed an argument or setting that cannot work (a bad URL, a bad option)."""

    code = "CONFIG"


class StorageError(DuplexError):
    """The database could not be opened, read or written."""

    code = "STORAGE"


class MigrationError(StorageError):
    """A schema migration failed, or the database is newer than this code knows."""

    code = "MIGRATION"


class QueueFault(DuplexError):
    """A request to a queue server did not succeed; `temporary` drives the agent's retries."""

    code = "QUEUE"
    temporary: bool = False


class ServerError(QueueFault):
    """The server answered `ERR <code>`; `code` is the server's (e.g. "AUTH", "CMD SYNTAX").

    Only QUOTA and INTERNAL are temporary: the server may accept the same request later.
    AUTH, CMD …, LARGE_MSG and NO_MSG will not change by retrying.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or f"server answered ERR {code}", code=code)
        self.temporary = code in ("QUOTA", "INTERNAL")


class NetworkError(QueueFault):
    """The server could not be reached or the connection was lost mid-request."""

    code = "NETWORK"
    temporary = True


class CommandTimeout(QueueFault):
    """The server did not answer within the command's timeout."""

    code = "TIMEOUT"
    temporary = True


class ServerIdentityError(QueueFault):
    """The server's certificate does not match the fingerprint in its address: refused."""

    code = "IDENTITY"


class LinkError(DuplexError):
    """A connection link, short link or short-link data that is malformed, of a version we do
    not speak, too large, or does not open with the link's key (`protocol.links`)."""

    code = "LINK"


class EnvelopeError(DuplexError):
    """An agent-to-agent envelope or message (`protocol.envelope`) that is malformed, of a
    version we do not speak, too large, does not open with the queue's key, or comes from a
    sender key other than the one this connection already knows."""

    code = "ENVELOPE"


class RuntimeFault(DuplexError):
    """The actor runtime could not carry out a request."""

    code = "RUNTIME"


class ActorUnavailable(RuntimeFault):
    """Nothing can take a message at this address (unknown, stopped for good, or shut down)."""

    code = "UNAVAILABLE"


class AskTimeout(RuntimeFault):
    """An `ask` at the runtime's edge got no answer within its timeout."""

    code = "TIMEOUT"
