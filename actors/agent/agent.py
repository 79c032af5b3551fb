"""`AgentActor`: the agent's API, its routing, and the resume at boot.

The agent node of the tree is a supervisor (of `conns`, the virtual `ConnectionActor`s, and
`servers`, the virtual `ServerSessionActor`s) that also answers the API calls that create
connections or commands for them. Each such call is one short transaction here — the
connection row (for create/join/accept) and the command row, keyed by the caller's
`corr_id` — followed by a `Wake` carrying the command to the owning connection actor, which
does the network work. So an async call returns at once with the connection id, and a call
repeated with the same `corr_id` (after the caller crashed) returns the same connection
instead of doing the work twice. Calls about one existing connection that need no new row
here (send, ack, switch, status) go straight to its actor, not through this one.

At boot it activates every connection with pending commands, unacknowledged events,
messages to send or messages waiting for the user's ACK, and subscribes every receive queue,
one batch per server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from actors.agent import events as ev
from actors.agent.connection import ConnectionActor, Wake
from actors.agent.link_data import LINKS_CONN_ID
from actors.agent.model import (
    KIND_OF,
    Allow,
    CommandOrigin,
    CommandPayload,
    ConnMode,
    ConnStatus,
    Create,
    Delete,
    GetLink,
    Join,
    SetLink,
    decode_pending_conf,
)
from actors.agent.services import AgentServices
from actors.agent.sessions import (
    ServerSessionActor,
    SubscribeAll,
    WaitingForServer,
    connection_address,
    session_address,
)
from actors.kernel import (
    ActorContext,
    ChildSpec,
    Intensity,
    Strategy,
    Supervisor,
    VirtualSupervisor,
)
from protocol.address import b64url
from protocol.errors import AgentError, DuplexError, NoConnection
from protocol.links import parse_link, parse_short_link
from protocol.queue import QueueMode

# ---------------------------------------------------------------------- API messages (asks)


@dataclass(frozen=True, slots=True)
class CreateConnection:
    corr_id: str
    mode: QueueMode = QueueMode.MESSAGING
    origin: CommandOrigin = CommandOrigin.ASYNC
    conn_id: str | None = None  # the caller's choice (a layer above keeps it first)


@dataclass(frozen=True, slots=True)
class JoinConnection:
    corr_id: str
    link: str
    info: bytes
    origin: CommandOrigin = CommandOrigin.ASYNC
    conn_id: str | None = None  # the caller's choice (a layer above keeps it first)


@dataclass(frozen=True, slots=True)
class AllowConnection:
    corr_id: str
    conn_id: str
    conf_id: str
    info: bytes
    origin: CommandOrigin = CommandOrigin.ASYNC


@dataclass(frozen=True, slots=True)
class AcceptContact:
    corr_id: str
    inv_id: str
    info: bytes
    origin: CommandOrigin = CommandOrigin.ASYNC
    conn_id: str | None = None  # the caller's choice (a layer above keeps it first)


@dataclass(frozen=True, slots=True)
class RejectContact:
    inv_id: str


@dataclass(frozen=True, slots=True)
class DeleteConnection:
    """Delete the connection: its receive queues on their servers, then its rows; `OK`.

    With `wait_delivery`, first wait until every message it stored for delivery was sent
    (`SENT`) or dropped (`MERR`, e.g. past the message TTL); meanwhile it refuses new sends
    (`DELETING`). See handshake.py."""

    corr_id: str
    conn_id: str
    origin: CommandOrigin = CommandOrigin.ASYNC
    wait_delivery: bool = False


@dataclass(frozen=True, slots=True)
class SetLinkData:
    corr_id: str
    conn_id: str
    user_data: bytes
    origin: CommandOrigin = CommandOrigin.ASYNC


@dataclass(frozen=True, slots=True)
class GetLinkData:
    corr_id: str
    link: str
    origin: CommandOrigin = CommandOrigin.ASYNC


ApiCommand = (
    CreateConnection
    | JoinConnection
    | AllowConnection
    | AcceptContact
    | RejectContact
    | DeleteConnection
    | SetLinkData
    | GetLinkData
)


@dataclass(frozen=True, slots=True)
class Submit:
    """Tell (not ask) an API command, from an actor above the agent: what an ask would raise
    (a bad link, no such connection …) is told as `ERR` with the command's corr id."""

    command: ApiCommand


_CONN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _new_conn_id(chosen: str | None = None) -> str:
    if chosen is None:
        return b64url(os.urandom(12))
    if not _CONN_ID.fullmatch(chosen):
        raise AgentError(f"a connection id is 1-64 of A-Z a-z 0-9 _ -, not {chosen!r}")
    return chosen


class AgentActor(Supervisor):
    kind = "agent"

    def __init__(self, ctx: ActorContext) -> None:
        services: AgentServices = ctx.runtime.services["agent"]
        children = [
            ChildSpec(
                "conns",
                lambda c: VirtualSupervisor(
                    c, ConnectionActor, Intensity(max_restarts=100, period=10.0)
                ),
            ),
            ChildSpec("servers", lambda c: VirtualSupervisor(c, ServerSessionActor)),
        ]
        super().__init__(
            ctx, children, Strategy.ONE_FOR_ONE, Intensity(max_restarts=10, period=10.0)
        )
        self.services = services
        self.store = services.store

    def started(self) -> None:
        super().started()
        for conn_id in self.store.connections_with_work():
            self.tell(connection_address(conn_id), Wake())
        for server, conn_ids in self.store.waiting_by_server().items():
            for conn_id in sorted(conn_ids):
                self.tell(session_address(server), WaitingForServer(conn_id))
        for server, queues in self.store.subscriptions().items():
            self.tell(session_address(server), SubscribeAll(tuple(queues)))

    def summary(self) -> dict[str, Any]:
        return {"servers": len(self.services.servers)}

    def receive(self, message: Any) -> Any:
        known = self._known_command(message)
        if known is not None:
            return known
        match message:
            case Submit(command=command):
                self._submitted(command)
            case CreateConnection(corr_id=corr_id, mode=mode, origin=origin, conn_id=conn_id):
                conn_mode = ConnMode.CONTACT if mode is QueueMode.CONTACT else ConnMode.INVITATION
                server = self.services.pick_server()
                return self._new_command(
                    corr_id, origin, _new_conn_id(conn_id), Create(mode), server, mode=conn_mode
                )
            case JoinConnection(
                corr_id=corr_id, link=link, info=info, origin=origin, conn_id=conn_id
            ):
                target = parse_link(link).queues[0]  # LinkError goes back to the caller
                payload = Join(link, info, self.services.pick_server())
                conn_id = _new_conn_id(conn_id)
                return self._new_command(
                    corr_id, origin, conn_id, payload, target.server, mode=ConnMode.INVITATION
                )
            case AllowConnection(
                corr_id=corr_id, conn_id=conn_id, conf_id=conf_id, info=info, origin=origin
            ):
                conn = self._connection(conn_id)
                if conn.status != ConnStatus.CONFIRMED:
                    raise AgentError(
                        f"connection is {conn.status}, not confirmed", code="PROHIBITED"
                    )
                reply = decode_pending_conf(bytes(conn.pending_conf)).reply_queue
                payload = Allow(conf_id, info)
                return self._new_command(corr_id, origin, conn_id, payload, reply.server)
            case AcceptContact(
                corr_id=corr_id, inv_id=inv_id, info=info, origin=origin, conn_id=conn_id
            ):
                return self._accept(corr_id, origin, inv_id, info, _new_conn_id(conn_id))
            case RejectContact(inv_id=inv_id):
                with self.store.transaction():
                    request = self.store.take_contact_request(inv_id)
                if request is None:
                    raise AgentError(f"no contact request {inv_id!r}", code="NO_REQUEST")
                return None
            case DeleteConnection(
                corr_id=corr_id, conn_id=conn_id, origin=origin, wait_delivery=wait_delivery
            ):
                self._connection(conn_id)
                payload = Delete(wait_delivery=wait_delivery)
                return self._new_command(corr_id, origin, conn_id, payload, None)
            case SetLinkData(corr_id=corr_id, conn_id=conn_id, user_data=user_data, origin=origin):
                conn = self._connection(conn_id)
                if conn.mode != ConnMode.CONTACT:
                    raise AgentError("link data belongs to contact addresses", code="PROHIBITED")
                payload = SetLink(user_data)
                return self._new_command(corr_id, origin, conn_id, payload, None)
            case GetLinkData(corr_id=corr_id, link=link, origin=origin):
                server = str(parse_short_link(link).server)  # LinkError to the caller
                return self._new_command(corr_id, origin, LINKS_CONN_ID, GetLink(link), server)
            case _:
                return super().receive(message)
        return None

    def _known_command(self, message: Any) -> str | None:
        """The connection of a command stored before under the same corr id: the same call
        again (its caller crashed, or re-submits after a restart) is answered as the first
        was, before anything about the connection's present state is checked (a second
        allow of a connection that is ready now is not PROHIBITED: it is the same allow)."""
        corr_id = getattr(message, "corr_id", None)
        if not corr_id or isinstance(message, Submit):
            return None
        with self.store.transaction(read_only=True):
            existing = self.store.command_by_corr_id(corr_id)
        return existing.conn_id if existing is not None else None

    def _submitted(self, command: ApiCommand) -> None:
        try:
            self.receive(command)
        except DuplexError as exc:
            conn_id = getattr(command, "conn_id", None) or ""
            corr_id = getattr(command, "corr_id", None)
            self.services.events.put(ev.Err(conn_id, exc.code, exc.message, corr_id))

    # ------------------------------------------------------------------ helpers

    def _connection(self, conn_id: str) -> Any:
        conn = self.store.connection(conn_id)
        if conn is None:
            raise NoConnection(f"no connection {conn_id!r}")
        return conn

    def _new_command(
        self,
        corr_id: str,
        origin: CommandOrigin,
        conn_id: str,
        payload: CommandPayload,
        server: str | None,
        *,
        mode: ConnMode | None = None,
    ) -> str:
        """Insert (connection and) command in one transaction; idempotent by corr_id."""
        store = self.store
        with store.transaction():
            existing = store.command_by_corr_id(corr_id)
            if existing is not None:
                return existing.conn_id
            if mode is not None:
                if store.connection(conn_id) is not None:
                    raise AgentError(f"connection {conn_id!r} exists already", code="DUPLICATE")
                store.insert_connection(conn_id, ConnStatus.NEW, mode)
            command = self._insert(corr_id, origin, conn_id, payload, server)
        self.tell(connection_address(conn_id), Wake(command))
        return conn_id

    def _insert(
        self,
        corr_id: str,
        origin: CommandOrigin,
        conn_id: str,
        payload: CommandPayload,
        server: str | None,
    ) -> Any:
        return self.store.insert_command(
            conn_id=conn_id,
            kind=KIND_OF[type(payload)],
            payload=payload,
            server=server,
            origin=origin,
            corr_id=corr_id,
            ttl=self.services.config.command_ttl,
        )

    def _accept(
        self, corr_id: str, origin: CommandOrigin, inv_id: str, info: bytes, conn_id: str
    ) -> str:
        """Accept a contact request: join the requester's invitation, in one transaction
        with taking the request."""
        store = self.store
        with store.transaction():
            existing = store.command_by_corr_id(corr_id)
            if existing is not None:
                return existing.conn_id
            request = store.take_contact_request(inv_id)
            if request is None:
                raise AgentError(f"no contact request {inv_id!r}", code="NO_REQUEST")
            target = parse_link(request.link).queues[0]
            if store.connection(conn_id) is not None:
                raise AgentError(f"connection {conn_id!r} exists already", code="DUPLICATE")
            store.insert_connection(conn_id, ConnStatus.NEW, ConnMode.INVITATION)
            payload = Join(request.link, info, self.services.pick_server())
            command = self._insert(corr_id, origin, conn_id, payload, target.server)
        self.tell(connection_address(conn_id), Wake(command))
        return conn_id
