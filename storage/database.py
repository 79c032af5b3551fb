"""Open a duplex database by URL, run short transactions on it, and keep its schema current.

Owns: parsing database URLs (`sqlite:///path` with WAL, `postgresql://…` on psycopg 3), the
pooled peewee database behind a `Database`, short transactions from any thread, binding peewee
model classes to one `Database` without touching the classes themselves, and the versioned
migrations that every storage layer registers here and that run when a database is opened.

Must not: import anything from `actors/`, know any layer's tables (layers bring their own
models and migrations), keep a connection checked out between transactions, or mutate a model
class globally (`Model.bind` is process-wide and not thread-safe, and one process may hold
several databases with the same models).

Migration versions are global across layers because the layers share one schema. Each layer
owns a block of versions (`LAYER_VERSION_BLOCKS`): kernel and tests 1-99, agent 100-199,
chat 200-299, server 300-399. A new layer gets a new block here.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase

from protocol.errors import ConfigurationError, MigrationError, StorageError

__all__ = [
    "LAYER_VERSION_BLOCKS",
    "BoundModels",
    "Database",
    "DatabaseKind",
    "Migration",
    "bind_models",
    "open_database",
    "register_migrations",
    "registered_migrations",
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


_registry_lock = threading.Lock()
_registry: dict[str, tuple[Migration, ...]] = {}


def _check_ascending(migrations: Sequence[Migration], where: str) -> tuple[Migration, ...]:
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


def register_migrations(layer: str, migrations: Sequence[Migration]) -> None:
    """Make `migrations` part of what `open_database` applies when given no explicit list.

    Versions must lie in the layer's block of `LAYER_VERSION_BLOCKS` and ascend. Registering
    the same layer again with the same (version, name) pairs is a no-op, so a module that is
    imported twice does no harm; anything else registered twice is a ConfigurationError.
    """
    block = LAYER_VERSION_BLOCKS.get(layer)
    if block is None:
        raise ConfigurationError(
            f"unknown migration layer {layer!r}; known: {', '.join(LAYER_VERSION_BLOCKS)}"
        )
    steps = _check_ascending(migrations, f"layer {layer!r}")
    for step in steps:
        if step.version not in block:
            raise ConfigurationError(
                f"layer {layer!r} owns versions {block.start}-{block.stop - 1}, "
                f"migration {step.version} {step.name!r} is outside it"
            )
    signature = [(step.version, step.name) for step in steps]
    with _registry_lock:
        existing = _registry.get(layer)
        if existing is not None:
            if [(step.version, step.name) for step in existing] == signature:
                return
            raise ConfigurationError(f"layer {layer!r} registered twice with other migrations")
        # The blocks are disjoint, so this only fires if the blocks themselves get edited badly.
        taken = {step.version for other in _registry.values() for step in other}
        clash = sorted(taken.intersection(version for version, _ in signature))
        if clash:
            raise ConfigurationError(f"layer {layer!r} reuses migration versions {clash}")
        _registry[layer] = steps
    logger.debug("migrations registered", extra={"layer": layer, "count": len(steps)})


def registered_migrations(layers: Iterable[str] | None = None) -> tuple[Migration, ...]:
    """The registered migrations of `layers` (all registered layers if None), by version.

    Naming a layer that registered nothing is a ConfigurationError: it almost always means its
    storage module was not imported, and opening without its migrations would hide that.
    """
    with _registry_lock:
        if layers is None:
            chosen = list(_registry.values())
        else:
            chosen = []
            for layer in layers:
                if layer not in _registry:
                    raise ConfigurationError(
                        f"no migrations registered for layer {layer!r} "
                        "(is its storage module imported?)"
                    )
                chosen.append(_registry[layer])
    return tuple(sorted((step for steps in chosen for step in steps), key=lambda m: m.version))


class _SchemaMigration(peewee.Model):
    """The bookkeeping row of one applied migration (the table every layer shares)."""

    version = peewee.IntegerField(primary_key=True)
    name = peewee.TextField()
    applied_at = peewee.DateTimeField()

    class Meta:
        table_name = _MIGRATIONS_TABLE


def _migrate(database: Database, migrations: tuple[Migration, ...]) -> None:
    known = {step.version for step in migrations}

    def applied_versions(db: peewee.Database) -> set[int]:
        # The lock comes first so two openers never both see a version as missing.
        if database.kind == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK_KEY,))
        record = database.bind(_SchemaMigration)[_SchemaMigration]
        record.create_table(safe=True)
        versions = {row.version for row in record.select(record.version)}
        unknown = sorted(versions - known)
        if unknown:
            # An older program must not scribble on a schema written by a newer one.
            raise MigrationError(
                f"{database!r} holds migrations {unknown} that this program does not know "
                f"(it knows up to {max(known, default=0)}); use a newer duplex"
            )
        return versions

    with database.transaction() as db:
        applied = applied_versions(db)
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
        except MigrationError:
            raise
        except Exception as exc:
            raise MigrationError(
                f"migration {step.version} {step.name!r} failed on {database!r}: {exc}"
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
    ) -> None:
        self._pool = pool
        # peewee's pool makes a waiting thread poll for a free connection once a second, so
        # in a burst (hundreds of actors starting) some wait whole seconds and time out while
        # transactions take a fraction of a millisecond. A semaphore in front wakes a waiter
        # as soon as a connection is handed back; the pool then always has one free.
        self._gate = _FairGate(pool_size)
        self._pool_timeout = pool_timeout
        self._url = url
        self._kind: DatabaseKind = kind
        self._closed = False
        self._state_lock = threading.Lock()
        self._bound: dict[type[peewee.Model], type[peewee.Model]] = {}

    @property
    def peewee(self) -> peewee.Database:
        """The pooled peewee database (usable only inside `transaction()`)."""
        return self._pool

    @property
    def url(self) -> str:
        return self._url

    @property
    def kind(self) -> DatabaseKind:
        return self._kind

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
        Nested use in the same thread becomes a savepoint. The body's own exceptions roll
        back and propagate unchanged; failing to get a connection, begin or commit raises
        StorageError.
        """
        pool = self._pool
        checked_out = pool.is_closed()
        if checked_out:
            self._check_out()
        body_error: BaseException | None = None
        try:
            deferred = read_only and self._kind == "sqlite"
            with pool.atomic(lock_type="DEFERRED") if deferred else pool.atomic():
                try:
                    yield pool
                except BaseException as exc:
                    body_error = exc
                    raise
        except (peewee.PeeweeException, MaxConnectionsExceeded) as exc:
            if exc is body_error:
                raise
            raise StorageError(f"transaction on {self!r} failed: {exc}") from exc
        finally:
            if checked_out:
                self._check_in()

    def _check_out(self) -> None:
        if self._closed:
            raise StorageError(f"{self!r} is closed")
        if not self._gate.acquire(timeout=self._pool_timeout):
            raise StorageError(
                f"no free connection in the pool of {self!r} within the pool timeout"
            )
        try:
            self._pool.connect()
        except MaxConnectionsExceeded as exc:
            self._gate.release()
            raise StorageError(
                f"no free connection in the pool of {self!r} within the pool timeout"
            ) from exc
        except peewee.PeeweeException as exc:
            self._gate.release()
            raise StorageError(f"cannot connect to {self!r}: {exc}") from exc
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

    def schema_version(self) -> int:
        """The highest applied migration version, 0 for a database without migrations."""
        with self.transaction() as db:
            if not db.table_exists(_MIGRATIONS_TABLE):
                return 0
            record = self.bind(_SchemaMigration)[_SchemaMigration]
            return int(record.select(peewee.fn.MAX(record.version)).scalar() or 0)

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
        except peewee.PeeweeException as exc:
            raise StorageError(f"closing {self!r} failed: {exc}") from exc
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


def _ensure_wal(path: str) -> None:
    """Put the file in WAL mode once, before any pooled connection exists.

    WAL is persistent in the file, so the pool's connections need not switch it. Switching
    takes an exclusive lock and SQLite answers "database is locked" at once, without the busy
    handler, when another process or thread is opening the same new file: hence the retries.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            mode = connection.execute("PRAGMA journal_mode=wal").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            raise StorageError(f"SQLite refused WAL mode for {path} (got {mode!r})")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise StorageError(f"cannot open {path}: {exc}") from exc
        finally:
            connection.close()
        time.sleep(0.01)


def _open_sqlite(
    path: str, synchronous: str, pool_size: int, pool_timeout: float
) -> peewee.Database:
    _ensure_wal(path)
    return PooledSqliteDatabase(
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
    return PooledPostgresqlDatabase(
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
    synchronous: str = "NORMAL",
    migrations: Sequence[Migration] | None = None,
    pool_size: int = 16,
    pool_timeout: float = 10.0,
) -> Database:
    """Open the database at `url` and apply the migrations it has not seen yet.

    `sqlite:///relative.db`, `sqlite:////abs/path.db` or `postgresql://user:pw@host:port/db`
    (also `postgres://`). `synchronous` (NORMAL or FULL) applies to SQLite; PostgreSQL's
    durability is the server's setting. `migrations` defaults to every registered layer's.
    A thread that waits longer than `pool_timeout` seconds for a connection gets StorageError.
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
    steps = (
        registered_migrations()
        if migrations is None
        else _check_ascending(migrations, "open_database(migrations=…)")
    )

    scheme = url.partition(":")[0].lower()
    kind: DatabaseKind
    if scheme == "sqlite":
        kind = "sqlite"
        pool = _open_sqlite(_sqlite_path(url), mode, pool_size, float(pool_timeout))
    elif scheme in ("postgresql", "postgres"):
        kind = "postgresql"
        pool = _open_postgres(_postgres_conninfo(url), pool_size, float(pool_timeout))
    else:
        raise ConfigurationError(
            f"unsupported database URL {_redact(url)!r}: use sqlite:/// or postgresql://"
        )

    database = Database(
        pool, url=url, kind=kind, pool_size=pool_size, pool_timeout=float(pool_timeout)
    )
    try:
        _migrate(database, steps)
    except BaseException:
        database.close()
        raise
    logger.info(
        "database opened",
        extra={
            "db": repr(database),
            "kind": kind,
            "schema_version": max((step.version for step in steps), default=0),
        },
    )
    return database
