"""A Database counts the SQL statements it executes and the transactions it begins, so that a
bench can say how many of each one message costs."""

from __future__ import annotations

from collections.abc import Iterator

import peewee
import pytest

from storage import CounterSnapshot, Database, Migration, bind_models, open_database


class Row(peewee.Model):
    key = peewee.TextField(unique=True)
    value = peewee.IntegerField()

    class Meta:
        table_name = "counted_row"


MIGRATIONS = (Migration(1, "rows", lambda db: db.create_tables(list(bind_models(db, Row)))),)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = open_database(database_url, migrations=MIGRATIONS)
    yield database
    database.close()


def test_counters_start_at_zero_when_open_returns(database: Database) -> None:
    # The migrations' own statements are not the caller's.
    assert database.counters.snapshot() == CounterSnapshot(statements=0, transactions=0)


def test_a_known_transaction_counts_what_it_ran(database: Database) -> None:
    rows = database.bind(Row)[Row]
    before = database.counters.snapshot()
    with database.transaction():
        rows.create(key="a", value=1)  # INSERT
        rows.update(value=2).where(rows.key == "a").execute()  # UPDATE
        assert rows.get(rows.key == "a").value == 2  # SELECT
    assert database.counters.snapshot() - before == CounterSnapshot(3, 1)

    # A nested transaction is a savepoint: two statements (SAVEPOINT, RELEASE), no new one.
    with database.transaction(), database.transaction():
        rows.create(key="b", value=1)
    assert database.counters.snapshot() - before == CounterSnapshot(3 + 1 + 2, 2)

    # A read-only transaction counts the same way; a rolled-back one too.
    with database.transaction(read_only=True):
        rows.select().count()
    with pytest.raises(RuntimeError), database.transaction():
        rows.create(key="c", value=1)
        raise RuntimeError("undo")
    assert database.counters.snapshot() - before == CounterSnapshot(6 + 1 + 1, 4)


def test_reset_returns_the_counts_and_starts_again(database: Database) -> None:
    rows = database.bind(Row)[Row]
    for i in range(5):
        with database.transaction():
            rows.create(key=str(i), value=i)
    assert database.counters.reset() == CounterSnapshot(5, 5)
    assert database.counters.snapshot() == CounterSnapshot(0, 0)
    with database.transaction():
        rows.select().count()
    assert (database.counters.statements, database.counters.transactions) == (1, 1)
