"""The agent's tables: connections, their queues, commands with durable events, messages.

Owns the agent layer's schema (`AGENT_LAYER`, migrations 100-199) and every read and write
the agent makes on it (`AgentStore`). Each `ConnectionActor` writes only its own
connection's rows, in short transactions through `AgentStore.transaction()`; the
`AgentActor` inserts new connections and commands. Nothing here imports actors/ or touches
the network. Private keys are stored here and never leave the client's database.

Rows and what they mean:

* ``AgentConnection``  one duplex connection: status, hash-chain positions (`snd_seq`/
  `snd_hash` of what we sent, `rcv_seq`/`rcv_hash` of what we received), last error, and
  where a queue rotation stands on either side (`rcv_switch_status`, `snd_switch_status`).
* ``AgentRcvQueue`` / ``AgentSndQueue``  the queues of a connection with every key, stored
  *before* the network call that uses them, so a retry after a crash repeats the same request.
* ``AgentCommand``  an API command in progress (or done with its `event` kept until the
  caller acknowledges it): kind, payload, the `server` whose lane it runs in (None: the
  connection's local lane), its `origin` (who learns its outcome), attempts, next attempt.
* ``AgentSndMessage``  an outgoing message, stored sealed (the exact SEND body) before it is
  sent, deleted once the server said OK.
* ``AgentRcvMessage``  a received user message waiting for the user's `ack_message`.
* ``AgentContactRequest``  an invitation received on a contact address (`REQ`).

The statements that run for every message (the chain positions, the message rows, the ACK
command) are SQL text written once per database kind (`_HotSql`): building them with
peewee's query builder costs many times what the database spends running them. So are the
whole-row statements of a handshake step and of an activation (`storage.prepared.RowSql`:
the rows of a connection, inserts and saves of connections and queues, a command by its corr
id); the rarer ones use the query builder. A row's fields mirror the model's, so the actor
holds model instances.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import msgspec
import peewee
from playhouse.migrate import SchemaMigrator, migrate

from storage.database import LAYER_VERSION_BLOCKS, Database, Layer, Migration, bind_models
from storage.prepared import RowSql


class AgentConnection(peewee.Model):
    conn_id = peewee.CharField(primary_key=True, max_length=64)
    status = peewee.CharField(max_length=16)
    mode = peewee.CharField(max_length=16)  # "invitation" | "contact"
    error = peewee.TextField(null=True)
    snd_seq = peewee.IntegerField(default=0)
    snd_hash = peewee.BlobField(null=True)
    rcv_seq = peewee.IntegerField(default=0)
    rcv_hash = peewee.BlobField(null=True)
    pending_conf = peewee.BlobField(null=True)  # the peer's Confirmation, until allowed
    link_key = peewee.BlobField(null=True)  # the short link's key (contact addresses)
    rcv_switch_status = peewee.CharField(max_length=24, null=True)  # RcvSwitchStatus value
    snd_switch_status = peewee.CharField(max_length=24, null=True)  # SndSwitchStatus value
    peer_info = peewee.BlobField(null=True)  # the inviter's info, at the joiner (told as INFO)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "agent_connection"


class AgentRcvQueue(peewee.Model):
    id = peewee.AutoField()
    conn_id = peewee.CharField(max_length=64, index=True)
    server = peewee.CharField(max_length=400, index=True)
    mode = peewee.CharField(max_length=1)  # protocol.queue.QueueMode value
    auth_private = peewee.BlobField()
    dh_private = peewee.BlobField()
    e2e_private = peewee.BlobField()
    rcv_id = peewee.BlobField(null=True, unique=True)
    snd_id = peewee.BlobField(null=True)
    srv_dh_public = peewee.BlobField(null=True)
    e2e_peer_public = peewee.BlobField(null=True)
    status = peewee.CharField(max_length=16)  # RcvQueueStatus value
    replaces = peewee.IntegerField(null=True)  # a switch's new queue: the queue it replaces
    sender_auth_public = peewee.BlobField(null=True)  # from QKEY, for the switch's KEY

    class Meta:
        table_name = "agent_rcv_queue"


class AgentSndQueue(peewee.Model):
    id = peewee.AutoField()
    conn_id = peewee.CharField(max_length=64, index=True)
    server = peewee.CharField(max_length=400)
    snd_id = peewee.BlobField()
    mode = peewee.CharField(max_length=1)
    auth_private = peewee.BlobField()
    e2e_private = peewee.BlobField()
    e2e_peer_public = peewee.BlobField()
    status = peewee.CharField(max_length=16)  # SndQueueStatus value
    quota_blocked = peewee.BooleanField(default=False)
    replaces = peewee.IntegerField(null=True)  # a switch's new queue: the queue it replaces

    class Meta:
        table_name = "agent_snd_queue"


class AgentCommand(peewee.Model):
    id = peewee.AutoField()
    corr_id = peewee.CharField(max_length=200, null=True, unique=True)
    conn_id = peewee.CharField(max_length=64, index=True)
    kind = peewee.CharField(max_length=32)  # CommandKind value
    payload = peewee.BlobField()  # the kind's payload Struct, MessagePack
    lane = peewee.CharField(max_length=400)  # read only by migration 103 (now `server`)
    server = peewee.CharField(max_length=400, null=True)  # its lane; None: the local lane
    origin = peewee.CharField(max_length=16, default="async")  # CommandOrigin value
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField(default=0.0)
    deadline = peewee.FloatField()
    event = peewee.BlobField(null=True)  # set, with the command's effects, when it completes
    created_at = peewee.FloatField()

    class Meta:
        table_name = "agent_command"


class AgentSndMessage(peewee.Model):
    id = peewee.AutoField()
    conn_id = peewee.CharField(max_length=64, index=True)
    snd_queue_id = peewee.IntegerField(index=True)
    seq = peewee.IntegerField()
    kind = peewee.CharField(max_length=16)  # MessageKind value
    body = peewee.BlobField()
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField(default=0.0)
    expires_at = peewee.FloatField()
    created_at = peewee.FloatField()

    class Meta:
        table_name = "agent_snd_message"


class AgentRcvMessage(peewee.Model):
    id = peewee.AutoField()
    conn_id = peewee.CharField(max_length=64, index=True)
    rcv_queue_id = peewee.IntegerField()
    seq = peewee.IntegerField()
    broker_msg_id = peewee.BlobField()
    body = peewee.BlobField()
    integrity = peewee.CharField(max_length=32)

    class Meta:
        table_name = "agent_rcv_message"
        indexes = ((("conn_id", "seq"), True),)


class AgentContactRequest(peewee.Model):
    inv_id = peewee.CharField(primary_key=True, max_length=64)
    conn_id = peewee.CharField(max_length=64, index=True)
    link = peewee.TextField()
    info = peewee.BlobField()
    created_at = peewee.FloatField()

    class Meta:
        table_name = "agent_contact_request"


AGENT_MODELS = (
    AgentConnection,
    AgentRcvQueue,
    AgentSndQueue,
    AgentCommand,
    AgentSndMessage,
    AgentRcvMessage,
    AgentContactRequest,
)


def _create_agent_tables(db: peewee.Database) -> None:
    db.create_tables(list(bind_models(db, *AGENT_MODELS)))


def _add_switch_columns(db: peewee.Database) -> None:
    # Databases created at version 100 lack these; ones created since have them already
    # (migration 100 creates the tables from the current models).
    wanted = {
        "agent_connection": {
            "rcv_switch_status": peewee.CharField(max_length=24, null=True),
            "snd_switch_status": peewee.CharField(max_length=24, null=True),
        },
        "agent_rcv_queue": {
            "replaces": peewee.IntegerField(null=True),
            "sender_auth_public": peewee.BlobField(null=True),
        },
        "agent_snd_queue": {"replaces": peewee.IntegerField(null=True)},
    }
    migrator = SchemaMigrator.from_database(db)
    operations = []
    for table, fields in wanted.items():
        present = {column.name for column in db.get_columns(table)}
        operations += [
            migrator.add_column(table, name, field)
            for name, field in fields.items()
            if name not in present
        ]
    migrate(*operations)


def _drop_server_tables(db: peewee.Database) -> None:
    # Until layers were opened by name, an agent database got the queue server's tables too
    # (migration 300) whenever storage.server was imported. They are dropped with their
    # bookkeeping rows if they hold nothing; rows mean a server shares this database on
    # purpose, and then nothing is touched. Names as migration 300 made them.
    import logging

    names = ("server_message", "server_queue", "server_identity")
    tables = [table for table in names if db.table_exists(table)]
    for table in tables:
        if db.execute_sql(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            logging.getLogger(__name__).warning(
                "queue server tables with rows in an agent database: kept", extra={"table": table}
            )
            return
    for table in tables:
        db.execute_sql(f"DROP TABLE {table}")
    db.execute_sql("DELETE FROM schema_migrations WHERE version >= 300 AND version < 400")


def _add_command_columns(db: peewee.Database) -> None:
    # The lane and the origin of a command were once read from strings: a lane named like a
    # server address, a corr id starting with "sync:". They are columns of their own now.
    present = {column.name for column in db.get_columns("agent_command")}
    migrator = SchemaMigrator.from_database(db)
    operations = []
    if "server" not in present:
        server = peewee.CharField(max_length=400, null=True)
        operations.append(migrator.add_column("agent_command", "server", server))
    if "origin" not in present:
        operations.append(
            migrator.add_column(
                "agent_command", "origin", peewee.CharField(max_length=16, default="async")
            )
        )
    migrate(*operations)
    # The patterns go as parameters: psycopg reads a literal % in the SQL as a placeholder.
    like = f"LIKE {db.param}"
    db.execute_sql(f"UPDATE agent_command SET server = lane WHERE lane {like}", ("duplex://%",))
    db.execute_sql(f"UPDATE agent_command SET origin = 'sync' WHERE corr_id {like}", ("sync:%",))
    db.execute_sql("UPDATE agent_command SET origin = 'internal' WHERE corr_id IS NULL")


def _add_peer_info(db: peewee.Database) -> None:
    # The joiner keeps the inviter's connection info, so that `Replay` can tell INFO again.
    if "peer_info" not in {column.name for column in db.get_columns("agent_connection")}:
        migrator = SchemaMigrator.from_database(db)
        migrate(migrator.add_column("agent_connection", "peer_info", peewee.BlobField(null=True)))


AGENT_MIGRATIONS = (
    Migration(100, "agent tables", _create_agent_tables),
    Migration(101, "queue rotation", _add_switch_columns),
    Migration(102, "drop the queue server's tables", _drop_server_tables),
    Migration(103, "command lanes and origins as columns", _add_command_columns),
    Migration(104, "the peer's connection info kept", _add_peer_info),
)
AGENT_LAYER = Layer("agent", LAYER_VERSION_BLOCKS["agent"], AGENT_MIGRATIONS)
"""The agent's storage layer: pass it to `open_database(url, layers=[AGENT_LAYER])`."""


class ConnectionRows(NamedTuple):
    """Every row of one connection, as `AgentStore.load_connection` reads them."""

    conn: AgentConnection | None
    rcv_queues: list[AgentRcvQueue]
    snd_queues: list[AgentSndQueue]
    commands: list[AgentCommand]
    snd_messages: list[AgentSndMessage]
    rcv_messages: list[AgentRcvMessage]


class _HotSql:
    """The statements of the per-message path, written once per database kind."""

    def __init__(self, kind: str) -> None:
        p = "?" if kind == "sqlite" else "%s"
        returning = " RETURNING id"

        def insert(table: str, columns: str) -> str:
            values = ", ".join([p] * len(columns.split(",")))
            return f"INSERT INTO {table} ({columns}) VALUES ({values}){returning}"

        self.snd_position = (
            f"UPDATE agent_connection SET snd_seq = {p}, snd_hash = {p} WHERE conn_id = {p}"
        )
        self.rcv_position = (
            f"UPDATE agent_connection SET rcv_seq = {p}, rcv_hash = {p} WHERE conn_id = {p}"
        )
        self.insert_snd_message = insert(
            "agent_snd_message",
            "conn_id, snd_queue_id, seq, kind, body, attempts, next_attempt_at, expires_at, "
            "created_at",
        )
        self.delete_snd_message = f"DELETE FROM agent_snd_message WHERE id = {p}"
        self.snd_attempts = (
            f"UPDATE agent_snd_message SET attempts = {p}, next_attempt_at = {p} WHERE id = {p}"
        )
        self.insert_rcv_message = insert(
            "agent_rcv_message", "conn_id, rcv_queue_id, seq, broker_msg_id, body, integrity"
        )
        self.delete_rcv_message = f"DELETE FROM agent_rcv_message WHERE id = {p}"
        self.insert_command = insert(
            "agent_command",
            "corr_id, conn_id, kind, payload, lane, server, origin, attempts, next_attempt_at, "
            "deadline, created_at",
        )
        # No row back if a command has this corr id already (the same call again).
        self.insert_command_once = self.insert_command.replace(
            returning, f" ON CONFLICT (corr_id) DO NOTHING{returning}"
        )
        self.delete_command = f"DELETE FROM agent_command WHERE id = {p}"
        self.command_event = f"UPDATE agent_command SET event = {p} WHERE id = {p}"
        self.command_attempts = (
            f"UPDATE agent_command SET attempts = {p}, next_attempt_at = {p} WHERE id = {p}"
        )
        self.command_payload = f"UPDATE agent_command SET payload = {p} WHERE id = {p}"
        self.command_exists = f"SELECT 1 FROM agent_command WHERE corr_id = {p}"
        self.delete_acknowledged = (
            f"DELETE FROM agent_command WHERE corr_id = {p} AND event IS NOT NULL"
        )
        self.quota_blocked = f"UPDATE agent_snd_queue SET quota_blocked = {p} WHERE id = {p}"
        self.switch_status = (
            f"UPDATE agent_connection SET rcv_switch_status = {p}, snd_switch_status = {p} "
            f"WHERE conn_id = {p}"
        )


_encoder = msgspec.msgpack.Encoder()


class AgentStore:
    """The agent's reads and writes on one database; see the module docstring.

    Every method runs inside the caller's transaction (`transaction()`), except the few
    lookups that open their own read-only one (they say so).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        models = db.bind(*AGENT_MODELS)
        self.Connection = models.AgentConnection
        self.RcvQueue = models.AgentRcvQueue
        self.SndQueue = models.AgentSndQueue
        self.Command = models.AgentCommand
        self.SndMessage = models.AgentSndMessage
        self.RcvMessage = models.AgentRcvMessage
        self.ContactRequest = models.AgentContactRequest
        self._sql = _HotSql(db.kind)
        kind = db.kind
        self._conn_rows = RowSql(self.Connection, kind)
        self._rcv_queue_rows = RowSql(self.RcvQueue, kind)
        self._snd_queue_rows = RowSql(self.SndQueue, kind)
        self._command_rows = RowSql(self.Command, kind)
        self._snd_message_rows = RowSql(self.SndMessage, kind)
        self._rcv_message_rows = RowSql(self.RcvMessage, kind)
        of_conn = '"conn_id" = {p}'
        self._select_conn = self._conn_rows.select(of_conn)
        self._select_rcv_queues = self._rcv_queue_rows.select(of_conn, '"id"')
        self._select_rcv_queue = self._rcv_queue_rows.select('"rcv_id" = {p}')
        self._select_snd_queues = self._snd_queue_rows.select(of_conn, '"id"')
        self._select_commands = self._command_rows.select(of_conn, '"id"')
        self._select_pending = self._command_rows.select(of_conn + ' AND "event" IS NULL', '"id"')
        self._select_command = self._command_rows.select('"corr_id" = {p}')
        self._select_snd_messages = self._snd_message_rows.select(of_conn, '"id"')
        self._select_rcv_messages = self._rcv_message_rows.select(of_conn, '"seq"')

    def transaction(self, *, read_only: bool = False) -> AbstractContextManager[peewee.Database]:
        return self.db.transaction(read_only=read_only)

    def _run(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.peewee.execute_sql(sql, params)

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        return int(self._run(sql, params).fetchone()[0])

    def _reading(self) -> AbstractContextManager[Any]:
        """A read-only transaction of its own, or none inside the caller's (a nested one
        would cost a savepoint and its release)."""
        if self.db.peewee.in_transaction():
            return nullcontext()
        return self.transaction(read_only=True)

    # ------------------------------------------------------------------ one connection

    def load_connection(self, conn_id: str) -> ConnectionRows:
        """Every row of `conn_id`, in one read-only transaction of its own."""
        db, key = self.db.peewee, (conn_id,)
        with self.transaction(read_only=True):
            return ConnectionRows(
                self._conn_rows.first(db, self._select_conn, key),
                self._rcv_queue_rows.rows(db, self._select_rcv_queues, key),
                self._snd_queue_rows.rows(db, self._select_snd_queues, key),
                self._command_rows.rows(db, self._select_commands, key),
                self._snd_message_rows.rows(db, self._select_snd_messages, key),
                self._rcv_message_rows.rows(db, self._select_rcv_messages, key),
            )

    def pending_commands(self, conn_id: str) -> list[AgentCommand]:
        """The commands of `conn_id` without an event (own read-only transaction)."""
        with self.transaction(read_only=True):
            return self._command_rows.rows(self.db.peewee, self._select_pending, (conn_id,))

    def insert_connection(self, conn_id: str, status: str, mode: str) -> AgentConnection:
        return self._conn_rows.insert(
            self.db.peewee,
            conn_id=conn_id,
            status=str(status),
            mode=str(mode),
            created_at=time.time(),
        )

    def connection(self, conn_id: str) -> AgentConnection | None:
        """The connection's row (own read-only transaction, unless inside the caller's)."""
        with self._reading():
            return self._conn_rows.first(self.db.peewee, self._select_conn, (conn_id,))

    def save_connection(self, conn: AgentConnection) -> None:
        self._conn_rows.update(self.db.peewee, conn)

    def delete_connection(self, conn_id: str) -> None:
        """Every row of the connection."""
        for model in (self.RcvQueue, self.SndQueue, self.SndMessage, self.RcvMessage):
            model.delete().where(model.conn_id == conn_id).execute()
        self.Connection.delete().where(self.Connection.conn_id == conn_id).execute()

    def save_snd_position(self, conn: AgentConnection) -> None:
        self._run(self._sql.snd_position, (conn.snd_seq, conn.snd_hash, conn.conn_id))

    def save_rcv_position(self, conn: AgentConnection) -> None:
        self._run(self._sql.rcv_position, (conn.rcv_seq, conn.rcv_hash, conn.conn_id))

    def save_switch_status(self, conn: AgentConnection) -> None:
        status = (conn.rcv_switch_status, conn.snd_switch_status, conn.conn_id)
        self._run(self._sql.switch_status, status)

    # ------------------------------------------------------------------ queues

    def insert_rcv_queue(self, **fields: Any) -> AgentRcvQueue:
        return self._rcv_queue_rows.insert(self.db.peewee, **fields)

    def save_rcv_queue(self, queue: AgentRcvQueue) -> None:
        self._rcv_queue_rows.update(self.db.peewee, queue)

    def delete_rcv_queue(self, queue: AgentRcvQueue) -> None:
        """The queue and the messages received on it."""
        self.RcvMessage.delete().where(self.RcvMessage.rcv_queue_id == queue.id).execute()
        self.RcvQueue.delete().where(self.RcvQueue.id == queue.id).execute()

    def insert_snd_queue(self, **fields: Any) -> AgentSndQueue:
        return self._snd_queue_rows.insert(self.db.peewee, **fields)

    def save_snd_queue(self, queue: AgentSndQueue) -> None:
        self._snd_queue_rows.update(self.db.peewee, queue)

    def delete_snd_queue(self, queue: AgentSndQueue) -> None:
        self.SndMessage.delete().where(self.SndMessage.snd_queue_id == queue.id).execute()
        self.SndQueue.delete().where(self.SndQueue.id == queue.id).execute()

    def save_quota_blocked(self, queue: AgentSndQueue) -> None:
        self._run(self._sql.quota_blocked, (bool(queue.quota_blocked), queue.id))

    # ------------------------------------------------------------------ messages

    def insert_snd_message(
        self,
        *,
        conn_id: str,
        snd_queue_id: int,
        seq: int,
        kind: str,
        body: bytes,
        expires_at: float,
        created_at: float,
    ) -> AgentSndMessage:
        params = (conn_id, snd_queue_id, seq, str(kind), body, 0, 0.0, expires_at, created_at)
        row_id = self._insert(self._sql.insert_snd_message, params)
        return self.SndMessage(
            id=row_id,
            conn_id=conn_id,
            snd_queue_id=snd_queue_id,
            seq=seq,
            kind=str(kind),
            body=body,
            attempts=0,
            next_attempt_at=0.0,
            expires_at=expires_at,
            created_at=created_at,
        )

    def delete_snd_message(self, message: AgentSndMessage) -> None:
        self._run(self._sql.delete_snd_message, (message.id,))

    def save_snd_attempts(self, message: AgentSndMessage) -> None:
        params = (message.attempts, message.next_attempt_at, message.id)
        self._run(self._sql.snd_attempts, params)

    def insert_rcv_message(
        self,
        *,
        conn_id: str,
        rcv_queue_id: int,
        seq: int,
        broker_msg_id: bytes,
        body: bytes,
        integrity: str,
    ) -> AgentRcvMessage:
        params = (conn_id, rcv_queue_id, seq, broker_msg_id, body, integrity)
        row_id = self._insert(self._sql.insert_rcv_message, params)
        return self.RcvMessage(
            id=row_id,
            conn_id=conn_id,
            rcv_queue_id=rcv_queue_id,
            seq=seq,
            broker_msg_id=broker_msg_id,
            body=body,
            integrity=integrity,
        )

    def delete_rcv_message(self, message: AgentRcvMessage) -> None:
        self._run(self._sql.delete_rcv_message, (message.id,))

    # ------------------------------------------------------------------ commands

    def insert_command(
        self,
        *,
        conn_id: str,
        kind: str,
        payload: msgspec.Struct,
        server: str | None,
        origin: str,
        corr_id: str | None,
        ttl: float,
    ) -> AgentCommand:
        fields = {"conn_id": conn_id, "kind": kind, "payload": payload, "server": server}
        command = self._insert_command(
            self._sql.insert_command, origin=origin, corr_id=corr_id, ttl=ttl, **fields
        )
        assert command is not None
        return command

    def insert_command_once(
        self,
        *,
        conn_id: str,
        kind: str,
        payload: msgspec.Struct,
        server: str | None,
        origin: str,
        corr_id: str,
        ttl: float,
    ) -> AgentCommand | None:
        """As `insert_command`, or nothing (None) if a command has this `corr_id` already
        (the same call again): the check and the insert in one statement."""
        fields = {"conn_id": conn_id, "kind": kind, "payload": payload, "server": server}
        return self._insert_command(
            self._sql.insert_command_once, origin=origin, corr_id=corr_id, ttl=ttl, **fields
        )

    def _insert_command(
        self,
        sql: str,
        *,
        conn_id: str,
        kind: str,
        payload: msgspec.Struct,
        server: str | None,
        origin: str,
        corr_id: str | None,
        ttl: float,
    ) -> AgentCommand | None:
        now = time.time()
        encoded = _encoder.encode(payload)
        lane = server or ""
        params = (
            corr_id,
            conn_id,
            str(kind),
            encoded,
            lane,
            server,
            str(origin),
            0,
            0.0,
            now + ttl,
            now,
        )
        found = self._run(sql, params).fetchone()
        if found is None:
            return None
        return self.Command(
            id=int(found[0]),
            corr_id=corr_id,
            conn_id=conn_id,
            kind=str(kind),
            payload=encoded,
            lane=lane,
            server=server,
            origin=str(origin),
            attempts=0,
            next_attempt_at=0.0,
            deadline=now + ttl,
            event=None,
            created_at=now,
        )

    def command_exists(self, corr_id: str) -> bool:
        return self._run(self._sql.command_exists, (corr_id,)).fetchone() is not None

    def command_by_corr_id(self, corr_id: str) -> AgentCommand | None:
        return self._command_rows.first(self.db.peewee, self._select_command, (corr_id,))

    def delete_command(self, command: AgentCommand) -> None:
        self._run(self._sql.delete_command, (command.id,))

    def set_command_event(self, command: AgentCommand, event: bytes) -> None:
        command.event = event
        self._run(self._sql.command_event, (event, command.id))

    def save_command_attempts(self, command: AgentCommand) -> None:
        params = (command.attempts, command.next_attempt_at, command.id)
        self._run(self._sql.command_attempts, params)

    def save_command_deadline(self, command: AgentCommand) -> None:
        """Persist a command's new deadline (a delete's TTL counts again once its wait for
        delivery ended)."""
        query = self.Command.update(deadline=command.deadline)
        query.where(self.Command.id == command.id).execute()

    def save_command_payload(self, command: AgentCommand, payload: msgspec.Struct) -> None:
        command.payload = _encoder.encode(payload)
        self._run(self._sql.command_payload, (command.payload, command.id))

    def unacknowledged_events(self, conn_id: str) -> list[bytes]:
        """The stored completion events of `conn_id`, in order (own read-only transaction)."""
        with self.transaction(read_only=True):
            rows = (
                self.Command.select(self.Command.event)
                .where((self.Command.conn_id == conn_id) & self.Command.event.is_null(False))
                .order_by(self.Command.id)
            )
            return [bytes(row.event) for row in rows]

    def forget_command_event(self, corr_id: str) -> None:
        """The caller acknowledged the event of `corr_id`: delete the command, in a
        transaction of its own. A command still in progress (no event yet) is left alone."""
        with self.transaction():
            self._run(self._sql.delete_acknowledged, (corr_id,))

    # ------------------------------------------------------------------ contact requests

    def add_contact_request(
        self, conn_id: str, inv_id: str, link: str, info: bytes, now: float
    ) -> str | None:
        """Keep an invitation received on a contact address; None if it is known already."""
        known = self.ContactRequest.get_or_none(
            (self.ContactRequest.conn_id == conn_id) & (self.ContactRequest.link == link)
        )
        if known is not None:
            return None
        self.ContactRequest.create(
            inv_id=inv_id, conn_id=conn_id, link=link, info=info, created_at=now
        )
        return inv_id

    def contact_requests(self, conn_id: str) -> list[tuple[str, bytes]]:
        """The unanswered requests on a contact address: (inv_id, info), oldest first (own
        read-only transaction)."""
        with self.transaction(read_only=True):
            rows = (
                self.ContactRequest.select()
                .where(self.ContactRequest.conn_id == conn_id)
                .order_by(self.ContactRequest.created_at)
            )
            return [(row.inv_id, bytes(row.info)) for row in rows]

    def take_contact_request(self, inv_id: str) -> AgentContactRequest | None:
        """Remove and return a contact request (inside the caller's transaction)."""
        request = self.ContactRequest.get_or_none(self.ContactRequest.inv_id == inv_id)
        if request is not None:
            request.delete_instance()
        return request

    # ------------------------------------------------------------------ across connections

    def connections_with_work(self) -> list[str]:
        """Connections that must be activated at boot: pending commands, unacknowledged
        events, messages waiting to be sent or received ones waiting for the user's ACK
        (own read-only transaction)."""
        with self.transaction(read_only=True):
            found = set()
            for model in (self.Command, self.SndMessage, self.RcvMessage):
                found.update(row.conn_id for row in model.select(model.conn_id).distinct())
        return sorted(found)

    def subscriptions(self) -> dict[str, list[tuple[bytes, bytes, str]]]:
        """Every active receive queue per server: (rcv_id, auth_private, conn_id)."""
        by_server: dict[str, list[tuple[bytes, bytes, str]]] = {}
        with self.transaction(read_only=True):
            rows = self.RcvQueue.select().where(self.RcvQueue.status == "active")
            for row in rows:
                by_server.setdefault(row.server, []).append(
                    (bytes(row.rcv_id), bytes(row.auth_private), row.conn_id)
                )
        return by_server

    def waiting_by_server(self) -> dict[str, set[str]]:
        """The connections with commands or messages due on each server (for the boot:
        they retry at once when that server answers, not at their stored retry time)."""
        waiting: dict[str, set[str]] = {}
        with self.transaction(read_only=True):
            pending = self.Command.select(self.Command.conn_id, self.Command.server).where(
                self.Command.event.is_null() & self.Command.server.is_null(False)
            )
            for row in pending:
                waiting.setdefault(row.server, set()).add(row.conn_id)
            queues = (
                self.SndQueue.select(self.SndQueue.conn_id, self.SndQueue.server)
                .join(self.SndMessage, on=(self.SndMessage.snd_queue_id == self.SndQueue.id))
                .distinct()
            )
            for row in queues:
                waiting.setdefault(row.server, set()).add(row.conn_id)
        return waiting

    def conn_of_rcv_queue(self, rcv_id: bytes) -> str | None:
        key = (self.RcvQueue.rcv_id.db_value(rcv_id),)
        with self._reading():
            row = self._rcv_queue_rows.first(self.db.peewee, self._select_rcv_queue, key)
        return row.conn_id if row is not None else None

    def conn_of_command(self, corr_id: str) -> str | None:
        with self.transaction(read_only=True):
            row = self.Command.get_or_none(self.Command.corr_id == corr_id)
        return row.conn_id if row is not None else None

    def rcv_ids(self, conn_id: str) -> Iterator[bytes]:
        """The server ids of the connection's receive queues (own read-only transaction)."""
        with self.transaction(read_only=True):
            rows = list(self.RcvQueue.select().where(self.RcvQueue.conn_id == conn_id))
        return (bytes(row.rcv_id) for row in rows if row.rcv_id is not None)
