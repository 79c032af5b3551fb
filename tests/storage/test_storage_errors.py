"""The error hierarchy is whole and drawn in one place, and lower layers' errors become
StorageError subclasses in one place (`storage.database._storage_error`)."""

from __future__ import annotations

import ast
import errno
import inspect
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from playhouse.pool import MaxConnectionsExceeded

import protocol.crypto
from protocol import errors
from protocol.errors import (
    DuplexError,
    StorageBusy,
    StorageCorrupt,
    StorageError,
    StorageUnavailable,
)
from storage import Database, open_database
from storage.database import _storage_error


def error_classes() -> list[type[DuplexError]]:
    exported = [getattr(errors, name) for name in errors.__all__]
    return [value for value in exported if inspect.isclass(value)]  # not message_of


def test_every_error_is_a_duplex_error_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in error_classes():
        assert issubclass(cls, DuplexError)
        assert f" {cls.__name__} " in doc, f"{cls.__name__} is not in the drawn hierarchy"
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert defined == {cls.__name__ for cls in error_classes()}


def test_fixed_codes_are_distinct() -> None:
    # ServerError and WireError carry the server's ERR code; the others have their own.
    fixed = {cls.__name__: cls.code for cls in error_classes()}
    fixed.pop("ServerError")
    fixed.pop("WireError")
    assert len(set(fixed.values())) == len(fixed), fixed
    assert errors.CommandTimeout.code != errors.AskTimeout.code


def test_the_errors_module_imports_nothing_of_the_project() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert all(name == "__future__" for name in imported), imported


def test_moved_errors_are_still_importable_where_they_were() -> None:
    assert protocol.crypto.CryptoError is errors.CryptoError


def test_wire_error_keeps_the_err_code_it_was_given() -> None:
    error = errors.WireError("CMD SYNTAX", b"corr", "bad frame")
    assert (error.code, error.corr_id, str(error)) == (
        "CMD SYNTAX",
        b"corr",
        "CMD SYNTAX: bad frame",
    )
    assert isinstance(error, DuplexError)


def test_agent_error_takes_a_finer_code() -> None:
    assert errors.AgentError("x").code == "AGENT"
    assert errors.AgentError("x", code="NO_CONNECTION").code == "NO_CONNECTION"


# --------------------------------------------------------------------------- mapping


class FakePgError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(exc: Exception, as_type: type[peewee.PeeweeException]) -> peewee.PeeweeException:
    """What peewee raises for a driver's exception (it keeps the original as `orig`)."""
    return as_type(exc, *exc.args)


@pytest.mark.parametrize(
    ("lower", "expected"),
    [
        (sqlite3.DatabaseError("file is not a database"), StorageCorrupt),
        (
            wrapped(
                sqlite3.DatabaseError("database disk image is malformed"), peewee.DatabaseError
            ),
            StorageCorrupt,
        ),
        (
            wrapped(sqlite3.OperationalError("database is locked"), peewee.OperationalError),
            StorageBusy,
        ),
        (sqlite3.OperationalError("unable to open database file"), StorageUnavailable),
        (
            wrapped(
                sqlite3.OperationalError("attempt to write a readonly database"),
                peewee.OperationalError,
            ),
            StorageUnavailable,
        ),
        (
            wrapped(sqlite3.OperationalError("no such table: x"), peewee.OperationalError),
            StorageError,
        ),
        (
            wrapped(FakePgError("connection refused", "08006"), peewee.OperationalError),
            StorageUnavailable,
        ),
        (
            wrapped(
                FakePgError("password authentication failed", "28P01"), peewee.OperationalError
            ),
            StorageUnavailable,
        ),
        (wrapped(FakePgError("deadlock detected", "40P01"), peewee.OperationalError), StorageBusy),
        (wrapped(FakePgError("data corrupted", "XX001"), peewee.InternalError), StorageCorrupt),
        (MaxConnectionsExceeded("Exceeded maximum connections."), StorageBusy),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"), StorageUnavailable),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), StorageUnavailable),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_lower_errors_map_to_storage_errors(lower: BaseException, expected: type) -> None:
    mapped = _storage_error(lower, "cannot open /x/a.db")
    assert type(mapped) is expected
    assert str(mapped.args[0]).startswith("cannot open /x/a.db: ")
    assert _storage_error(mapped, "again") is mapped  # already typed: unchanged


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'e.db'}", migrations=[])
    yield database
    database.close()


def test_the_database_failing_under_a_body_is_a_storage_error(database: Database) -> None:
    with pytest.raises(StorageBusy, match="database is locked") as info, database.transaction():
        raise wrapped(sqlite3.OperationalError("database is locked"), peewee.OperationalError)
    assert isinstance(info.value.__cause__, peewee.OperationalError)
    with pytest.raises(StorageError, match="no such table"), database.transaction() as db:
        db.execute_sql("SELECT * FROM nowhere")


def test_a_bodys_own_errors_pass_unchanged(database: Database) -> None:
    with pytest.raises(peewee.IntegrityError), database.transaction():
        raise peewee.IntegrityError("duplicate")
    with pytest.raises(OSError), database.transaction():
        raise OSError("the body's own file")
    with pytest.raises(KeyError), database.transaction():
        raise KeyError("x")
