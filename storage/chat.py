"""The chat's tables: the user, contacts, addresses, groups, members, introductions, messages,
and the chat's own commands (its continuations).

Owns the chat layer's schema (`CHAT_LAYER`, migrations 200-299) and every read and write the
chat makes on it (`ChatStore`). Each chat actor (a contact's, an address's, a group's) writes
only the rows of what it owns, in short transactions. Statuses and kinds are stored as the
values of the chat's enums (actors/chat/model.py); this module does not interpret them.
Nothing here imports actors/ or touches the network. The statements of the group-message path
(a message received, forwarded at a relay, handed to the agent and taken by it) are SQL text
written once per database kind (`_HotRows`, rows through `storage.prepared.RowSql`); the
rarer ones use peewee's query builder.

Rows and what they mean:

* ``ChatUser``        the one local user and its profile.
* ``ChatContact``     a direct connection to a person: its agent connection, status, profile.
* ``ChatAddress``     a contact address of ours: auto-accept and the auto-reply, and whether
                      it is a chat relay's address (it takes relay invitations, not contacts).
* ``ChatGroup``       a group as this user sees it: profile, own member id and role, status,
                      and the invitation while it is not joined yet; its kind (peer to peer,
                      or through relays), and for a relay group its group link (the owner's
                      short link; at the owner, the connection behind it) and the incognito
                      name we show in it, if any.
* ``ChatGroupRelay``  at a relay group's owner and members: one relay of the group — its
                      contact address (the owner joined it), its relay link, our connection
                      to it, its status.
* ``ChatRelayGroup``  at a chat relay: a group it serves — its relay link and the contact
                      connection behind it, the owner's member id, its status.
* ``ChatRelayMember`` at a chat relay: the roster of a served group (the owner included),
                      each with its member id, profile, the relay's connection to it, status.
* ``ChatMember``      another member of a group: role, status, profile, and the agent
                      connection to it (None until one is made, and again once the agent
                      deleted it: the member, or the group for us, ended).
* ``ChatIntro``       at a group's host: the introduction of a new member to an existing one.
* ``ChatMessage``     a message sent or received, with its shared id (unique per chat, so a
                      copy that arrives again is recognised).
* ``ChatPending``     a group message waiting for a member to become connected (in a relay
                      group: for a relay, by its `relay_id`; at a relay: for a roster member).
* ``ChatOutbox``      a chat message body to hand to the agent, kept until it took it: the
                      send is acknowledged by the corr id stored with the row.
* ``ChatNotice``      a chat event for the user, stored with the change it describes and kept
                      until it was told (so a crash between the two does not lose it).
* ``ChatCommand``     a chat-issued async agent command: its id is the corr id the agent
                      completes it with (never reused), its owner, the function that continues
                      it, its status and payload.
* ``ChatConnection``  which owner an agent connection belongs to, and the last agent message
                      id it processed there (so a message the agent hands out again is only
                      acknowledged again); dropped once the agent deleted the connection.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from storage.database import LAYER_VERSION_BLOCKS, Database, Layer, Migration, bind_models
from storage.prepared import RowSql


class ChatUser(peewee.Model):
    id = peewee.AutoField()
    display_name = peewee.TextField()
    full_name = peewee.TextField(default="")

    class Meta:
        table_name = "chat_user"


class ChatContact(peewee.Model):
    contact_id = peewee.CharField(primary_key=True, max_length=64)
    conn_id = peewee.CharField(max_length=64, unique=True)
    status = peewee.CharField(max_length=16)
    display_name = peewee.TextField(null=True)
    full_name = peewee.TextField(null=True)
    address_id = peewee.CharField(max_length=64, null=True)  # it came through our address
    request_id = peewee.CharField(max_length=64, null=True, index=True)  # the request taken
    link = peewee.TextField(null=True)  # our one-time invitation, while it is open
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_contact"


class ChatAddress(peewee.Model):
    address_id = peewee.CharField(primary_key=True, max_length=64)
    conn_id = peewee.CharField(max_length=64, unique=True)
    status = peewee.CharField(max_length=16)
    link = peewee.TextField(null=True)
    auto_accept = peewee.BooleanField(default=False)
    auto_reply = peewee.TextField(null=True)
    relay = peewee.BooleanField(default=False)  # a chat relay's address (migration 204)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_address"


class ChatGroup(peewee.Model):
    group_id = peewee.CharField(primary_key=True, max_length=64)
    name = peewee.TextField()
    description = peewee.TextField(default="")
    status = peewee.CharField(max_length=16)
    member_id = peewee.CharField(max_length=64)  # ours
    role = peewee.CharField(max_length=16)  # ours
    host_member_id = peewee.CharField(max_length=64, null=True)
    invitation = peewee.BlobField(null=True)  # the XGrpInv we got, until we join
    contact_id = peewee.CharField(max_length=64, null=True)  # who invited us
    # migration 204: relay groups
    kind = peewee.CharField(max_length=16, default="p2p")
    group_link = peewee.TextField(null=True)  # the owner's short link of a relay group
    link_conn_id = peewee.CharField(max_length=64, null=True)  # owner: the link's connection
    incognito_name = peewee.TextField(null=True)  # the display name we show instead of ours
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_group"


class ChatMember(peewee.Model):
    id = peewee.AutoField()
    group_id = peewee.CharField(max_length=64, index=True)
    member_id = peewee.CharField(max_length=64)
    role = peewee.CharField(max_length=16)
    status = peewee.CharField(max_length=16)
    display_name = peewee.TextField()
    full_name = peewee.TextField(default="")
    conn_id = peewee.CharField(max_length=64, null=True, unique=True)
    contact_id = peewee.CharField(max_length=64, null=True)  # the contact it was invited as
    invited_by = peewee.CharField(max_length=64, null=True)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_member"
        indexes = ((("group_id", "member_id"), True),)


class ChatGroupRelay(peewee.Model):
    id = peewee.AutoField()
    relay_id = peewee.CharField(max_length=64, unique=True)  # names it in ChatPending
    group_id = peewee.CharField(max_length=64, index=True)
    address = peewee.TextField(null=True)  # owner: the relay's contact address
    relay_link = peewee.TextField(null=True)  # member: joined; owner: once the relay accepted
    conn_id = peewee.CharField(max_length=64, unique=True)
    status = peewee.CharField(max_length=16)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_group_relay"


class ChatRelayGroup(peewee.Model):
    group_id = peewee.CharField(primary_key=True, max_length=64)
    name = peewee.TextField()
    owner_member_id = peewee.CharField(max_length=64)
    link_conn_id = peewee.CharField(max_length=64, unique=True)
    relay_link = peewee.TextField(null=True)
    status = peewee.CharField(max_length=16)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_relay_group"


class ChatRelayMember(peewee.Model):
    id = peewee.AutoField()
    group_id = peewee.CharField(max_length=64, index=True)
    member_id = peewee.CharField(max_length=64)
    role = peewee.CharField(max_length=16)
    display_name = peewee.TextField()
    full_name = peewee.TextField(default="")
    conn_id = peewee.CharField(max_length=64, unique=True)
    request_id = peewee.CharField(max_length=64, unique=True)  # the REQ it was accepted from
    status = peewee.CharField(max_length=16)
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_relay_member"
        indexes = ((("group_id", "member_id"), True),)


class ChatIntro(peewee.Model):
    id = peewee.AutoField()
    group_id = peewee.CharField(max_length=64, index=True)
    re_member_id = peewee.CharField(max_length=64)  # the existing member
    to_member_id = peewee.CharField(max_length=64)  # the new one
    status = peewee.CharField(max_length=16)
    link = peewee.TextField(null=True)  # the new member's invitation for the existing one

    class Meta:
        table_name = "chat_intro"
        indexes = ((("group_id", "re_member_id", "to_member_id"), True),)


class ChatMessage(peewee.Model):
    id = peewee.AutoField()
    chat_kind = peewee.CharField(max_length=8)  # "group" | "contact"
    chat_id = peewee.CharField(max_length=64)
    msg_id = peewee.CharField(max_length=64)  # shared by sender and every recipient
    author = peewee.CharField(max_length=64)  # a member id, or a contact id ("" for us)
    text = peewee.TextField()
    sent = peewee.BooleanField()  # by us
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_message"
        indexes = ((("chat_kind", "chat_id", "msg_id"), True),)


class ChatPending(peewee.Model):
    id = peewee.AutoField()
    group_id = peewee.CharField(max_length=64, index=True)
    member_id = peewee.CharField(max_length=64)
    body = peewee.BlobField()

    class Meta:
        table_name = "chat_pending"


class ChatOutbox(peewee.Model):
    id = peewee.AutoField()
    owner = peewee.CharField(max_length=80, index=True)
    conn_id = peewee.CharField(max_length=64, index=True)
    body = peewee.BlobField()
    # the acknowledged send's corr id: random, so never the id of an earlier row (SQLite
    # reuses the highest rowid once it is deleted, and the agent may still hold its OK)
    corr_id = peewee.CharField(max_length=48, unique=True)

    class Meta:
        table_name = "chat_outbox"


class ChatNotice(peewee.Model):
    id = peewee.AutoField()
    owner = peewee.CharField(max_length=80, index=True)
    body = peewee.BlobField()  # the chat event, as the chat encodes it

    class Meta:
        table_name = "chat_notice"


class ChatCommand(peewee.Model):
    id = peewee.AutoField()  # the corr id's number: rows are never deleted, ids never reused
    owner = peewee.CharField(max_length=80, index=True)
    function = peewee.CharField(max_length=32)
    status = peewee.CharField(max_length=16)
    conn_id = peewee.CharField(max_length=64)
    payload = peewee.BlobField()
    created_at = peewee.FloatField()

    class Meta:
        table_name = "chat_command"


class ChatConnection(peewee.Model):
    conn_id = peewee.CharField(primary_key=True, max_length=64)
    owner = peewee.CharField(max_length=80)
    last_msg_id = peewee.IntegerField(default=0)

    class Meta:
        table_name = "chat_connection"


CHAT_MODELS = (
    ChatUser,
    ChatContact,
    ChatAddress,
    ChatGroup,
    ChatMember,
    ChatIntro,
    ChatMessage,
    ChatPending,
    ChatOutbox,
    ChatNotice,
    ChatCommand,
    ChatConnection,
    ChatGroupRelay,
    ChatRelayGroup,
    ChatRelayMember,
)
_RELAY_MODELS = (ChatGroupRelay, ChatRelayGroup, ChatRelayMember)
_FIRST_MODELS = tuple(
    model for model in CHAT_MODELS if model is not ChatNotice and model not in _RELAY_MODELS
)


def _create_chat_tables(db: peewee.Database) -> None:
    db.create_tables(list(bind_models(db, *_FIRST_MODELS)))


def _create_notices(db: peewee.Database) -> None:
    db.create_tables(list(bind_models(db, ChatNotice)))


def _add_request_ids(db: peewee.Database) -> None:
    # Databases created before 202 lack the column; those created since have it already
    # (migration 200 creates the tables from the current models).
    if "request_id" in {column.name for column in db.get_columns("chat_contact")}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column(
            "chat_contact", "request_id", peewee.CharField(max_length=64, null=True)
        ),
        migrator.add_index("chat_contact", ("request_id",)),
    )


def _add_outbox_corr_ids(db: peewee.Database) -> None:
    # Before 203 the outbox was told to the agent unacknowledged; a row now carries the corr
    # id of its acknowledged send. Databases created since 203 have the column already.
    if "corr_id" in {column.name for column in db.get_columns("chat_outbox")}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("chat_outbox", "corr_id", peewee.CharField(max_length=48, null=True))
    )
    for (row_id,) in db.execute_sql("SELECT id FROM chat_outbox").fetchall():
        db.execute_sql(
            f"UPDATE chat_outbox SET corr_id = {db.param} WHERE id = {db.param}",
            (new_outbox_corr_id(), row_id),
        )
    migrate(
        migrator.add_index("chat_outbox", ("corr_id",), unique=True),
        migrator.add_index("chat_outbox", ("conn_id",)),
    )


def _add_relays(db: peewee.Database) -> None:
    # The relay tables are new; the columns are missing only in a database made before 204
    # (migration 200 creates the tables from the current models).
    db.create_tables(list(bind_models(db, *_RELAY_MODELS)))
    migrator = SchemaMigrator.from_database(db)
    columns = {
        "chat_address": [("relay", peewee.BooleanField(default=False))],
        "chat_group": [
            ("kind", peewee.CharField(max_length=16, default="p2p")),
            ("group_link", peewee.TextField(null=True)),
            ("link_conn_id", peewee.CharField(max_length=64, null=True)),
            ("incognito_name", peewee.TextField(null=True)),
        ],
    }
    for table, wanted in columns.items():
        have = {column.name for column in db.get_columns(table)}
        missing = [
            migrator.add_column(table, name, field) for name, field in wanted if name not in have
        ]
        if missing:
            migrate(*missing)


CHAT_MIGRATIONS = (
    Migration(200, "chat tables", _create_chat_tables),
    Migration(201, "chat events kept until told", _create_notices),
    Migration(202, "the contact request a contact was accepted from", _add_request_ids),
    Migration(203, "outbox rows sent acknowledged, by corr id", _add_outbox_corr_ids),
    Migration(204, "relay groups: their relays, and at a relay the groups it serves", _add_relays),
)
CHAT_LAYER: Final = Layer("chat", LAYER_VERSION_BLOCKS["chat"], CHAT_MIGRATIONS)
"""The chat's storage layer; a chat client's database holds it next to the agent's."""

COMMAND_PREFIX: Final = "chat-"
OUTBOX_PREFIX: Final = "chat-msg-"


def corr_id_of(command: ChatCommand) -> str:
    """The corr id the agent completes `command` with."""
    return f"{COMMAND_PREFIX}{command.id}"


def new_outbox_corr_id() -> str:
    """The corr id of an outbox row's acknowledged send (never a command's: not digits)."""
    return f"{OUTBOX_PREFIX}{secrets.token_urlsafe(12)}"


def is_outbox_corr_id(corr_id: str | None) -> bool:
    return corr_id is not None and corr_id.startswith(OUTBOX_PREFIX)


def command_number(corr_id: str | None) -> int | None:
    """The chat command id inside a corr id the chat made (None for anyone else's)."""
    if corr_id is None or not corr_id.startswith(COMMAND_PREFIX):
        return None
    number = corr_id[len(COMMAND_PREFIX) :]
    return int(number) if number.isdigit() else None


class ChatStore:
    """The chat's bound models on one database; see the module docstring. Methods run inside
    the caller's transaction unless they say otherwise."""

    def __init__(self, db: Database) -> None:
        self.db = db
        models = db.bind(*CHAT_MODELS)
        self.User = models.ChatUser
        self.Contact = models.ChatContact
        self.Address = models.ChatAddress
        self.Group = models.ChatGroup
        self.Member = models.ChatMember
        self.Intro = models.ChatIntro
        self.Message = models.ChatMessage
        self.Pending = models.ChatPending
        self.Outbox = models.ChatOutbox
        self.Notice = models.ChatNotice
        self.Command = models.ChatCommand
        self.Connection = models.ChatConnection
        self.GroupRelay = models.ChatGroupRelay
        self.RelayGroup = models.ChatRelayGroup
        self.RelayMember = models.ChatRelayMember
        self._hot = _HotRows(self, db.kind)

    def transaction(self, *, read_only: bool = False) -> AbstractContextManager[peewee.Database]:
        return self.db.transaction(read_only=read_only)

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        return self.db.peewee.execute_sql(sql, params)

    # ------------------------------------------------------------------ rows of the message path

    def group(self, group_id: str) -> Any:
        hot = self._hot
        return hot.groups.first(self.db.peewee, hot.group, (group_id,))

    def group_member_on(self, group_id: str, conn_id: str) -> Any:
        """The member of a group whose connection is `conn_id` (None if none is)."""
        hot = self._hot
        return hot.members.first(self.db.peewee, hot.member_on, (group_id, conn_id))

    def group_relay_on(self, group_id: str, conn_id: str) -> Any:
        """The relay of a relay group we reach on `conn_id` (None if none is)."""
        hot = self._hot
        return hot.group_relays.first(self.db.peewee, hot.group_relay_on, (group_id, conn_id))

    def served_group(self, group_id: str) -> Any:
        """At a chat relay: a group it serves (None if it does not)."""
        hot = self._hot
        return hot.served.first(self.db.peewee, hot.served_group, (group_id,))

    def roster(self, group_id: str) -> list[Any]:
        """At a chat relay: a served group's roster, in the order admitted."""
        hot = self._hot
        return hot.roster.rows(self.db.peewee, hot.roster_all, (group_id,))

    def roster_member_on(self, group_id: str, conn_id: str) -> Any:
        hot = self._hot
        return hot.roster.first(self.db.peewee, hot.roster_on, (group_id, conn_id))

    # ------------------------------------------------------------------ kept messages

    def take_pending(self, group_id: str, member_id: str) -> list[bytes]:
        """The messages kept for `member_id` (a member, or a relay's `relay_id`) in group
        `group_id`, in the order kept, removed from the store: for it to be sent them now."""
        rows = list(self._pending_of(group_id, member_id).order_by(self.Pending.id))
        if rows:
            self.Pending.delete().where(self.Pending.id.in_([r.id for r in rows])).execute()
        return [bytes(row.body) for row in rows]

    def drop_pending(self, group_id: str, member_id: str | None = None) -> None:
        """Drop the messages kept for `member_id` in group `group_id` (None: for anyone)."""
        where = self.Pending.group_id == group_id
        if member_id is not None:
            where &= self.Pending.member_id == member_id
        self.Pending.delete().where(where).execute()

    def _pending_of(self, group_id: str, member_id: str) -> Any:
        return self.Pending.select().where(
            (self.Pending.group_id == group_id) & (self.Pending.member_id == member_id)
        )

    # ------------------------------------------------------------------ routing

    def own_connection(self, conn_id: str, owner: str) -> None:
        self.Connection.insert(conn_id=conn_id, owner=owner).on_conflict_ignore().execute()

    def disown_connection(self, conn_id: str) -> None:
        """The agent deleted `conn_id`: no owner has it any more."""
        self.Connection.delete().where(self.Connection.conn_id == conn_id).execute()

    def pending_command_of(self, conn_id: str, function: str) -> Any:
        """A pending chat command of `function` for `conn_id` (None if there is none)."""
        return self.Command.get_or_none(
            (self.Command.conn_id == conn_id)
            & (self.Command.function == function)
            & (self.Command.status == "pending")
        )

    def owner_of(self, conn_id: str) -> str | None:
        """Who owns an agent connection (own read-only transaction)."""
        with self.transaction(read_only=True):
            row = self.Connection.get_or_none(self.Connection.conn_id == conn_id)
        return row.owner if row is not None else None

    def connection(self, conn_id: str) -> Any:
        hot = self._hot
        return hot.connections.first(self.db.peewee, hot.connection, (conn_id,))

    def first_time(self, conn_id: str, msg_id: int) -> bool:
        """Record that agent message `msg_id` of `conn_id` is being processed; False if it
        was already (a copy the agent handed out again before our ACK reached it)."""
        row = self.connection(conn_id)
        if row is None:
            return True
        if msg_id <= row.last_msg_id:
            return False
        self._run(self._hot.processed, (msg_id, conn_id))
        return True

    def owners_with_work(self) -> list[str]:
        """Owners with pending commands, outbox rows or events not told yet (own read-only
        transaction)."""
        with self.transaction(read_only=True):
            pending = self.Command.select(self.Command.owner).where(
                self.Command.status == "pending"
            )
            owners = {row.owner for row in pending}
            owners |= {row.owner for row in self.Outbox.select(self.Outbox.owner)}
            owners |= {row.owner for row in self.Notice.select(self.Notice.owner)}
        return sorted(owners)

    def owners_waiting(
        self, members: Sequence[str], contacts: Sequence[str], addresses: Sequence[str]
    ) -> list[str]:
        """Owners of a member, contact or address connection in one of these statuses (the
        caller's: connections that wait for an agent event), own read-only transaction."""
        connections = (
            self.Member.select(self.Member.conn_id).where(
                self.Member.status.in_(list(members)) & self.Member.conn_id.is_null(False)
            )
            | self.Contact.select(self.Contact.conn_id).where(
                self.Contact.status.in_(list(contacts))
            )
            | self.Address.select(self.Address.conn_id).where(
                self.Address.status.in_(list(addresses))
            )
        )
        return self._owners_of(connections)

    def relay_owners_waiting(
        self, relays: Sequence[str], roster: Sequence[str], serving: Sequence[str]
    ) -> list[str]:
        """Owners of a connection to a relay, of a relay to a roster member, or of a relay
        link, in one of these statuses (connections that wait for CONF, CON or REQ), own
        read-only transaction."""
        connections = (
            self.GroupRelay.select(self.GroupRelay.conn_id).where(
                self.GroupRelay.status.in_(list(relays))
            )
            | self.RelayMember.select(self.RelayMember.conn_id).where(
                self.RelayMember.status.in_(list(roster))
            )
            | self.RelayGroup.select(self.RelayGroup.link_conn_id).where(
                self.RelayGroup.status.in_(list(serving))
            )
        )
        return self._owners_of(connections)

    def _owners_of(self, connections: Any) -> list[str]:
        """The owners of the connections a subquery selects (own read-only transaction)."""
        with self.transaction(read_only=True):
            rows = self.Connection.select(self.Connection.owner).where(
                self.Connection.conn_id.in_(connections)
            )
            return sorted({row.owner for row in rows})

    # ------------------------------------------------------------------ commands and outbox

    def add_command(self, owner: str, function: str, conn_id: str, payload: bytes) -> Any:
        return self.Command.create(
            owner=owner,
            function=function,
            status="pending",
            conn_id=conn_id,
            payload=payload,
            created_at=time.time(),
        )

    def command(self, number: int) -> Any:
        return self.Command.get_or_none(self.Command.id == number)

    def pending_commands(self, owner: str) -> list[Any]:
        hot = self._hot
        return hot.commands.rows(self.db.peewee, hot.pending_of_owner, (owner,))

    def pending_commands_on(self, conn_id: str) -> list[Any]:
        hot = self._hot
        return hot.commands.rows(self.db.peewee, hot.pending_on, (conn_id,))

    def finish_command(self, command: Any, status: str) -> None:
        command.status = status
        command.save(only=[type(command).status])

    def add_message(
        self, chat_kind: str, chat_id: str, msg_id: str, author: str, text: str, *, sent: bool
    ) -> bool:
        """Store a message once per chat and shared id: False (nothing stored) if a copy of
        it was stored before. `author` is "" for our own."""
        params = (chat_kind, chat_id, msg_id, author, text, sent, time.time())
        return self._run(self._hot.add_message, params).rowcount == 1

    def add_outbox(self, owner: str, conn_id: str, body: bytes) -> Any:
        return self._hot.outbox.insert(
            self.db.peewee, owner=owner, conn_id=conn_id, body=body, corr_id=new_outbox_corr_id()
        )

    def outbox(self, owner: str) -> list[Any]:
        return list(self.Outbox.select().where(self.Outbox.owner == owner).order_by(self.Outbox.id))

    def drop_outbox(self, corr_id: str) -> bool:
        """The agent took the row's message (or refused it for good): True if it was here."""
        return self._run(self._hot.drop_outbox, (corr_id,)).rowcount > 0

    def outbox_waits(self, conn_id: str) -> bool:
        """Whether a chat message for `conn_id` waits to be taken by the agent."""
        return self._run(self._hot.outbox_waits, (conn_id,)).fetchone() is not None

    # ------------------------------------------------------------------ events for the user

    def add_notice(self, owner: str, body: bytes) -> int:
        return int(self._hot.notices.insert(self.db.peewee, owner=owner, body=body).id)

    def notices(self, owner: str) -> list[Any]:
        return list(self.Notice.select().where(self.Notice.owner == owner).order_by(self.Notice.id))

    def drop_notices(self, ids: list[int]) -> None:
        if ids:
            marks = ", ".join([self._hot.placeholder] * len(ids))
            self._run(f"DELETE FROM chat_notice WHERE id IN ({marks})", ids)


class _HotRows:
    """The statements of the per-message path (a group message received, forwarded at a
    relay, handed to the agent and taken by it), written once per database kind: peewee's
    query builder spends several times longer building one of them than SQLite spends
    running it, and a relay forwarding to a thousand members runs them thousands of times."""

    def __init__(self, store: ChatStore, kind: str) -> None:
        p = self.placeholder = "?" if kind == "sqlite" else "%s"
        self.connections = RowSql(store.Connection, kind)
        self.connection = self.connections.select('"conn_id" = {p}')
        self.processed = f"UPDATE chat_connection SET last_msg_id = {p} WHERE conn_id = {p}"
        self.groups = RowSql(store.Group, kind)
        self.group = self.groups.select('"group_id" = {p}')
        self.members = RowSql(store.Member, kind)
        self.member_on = self.members.select('"group_id" = {p} AND "conn_id" = {p}')
        self.group_relays = RowSql(store.GroupRelay, kind)
        self.group_relay_on = self.group_relays.select('"group_id" = {p} AND "conn_id" = {p}')
        self.served = RowSql(store.RelayGroup, kind)
        self.served_group = self.served.select('"group_id" = {p}')
        self.roster = RowSql(store.RelayMember, kind)
        self.roster_all = self.roster.select('"group_id" = {p}', '"id"')
        self.roster_on = self.roster.select('"group_id" = {p} AND "conn_id" = {p}')
        self.commands = RowSql(store.Command, kind)
        pending = "\"status\" = 'pending'"
        self.pending_of_owner = self.commands.select(f'"owner" = {{p}} AND {pending}', '"id"')
        self.pending_on = self.commands.select(f'"conn_id" = {{p}} AND {pending}', '"id"')
        self.outbox = RowSql(store.Outbox, kind)
        self.drop_outbox = f"DELETE FROM chat_outbox WHERE corr_id = {p}"
        self.outbox_waits = f"SELECT 1 FROM chat_outbox WHERE conn_id = {p} LIMIT 1"
        self.notices = RowSql(store.Notice, kind)
        self.add_message = (
            "INSERT INTO chat_message (chat_kind, chat_id, msg_id, author, text, sent, created_at)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (chat_kind, chat_id, msg_id) DO NOTHING"
        )
