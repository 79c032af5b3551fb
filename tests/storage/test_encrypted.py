"""Encrypted agent databases (SQLCipher, the `encrypted` extra): nothing stored is readable
in the files, a wrong passphrase is a typed error that changes nothing, rekey works."""

from __future__ import annotations

import hashlib
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.errors import ConfigurationError, StorageCorrupt, WrongPassphrase
from storage import Database, open_database
from storage import database as database_module
from storage.agent import AGENT_LAYER, AgentStore

pytest.importorskip("sqlcipher3", reason="encrypted databases need duplex[encrypted]")

SECRET = "needle-5f0c1e-plaintext-that-must-not-appear"
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "alice.db"


@pytest.fixture
def opened() -> Iterator[list[Database]]:
    databases: list[Database] = []
    yield databases
    for database in databases:
        database.close()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def store_secret(database: Database) -> None:
    store = AgentStore(database)
    with store.transaction():
        store.Connection.create(
            conn_id="c1", status="ready", mode="invitation", error=SECRET, created_at=0.0
        )


def read_secret(database: Database) -> str:
    store = AgentStore(database)
    with store.transaction(read_only=True):
        return store.Connection.get(store.Connection.conn_id == "c1").error


def files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def fingerprint(path: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
        for p in files(path)
    }


def test_no_plaintext_of_a_stored_value_in_the_files(path: Path, opened: list[Database]) -> None:
    database = open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    opened.append(database)
    assert database.encrypted
    store_secret(database)
    # While open, the newest pages sit in the -wal file: it is encrypted too.
    for file in files(path):
        data = file.read_bytes()
        assert SECRET.encode() not in data, f"plaintext in {file.name}"
        assert b"agent_connection" not in data, f"schema readable in {file.name}"
    assert not path.read_bytes().startswith(b"SQLite format 3")
    assert {stat.S_IMODE(f.stat().st_mode) for f in files(path)} == {0o600}
    database.close()
    assert SECRET.encode() not in path.read_bytes()

    again = open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    opened.append(again)
    assert read_secret(again) == SECRET


def test_a_wrong_passphrase_is_a_typed_error_that_changes_nothing(path: Path) -> None:
    database = open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    store_secret(database)
    database.close()
    before = fingerprint(path)

    with pytest.raises(WrongPassphrase, match=f"cannot open {path}") as info:
        open_database(url(path), layers=[AGENT_LAYER], passphrase="not it")
    assert info.value.code == "PASSPHRASE"
    with pytest.raises(StorageCorrupt, match="not a database"):
        open_database(url(path), layers=[AGENT_LAYER])  # no passphrase: unreadable
    assert fingerprint(path) == before


def test_a_plain_database_does_not_open_with_a_passphrase(path: Path) -> None:
    open_database(url(path), layers=[AGENT_LAYER]).close()
    with pytest.raises(WrongPassphrase):
        open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)


def test_rekey_changes_the_passphrase_and_keeps_the_data(
    path: Path, opened: list[Database]
) -> None:
    database = open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    store_secret(database)
    database.rekey("a new one, with a ' quote")
    assert read_secret(database) == SECRET  # the pool's new connections use the new key
    database.close()

    with pytest.raises(WrongPassphrase):
        open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    again = open_database(url(path), layers=[AGENT_LAYER], passphrase="a new one, with a ' quote")
    opened.append(again)
    assert read_secret(again) == SECRET


def test_bad_passphrases_and_rekey_of_a_plain_database_are_refused(
    path: Path, opened: list[Database]
) -> None:
    for bad in ("", "nul\x00inside", b"bytes"):
        with pytest.raises(ConfigurationError, match="passphrase"):
            open_database(url(path), layers=[AGENT_LAYER], passphrase=bad)  # type: ignore[arg-type]
    assert not path.exists()
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        open_database("postgresql://postgres@127.0.0.1:1/x", passphrase=PASSPHRASE)
    plain = open_database(url(path), layers=[AGENT_LAYER])
    opened.append(plain)
    with pytest.raises(ConfigurationError, match="not encrypted"):
        plain.rekey(PASSPHRASE)


def test_a_missing_sqlcipher_says_what_to_install(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "_sqlcipher", None)
    monkeypatch.setattr(database_module, "_sqlcipher_pool", None)
    monkeypatch.setitem(sys.modules, "sqlcipher3", None)  # makes `import sqlcipher3` fail
    with pytest.raises(ConfigurationError, match=r"duplex\[encrypted\]"):
        open_database(url(path), layers=[AGENT_LAYER], passphrase=PASSPHRASE)
    assert not path.exists()
