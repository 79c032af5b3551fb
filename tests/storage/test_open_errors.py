"""A database that cannot be opened is a typed duplex error naming the file, never a driver's
exception; and a file open to other users is made owner-only.

The same cases through `duplex server` are in tests/test_cli.py.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee
import pytest

from protocol.errors import (
    StorageCorrupt,
    StorageError,
    StorageUnavailable,
)
from storage import Database, open_database
from storage.agent import AGENT_LAYER, AgentStore

GARBAGE = bytes(range(256)) * 16  # 4 KiB that are no SQLite header


def missing_directory(tmp_path: Path) -> Path:
    return tmp_path / "no" / "such" / "dir" / "a.db"


def a_directory(tmp_path: Path) -> Path:
    path = tmp_path / "is-a-dir.db"
    path.mkdir()
    return path


def garbage_file(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(GARBAGE)
    return path


def short_garbage_file(tmp_path: Path) -> Path:
    path = tmp_path / "short.db"
    path.write_bytes(b"hello, I am not a database\n")
    return path


BAD_PATHS: list[tuple[str, Callable[[Path], Path], type[StorageError], str]] = [
    ("missing directory", missing_directory, StorageUnavailable, "No such file or directory"),
    ("a directory", a_directory, StorageUnavailable, "Is a directory"),
    ("garbage", garbage_file, StorageCorrupt, "not a database"),
    ("short garbage", short_garbage_file, StorageCorrupt, "not a database"),
]


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [case[1:] for case in BAD_PATHS],
    ids=[case[0] for case in BAD_PATHS],
)
def test_a_bad_path_is_a_typed_error_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], error: type[StorageError], words: str
) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(error) as info:
        open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
    message = str(info.value)
    assert message.startswith(f"{error.code}: cannot open {path}: "), message
    assert words in message
    assert isinstance(info.value.__cause__, OSError | sqlite3.Error | peewee.PeeweeException)
    if before is not None:
        assert path.read_bytes() == before, "a refused file was changed"
    assert not missing_directory(tmp_path).parent.exists(), "created a directory"


def test_a_file_without_read_permission_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file whatever its mode: the case cannot happen here")
    path = tmp_path / "locked.db"
    open_database(f"sqlite:///{path}", layers=[AGENT_LAYER]).close()
    path.chmod(0)
    with pytest.raises(StorageUnavailable, match=f"cannot open {path}"):
        open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])


def test_a_damaged_database_is_corrupt_not_a_driver_error(tmp_path: Path) -> None:
    """A valid header over pages of garbage: found by the first query, still typed."""
    path = tmp_path / "damaged.db"
    open_database(f"sqlite:///{path}", layers=[AGENT_LAYER]).close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:] = GARBAGE[: len(data) - 4096]  # keep the header page, wreck the rest
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match=f"cannot open {path}|{path}"):
        database = open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
        try:  # if the schema page survived, the first read of a wrecked page fails
            with AgentStore(database).transaction(read_only=True):
                AgentStore(database).connections_with_work()
        finally:
            database.close()


# --------------------------------------------------------------------------- file modes


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(path: Path) -> dict[str, int]:
    found = {}
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            found[suffix or "db"] = stat.S_IMODE(candidate.stat().st_mode)
    return found


def write_one_row(database: Database) -> None:
    store = AgentStore(database)
    with store.transaction():
        store.Connection.create(conn_id="c1", status="new", mode="invitation", created_at=0.0)


@pytest.mark.usefixtures("umask_022")
def test_a_new_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secret.db"
    database = open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
    try:
        write_one_row(database)  # the pool keeps its connection: -wal and -shm stay
        assert modes(path) == {"db": 0o600, "-wal": 0o600, "-shm": 0o600}
    finally:
        database.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_an_existing_file_open_to_others_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    # An older duplex (or another tool) left the files world-readable, the WAL not yet merged.
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=wal")
    raw.execute("CREATE TABLE other (x)")
    raw.commit()
    try:
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            file.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="storage.database"):
            database = open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
        try:
            write_one_row(database)
            assert modes(path) == {"db": 0o600, "-wal": 0o600, "-shm": 0o600}
        finally:
            database.close()
    finally:
        raw.close()
    tightened = [r for r in caplog.records if "tightened" in r.getMessage()]
    assert {Path(r.path).name for r in tightened} == {"old.db", "old.db-wal", "old.db-shm"}
    assert all(r.mode_was == "0o644" for r in tightened)


def test_client_open_on_a_bad_path_raises_the_same_typed_error(tmp_path: Path) -> None:
    from actors.client import Client  # the facade: the error reaches its caller unchanged

    path = missing_directory(tmp_path)
    with pytest.raises(StorageUnavailable, match=f"cannot open {path}: No such file"):
        Client.open(f"sqlite:///{path}", servers=[])
    garbage = garbage_file(tmp_path)
    with pytest.raises(StorageCorrupt, match=f"cannot open {garbage}: file is not a database"):
        Client.open(f"sqlite:///{garbage}", servers=[])
