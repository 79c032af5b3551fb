"""The one exception hierarchy of duplex, drawn here so it can be read in one place.

Every error a caller can see derives from `DuplexError` and carries a machine-readable
`code` (a short upper-case string) next to its human message::

    DuplexError                      code
    ├── ConfigurationError           CONFIG        bad argument or setting from the caller
    ├── StorageError                 STORAGE       the database failed or is unusable
    │   └── MigrationError           MIGRATION     a schema migration failed or is unknown
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


class RuntimeFault(DuplexError):
    """The actor runtime could not carry out a request."""

    code = "RUNTIME"


class ActorUnavailable(RuntimeFault):
    """Nothing can take a message at this address (unknown, stopped for good, or shut down)."""

    code = "UNAVAILABLE"


class AskTimeout(RuntimeFault):
    """An `ask` at the runtime's edge got no answer within its timeout."""

    code = "TIMEOUT"
