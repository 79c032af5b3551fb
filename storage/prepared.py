"""Statements on whole model rows, written once per model and database kind (`RowSql`).

Building a statement with peewee's query builder costs many times what the database spends
running it: ~100-200 µs of Python for a one-row select, insert or update that SQLite runs in
~10 µs. A store that runs the same few statements on whole rows again and again (the agent's
handshake steps, a connection's activation) writes their text once here and runs it through
the peewee database's `execute_sql`, so `Database.counters` still count every statement.

Values go through the model's fields both ways as peewee's own queries do (`db_value` on the
way in, `python_value` on the way out), defaults are the model's, and rows come back as
instances of the (bound) model class with nothing dirty: the same objects the query builder
would return, and `save` of such a row is `RowSql.update`. Identifiers are quoted, so a
column may be named like an SQL keyword; ``{p}`` in a condition is the placeholder of the
database kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import peewee

M = TypeVar("M", bound=peewee.Model)


def _quote(name: str) -> str:
    return f'"{name}"'


class RowSql(Generic[M]):
    """The insert, update-by-key and select statements of one model (see the module doc)."""

    def __init__(self, model: type[M], kind: str) -> None:
        meta = model._meta  # type: ignore[attr-defined]
        self.model = model
        self.placeholder = "?" if kind == "sqlite" else "%s"
        p = self.placeholder
        table = _quote(meta.table_name)
        self._key: peewee.Field = meta.primary_key
        self._auto = isinstance(self._key, peewee.AutoField)
        self._fields: list[peewee.Field] = list(meta.sorted_fields)
        self._stored = [f for f in self._fields if not (self._auto and f is self._key)]
        self._updated = [f for f in self._fields if f is not self._key]
        columns = ", ".join(_quote(f.column_name) for f in self._stored)
        values = ", ".join([p] * len(self._stored))
        returning = f" RETURNING {_quote(self._key.column_name)}" if self._auto else ""
        self.insert_sql = f"INSERT INTO {table} ({columns}) VALUES ({values}){returning}"
        assignments = ", ".join(f"{_quote(f.column_name)} = {p}" for f in self._updated)
        key = f"{_quote(self._key.column_name)} = {p}"
        self.update_sql = f"UPDATE {table} SET {assignments} WHERE {key}"
        all_columns = ", ".join(_quote(f.column_name) for f in self._fields)
        self._select_prefix = f"SELECT {all_columns} FROM {table}"
        self._names = [f.name for f in self._fields]
        self._readers = [f.python_value for f in self._fields]

    # ------------------------------------------------------------------ writing

    def insert(self, db: peewee.Database, **values: Any) -> M:
        """Insert a row of `values` (the model's defaults for the rest); returns it, with its
        generated key set."""
        row = self.model(**values)
        params = [f.db_value(row.__data__.get(f.name)) for f in self._stored]
        cursor = db.execute_sql(self.insert_sql, params)
        if self._auto:
            setattr(row, self._key.name, cursor.fetchone()[0])
        row._dirty.clear()  # type: ignore[attr-defined]
        return row

    def update(self, db: peewee.Database, row: M) -> None:
        """Write every column of `row` (as peewee's `save` of a stored row does)."""
        data = row.__data__
        params = [f.db_value(data.get(f.name)) for f in self._updated]
        params.append(self._key.db_value(data.get(self._key.name)))
        db.execute_sql(self.update_sql, params)
        row._dirty.clear()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ reading

    def select(self, where: str, order_by: str | None = None) -> str:
        """The text of a select of whole rows: `where` with ``{p}`` placeholders and quoted
        column names as needed, e.g. ``'"conn_id" = {p}'``."""
        sql = f"{self._select_prefix} WHERE {where.format(p=self.placeholder)}"
        return f"{sql} ORDER BY {order_by}" if order_by else sql

    def rows(self, db: peewee.Database, sql: str, params: Sequence[Any]) -> list[M]:
        """Run a statement made by `select`; its rows as model instances."""
        names, readers, model = self._names, self._readers, self.model
        found = []
        for values in db.execute_sql(sql, params).fetchall():
            data = {n: read(v) for n, read, v in zip(names, readers, values, strict=True)}
            row = model(__no_default__=1, **data)
            row._dirty.clear()  # type: ignore[attr-defined]
            found.append(row)
        return found

    def first(self, db: peewee.Database, sql: str, params: Sequence[Any]) -> M | None:
        found = self.rows(db, sql, params)
        return found[0] if found else None
