"""Open a duplex database by URL for named layers, run short transactions on it, and keep its
schema current.

Owns: parsing database URLs (`sqlite:///path` with WAL, `postgresql://…` on psycopg 3), the
pooled peewee database behind a `Database`, short transactions from any thread, binding peewee
model classes to one `Database` without touching the classes themselves, the versioned
migrations of the layers a database is opened for, the modes of SQLite files (owner only),
optional SQLCipher encryption, statement and transaction counters for benches, and the one
place where lower layers' errors (sqlite3, peewee, psycopg, OSError) become `StorageError`s.

Must not: import anything from `actors/`, know any layer's tables (layers bring their own
models and migrations as a `Layer` value), keep a connection checked out between
transactions, mutate a model class globally (`Model.bind` is process-wide and not
thread-safe, and one process may hold several databases with the same models), or keep any
registry that a module fills by being imported.

Layers and versions. A database is opened for the layers its program uses
(`open_database(url, layers=[AGENT_LAYER])`) and holds only their tables. Migration versions
are global because the layers may share one schema (the agent's and the chat's tables live
in one client database), so each layer owns a block of versions (`LAYER_VERSION_BLOCKS`):
kernel and tests 1-99, agent 100-199, chat 200-299, server 300-399; a new layer gets a new
block there. On open, a recorded version inside an opened layer's block that this program
does not know is refused (an older program must not write on a newer schema); versions in
other blocks belong to layers this program did not open and are left alone.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import itertools
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse.pool import (
    MaxConnectionsExceeded,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
    _PooledSqliteDatabase,
)

from protocol.errors import (
    ConfigurationError,
    MigrationError,
    StorageBusy,
    StorageCorrupt,
    StorageError,
    StorageUnavailable,
    WrongPassphrase,
)

__all__ = [
    "LAYER_VERSION_BLOCKS",
    "BoundModels",
    "CounterSnapshot",
    "Database",
    "DatabaseKind",
    "Layer",
    "Migration",
    "StorageCounters",
    "bind_models",
    "open_database",
]

logger = logging.getLogger(__name__)

DatabaseKind = Literal["sqlite", "postgresql"]

LAYER_VERSION_BLOCKS: Final[dict[str, range]] = {
    "kernel": range(1, 100),
    "agent": range(100, 200),
    "chat": range(200, 300),
    "server": range(300, 400),
}

# Long enough that writers queue behind each other under load instead of failing, short
# enough that a wedged writer surfaces as an error rather than a silent hang.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_SYNCHRONOUS_MODES: Final = ("NORMAL", "FULL")
_MIGRATIONS_TABLE: Final = "schema_migrations"
# Key of the transaction-scoped advisory lock that serialises migration runs on PostgreSQL
# (ASCII "duplexmg"); SQLite needs none because BEGIN IMMEDIATE already takes the write lock.
_PG_MIGRATION_LOCK_KEY: Final = 0x6475706C65786D67
_PG_CONNECT_TIMEOUT_S: Final = 10
# A database file and every file SQLite keeps beside it hold private keys: owner only.
_FILE_MODE: Final = 0o600
_SQLITE_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One schema step: `apply` runs inside the transaction that records `version`."""

    version: int
    name: str
    apply: Callable[[peewee.Database], None]

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ConfigurationError(f"migration version must be an int, got {self.version!r}")
        if self.version < 1:
            raise ConfigurationError(f"migration version must be >= 1, got {self.version}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"migration {self.version} needs a non-empty name")
        if not callable(self.apply):
            raise ConfigurationError(f"migration {self.version} {self.name!r}: apply not callable")


def _check_ascending(migrations: Sequence[Migration], where: str) -> tuple[Migration, ...]:
    if isinstance(migrations, Migration) or not isinstance(migrations, Sequence):
        raise ConfigurationError(f"{where}: expected a sequence of Migration, got {migrations!r}")
    steps = tuple(migrations)
    for step in steps:
        if not isinstance(step, Migration):
            raise ConfigurationError(f"{where}: expected Migration, got {step!r}")
    for earlier, later in itertools.pairwise(steps):
        if later.version <= earlier.version:
            raise ConfigurationError(
                f"{where}: migration versions must be unique and ascending, "
                f"got {earlier.version} then {later.version}"
            )
    return steps


@dataclass(frozen=True)
class Layer:
    """A storage layer as a value: its name, the block of migration versions it owns, and its
    migrations (ascending, inside the block).

    Each layer's module declares one (`storage.agent.AGENT_LAYER`, `storage.server.
    SERVER_LAYER`) and the program that uses it passes it to `open_database`; nothing is
    registered anywhere. A layer named in `LAYER_VERSION_BLOCKS` must own exactly that block;
    other names (tests, custom actor kinds) may take any block that the layers they are
    opened with do not overlap.
    """

    name: str
    versions: range
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a layer needs a non-empty name, got {self.name!r}")
        where = f"layer {self.name!r}"
        if not isinstance(self.versions, range) or self.versions.step != 1 or not self.versions:
            raise ConfigurationError(f"{where}: versions must be a non-empty range with step 1")
        if self.versions.start < 1:
            raise ConfigurationError(f"{where}: versions start at 1 or above")
        allotted = LAYER_VERSION_BLOCKS.get(self.name)
        if allotted is not None and self.versions != allotted:
            raise ConfigurationError(
                f"{where} owns versions {allotted.start}-{allotted.stop - 1} "
                f"(LAYER_VERSION_BLOCKS), not {self.versions.start}-{self.versions.stop - 1}"
            )
        steps = _check_ascending(self.migrations, where)
        for step in steps:
            if step.version not in self.versions:
                raise ConfigurationError(
                    f"{where} owns versions {self.versions.start}-{self.versions.stop - 1}, "
                    f"migration {step.version} {step.name!r} is outside it"
                )
        object.__setattr__(self, "migrations", steps)

    def __repr__(self) -> str:
        last = self.migrations[-1].version if self.migrations else None
        return f"Layer({self.name!r}, {self.versions.start}-{self.versions.stop - 1}, at {last})"


@dataclass(frozen=True)
class _Schema:
    """What one open manages: its layers, plus the caller's own migrations (`migrations=`),
    which claim every version outside the layers' blocks."""

    layers: tuple[Layer, ...]
    custom: tuple[Migration, ...] | None

    @property
    def steps(self) -> tuple[Migration, ...]:
        everything = [step for layer in self.layers for step in layer.migrations]
        everything += self.custom or ()
        return tuple(sorted(everything, key=lambda step: step.version))

    @property
    def empty(self) -> bool:
        return not self.layers and self.custom is None

    def owner(self, version: int) -> str | None:
        """The opened layer whose block holds `version`; None for another layer's version."""
        for layer in self.layers:
            if version in layer.versions:
                return layer.name
        return "migrations=" if self.custom is not None else None


def _schema(layers: Sequence[Layer], migrations: Sequence[Migration] | None) -> _Schema:
    if isinstance(layers, Layer) or not isinstance(layers, Sequence):
        raise ConfigurationError(f"layers must be a list of Layer values, got {layers!r}")
    chosen = tuple(layers)
    for layer in chosen:
        if not isinstance(layer, Layer):
            raise ConfigurationError(f"layers must be Layer values, got {layer!r}")
    names = [layer.name for layer in chosen]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"a layer is named twice in {names}")
    for first, second in itertools.combinations(chosen, 2):
        if set(first.versions) & set(second.versions):
            raise ConfigurationError(f"layers {first.name!r} and {second.name!r} share versions")
    custom = None
    if migrations is not None:
        custom = _check_ascending(migrations, "open_database(migrations=…)")
        for step in custom:
            for layer in chosen:
                if step.version in layer.versions:
                    raise ConfigurationError(
                        f"migration {step.version} {step.name!r} lies in layer "
                        f"{layer.name!r}'s block of versions"
                    )
    return _Schema(chosen, custom)


class _SchemaMigration(peewee.Model):
    """The bookkeeping row of one applied migration (the table every layer shares)."""

    version = peewee.IntegerField(primary_key=True)
    name = peewee.TextField()
    applied_at = peewee.DateTimeField()

    class Meta:
        table_name = _MIGRATIONS_TABLE


def _migrate(database: Database, schema: _Schema) -> None:
    migrations = schema.steps
    known = {step.version for step in migrations}

    def applied_versions(db: peewee.Database) -> set[int]:
        # The lock comes first so two openers never both see a version as missing.
        if database.kind == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK_KEY,))
        record = database.bind(_SchemaMigration)[_SchemaMigration]
        record.create_table(safe=True)
        versions = {row.version for row in record.select(record.version)}
        unknown = sorted(v for v in versions - known if schema.owner(v) is not None)
        if unknown:
            # An older program must not scribble on a schema written by a newer one.
            owners = sorted({str(schema.owner(v)) for v in unknown})
            raise MigrationError(
                f"{database.target} holds migrations {unknown} of {', '.join(owners)} that "
                f"this program does not know (it knows up to {max(known, default=0)}); "
                "use a newer duplex"
            )
        return versions

    with database.transaction() as db:
        applied = applied_versions(db)
    foreign = sorted(v for v in applied if schema.owner(v) is None)
    if foreign:
        logger.debug(
            "versions of layers not opened left alone",
            extra={"db": repr(database), "versions": foreign},
        )
    pending = [step for step in migrations if step.version not in applied]

    for step in pending:
        started = time.perf_counter()
        try:
            with database.transaction() as db:
                if step.version in applied_versions(db):
                    logger.debug("migration applied meanwhile", extra={"version": step.version})
                    continue
                step.apply(db)
                record = database.bind(_SchemaMigration)[_SchemaMigration]
                record.create(
                    version=step.version,
                    name=step.name,
                    applied_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
                )
        except (MigrationError, StorageUnavailable, StorageCorrupt, StorageBusy):
            raise  # already typed: the database itself failed, not this step
        except Exception as exc:
            raise MigrationError(
                f"migration {step.version} {step.name!r} failed on {database.target}: {exc}"
            ) from exc
        logger.info(
            "migration applied",
            extra={
                "version": step.version,
                "migration": step.name,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )


# --------------------------------------------------------------------------- model binding


class BoundModels:
    """Model classes bound to one database: `ns.Contact`, `ns[Contact]`, `list(ns)`."""

    __slots__ = ("_by_model", "_by_name")

    def __init__(self, pairs: Sequence[tuple[type[peewee.Model], type[peewee.Model]]]) -> None:
        self._by_model = dict(pairs)
        self._by_name = {model.__name__: bound for model, bound in pairs}

    def __getattr__(self, name: str) -> type[peewee.Model]:
        if name.startswith("__"):  # copy/pickle probe before __init__ ran: no recursion
            raise AttributeError(name)
        try:
            return self._by_name[name]
        except KeyError:
            raise AttributeError(f"no bound model named {name!r}") from None

    def __getitem__(self, model: type[peewee.Model]) -> type[peewee.Model]:
        return self._by_model[model]

    def __iter__(self) -> Iterator[type[peewee.Model]]:
        return iter(self._by_model.values())

    def __len__(self) -> int:
        return len(self._by_model)

    def __repr__(self) -> str:
        return f"BoundModels({', '.join(self._by_name)})"


def _check_bindable(model: object) -> type[peewee.Model]:
    if not (isinstance(model, type) and issubclass(model, peewee.Model)):
        raise ConfigurationError(f"can only bind peewee Model classes, got {model!r}")
    if model._meta.manytomany:
        raise ConfigurationError(f"{model.__name__}: ManyToManyField is not supported by bind")
    for field in model._meta.fields.values():
        if isinstance(field, peewee.DeferredForeignKey):
            raise ConfigurationError(f"{model.__name__}.{field.name}: unresolved deferred FK")
    for pending in peewee.DeferredForeignKey._unresolved:
        # Creating a class of that name would resolve someone else's deferred key to it.
        if pending.rel_model_name == model.__name__.lower():
            raise ConfigurationError(f"{model.__name__}: a DeferredForeignKey still waits for it")
    return model


def _bind_into(
    database: peewee.Database,
    models: Sequence[type[peewee.Model]],
    bound: dict[type[peewee.Model], type[peewee.Model]],
) -> BoundModels:
    """Create (into `bound`) a subclass per model whose `Meta.database` is `database`.

    Each subclass keeps the table name, fields, indexes and constraints of its model; its
    foreign keys point at the bound subclasses of their targets, so joins and back-references
    stay on `database`. A target that is neither given nor already bound is refused, because
    binding a back-reference onto the unbound class would mutate it for every database.
    """
    wanted = [_check_bindable(model) for model in dict.fromkeys(models)]
    names = [model.__name__ for model in wanted]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two models share a class name in {names}")

    order: list[type[peewee.Model]] = []
    visiting: set[type[peewee.Model]] = set()

    def visit(model: type[peewee.Model]) -> None:
        if model in bound or model in order:
            return
        if model in visiting:
            raise ConfigurationError(f"foreign keys form a cycle through {model.__name__}")
        visiting.add(model)
        for field in model._meta.refs:
            target = field.rel_model
            if target is model:
                continue
            if target not in bound and target not in wanted:
                raise ConfigurationError(
                    f"{model.__name__}.{field.name} refers to {target.__name__}, "
                    "which must be bound to the same database (pass it too)"
                )
            visit(target)
        visiting.discard(model)
        order.append(model)

    for model in wanted:
        visit(model)
    for model in order:
        bound[model] = _bound_subclass(model, database, bound)
    return BoundModels([(model, bound[model]) for model in wanted])


def _bound_subclass(
    model: type[peewee.Model],
    database: peewee.Database,
    bound: dict[type[peewee.Model], type[peewee.Model]],
) -> type[peewee.Model]:
    meta = model._meta
    attrs: dict[str, object] = {"__module__": model.__module__, "__qualname__": model.__qualname__}
    for name, field in meta.fields.items():
        if not isinstance(field, peewee.ForeignKeyField):
            continue  # plain fields are deep-copied by peewee's own inheritance
        # Given explicitly, the inherited copy (which would still point at the unbound target
        # and hang its back-reference there) is never made.
        fk = deepcopy(field)
        if field.rel_model is model:
            fk._is_self_reference = True
            fk.rel_model = model
        else:
            fk.rel_model = bound[field.rel_model]
        # By name, so bind() resolves it on the bound target; None means its primary key.
        is_pk = field.rel_field is field.rel_model._meta.primary_key
        fk.rel_field = None if is_pk else field.rel_field.name
        fk.declared_backref = field.backref  # the resolved name, so callers see the same API
        fk.backref = None
        attrs[name] = fk

    meta_attrs = {
        "database": database,
        "table_name": meta.table_name,
        "without_rowid": meta.without_rowid,
        "depends_on": None,
    }
    attrs["Meta"] = type("Meta", (), meta_attrs)
    subclass = type(model)(model.__name__, (model,), attrs)

    # A self-reference to a field not yet added when bind() ran resolved to the parent's.
    for fk in subclass._meta.refs:
        if fk.rel_field.model is not fk.rel_model:
            fk.rel_field = fk.rel_model._meta.fields[fk.rel_field.name]
    # Code written against the model catches `Model.DoesNotExist`; keep that working.
    subclass.DoesNotExist = type(
        model.DoesNotExist.__name__, (model.DoesNotExist,), {"__module__": model.__module__}
    )
    return subclass


def bind_models(database: peewee.Database, *models: type[peewee.Model]) -> BoundModels:
    """Bind `models` to a raw peewee database, uncached: for use inside a migration's `apply`.

    Outside migrations use `Database.bind`, which caches the subclasses per database.
    """
    return _bind_into(database, models, {})


# --------------------------------------------------------------------------- lower errors


def _lower_errors() -> tuple[type[BaseException], ...]:
    """The exception types of the layers below storage (drivers, peewee, the OS)."""
    found: list[type[BaseException]] = [
        peewee.PeeweeException,
        sqlite3.Error,
        MaxConnectionsExceeded,
        OSError,
    ]
    if _sqlcipher is not None:
        found.append(_sqlcipher.Error)
    return tuple(found)


# peewee wraps a driver's errors by class name; these, raised inside a transaction's body,
# mean the database failed (locked, gone, damaged), not that the body's data or SQL was
# wrong, so they are mapped too. IntegrityError, DataError, ProgrammingError and friends stay
# as they are: the stores interpret them (a duplicate key) or they are bugs.
_BODY_FAILURES: Final = (peewee.OperationalError, peewee.InternalError)


def _is_body_failure(exc: BaseException) -> bool:
    return isinstance(exc, _BODY_FAILURES) or type(exc) is peewee.DatabaseError


def _storage_error(
    exc: BaseException, doing: str, default: type[StorageError] = StorageError
) -> StorageError:
    """The one place where an error of a lower layer becomes a duplex `StorageError`.

    `doing` names what failed and on which file or (redacted) URL, e.g. "cannot open
    /x/a.db"; the driver's own words follow it. The class says what the caller can do:
    StorageUnavailable (fix the path, the permissions, the server), StorageCorrupt (not a
    database), StorageBusy (retry later), or `default` when the words say nothing finer.
    Callers raise the result `from exc`, so the original stays on `__cause__`.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, MaxConnectionsExceeded):
        return StorageBusy(f"{doing}: no free connection in the pool within the pool timeout")
    if isinstance(exc, OSError) and not isinstance(exc, peewee.PeeweeException):
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return StorageBusy(f"{doing}: {reason}")
        return StorageUnavailable(f"{doing}: {reason}")
    # peewee keeps the driver's exception it wraps as `orig`.
    original = getattr(exc, "orig", None) or exc
    reason = " ".join(str(original).split()) or type(original).__name__
    words = reason.lower()
    sqlstate = getattr(original, "sqlstate", None) or ""
    kind: type[StorageError] = default
    if "not a database" in words or "malformed" in words or sqlstate in ("XX001", "XX002"):
        kind = StorageCorrupt
    elif "locked" in words or "busy" in words or sqlstate in ("40P01", "55P03", "57014"):
        kind = StorageBusy
    elif (
        "unable to open" in words
        or "readonly database" in words
        or sqlstate.startswith(("08", "28", "3D", "57P"))
    ):
        kind = StorageUnavailable
    return kind(f"{doing}: {reason}")


# --------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    """The counters at one moment; subtract two to get what happened in between."""

    statements: int
    transactions: int

    def __sub__(self, earlier: CounterSnapshot) -> CounterSnapshot:
        return CounterSnapshot(
            self.statements - earlier.statements, self.transactions - earlier.transactions
        )


class StorageCounters:
    """What a `Database` did, for benches: SQL statements executed and transactions begun.

    `statements` counts every statement sent through peewee's `execute_sql` (every query of
    the stores and migrations, and the SAVEPOINT/RELEASE of nested transactions); BEGIN and
    COMMIT are not statements here, they are counted once per outermost transaction in
    `transactions`. The increments are plain ints under no lock, chosen to cost nothing on
    the hot path: CPython with its GIL does not switch threads inside `x.n += 1` on an int,
    but nothing guarantees it (a free-threaded build could lose increments), so a bench that
    needs exact figures reads them over a phase it controls.
    """

    __slots__ = ("statements", "transactions")

    def __init__(self) -> None:
        self.statements = 0
        self.transactions = 0

    def snapshot(self) -> CounterSnapshot:
        return CounterSnapshot(self.statements, self.transactions)

    def reset(self) -> CounterSnapshot:
        """Set both counters to zero; returns what they were."""
        before = self.snapshot()
        self.statements = 0
        self.transactions = 0
        return before

    def __repr__(self) -> str:
        return f"StorageCounters(statements={self.statements}, transactions={self.transactions})"


class _Counting:
    """Mixed into the pooled peewee database: counts what goes through `execute_sql`."""

    duplex_counters: StorageCounters

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.duplex_counters = StorageCounters()
        super().__init__(*args, **kwargs)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        self.duplex_counters.statements += 1
        return super().execute_sql(sql, params)  # type: ignore[misc]


class _CountingSqlite(_Counting, PooledSqliteDatabase):
    pass


class _CountingPostgres(_Counting, PooledPostgresqlDatabase):
    pass


# --------------------------------------------------------------------------- database


class _FairGate:
    """A counting semaphore that hands a released slot to the longest waiter (first come,
    first served): no newcomer can barge in, so no waiter starves in a burst."""

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: collections.deque[threading.Event] = collections.deque()

    def acquire(self, timeout: float) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            granted = threading.Event()
            self._waiters.append(granted)
        if granted.wait(timeout):
            return True
        with self._lock:
            if granted.is_set():  # granted just as the wait ended: keep it
                return True
            self._waiters.remove(granted)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes straight to that waiter
            else:
                self._free += 1


class Database:
    """An open duplex database: a pool of connections plus the models bound to it.

    Every read and write goes through `transaction()`; the underlying peewee database refuses
    queries outside one (autoconnect is off) so that no thread keeps a pooled connection.
    """

    def __init__(
        self,
        pool: peewee.Database,
        *,
        url: str,
        kind: DatabaseKind,
        pool_size: int = 16,
        pool_timeout: float = 10.0,
        target: str | None = None,
        layers: Sequence[str] = (),
        encrypted: bool = False,
    ) -> None:
        self._pool = pool
        # peewee's pool makes a waiting thread poll for a free connection once a second, so
        # in a burst (hundreds of actors starting) some wait whole seconds and time out while
        # transactions take a fraction of a millisecond. A semaphore in front wakes a waiter
        # as soon as a connection is handed back; the pool then always has one free.
        self._gate = _FairGate(pool_size)
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._url = url
        self._target = target or _redact(url)
        self._kind: DatabaseKind = kind
        self._layers = tuple(layers)
        self._encrypted = encrypted
        self._closed = False
        self._state_lock = threading.Lock()
        self._bound: dict[type[peewee.Model], type[peewee.Model]] = {}
        counters = getattr(pool, "duplex_counters", None)
        if counters is None:  # a pool made elsewhere (tests): count transactions only
            counters = StorageCounters()
        self._counters: StorageCounters = counters

    @property
    def peewee(self) -> peewee.Database:
        """The pooled peewee database (usable only inside `transaction()`)."""
        return self._pool

    @property
    def url(self) -> str:
        return self._url

    @property
    def target(self) -> str:
        """What errors name: the file's absolute path (SQLite) or the redacted URL."""
        return self._target

    @property
    def kind(self) -> DatabaseKind:
        return self._kind

    @property
    def layers(self) -> tuple[str, ...]:
        """The names of the layers this database was opened for."""
        return self._layers

    @property
    def encrypted(self) -> bool:
        return self._encrypted

    @property
    def counters(self) -> StorageCounters:
        """Statements executed and transactions begun (see `StorageCounters`)."""
        return self._counters

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<Database {_redact(self._url)}>"

    @contextlib.contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[peewee.Database]:
        """A short transaction on a pooled connection, from any thread.

        SQLite begins with BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout
        instead of failing with "database is locked" when a read lock would be upgraded.
        `read_only=True` promises the body only reads: SQLite then begins DEFERRED, so
        readers do not queue behind writers (WAL lets them read alongside).
        Nested use in the same thread becomes a savepoint.

        Errors: the body's own exceptions roll back and propagate unchanged, except that the
        database failing under it (peewee's OperationalError, InternalError, DatabaseError:
        locked, gone, damaged) becomes a StorageError like the rest; failing to get a
        connection, begin or commit raises a StorageError subclass (StorageBusy for the pool
        timeout or a lock, StorageUnavailable when it cannot connect, StorageCorrupt).
        """
        pool = self._pool
        checked_out = pool.is_closed()
        if checked_out:
            self._check_out()
        body_error: BaseException | None = None
        try:
            deferred = read_only and self._kind == "sqlite"
            if not pool.in_transaction():
                self._counters.transactions += 1
            with pool.atomic(lock_type="DEFERRED") if deferred else pool.atomic():
                try:
                    yield pool
                except BaseException as exc:
                    body_error = exc
                    raise
        except _lower_errors() as exc:
            if exc is body_error and not _is_body_failure(exc):
                raise
            raise _storage_error(exc, f"transaction on {self._target} failed") from exc
        finally:
            if checked_out:
                self._check_in()

    def _check_out(self) -> None:
        if self._closed:
            raise StorageError(f"{self!r} is closed")
        if not self._gate.acquire(timeout=self._pool_timeout):
            raise StorageBusy(
                f"no free connection in the pool of {self._target} within the pool timeout"
            )
        try:
            self._pool.connect()
        except _lower_errors() as exc:
            self._gate.release()
            raise _storage_error(exc, f"cannot open {self._target}", StorageUnavailable) from exc
        if self._closed:
            # close() ran while we connected; hand the connection straight back.
            self._check_in()
            raise StorageError(f"{self!r} is closed")

    def _check_in(self) -> None:
        try:
            self._pool.close()
        except peewee.PeeweeException:
            # Raising here would hide the body's own error; the pool drops a broken connection.
            logger.warning("returning a connection failed", extra={"db": repr(self)}, exc_info=True)
        finally:
            self._gate.release()

    def bind(self, *models: type[peewee.Model]) -> BoundModels:
        """Subclasses of `models` that run on this database, cached per database.

        Thread-safe, and leaves the model classes untouched, so two databases in one process
        can use the same models at the same time. Foreign-key targets must be bound too (in
        this call or an earlier one).
        """
        with self._state_lock:
            return _bind_into(self._pool, models, self._bound)

    def schema_version(self, block: range | None = None) -> int:
        """The highest applied migration version (within `block`, e.g. a layer's
        `versions`, if given); 0 for a database without migrations."""
        with self.transaction(read_only=True) as db:
            if not db.table_exists(_MIGRATIONS_TABLE):
                return 0
            record = self.bind(_SchemaMigration)[_SchemaMigration]
            query = record.select(peewee.fn.MAX(record.version))
            if block is not None:
                query = query.where(record.version.between(block.start, block.stop - 1))
            return int(query.scalar() or 0)

    def rekey(self, passphrase: str) -> None:
        """Re-encrypt an encrypted database under a new passphrase.

        Waits (up to the pool timeout) until no transaction runs, then rewrites the file on
        one connection and drops the other pooled connections, which still hold the old key.
        On failure the old passphrase stays valid.
        """
        if not self._encrypted:
            raise ConfigurationError(f"{self._target} is not encrypted: nothing to rekey")
        _check_passphrase(passphrase)
        taken = 0
        deadline = time.monotonic() + self._pool_timeout
        try:
            while taken < self._pool_size:
                if not self._gate.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise StorageBusy(f"cannot rekey {self._target}: transactions still run")
                taken += 1
            pool = self._pool
            pool.close_idle()  # every connection is idle now: none keeps the old key
            try:
                pool.connect()
                try:
                    pool.execute_sql(f"PRAGMA rekey = {_quote(passphrase)}")
                finally:
                    pool.close()
                pool.close_idle()
            except _lower_errors() as exc:
                raise _storage_error(exc, f"cannot rekey {self._target}") from exc
            pool.connect_params["passphrase"] = passphrase
        finally:
            for _ in range(taken):
                self._gate.release()
        logger.info("database rekeyed", extra={"db": repr(self)})

    def truncate_wal(self) -> None:
        """Checkpoint SQLite's write-ahead log and truncate it, so that pages of deleted rows
        written there are gone from disk too (a no-op on PostgreSQL; SQLite skips it while a
        reader still holds the log, and the next call does it).

        A checkpoint cannot run inside a transaction, and pooled connections are lent only
        inside one: it runs on a short connection of its own (keyed, when encrypted)."""
        if self._kind != "sqlite":
            return
        passphrase = self._pool.connect_params.get("passphrase")
        driver: Any = sqlite3 if passphrase is None else _load_sqlcipher()
        try:
            connection = driver.connect(self._pool.database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            try:
                if passphrase is not None:
                    connection.execute(f"PRAGMA key = {_quote(passphrase)}")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                connection.close()
        except _lower_errors() as exc:
            raise _storage_error(exc, f"checkpoint of {self._target} failed") from exc

    def close(self) -> None:
        """Close every pooled connection; idempotent. Later transactions raise StorageError."""
        if self._pool.in_transaction():
            raise StorageError(f"cannot close {self!r} inside one of its transactions")
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._pool.close_all()
        except _lower_errors() as exc:
            raise _storage_error(exc, f"closing {self._target} failed") from exc
        logger.debug("database closed", extra={"db": repr(self)})


# --------------------------------------------------------------------------- opening


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    path = url[len(prefix) :]
    if not path or path.endswith("/"):
        raise ConfigurationError(f"bad SQLite URL {url!r}: no file name")
    if path == ":memory:" or path.startswith("file:") or "mode=memory" in path:
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: an in-memory database cannot be shared by a pool "
            "of connections in WAL mode; give a file path"
        )
    # Pooled connections open later, maybe after a chdir; pin the path now.
    return os.path.abspath(path)


def _check_passphrase(passphrase: object) -> str:
    if not isinstance(passphrase, str) or not passphrase or "\x00" in passphrase:
        raise ConfigurationError("a passphrase must be a non-empty string without NUL")
    return passphrase


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_sqlcipher: Any = None  # sqlcipher3's DB-API module, once an encrypted database was opened


def _load_sqlcipher() -> Any:
    global _sqlcipher
    if _sqlcipher is None:
        try:
            from sqlcipher3 import dbapi2
        except ImportError as exc:
            raise ConfigurationError(
                "encrypted databases need SQLCipher: install duplex[encrypted]"
            ) from exc
        # SQLCipher writes its own lines to stderr when a key does not fit; the caller gets a
        # typed error for that instead (the setting is process-wide in SQLCipher).
        probe = dbapi2.connect(":memory:")
        try:
            probe.execute("PRAGMA cipher_log_level = NONE")
        finally:
            probe.close()
        _sqlcipher = dbapi2
    return _sqlcipher


_sqlcipher_pool: type[peewee.Database] | None = None


def _sqlcipher_pool_class() -> type[peewee.Database]:
    global _sqlcipher_pool
    if _sqlcipher_pool is None:
        _load_sqlcipher()
        from playhouse.sqlcipher_ext import SqlCipherDatabase

        class _CountingSqlCipher(_Counting, _PooledSqliteDatabase, SqlCipherDatabase):
            pass

        _sqlcipher_pool = _CountingSqlCipher
    return _sqlcipher_pool


def _tighten(path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        logger.warning(
            "database file was open to other users: tightened to owner only",
            extra={"path": path, "mode_was": oct(mode), "mode": oct(mode & 0o700)},
        )


def _create_private(path: str) -> None:
    """Create the SQLite file readable by its owner only, whatever the umask (SQLite gives a
    new -wal, -shm or -journal the mode of the database file, so those follow), or check
    that an existing path is a regular file."""
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        except FileExistsError:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path) from None
            if not stat.S_ISREG(info.st_mode):
                raise StorageUnavailable(f"cannot open {path}: not a regular file") from None
        else:
            try:
                os.fchmod(fd, _FILE_MODE)  # the umask may have taken bits off the asked mode
            finally:
                os.close(fd)
    except OSError as exc:
        raise _storage_error(exc, f"cannot open {path}") from exc


def _tighten_all(path: str) -> None:
    """Make an existing database and the files SQLite keeps beside it owner-only (called once
    the file proved to be a database: a refused file is left as it was)."""
    try:
        for candidate in (path, *(path + suffix for suffix in _SQLITE_SIDE_FILES)):
            _tighten(candidate)
    except OSError as exc:
        raise _storage_error(exc, f"cannot open {path}") from exc


def _ensure_wal(path: str, passphrase: str | None) -> None:
    """Check that the file opens (with the passphrase, if any) and put it in WAL mode once,
    before any pooled connection exists.

    WAL is persistent in the file, so the pool's connections need not switch it. Switching
    takes an exclusive lock and SQLite answers "database is locked" at once, without the busy
    handler, when another process or thread is opening the same new file: hence the retries.
    """
    driver: Any = sqlite3 if passphrase is None else _load_sqlcipher()
    doing = f"cannot open {path}"
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection = driver.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        except _lower_errors() as exc:
            raise _storage_error(exc, doing, StorageUnavailable) from exc
        try:
            if passphrase is not None:
                connection.execute(f"PRAGMA key = {_quote(passphrase)}")
            mode = connection.execute("PRAGMA journal_mode=wal").fetchone()[0]
        except _lower_errors() as exc:
            if "locked" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            error = _storage_error(exc, doing)
            if passphrase is not None and isinstance(error, StorageCorrupt):
                error = WrongPassphrase(
                    f"{doing}: the passphrase does not open it (or it is not an encrypted "
                    "duplex database)"
                )
            raise error from exc
        finally:
            connection.close()
        if str(mode).lower() != "wal":
            raise StorageError(f"SQLite refused WAL mode for {path} (got {mode!r})")
        return


def _open_sqlite(
    path: str, synchronous: str, pool_size: int, pool_timeout: float, passphrase: str | None
) -> peewee.Database:
    _create_private(path)
    _ensure_wal(path, passphrase)
    _tighten_all(path)
    options: dict[str, Any] = {}
    pool_class: type[peewee.Database] = _CountingSqlite
    if passphrase is not None:
        pool_class = _sqlcipher_pool_class()
        options["passphrase"] = passphrase
    return pool_class(
        path,
        max_connections=pool_size,
        timeout=pool_timeout,  # the pool's wait: PooledDatabase takes `timeout` for itself
        # sqlite3's own `timeout` cannot be used, the pool class swallowed that keyword.
        pragmas=[
            ("busy_timeout", SQLITE_BUSY_TIMEOUT_MS),
            ("synchronous", synchronous),
            ("foreign_keys", 1),
        ],
        lock_type="IMMEDIATE",
        check_same_thread=False,  # pooled connections move between actor threads
        autoconnect=False,
        **options,
    )


def _postgres_conninfo(url: str) -> str:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ConfigurationError(f"bad PostgreSQL URL {_redact(url)!r}: {exc}") from None
    if not parts.path.strip("/"):
        raise ConfigurationError(f"bad PostgreSQL URL {_redact(url)!r}: no database name")
    # peewee hands the string to psycopg as a conninfo only if it starts with postgresql://.
    return urlunsplit(parts._replace(scheme="postgresql"))


def _open_postgres(conninfo: str, pool_size: int, pool_timeout: float) -> peewee.Database:
    try:
        import psycopg  # noqa: F401 - only checking that the driver is there
    except ImportError as exc:
        raise ConfigurationError("PostgreSQL needs psycopg 3: install duplex[postgres]") from exc
    return _CountingPostgres(
        conninfo,
        max_connections=pool_size,
        timeout=pool_timeout,
        # psycopg2 may be installed too; without this flag peewee would pick it.
        prefer_psycopg3=True,
        connect_timeout=_PG_CONNECT_TIMEOUT_S,
        autoconnect=False,
    )


def open_database(
    url: str,
    *,
    layers: Sequence[Layer] = (),
    migrations: Sequence[Migration] | None = None,
    synchronous: str = "NORMAL",
    pool_size: int = 16,
    pool_timeout: float = 10.0,
    passphrase: str | None = None,
) -> Database:
    """Open the database at `url` for `layers` and apply the migrations it has not seen yet.

    `sqlite:///relative.db`, `sqlite:////abs/path.db` or `postgresql://user:pw@host:port/db`
    (also `postgres://`).

    `layers` (e.g. `[storage.agent.AGENT_LAYER]`) are the layers whose tables this database
    holds: their migrations are applied, and a recorded version in one of their blocks that
    this program does not know is refused with MigrationError; other layers' versions are
    left alone. `migrations` adds migrations of the caller's own (tests, custom actor kinds)
    that claim every version outside the layers' blocks, so with `migrations` any unknown
    version there is refused. With neither, nothing is applied or checked (a raw open).

    `synchronous` (NORMAL or FULL) applies to SQLite; PostgreSQL's durability is the server's
    setting. A thread that waits longer than `pool_timeout` seconds for a connection gets
    StorageBusy. `passphrase` opens (or creates) an SQLite file encrypted with SQLCipher
    (needs duplex[encrypted]); a wrong one raises WrongPassphrase and changes nothing.

    A new SQLite file, and the -wal and -shm files beside it, are readable by their owner
    only whatever the umask; an existing file open to others is tightened, with a warning.
    Failing to open raises a StorageError subclass that names the file (or the redacted URL):
    StorageUnavailable (no such directory, a directory, no permission, server down),
    StorageCorrupt (not a database), WrongPassphrase, MigrationError. The counters start at
    zero when this returns.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"database URL must be a string, got {url!r}")
    mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if mode not in _SYNCHRONOUS_MODES:
        raise ConfigurationError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ConfigurationError(f"pool_size must be a positive int, got {pool_size!r}")
    # peewee's pool treats a zero timeout as "wait forever": refuse it rather than hang.
    if not isinstance(pool_timeout, int | float) or not pool_timeout > 0:
        raise ConfigurationError(f"pool_timeout must be > 0 seconds, got {pool_timeout!r}")
    if passphrase is not None:
        _check_passphrase(passphrase)
    schema = _schema(layers, migrations)

    scheme = url.partition(":")[0].lower()
    kind: DatabaseKind
    if scheme == "sqlite":
        kind = "sqlite"
        target = _sqlite_path(url)
        if passphrase is not None:
            _load_sqlcipher()  # a missing extra is a ConfigurationError before any file exists
        pool = _open_sqlite(target, mode, pool_size, float(pool_timeout), passphrase)
    elif scheme in ("postgresql", "postgres"):
        kind = "postgresql"
        if passphrase is not None:
            raise ConfigurationError("a passphrase encrypts SQLite files; PostgreSQL takes none")
        pool = _open_postgres(_postgres_conninfo(url), pool_size, float(pool_timeout))
        target = _redact(url)
    else:
        raise ConfigurationError(
            f"unsupported database URL {_redact(url)!r}: use sqlite:/// or postgresql://"
        )

    database = Database(
        pool,
        url=url,
        kind=kind,
        pool_size=pool_size,
        pool_timeout=float(pool_timeout),
        target=target,
        layers=[layer.name for layer in schema.layers],
        encrypted=passphrase is not None,
    )
    try:
        if schema.empty:
            with database.transaction(read_only=True) as db:  # it opens, and it is a database
                db.execute_sql("SELECT 1")
        else:
            _migrate(database, schema)
    except BaseException:
        database.close()
        raise
    database.counters.reset()
    logger.info(
        "database opened",
        extra={
            "db": repr(database),
            "kind": kind,
            "layers": database.layers,
            "schema_version": max((step.version for step in schema.steps), default=0),
        },
    )
    return database
