"""The agent's tables: connections, their queues, commands with durable events, messages.

Owns the schema (migrations 100-199 of the shared database) and the few queries that span
tables. Each `ConnectionActor` writes only its own connection's rows, in short transactions
through `AgentStore.transaction()`; the `AgentActor` inserts new connections and commands.
Nothing here imports actors/ or touches the network. Private keys are stored here and never
leave the client's database.

Rows and what they mean:

* ``AgentConnection``  one duplex connection: status, hash-chain positions (`snd_seq`/
  `snd_hash` of what we sent, `rcv_seq`/`rcv_hash` of what we received), last error, and
  where a queue rotation stands on either side (`rcv_switch_status`, `snd_switch_status`).
* ``AgentRcvQueue`` / ``AgentSndQueue``  the queues of a connection with every key, stored
  *before* the network call that uses them, so a retry after a crash repeats the same request.
* ``AgentCommand``  an API command in progress (or done with its `event` kept until the chat
  acknowledges it): kind, payload, the lane (server) it runs on, attempts and next attempt.
* ``AgentSndMessage``  an outgoing message, stored sealed (the exact SEND body) before it is
  sent, deleted once the server said OK.
* ``AgentRcvMessage``  a received user message waiting for the user's `ack_message`.
* ``AgentContactRequest``  an invitation received on a contact address (`REQ`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from storage.database import LAYER_VERSION_BLOCKS, Database, Layer, Migration, bind_models


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
    # "new" until NEW answered, then "active"; "deleting" once a switch has drained it
    status = peewee.CharField(max_length=16)
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
    # "new" → "secured" (SKEY answered, or QUSE said the recipient KEYed it); "retiring"
    # once a switch replaced it: it only drains what was queued on it before
    status = peewee.CharField(max_length=16)
    quota_blocked = peewee.BooleanField(default=False)
    replaces = peewee.IntegerField(null=True)  # a switch's new queue: the queue it replaces

    class Meta:
        table_name = "agent_snd_queue"


class AgentCommand(peewee.Model):
    id = peewee.AutoField()
    corr_id = peewee.CharField(max_length=200, null=True, unique=True)
    conn_id = peewee.CharField(max_length=64, index=True)
    kind = peewee.CharField(max_length=32)
    payload = peewee.BlobField()
    lane = peewee.CharField(max_length=400)
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
    kind = peewee.CharField(max_length=16)
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


AGENT_MIGRATIONS = (
    Migration(100, "agent tables", _create_agent_tables),
    Migration(101, "queue rotation", _add_switch_columns),
    Migration(102, "drop the queue server's tables", _drop_server_tables),
)
AGENT_LAYER = Layer("agent", LAYER_VERSION_BLOCKS["agent"], AGENT_MIGRATIONS)
"""The agent's storage layer: pass it to `open_database(url, layers=[AGENT_LAYER])`."""


class AgentStore:
    """The agent's bound models on one database, and the queries that span connections."""

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

    def transaction(self, *, read_only: bool = False) -> AbstractContextManager[peewee.Database]:
        return self.db.transaction(read_only=read_only)

    def connections_with_work(self) -> list[str]:
        """Connections that must be activated at boot: pending commands, unacknowledged
        events, or messages waiting to be sent."""
        with self.transaction(read_only=True):
            commands = {row.conn_id for row in self.Command.select(self.Command.conn_id)}
            messages = {row.conn_id for row in self.SndMessage.select(self.SndMessage.conn_id)}
        return sorted(commands | messages)

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
            pending = self.Command.select(self.Command.conn_id, self.Command.lane).where(
                self.Command.event.is_null() & self.Command.lane.startswith("duplex://")
            )
            for row in pending:
                waiting.setdefault(row.lane, set()).add(row.conn_id)
            queues = (
                self.SndQueue.select(self.SndQueue.conn_id, self.SndQueue.server)
                .join(self.SndMessage, on=(self.SndMessage.snd_queue_id == self.SndQueue.id))
                .distinct()
            )
            for row in queues:
                waiting.setdefault(row.server, set()).add(row.conn_id)
        return waiting

    def conn_of_rcv_queue(self, rcv_id: bytes) -> str | None:
        with self.transaction(read_only=True):
            row = self.RcvQueue.get_or_none(self.RcvQueue.rcv_id == rcv_id)
        return row.conn_id if row is not None else None

    def conn_of_command(self, corr_id: str) -> str | None:
        with self.transaction(read_only=True):
            row = self.Command.get_or_none(self.Command.corr_id == corr_id)
        return row.conn_id if row is not None else None
