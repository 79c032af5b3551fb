"""The one exception hierarchy of duplex, drawn here so it can be read in one place.

Every error a caller can see derives from `DuplexError` and carries a machine-readable
`code` (a short upper-case string, stable across versions) next to its human message, which
is not stable. `str(error)` is ``"CODE: message"`` and `error.message` the message alone:
whoever passes an error's text on next to its code (an `Err` event, a wrapping error) takes
`message` (or `message_of(exc)` for an exception of any kind), so the code is written once::

    DuplexError                      code
    ├── ConfigurationError           CONFIG        bad argument or setting from the caller
    ├── StorageError                 STORAGE       the database failed or is unusable
    │   ├── StorageUnavailable       STORAGE_UNAVAILABLE  cannot open or reach it: no such
    │   │                                          directory, a directory, no permission,
    │   │                                          server down or refusing us
    │   ├── StorageCorrupt           STORAGE_CORRUPT      not a database, or a damaged one
    │   ├── StorageBusy              STORAGE_BUSY  locked past the busy timeout, or no free
    │   │                                          pooled connection within the pool timeout
    │   ├── WrongPassphrase          PASSPHRASE    an encrypted database refused the passphrase
    │   ├── MigrationError           MIGRATION     a schema migration failed, or the database
    │   │                                          holds versions this program does not know
    │   └── DuplicateLinkId          DUPLICATE_LINK  another queue holds this link id
    ├── CryptoError                  CRYPTO        a signature did not verify, a box did not
    │                                              open, key bytes were malformed
    ├── WireError                    <ERR code>    a transmission that cannot be accepted; its
    │                                              code is the ERR to answer (CMD SYNTAX …)
    ├── QueueFault                   QUEUE         talking to a queue server failed; `.temporary`
    │   │                                          says whether retrying the same request can help
    │   ├── ServerError              <ERR code>    the server answered ERR (AUTH, QUOTA, CMD …)
    │   ├── NetworkError             NETWORK       unreachable, refused, or the connection dropped
    │   ├── CommandTimeout           TIMEOUT       the server did not answer within the
    │   │                                          command's timeout
    │   └── ServerIdentityError      IDENTITY      the certificate is not the pinned fingerprint
    ├── LinkError                    LINK          a link or link data that cannot be read or made
    ├── EnvelopeError                ENVELOPE      a peer's envelope or agent message that cannot be
    │                                              opened or read, or has an unexpected sender key
    ├── ChatWireError                CHAT          a chat message (an agent message body or join
    │                                              info) that cannot be read or made
    ├── AgentError                   AGENT         an agent command was refused or failed; the
    │   │                                          agent sets a finer code (PROHIBITED,
    │   │                                          NO_REQUEST …)
    │   └── NoConnection             NO_CONNECTION  no such connection (never made, or deleted)
    ├── ChatRefused                  CHAT_REFUSED  a peer's chat message that does not fit what
    │                                              the chat holds (a forged member id, an intro
    │                                              from a member that is not the host …)
    ├── GroupLinkError               GROUP_LINK    a group or relay link that cannot be read or
    │                                              does not name the group; nothing was stored
    └── RuntimeFault                 RUNTIME       the actor runtime cannot do what was asked
        ├── ActorUnavailable         UNAVAILABLE   no live actor at an address, runtime stopped
        └── AskTimeout               ASK_TIMEOUT   an `ask` got no answer within its timeout

Where errors come from:

* Lower layers' exceptions (sqlite3, peewee, psycopg, OSError) never reach a caller of
  storage: `storage.database` maps them to the `StorageError` branch in one place, naming the
  file or the (password-redacted) URL.
* The actor kernel has errors of its own (it imports nothing of duplex); the embedded facade
  maps them to `RuntimeFault`, `ActorUnavailable` and `AskTimeout`, which are the duplex side
  of that mapping. `AskTimeout` (our runtime did not answer) and `CommandTimeout` (a queue
  server did not answer) have distinct codes so that a caller can tell them apart.

This module imports nothing from the project, so every layer can import it.
"""

from __future__ import annotations

__all__ = [
    "ActorUnavailable",
    "AgentError",
    "AskTimeout",
    "ChatRefused",
    "ChatWireError",
    "CommandTimeout",
    "ConfigurationError",
    "CryptoError",
    "DuplexError",
    "DuplicateLinkId",
    "EnvelopeError",
    "GroupLinkError",
    "LinkError",
    "MigrationError",
    "NetworkError",
    "NoConnection",
    "QueueFault",
    "RuntimeFault",
    "ServerError",
    "ServerIdentityError",
    "StorageBusy",
    "StorageCorrupt",
    "StorageError",
    "StorageUnavailable",
    "WireError",
    "WrongPassphrase",
    "message_of",
]


class DuplexError(Exception):
    """Base of every error duplex raises on purpose; `code` is stable, the message is not."""

    code: str = "ERROR"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The human message alone, without the code: what to pass on when the code travels
        next to it (an `Err` event, another `DuplexError`), so it is not written twice."""
        return str(self.args[0])

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def message_of(error: BaseException) -> str:
    """The human message of any exception: `DuplexError.message` for ours (whose code is
    carried separately), ``str(error)`` for anything else."""
    return error.message if isinstance(error, DuplexError) else str(error)


class ConfigurationError(DuplexError):
    """A caller passed an argument or setting that cannot work (a bad URL, a bad option)."""

    code = "CONFIG"


# --------------------------------------------------------------------------- storage


class StorageError(DuplexError):
    """The database could not be opened, read or written."""

    code = "STORAGE"


class StorageUnavailable(StorageError):
    """The database cannot be opened or reached: a missing directory, a path that is a
    directory, no permission, a PostgreSQL server that is down or refuses the login."""

    code = "STORAGE_UNAVAILABLE"


class StorageCorrupt(StorageError):
    """The file is not a database, or a damaged one. Nothing was written to it."""

    code = "STORAGE_CORRUPT"


class StorageBusy(StorageError):
    """The database stayed locked past the busy timeout, or no pooled connection came free
    within the pool timeout. Retrying later may succeed."""

    code = "STORAGE_BUSY"


class WrongPassphrase(StorageError):
    """An encrypted database does not open with the passphrase given. Nothing was changed."""

    code = "PASSPHRASE"


class MigrationError(StorageError):
    """A schema migration failed, or the database is newer than this code knows."""

    code = "MIGRATION"


class DuplicateLinkId(StorageError):
    """Another queue already holds this link id; nothing was changed."""

    code = "DUPLICATE_LINK"


# --------------------------------------------------------------------------- the wire


class CryptoError(DuplexError):
    """A signature did not verify, a box did not open, or key bytes were malformed."""

    code = "CRYPTO"


class WireError(DuplexError):
    """A transmission that cannot be accepted: answer `ERR code` (with `corr_id` if known).

    `code` is the ERR code to answer with, kept as given: `protocol.queue` passes its
    `ErrorCode` members (string-valued), so `code` both names the error and goes on the wire.
    """

    def __init__(self, code: str, corr_id: bytes = b"", detail: str = "") -> None:
        value = getattr(code, "value", code)  # an ErrorCode member or a plain string
        super().__init__(detail or str(value))
        self.code = code
        self.corr_id = corr_id
        self.detail = detail

    @property
    def message(self) -> str:
        return self.detail or str(getattr(self.code, "value", self.code))

    def __str__(self) -> str:
        value = getattr(self.code, "value", self.code)
        return f"{value}: {self.detail}" if self.detail else str(value)


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
    """The queue server did not answer within the command's timeout (not to be confused with
    `AskTimeout`, our own runtime not answering)."""

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


class ChatWireError(DuplexError):
    """A chat message (`protocol.chat`) that is not valid JSON, names an event or a version we
    do not speak, has a field of the wrong type, shape or size, or is too large as a whole."""

    code = "CHAT"


class ChatRefused(DuplexError):
    """A chat message or event from a peer that the chat will not act on because it does not
    fit the stored state (actors/chat); nothing was changed."""

    code = "CHAT_REFUSED"


class GroupLinkError(DuplexError):
    """A group link or a relay link could not be read, or does not say what it should (no
    group, another group): nothing was stored; the call may be tried again."""

    code = "GROUP_LINK"


# --------------------------------------------------------------------------- agent, runtime


class AgentError(DuplexError):
    """An agent command was refused or failed; `code` says why (e.g. PROHIBITED,
    NO_CONNECTION), AGENT when nothing finer applies."""

    code = "AGENT"


class NoConnection(AgentError):
    """The command names a connection the agent does not have (never made, or deleted).
    The chat compares an `Err` event's code with `NoConnection.code`: a delete that finds
    nothing to delete has done its work."""

    code = "NO_CONNECTION"


class RuntimeFault(DuplexError):
    """The actor runtime could not carry out a request (the duplex side of the kernel's own
    errors, mapped at the facade)."""

    code = "RUNTIME"


class ActorUnavailable(RuntimeFault):
    """Nothing can take a message at this address (unknown, stopped for good, or shut down)."""

    code = "UNAVAILABLE"


class AskTimeout(RuntimeFault):
    """An `ask` at the runtime's edge got no answer within its timeout."""

    code = "ASK_TIMEOUT"
