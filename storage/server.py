"""The queue server's persistent store: queues, their messages, and the server's own identity.

Owns: the `server_queue`, `server_message` and `server_identity` tables (migrations 300-399,
`SERVER_LAYER`), and every read and write the queue server makes on them, each one short
transaction that is safe to call from many threads at once (trio worker threads), or a part
of the caller's transaction (see `ServerStore`). Deleted messages are overwritten, and the
quota is kept in messages and in bytes, per queue and for the whole store (`Quota`).
Messages keep insertion order through an autoincrement `seq` column, never through their
timestamps, so a clock that steps back cannot reorder a queue.

Must not: import anything from `actors/`, decide who may do what (signatures, modes and
statuses are checked by the server before it calls here), or see plaintext: message bodies
arrive already encrypted by the server for the recipient, link data arrives encrypted by the
client, and both are stored as opaque bytes.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import peewee

from protocol.errors import DuplicateLinkId, StorageError
from protocol.queue import QueueMode
from storage.database import LAYER_VERSION_BLOCKS, Database, Layer, Migration

__all__ = [
    "SERVER_MIGRATIONS",
    "AppendOutcome",
    "DuplicateLinkId",
    "QueueRecord",
    "QueueStatus",
    "Quota",
    "ServerStore",
    "StoredMessage",
]

logger = logging.getLogger(__name__)

# Rows deleted per transaction by `expire_messages`: a backlog of expired messages is removed
# in many short transactions so that SENDs and ACKs are never queued behind one long delete.
EXPIRE_BATCH: Final = 1000


class QueueStatus(enum.Enum):
    ACTIVE = "active"
    OFF = "off"  # suspended by its recipient: no more SENDs, messages still readable


class AppendOutcome(enum.Enum):
    STORED = "stored"
    QUOTA_MARKER = "quota_marker"  # the queue was full: the marker was stored instead
    QUOTA = "quota"  # a marker already waits in the queue: nothing was stored


@dataclass(frozen=True, slots=True)
class Quota:
    """What an append may fill: messages and body bytes of the queue, body bytes of the store.

    `bytes` and `store_bytes` of None mean no such limit. A queue or a store at its limit
    takes the quota marker (if none waits yet) instead of the message.
    """

    messages: int
    bytes: int | None = None
    store_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class QueueRecord:
    rcv_id: bytes
    snd_id: bytes
    rcv_auth_key: bytes
    rcv_dh_key: bytes
    srv_dh_private: bytes
    srv_dh_public: bytes
    mode: QueueMode
    snd_auth_key: bytes | None = None
    status: QueueStatus = QueueStatus.ACTIVE
    link_id: bytes | None = None
    link_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    msg_id: bytes
    ts: int  # server time, ms
    enc_body: bytes
    quota_marker: bool = False


# --------------------------------------------------------------------------- models


class ServerQueue(peewee.Model):
    rcv_id = peewee.BlobField(primary_key=True)
    snd_id = peewee.BlobField(unique=True)
    rcv_auth_key = peewee.BlobField(unique=True)
    rcv_dh_key = peewee.BlobField()
    srv_dh_private = peewee.BlobField()
    srv_dh_public = peewee.BlobField()
    mode = peewee.TextField()
    snd_auth_key = peewee.BlobField(null=True)
    status = peewee.TextField()
    link_id = peewee.BlobField(null=True, unique=True)
    link_data = peewee.BlobField(null=True)

    class Meta:
        table_name = "server_queue"


class ServerMessage(peewee.Model):
    # No foreign key to the queue: `delete_queue` removes the messages itself, and
    # `append_message` checks (and on PostgreSQL locks) the queue row in its transaction.
    seq = peewee.BigAutoField()
    rcv_id = peewee.BlobField()
    msg_id = peewee.BlobField()
    ts = peewee.BigIntegerField()
    enc_body = peewee.BlobField()
    quota_marker = peewee.BooleanField(default=False)

    class Meta:
        table_name = "server_message"


class ServerIdentity(peewee.Model):
    id = peewee.IntegerField(primary_key=True)  # always 1: one identity per store
    certificate_pem = peewee.BlobField()
    key_pem = peewee.BlobField()
    created_at_ms = peewee.BigIntegerField()

    class Meta:
        table_name = "server_identity"


_IDENTITY_ROW: Final = 1


# --------------------------------------------------------------------------- migrations


def _ddl(db: peewee.Database) -> dict[str, str]:
    """Column types per database kind; the DDL is written out so that later edits of the
    models cannot change what an old migration creates."""
    if isinstance(db, peewee.PostgresqlDatabase):
        return {"blob": "BYTEA", "seq": "BIGSERIAL PRIMARY KEY", "bool": "BOOLEAN", "rowid": ""}
    return {
        "blob": "BLOB",
        "seq": "INTEGER PRIMARY KEY",  # the rowid: new rows always above every live row
        "bool": "INTEGER",
        "rowid": " WITHOUT ROWID",  # lookups by rcv_id go straight to the row
    }


def _create_server_tables(db: peewee.Database) -> None:
    t = _ddl(db)
    blob = t["blob"]
    statements = [
        f"""CREATE TABLE server_queue (
            rcv_id {blob} NOT NULL PRIMARY KEY,
            snd_id {blob} NOT NULL UNIQUE,
            rcv_auth_key {blob} NOT NULL UNIQUE,
            rcv_dh_key {blob} NOT NULL,
            srv_dh_private {blob} NOT NULL,
            srv_dh_public {blob} NOT NULL,
            mode TEXT NOT NULL,
            snd_auth_key {blob},
            status TEXT NOT NULL,
            link_id {blob} UNIQUE,
            link_data {blob}
        ){t["rowid"]}""",
        f"""CREATE TABLE server_message (
            seq {t["seq"]},
            rcv_id {blob} NOT NULL,
            msg_id {blob} NOT NULL,
            ts BIGINT NOT NULL,
            enc_body {blob} NOT NULL,
            quota_marker {t["bool"]} NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX server_message_rcv_id_seq ON server_message (rcv_id, seq)",
        "CREATE INDEX server_message_ts ON server_message (ts)",
        f"""CREATE TABLE server_identity (
            id INTEGER NOT NULL PRIMARY KEY,
            certificate_pem {blob} NOT NULL,
            key_pem {blob} NOT NULL,
            created_at_ms BIGINT NOT NULL
        )""",
    ]
    for statement in statements:
        db.execute_sql(statement)


SERVER_MIGRATIONS: Final = (
    Migration(300, "server queues, messages and identity", _create_server_tables),
)
SERVER_LAYER: Final = Layer("server", LAYER_VERSION_BLOCKS["server"], SERVER_MIGRATIONS)
"""The queue server's storage layer: `open_database(url, layers=[SERVER_LAYER])`."""


# --------------------------------------------------------------------------- the store


def _bytes(value: Any) -> bytes:
    # psycopg may hand bytea back as memoryview; SQLite gives bytes.
    return value if type(value) is bytes else bytes(value)


def _opt_bytes(value: Any) -> bytes | None:
    return None if value is None else _bytes(value)


_QUEUE_COLUMNS: Final = (
    "rcv_id, snd_id, rcv_auth_key, rcv_dh_key, srv_dh_private, srv_dh_public, mode, "
    "snd_auth_key, status, link_id, link_data"
)


def _queue_record(row: Sequence[Any]) -> QueueRecord:
    """A record from a row of _QUEUE_COLUMNS."""
    rcv_id, snd_id, rcv_auth, rcv_dh, srv_private, srv_public, mode, snd_auth, status = row[:9]
    return QueueRecord(
        rcv_id=_bytes(rcv_id),
        snd_id=_bytes(snd_id),
        rcv_auth_key=_bytes(rcv_auth),
        rcv_dh_key=_bytes(rcv_dh),
        srv_dh_private=_bytes(srv_private),
        srv_dh_public=_bytes(srv_public),
        mode=QueueMode(mode),
        snd_auth_key=_opt_bytes(snd_auth),
        status=QueueStatus(status),
        link_id=_opt_bytes(row[9]),
        link_data=_opt_bytes(row[10]),
    )


class _HotSql:
    """The SQL of the SEND→MSG→ACK path, written once per database kind.

    peewee's query builder costs far more than SQLite spends running these statements
    (measured on one thread: about 900 append+ack pairs/s through the builder, 5500 as
    text), so the lookups, appends and acks of every SEND and ACK run as prepared text. The
    rarer writes keep the bound models.
    """

    def __init__(self, kind: str) -> None:
        p = "?" if kind == "sqlite" else "%s"
        lock = " FOR UPDATE" if kind == "postgresql" else ""
        cols = "msg_id, ts, enc_body, quota_marker"
        queue = f"SELECT {_QUEUE_COLUMNS} FROM server_queue WHERE"
        self.queue_by_rcv_id = f"{queue} rcv_id = {p}"
        self.queue_by_snd_id = f"{queue} snd_id = {p}"
        self.queue_by_link_id = f"{queue} link_id = {p}"
        # The same lookups padded with a decoy row: one row comes back, found or not, and is
        # decoded the same way, so that a lookup takes the same time whether or not the queue
        # exists (the server's refusals must not tell; see QueueBroker).
        decoy_row = ", ".join([p] * 9) + ", NULL, NULL"
        for column in ("rcv_id", "snd_id"):
            padded = (
                f"SELECT * FROM (SELECT 0 AS decoy, {_QUEUE_COLUMNS} FROM server_queue "
                f"WHERE {column} = {p} UNION ALL SELECT 1, {decoy_row}) AS found "
                "ORDER BY decoy LIMIT 1"
            )
            setattr(self, f"padded_by_{column}", padded)
        self.queue_by_rcv_auth_key = f"{queue} rcv_auth_key = {p}"
        # FOR UPDATE serialises appends to one queue on PostgreSQL (READ COMMITTED would let two
        # of them count the same messages and both store past the quota) and orders them with
        # delete_queue; on SQLite, BEGIN IMMEDIATE already serialises every writer.
        self.queue_exists = f"SELECT 1 FROM server_queue WHERE rcv_id = {p}{lock}"
        self.delete_expired = f"DELETE FROM server_message WHERE rcv_id = {p} AND ts < {p}"
        # What an append decides on, in one statement: how many messages the queue holds
        # (an index-only count), whether its newest is a quota marker (nothing is stored
        # after a marker, so a waiting marker is always the newest message) and the time of
        # its oldest (whether anything can have expired).
        message = f"FROM server_message WHERE rcv_id = {p}"
        self.fill = (
            f"SELECT (SELECT COUNT(*) {message}), "
            f"(SELECT quota_marker {message} ORDER BY seq DESC LIMIT 1), "
            f"(SELECT ts {message} ORDER BY seq LIMIT 1)"
        )
        self.insert = (
            f"INSERT INTO server_message (rcv_id, {cols}) VALUES ({p}, {p}, {p}, {p}, {p})"
        )
        self.oldest = f"SELECT {cols} FROM server_message WHERE rcv_id = {p} ORDER BY seq LIMIT 1"
        self.oldest_two = (
            f"SELECT seq, {cols} FROM server_message WHERE rcv_id = {p} ORDER BY seq LIMIT 2"
        )
        self.delete_seq = f"DELETE FROM server_message WHERE seq = {p}"
        # Bytes held: of one queue (only asked when its count could reach its byte quota),
        # of a queue about to be deleted, of messages about to expire, of the whole store.
        self.queue_bytes = f"SELECT COALESCE(SUM(LENGTH(enc_body)), 0) {message}"
        self.expired_bytes = f"SELECT COALESCE(SUM(LENGTH(enc_body)), 0) {message} AND ts < {p}"
        self.store_bytes = "SELECT COALESCE(SUM(LENGTH(enc_body)), 0) FROM server_message"


# What a padded lookup returns when there is no queue: a row shaped like a real one.
_DECOY_ROW: Final = (
    bytes(24),
    bytes(24),
    bytes(32),
    bytes(32),
    bytes(32),
    bytes(32),
    QueueMode.MESSAGING.value,
    bytes(32),
    QueueStatus.ACTIVE.value,
)


def _message(row: Sequence[Any]) -> StoredMessage:
    msg_id, ts, enc_body, marker = row
    return StoredMessage(_bytes(msg_id), int(ts), _bytes(enc_body), bool(marker))


class ServerStore:
    """The queue server's store on one open `Database`; every method is one short transaction
    (`expire_messages` a few) and may be called from any thread.

    Called inside a transaction the caller opened on the same thread (the server stores a
    burst of commands in one), a method on SQLite runs in that transaction without a
    savepoint of its own: a savepoint costs two statements and a uuid per call, and SQLite
    undoes a failed statement by itself. On PostgreSQL, where an error aborts the whole
    transaction, methods nest as savepoints.

    Deleted messages are overwritten on SQLite (`secure_delete` on every connection that
    deletes), and `scrub()` truncates the write-ahead log, so that expired, acknowledged and
    deleted messages do not linger in the files.

    `stored_bytes` is the bytes of message bodies in the store, kept up to date by every
    method (read once from the store when opened, and again by `recount_bytes()`, which a
    caller runs after a transaction of its own was rolled back).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        models = db.bind(ServerQueue, ServerMessage, ServerIdentity)
        self._queue: type[ServerQueue] = models[ServerQueue]  # type: ignore[assignment]
        self._message: type[ServerMessage] = models[ServerMessage]  # type: ignore[assignment]
        self._identity: type[ServerIdentity] = models[ServerIdentity]  # type: ignore[assignment]
        self._sql = _HotSql(db.kind)
        self._flat = db.kind == "sqlite"
        self._scrubbing: dict[int, Any] = {}  # id -> connection that has secure_delete on
        self._bytes_lock = threading.Lock()
        self.stored_bytes = 0
        self.recount_bytes()

    @property
    def database(self) -> Database:
        return self._db

    @contextlib.contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[peewee.Database]:
        """A transaction of its own, or on SQLite the caller's one if it has one open."""
        pool = self._db.peewee
        if self._flat and not pool.is_closed() and pool.in_transaction():
            yield pool
            return
        with self._db.transaction(read_only=read_only) as db:
            yield db

    def _deleting(self, db: peewee.Database) -> None:
        """Make this connection overwrite what it deletes (SQLite; once per connection)."""
        if not self._flat:
            return
        connection = db.connection()
        if self._scrubbing.get(id(connection)) is not connection:
            db.execute_sql("PRAGMA secure_delete = ON")
            self._scrubbing[id(connection)] = connection  # held: its id is not reused

    def _count_bytes(self, delta: int) -> None:
        with self._bytes_lock:
            self.stored_bytes += delta

    def recount_bytes(self) -> int:
        """Read the bytes of message bodies in the store again (one scan); returns them."""
        with self._tx(read_only=True) as db:
            (total,) = db.execute_sql(self._sql.store_bytes).fetchone()
        with self._bytes_lock:
            self.stored_bytes = int(total)
        return self.stored_bytes

    # ----------------------------------------------------------------------- queues

    def _queue_where(self, sql: str, value: bytes) -> QueueRecord | None:
        with self._tx(read_only=True) as db:
            row = db.execute_sql(sql, (value,)).fetchone()
        return None if row is None else _queue_record(row)

    def _padded_lookup(self, sql: str, value: bytes) -> QueueRecord | None:
        """A lookup whose cost does not depend on whether the queue exists: the query
        returns the decoy row when it does not, and that row is decoded all the same."""
        with self._tx(read_only=True) as db:
            row = db.execute_sql(sql, (value, *_DECOY_ROW)).fetchone()
        record = _queue_record(row[1:])
        return None if row[0] else record

    def create_queue(self, record: QueueRecord) -> QueueRecord:
        """Insert `record`, or return the queue that already has its `rcv_auth_key` unchanged.

        So a NEW retried after a crash finds the queue its first attempt made. Race-safe: the
        insert does nothing on a conflicting key (it waits for a concurrent inserter on
        PostgreSQL), and the winner's row is read back.
        """
        q = self._queue
        by_key = self._sql.queue_by_rcv_auth_key
        try:
            with self._tx() as db:
                existing = db.execute_sql(by_key, (record.rcv_auth_key,)).fetchone()
                if existing is not None:
                    return _queue_record(existing)
                if record.link_id is not None and q.get_or_none(q.link_id == record.link_id):
                    raise DuplicateLinkId("another queue holds this link id")
                inserted = (
                    q.insert(
                        rcv_id=record.rcv_id,
                        snd_id=record.snd_id,
                        rcv_auth_key=record.rcv_auth_key,
                        rcv_dh_key=record.rcv_dh_key,
                        srv_dh_private=record.srv_dh_private,
                        srv_dh_public=record.srv_dh_public,
                        mode=record.mode.value,
                        snd_auth_key=record.snd_auth_key,
                        status=record.status.value,
                        link_id=record.link_id,
                        link_data=record.link_data,
                    )
                    .on_conflict(action="NOTHING", conflict_target=[q.rcv_auth_key])
                    .as_rowcount()
                    .execute()
                )
                if inserted:
                    return record
                winner = db.execute_sql(by_key, (record.rcv_auth_key,)).fetchone()
        except peewee.IntegrityError as exc:
            # Random 24-byte ids do not collide in practice; a concurrent LSET of the same
            # link id can.
            raise StorageError(f"queue ids or link id already in use: {exc}") from exc
        if winner is None:  # the row we conflicted with was deleted meanwhile
            raise StorageError("queue with this recipient key vanished while being created")
        return _queue_record(winner)

    def queue_by_rcv_id(self, rcv_id: bytes) -> QueueRecord | None:
        """The queue, or None; the same time either way (see `_padded_lookup`)."""
        return self._padded_lookup(self._sql.padded_by_rcv_id, rcv_id)

    def queue_by_snd_id(self, snd_id: bytes) -> QueueRecord | None:
        """The queue, or None; the same time either way (see `_padded_lookup`)."""
        return self._padded_lookup(self._sql.padded_by_snd_id, snd_id)

    def queue_by_link_id(self, link_id: bytes) -> QueueRecord | None:
        return self._queue_where(self._sql.queue_by_link_id, link_id)

    def set_sender_key(self, rcv_id: bytes, snd_auth_key: bytes) -> QueueRecord | None:
        """Set the sender key if none is set yet; the record after the call (None: no queue).

        The caller compares the returned key with the one it asked for (KEY/SKEY are
        idempotent with the same key and AUTH with another)."""
        q = self._queue
        with self._tx() as db:
            q.update(snd_auth_key=snd_auth_key).where(
                (q.rcv_id == rcv_id) & q.snd_auth_key.is_null()
            ).execute()
            row = db.execute_sql(self._sql.queue_by_rcv_id, (rcv_id,)).fetchone()
        return None if row is None else _queue_record(row)

    def suspend(self, rcv_id: bytes) -> bool:
        """Turn the queue OFF; False if there is no such queue."""
        q = self._queue
        with self._tx():
            changed = q.update(status=QueueStatus.OFF.value).where(q.rcv_id == rcv_id).execute()
        return changed > 0

    def delete_queue(self, rcv_id: bytes) -> bool:
        """Delete the queue and all its messages; False if there is no such queue."""
        q, m = self._queue, self._message
        with self._tx() as db:
            self._deleting(db)
            # The queue row first: on PostgreSQL this waits for an append holding its lock,
            # and an append that comes later finds no queue, so no message is left behind.
            deleted = q.delete().where(q.rcv_id == rcv_id).execute()
            (freed,) = db.execute_sql(self._sql.queue_bytes, (rcv_id,)).fetchone()
            m.delete().where(m.rcv_id == rcv_id).execute()
        self._count_bytes(-int(freed))
        return deleted > 0

    def set_link(self, rcv_id: bytes, link_id: bytes, data: bytes) -> None:
        """Set the queue's short-link id and data (replacing its own earlier ones).

        DuplicateLinkId, with nothing changed, if another queue holds `link_id`."""
        q = self._queue
        try:
            with self._tx():
                q.update(link_id=link_id, link_data=data).where(q.rcv_id == rcv_id).execute()
        except peewee.IntegrityError as exc:
            # The unique index decides, also between two queues setting it at once; the
            # failed update is undone (its transaction, or on SQLite the statement itself).
            raise DuplicateLinkId("another queue holds this link id") from exc

    def delete_link(self, rcv_id: bytes) -> None:
        q = self._queue
        with self._tx():
            q.update(link_id=None, link_data=None).where(q.rcv_id == rcv_id).execute()

    # ----------------------------------------------------------------------- messages

    def append_message(
        self,
        rcv_id: bytes,
        message: StoredMessage,
        marker: StoredMessage | Callable[[], StoredMessage],
        quota: int | Quota,
        expire_before_ts: int,
    ) -> AppendOutcome:
        """Expire the queue's old messages, then store `message`, or `marker` if the queue is
        full, or nothing if a marker already waits; one transaction, committed on return.

        `quota` is a message count, or a `Quota` that also bounds the bytes of the queue and
        of the whole store. `marker` may be a function that makes it, called only when the
        queue is full. Expiry here starts at the front: when the queue's oldest message has
        expired, every message of the queue older than `expire_before_ts` is deleted; when it
        has not (a clock that stepped back can put an older timestamp behind it),
        `expire_messages` deletes the rest on its next round.

        A queue deleted since the caller looked it up gets nothing stored and STORED back:
        the SEND is then ordered before the DEL, which would have deleted the message anyway.
        """
        sql = self._sql
        limit = quota if isinstance(quota, Quota) else Quota(quota)
        size = len(message.enc_body)
        with self._tx() as db:
            if db.execute_sql(sql.queue_exists, (rcv_id,)).fetchone() is None:
                logger.debug("append to a deleted queue dropped", extra={"rcv_id": rcv_id.hex()})
                return AppendOutcome.STORED
            fill = (rcv_id, rcv_id, rcv_id)
            count, newest_is_marker, oldest_ts = db.execute_sql(sql.fill, fill).fetchone()
            if oldest_ts is not None and oldest_ts < expire_before_ts:
                self._deleting(db)
                (expired,) = db.execute_sql(
                    sql.expired_bytes, (rcv_id, expire_before_ts)
                ).fetchone()
                db.execute_sql(sql.delete_expired, (rcv_id, expire_before_ts))
                self._count_bytes(-int(expired))
                count, newest_is_marker, _ = db.execute_sql(sql.fill, fill).fetchone()
            if newest_is_marker:
                return AppendOutcome.QUOTA
            full = count >= limit.messages
            if not full and limit.store_bytes is not None:
                full = self.stored_bytes + size > limit.store_bytes
            # Summing a queue's bytes reads its rows, so only when its count could get there.
            if not full and limit.bytes is not None and (count + 1) * size > limit.bytes // 2:
                (held,) = db.execute_sql(sql.queue_bytes, (rcv_id,)).fetchone()
                full = int(held) + size > limit.bytes
            if full:
                stored = marker if isinstance(marker, StoredMessage) else marker()
                outcome = AppendOutcome.QUOTA_MARKER
            else:
                stored, outcome = message, AppendOutcome.STORED
            db.execute_sql(sql.insert, (rcv_id, stored.msg_id, stored.ts, stored.enc_body, full))
            self._count_bytes(len(stored.enc_body))
        return outcome

    def first_message(self, rcv_id: bytes) -> StoredMessage | None:
        """The oldest message of the queue, if any."""
        with self._tx(read_only=True) as db:
            row = db.execute_sql(self._sql.oldest, (rcv_id,)).fetchone()
        return None if row is None else _message(row)

    def ack_message(self, rcv_id: bytes, msg_id: bytes) -> tuple[bool, StoredMessage | None]:
        """Delete `msg_id` if it is the queue's oldest message: (True, the next one or None).

        (False, None), with nothing deleted, when it is not the oldest (or not there)."""
        sql = self._sql
        with self._tx() as db:
            rows = db.execute_sql(sql.oldest_two, (rcv_id,)).fetchall()
            if not rows or _bytes(rows[0][1]) != msg_id:
                return False, None
            self._deleting(db)
            deleted = db.execute_sql(sql.delete_seq, (rows[0][0],)).rowcount
        if deleted != 1:  # a concurrent ACK of the same message won (PostgreSQL)
            return False, None
        self._count_bytes(-len(rows[0][3]))
        return True, _message(rows[1][1:]) if len(rows) > 1 else None

    def expire_messages(self, expire_before_ts: int) -> int:
        """Delete every message (quota markers included) older than `expire_before_ts`, in
        batches of EXPIRE_BATCH per transaction; returns how many were deleted."""
        m = self._message
        total = 0
        while True:
            with self._tx() as db:
                self._deleting(db)
                batch = m.select(m.seq).where(m.ts < expire_before_ts).limit(EXPIRE_BATCH)
                freed = (
                    m.select(peewee.fn.COALESCE(peewee.fn.SUM(peewee.fn.LENGTH(m.enc_body)), 0))
                    .where(m.seq.in_(batch))
                    .scalar()
                )
                deleted = m.delete().where(m.seq.in_(batch)).execute()
            self._count_bytes(-int(freed or 0))
            total += deleted
            if deleted < EXPIRE_BATCH:
                break
        if total:
            logger.info("messages expired", extra={"count": total})
        return total

    def scrub(self) -> None:
        """Truncate SQLite's write-ahead log after a checkpoint, so that the pages of deleted
        messages written there are gone from disk too (a no-op on PostgreSQL, and when a
        reader still holds the log: then the next call does it)."""
        if not self._flat:
            return
        self._db.truncate_wal()

    def message_count(self, rcv_id: bytes) -> int:
        m = self._message
        with self._tx(read_only=True):
            return m.select().where(m.rcv_id == rcv_id).count()

    # ----------------------------------------------------------------------- identity, stats

    def load_identity(self) -> tuple[bytes, bytes] | None:
        """The server's (certificate PEM, private key PEM), or None before the first save."""
        ident = self._identity
        with self._tx(read_only=True):
            row = ident.get_or_none(ident.id == _IDENTITY_ROW)
        return None if row is None else (_bytes(row.certificate_pem), _bytes(row.key_pem))

    def save_identity(self, certificate_pem: bytes, key_pem: bytes) -> None:
        """Keep the server's identity; the first one saved stays.

        A later save with other values changes nothing and logs a warning: replacing the
        certificate would change the server's address under every client that pinned it."""
        ident = self._identity
        with self._tx():
            inserted = (
                ident.insert(
                    id=_IDENTITY_ROW,
                    certificate_pem=certificate_pem,
                    key_pem=key_pem,
                    created_at_ms=int(time.time() * 1000),
                )
                .on_conflict(action="NOTHING", conflict_target=[ident.id])
                .as_rowcount()
                .execute()
            )
            if inserted:
                return
            row = ident.get(ident.id == _IDENTITY_ROW)
        if (_bytes(row.certificate_pem), _bytes(row.key_pem)) != (certificate_pem, key_pem):
            logger.warning(
                "server identity already saved; the new one is ignored",
                extra={"db": repr(self._db)},
            )

    def stats(self) -> dict[str, int]:
        """Counts for monitoring: `queues`, `messages` (full counts, not for the hot path)."""
        with self._tx(read_only=True):
            queues = self._queue.select().count()
            messages = self._message.select().count()
        return {"queues": queues, "messages": messages}
