"""Tests of storage.database: URLs, pragmas, pooled transactions, model binding, migrations.

Most tests take `database_url` and so run on SQLite and, with DUPLEX_TEST_POSTGRES_URL set,
on a fresh PostgreSQL database too.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import peewee
import pytest
from playhouse.migrate import SchemaMigrator, migrate

from protocol.errors import (
    ConfigurationError,
    MigrationError,
    StorageBusy,
    StorageError,
    StorageUnavailable,
)
from storage import (
    Database,
    Layer,
    Migration,
    bind_models,
    open_database,
)
from storage import database as database_module

THREAD_WAIT_S = 60.0


class Note(peewee.Model):
    owner = peewee.TextField()
    body = peewee.TextField()

    class Meta:
        table_name = "note"
        indexes = ((("owner", "body"), True),)


class Tag(peewee.Model):
    note = peewee.ForeignKeyField(Note, backref="tags", on_delete="CASCADE")
    label = peewee.TextField()
    parent = peewee.ForeignKeyField("self", null=True, backref="children")


def _create_notes(db: peewee.Database) -> None:
    # safe=False: applying this twice must fail loudly, which the concurrency test relies on.
    db.create_tables(list(bind_models(db, Note, Tag)), safe=False)


def _add_priority(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("note", "priority", peewee.IntegerField(null=True)))


MIGRATIONS = (
    Migration(1, "notes and tags", _create_notes),
    Migration(2, "note priority", _add_priority),
)


def _counting(migrations: tuple[Migration, ...], calls: list[int]) -> list[Migration]:
    def wrap(step: Migration) -> Migration:
        def apply(db: peewee.Database) -> None:
            calls.append(step.version)
            step.apply(db)

        return Migration(step.version, step.name, apply)

    return [wrap(step) for step in migrations]


OpenDb = Callable[..., Database]


@pytest.fixture
def open_db(database_url: str) -> Iterator[OpenDb]:
    """open_database on the test's URL by default, closing everything it opened afterwards."""
    opened: list[Database] = []

    def _open(url: str | None = None, **kwargs: object) -> Database:
        kwargs.setdefault("migrations", MIGRATIONS)
        database = open_database(url or database_url, **kwargs)  # type: ignore[arg-type]
        opened.append(database)
        return database

    yield _open
    for database in opened:
        database.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'only-sqlite.db'}"


def _table_names(database: Database) -> set[str]:
    with database.transaction() as db:
        return set(db.get_tables())


def _note_count(database: Database) -> int:
    notes = database.bind(Note)[Note]
    with database.transaction():
        return notes.select().count()


# --------------------------------------------------------------------------- SQLite specifics


@pytest.mark.parametrize(("asked", "code"), [("NORMAL", 1), ("FULL", 2), ("full", 2)])
def test_sqlite_pragmas_are_what_was_asked(sqlite_url: str, asked: str, code: int) -> None:
    database = open_database(sqlite_url, synchronous=asked, migrations=[])
    expected = {"journal_mode": "wal", "foreign_keys": 1, "synchronous": code}
    expected["busy_timeout"] = database_module.SQLITE_BUSY_TIMEOUT_MS

    def pragmas(db: peewee.Database) -> dict[str, object]:
        return {name: db.execute_sql(f"PRAGMA {name}").fetchone()[0] for name in expected}

    try:
        with database.transaction() as db:
            assert pragmas(db) == expected
            # A second pooled connection, opened while the first is busy, gets them too.
            with ThreadPoolExecutor(1) as pool:

                def other_connection() -> dict[str, object]:
                    with database.peewee.connection_context():
                        return pragmas(database.peewee)

                assert pool.submit(other_connection).result(THREAD_WAIT_S) == expected
    finally:
        database.close()


def test_sqlite_transactions_reuse_a_pooled_connection_cheaply(sqlite_url: str) -> None:
    database = open_database(sqlite_url, migrations=MIGRATIONS)
    try:
        raw = set()
        for _ in range(20):
            with database.transaction() as db:
                raw.add(id(db.connection()))
        assert len(raw) == 1, "each transaction reconnected instead of reusing the pool"

        notes = database.bind(Note)[Note]
        rounds = 500
        started = time.perf_counter()
        for _ in range(rounds):
            with database.transaction():
                pass
        empty_us = (time.perf_counter() - started) / rounds * 1e6
        started = time.perf_counter()
        for i in range(rounds):
            with database.transaction():
                notes.create(owner="me", body=str(i))
        insert_us = (time.perf_counter() - started) / rounds * 1e6
        print(f"sqlite empty transaction {empty_us:.0f} us, one-row insert {insert_us:.0f} us")
        # Measured ~25 us here; a reconnect with pragmas costs ~10x more. Loose for slow CI.
        assert empty_us < 500
    finally:
        database.close()


def test_relative_sqlite_path_is_pinned_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    database = open_database("sqlite:///rel/dir.db", migrations=MIGRATIONS)
    try:
        monkeypatch.chdir(tmp_path.parent)
        # A fresh connection (from a new thread) still finds the same file.
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(_note_count, database).result(THREAD_WAIT_S) == 0
        assert (tmp_path / "rel" / "dir.db").exists()
    finally:
        database.close()


# --------------------------------------------------------------------------- URLs and options


@pytest.mark.parametrize(
    "url",
    [
        "",
        "nonsense",
        "mysql://root@localhost/db",
        "sqlite:///:memory:",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///some/dir/",
        "postgresql://user@host:notaport/db",
        "postgresql://user@host:5432/",
        "postgres://user@host",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_database(url, migrations=[])
    assert info.value.code == "CONFIG"


@pytest.mark.parametrize(
    "options",
    [
        {"synchronous": "OFF"},
        {"pool_size": 0},
        {"pool_size": True},
        {"pool_timeout": 0},
        {"pool_timeout": -1.0},
    ],
)
def test_bad_options_are_configuration_errors(sqlite_url: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        open_database(sqlite_url, migrations=[], **options)  # type: ignore[arg-type]
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists(), "touched the file anyway"


def test_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StorageError) as info:
        open_database("postgresql://u:s3cret@127.0.0.1:1/x", migrations=[])
    assert "s3cret" not in str(info.value)


def test_unreachable_postgres_is_a_storage_error() -> None:
    pytest.importorskip("psycopg")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        open_database("postgres://postgres@127.0.0.1:1/nothing", migrations=[])
    assert info.value.code == "STORAGE_UNAVAILABLE"
    assert "cannot open postgres://postgres@127.0.0.1:1/nothing" in str(info.value)
    assert isinstance(info.value.__cause__, peewee.OperationalError)
    assert time.monotonic() - started < 15


def test_missing_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(ConfigurationError, match=r"duplex\[postgres\]"):
        open_database("postgresql://postgres@127.0.0.1:5432/x", migrations=[])


# --------------------------------------------------------------------------- migrations


def test_migrations_apply_once_and_are_recorded(open_db: OpenDb) -> None:
    calls: list[int] = []
    database = open_db(migrations=_counting(MIGRATIONS, calls))
    assert calls == [1, 2]
    assert database.schema_version() == 2
    assert {"note", "tag", "schema_migrations"} <= _table_names(database)
    with database.transaction() as db:
        columns = {column.name for column in db.get_columns("note")}
        recorded = db.execute_sql(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
    assert "priority" in columns
    assert [(version, name) for version, name, _ in recorded] == [
        (1, "notes and tags"),
        (2, "note priority"),
    ]
    assert all(applied_at is not None for _, _, applied_at in recorded)
    database.close()

    again = open_db(migrations=_counting(MIGRATIONS, calls))
    assert calls == [1, 2], "a reopen applied a migration again"
    assert again.schema_version() == 2


def test_a_new_migration_is_applied_on_the_next_open(open_db: OpenDb) -> None:
    open_db(migrations=MIGRATIONS[:1]).close()
    calls: list[int] = []
    database = open_db(migrations=_counting(MIGRATIONS, calls))
    assert calls == [2]
    assert database.schema_version() == 2


def test_newer_schema_is_refused(open_db: OpenDb) -> None:
    open_db(migrations=MIGRATIONS).close()
    with pytest.raises(MigrationError) as info:
        open_db(migrations=MIGRATIONS[:1])
    assert info.value.code == "MIGRATION"
    assert "2" in str(info.value)


def test_unknown_recorded_version_below_the_newest_is_refused(open_db: OpenDb) -> None:
    open_db(migrations=MIGRATIONS).close()
    skip_two = [MIGRATIONS[0], Migration(3, "later", lambda db: None)]
    with pytest.raises(MigrationError):
        open_db(migrations=skip_two)
    # Nothing was written by the refused program.
    assert open_db(migrations=MIGRATIONS).schema_version() == 2


@pytest.mark.parametrize(
    "versions",
    [(2, 1), (1, 1), (1, 3, 2)],
)
def test_unordered_migrations_are_a_configuration_error(
    sqlite_url: str, versions: tuple[int, ...]
) -> None:
    steps = [Migration(version, f"m{version}", lambda db: None) for version in versions]
    with pytest.raises(ConfigurationError):
        open_database(sqlite_url, migrations=steps)


@pytest.mark.parametrize("bad", [0, -1, True, "1"])
def test_bad_migration_versions_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        Migration(bad, "x", lambda db: None)  # type: ignore[arg-type]


def test_failing_migration_rolls_back(open_db: OpenDb) -> None:
    def half_then_fail(db: peewee.Database) -> None:
        db.execute_sql("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
        db.execute_sql("INSERT INTO half_done (id) VALUES (1)")
        raise RuntimeError("boom")

    steps = [MIGRATIONS[0], Migration(2, "breaks", half_then_fail)]
    with pytest.raises(MigrationError) as info:
        open_db(migrations=steps)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "breaks" in str(info.value)

    database = open_db(migrations=MIGRATIONS[:1])
    assert database.schema_version() == 1, "the failed version was recorded"
    assert "half_done" not in _table_names(database)
    assert "note" in _table_names(database), "the good migration before it was lost"


def test_concurrent_opens_apply_each_migration_once(open_db: OpenDb) -> None:
    calls: list[int] = []
    steps = _counting(MIGRATIONS, calls)
    openers = 6
    barrier = threading.Barrier(openers)

    def race() -> int:
        barrier.wait(THREAD_WAIT_S)
        return open_db(migrations=steps).schema_version()

    with ThreadPoolExecutor(openers) as pool:
        futures = [pool.submit(race) for _ in range(openers)]
        versions = [future.result(THREAD_WAIT_S) for future in futures]
    assert versions == [2] * openers
    assert sorted(calls) == [1, 2]


def test_a_layer_applies_its_migrations_and_names_itself(open_db: OpenDb) -> None:
    notes = Layer("notes", range(1, 100), MIGRATIONS)
    database = open_db(layers=[notes], migrations=None)
    assert database.layers == ("notes",)
    assert database.schema_version() == database.schema_version(notes.versions) == 2
    assert {"note", "tag"} <= _table_names(database)


def test_layer_rules() -> None:
    def step(version: int) -> Migration:
        return Migration(version, f"m{version}", lambda db: None)

    plugins = Layer("plugins", range(500, 600), [step(500), step(501)])
    assert isinstance(plugins.migrations, tuple)
    assert [m.version for m in plugins.migrations] == [500, 501]
    with pytest.raises(ConfigurationError, match="outside"):
        Layer("chat", range(200, 300), [step(150)])
    with pytest.raises(ConfigurationError, match="LAYER_VERSION_BLOCKS"):
        Layer("agent", range(100, 150), [])
    with pytest.raises(ConfigurationError, match="ascending"):
        Layer("server", range(300, 400), [step(301), step(300)])
    with pytest.raises(ConfigurationError, match="non-empty name"):
        Layer("", range(1, 10), [])
    with pytest.raises(ConfigurationError, match="range"):
        Layer("x", range(10, 1), [])
    with pytest.raises(ConfigurationError, match="sequence of Migration"):
        Layer("x", range(1, 10), step(1))  # type: ignore[arg-type]


def test_open_refuses_layers_that_cannot_go_together(sqlite_url: str) -> None:
    a = Layer("a", range(500, 600), [])
    with pytest.raises(ConfigurationError, match="named twice"):
        open_database(sqlite_url, layers=[a, a])
    with pytest.raises(ConfigurationError, match="share versions"):
        open_database(sqlite_url, layers=[a, Layer("b", range(550, 650), [])])
    with pytest.raises(ConfigurationError, match="list of Layer"):
        open_database(sqlite_url, layers=a)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="block"):
        open_database(sqlite_url, layers=[a], migrations=[Migration(501, "x", print)])
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists(), "touched the file anyway"


# --------------------------------------------------------------------------- transactions


def test_rolled_back_transaction_leaves_no_row(open_db: OpenDb) -> None:
    database = open_db()
    notes = database.bind(Note)[Note]
    with pytest.raises(RuntimeError, match="undo"), database.transaction():
        notes.create(owner="a", body="gone")
        raise RuntimeError("undo")
    assert _note_count(database) == 0

    with database.transaction():
        notes.create(owner="a", body="kept")
    # The body's own database error comes out unchanged, and rolls back its transaction.
    with pytest.raises(peewee.IntegrityError), database.transaction():
        notes.create(owner="b", body="also gone")
        notes.create(owner="a", body="kept")
    assert _note_count(database) == 1


def test_nested_transaction_is_a_savepoint(open_db: OpenDb) -> None:
    database = open_db()
    notes = database.bind(Note)[Note]
    with database.transaction():
        notes.create(owner="outer", body="1")
        with database.transaction():
            notes.create(owner="inner", body="joined")
        with pytest.raises(RuntimeError), database.transaction():
            notes.create(owner="inner", body="undone")
            raise RuntimeError("only the inner part")
        notes.create(owner="outer", body="2")
    with database.transaction():
        bodies = sorted(note.body for note in notes.select())
    assert bodies == ["1", "2", "joined"]


def test_queries_outside_a_transaction_are_refused(open_db: OpenDb) -> None:
    database = open_db()
    notes = database.bind(Note)[Note]
    with pytest.raises(peewee.InterfaceError):
        notes.select().count()


def test_concurrent_writers_all_land(open_db: OpenDb) -> None:
    database = open_db()
    notes = database.bind(Note)[Note]
    writers, rows = 8, 200
    start = threading.Barrier(writers)

    def write(writer: int) -> None:
        start.wait(THREAD_WAIT_S)
        for _ in range(rows):
            # Read, then write: under a plain BEGIN this lock upgrade is what fails with
            # "database is locked" on SQLite; BEGIN IMMEDIATE makes writers queue instead.
            with database.transaction():
                done = notes.select().where(notes.owner == f"w{writer}").count()
                notes.create(owner=f"w{writer}", body=str(done))

    with ThreadPoolExecutor(writers) as pool:
        for future in [pool.submit(write, writer) for writer in range(writers)]:
            future.result(THREAD_WAIT_S)
    assert _note_count(database) == writers * rows
    with database.transaction():
        bodies = {(note.owner, int(note.body)) for note in notes.select()}
    assert bodies == {(f"w{w}", row) for w in range(writers) for row in range(rows)}


def test_waiting_longer_than_the_pool_timeout_is_a_storage_error(open_db: OpenDb) -> None:
    database = open_db(pool_size=1, pool_timeout=0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.transaction():
            holding.set()
            release.wait(THREAD_WAIT_S)

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(hold)
        assert holding.wait(THREAD_WAIT_S)
        started = time.monotonic()
        try:
            with pytest.raises(StorageBusy, match="pool") as info, database.transaction():
                pass
        finally:
            release.set()
        waited = time.monotonic() - started
        held.result(THREAD_WAIT_S)
    assert info.value.code == "STORAGE_BUSY"
    assert 0.15 <= waited < 5
    with database.transaction():  # the connection went back to the pool
        pass


def test_close_is_idempotent_and_final(open_db: OpenDb) -> None:
    database = open_db()
    database.close()
    database.close()
    assert database.closed
    with pytest.raises(StorageError, match="closed"), database.transaction():
        pass


# --------------------------------------------------------------------------- model binding


def test_bound_models_keep_the_schema_and_leave_the_originals_alone(open_db: OpenDb) -> None:
    database = open_db()
    bound = database.bind(Note, Tag)
    notes, tags = bound.Note, bound.Tag
    assert bound[Note] is notes and list(bound) == [notes, tags]
    assert issubclass(notes, Note) and notes is not Note
    assert database.bind(Tag)[Tag] is tags, "not cached per database"
    assert notes._meta.table_name == "note" and notes._meta.database is database.peewee
    assert tags.note.rel_model is notes and tags.parent.rel_model is tags
    assert Note._meta.database is None and Tag.note.rel_model is Note
    assert Note.__dict__["tags"].field is Tag.note, "the original backref was rebound"
    assert notes.__dict__["tags"].field is tags.note
    with database.transaction() as db:
        assert any(
            index.unique and index.columns == ["owner", "body"] for index in db.get_indexes("note")
        )
        note = notes.create(owner="o", body="b")
        root = tags.create(note=note, label="root")
        tags.create(note=note, label="leaf", parent=root)
        assert [tag.label for tag in note.tags.order_by(tags.id)] == ["root", "leaf"]
        assert [tag.label for tag in root.children] == ["leaf"]
        joined = tags.select().join(notes).where(notes.owner == "o").count()
        assert joined == 2
        with pytest.raises(Note.DoesNotExist):
            notes.get(notes.owner == "nobody")
        # foreign_keys is on (SQLite) / enforced (PostgreSQL) through the bound models too.
        with pytest.raises(peewee.IntegrityError), database.transaction():
            tags.create(note=10_000, label="dangling")


def test_bind_refuses_what_it_cannot_bind_safely(open_db: OpenDb) -> None:
    database = open_db()
    with pytest.raises(ConfigurationError, match="Note"):
        database.bind(Tag)  # its foreign key target would stay unbound
    with pytest.raises(ConfigurationError):
        database.bind(object)  # type: ignore[arg-type]


def test_two_databases_with_the_same_models_stay_apart(open_db: OpenDb, sqlite_url: str) -> None:
    first = open_db()
    second = open_db(sqlite_url)
    threads_per_db, rows = 4, 50
    start = threading.Barrier(2 * threads_per_db)

    def work(database: Database, owner: str) -> list[str]:
        notes = database.bind(Note, Tag).Note
        start.wait(THREAD_WAIT_S)
        for row in range(rows):
            with database.transaction():
                notes.create(owner=owner, body=str(row))
        with database.transaction():
            return sorted({note.owner for note in notes.select()})

    jobs = [(first, f"first-{i}") for i in range(threads_per_db)]
    jobs += [(second, f"second-{i}") for i in range(threads_per_db)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        seen = [f.result(THREAD_WAIT_S) for f in [pool.submit(work, *job) for job in jobs]]
    for (database, _), owners in zip(jobs, seen, strict=True):
        prefix = "first" if database is first else "second"
        assert all(owner.startswith(prefix) for owner in owners), owners
    assert _note_count(first) == _note_count(second) == threads_per_db * rows
    assert Note._meta.database is None
