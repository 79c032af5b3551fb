"""`AgentActor`: the agent's API, its routing, and the resume at boot.

The agent node of the tree is a supervisor (of `conns`, the virtual `ConnectionActor`s, and
`servers`, the virtual `ServerSessionActor`s) that also answers the API. Each API call is a
short transaction here — the connection row (for create/join/accept) and the command row,
keyed by the caller's `corr_id` — followed by a `Wake` to the owning connection actor, which
does the network work. So an async call returns at once with the connection id, and a call
repeated with the same `corr_id` (after the caller crashed) returns the same connection
instead of doing the work twice.

At boot it activates every connection with pending commands, unacknowledged events or
messages to send, and subscribes every receive queue, one batch per server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.agent.connection import (
    LINKS_CONN_ID,
    AckCommandEvent,
    AgentError,
    CommandKind,
    ConnectionActor,
    ConnStatus,
    Wake,
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
from protocol.links import parse_link, parse_short_link
from protocol.queue import QueueMode

# ---------------------------------------------------------------------- API messages (asks)


@dataclass(frozen=True, slots=True)
class CreateConnection:
    corr_id: str
    mode: QueueMode = QueueMode.MESSAGING


@dataclass(frozen=True, slots=True)
class JoinConnection:
    corr_id: str
    link: str
    info: bytes


@dataclass(frozen=True, slots=True)
class AllowConnection:
    corr_id: str
    conn_id: str
    conf_id: str
    info: bytes


@dataclass(frozen=True, slots=True)
class AcceptContact:
    corr_id: str
    inv_id: str
    info: bytes


@dataclass(frozen=True, slots=True)
class RejectContact:
    inv_id: str


@dataclass(frozen=True, slots=True)
class AckMessage:
    corr_id: str
    conn_id: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class DeleteConnection:
    corr_id: str
    conn_id: str


@dataclass(frozen=True, slots=True)
class SetLinkData:
    corr_id: str
    conn_id: str
    user_data: bytes


@dataclass(frozen=True, slots=True)
class GetLinkData:
    corr_id: str
    link: str


@dataclass(frozen=True, slots=True)
class AckEvent:
    corr_id: str


def _new_conn_id() -> str:
    return b64url(os.urandom(12))


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
        match message:
            case CreateConnection(corr_id=corr_id, mode=mode):
                server = self.services.pick_server()
                kind = "contact" if mode is QueueMode.CONTACT else "invitation"
                return self._new_command(
                    corr_id,
                    _new_conn_id(),
                    CommandKind.CREATE,
                    server,
                    payload={"mode": mode.value},
                    mode=kind,
                )
            case JoinConnection(corr_id=corr_id, link=link, info=info):
                target = parse_link(link).queues[0]  # LinkError goes back to the caller
                return self._new_command(
                    corr_id,
                    _new_conn_id(),
                    CommandKind.JOIN,
                    target.server,
                    payload={
                        "link": link,
                        "info": info,
                        "reply_server": self.services.pick_server(),
                    },
                    mode="invitation",
                )
            case AllowConnection(corr_id=corr_id, conn_id=conn_id, conf_id=conf_id, info=info):
                conn = self._connection(conn_id)
                if conn.status != ConnStatus.CONFIRMED:
                    raise AgentError(
                        f"connection is {conn.status}, not confirmed", code="PROHIBITED"
                    )
                reply = msgspec.msgpack.decode(bytes(conn.pending_conf))[1]
                return self._new_command(
                    corr_id,
                    conn_id,
                    CommandKind.ALLOW,
                    reply[0],
                    payload={"conf_id": conf_id, "info": info},
                )
            case AcceptContact(corr_id=corr_id, inv_id=inv_id, info=info):
                return self._accept(corr_id, inv_id, info)
            case RejectContact(inv_id=inv_id):
                s = self.store
                with s.transaction():
                    deleted = s.ContactRequest.delete_by_id(inv_id)
                if not deleted:
                    raise AgentError(f"no contact request {inv_id!r}", code="NO_REQUEST")
                return None
            case AckMessage(corr_id=corr_id, conn_id=conn_id, msg_id=msg_id):
                s = self.store
                with s.transaction():
                    row = s.RcvMessage.get_or_none(
                        (s.RcvMessage.conn_id == conn_id) & (s.RcvMessage.seq == msg_id)
                    )
                    queue = (
                        s.RcvQueue.get_or_none(s.RcvQueue.id == row.rcv_queue_id)
                        if row is not None
                        else None
                    )
                self._connection(conn_id)
                lane = queue.server if queue is not None else "local"
                return self._new_command(
                    corr_id, conn_id, CommandKind.ACK, lane, payload={"msg_id": msg_id}
                )
            case DeleteConnection(corr_id=corr_id, conn_id=conn_id):
                self._connection(conn_id)
                return self._new_command(corr_id, conn_id, CommandKind.DELETE, "delete", payload={})
            case SetLinkData(corr_id=corr_id, conn_id=conn_id, user_data=user_data):
                conn = self._connection(conn_id)
                if conn.mode != "contact":
                    raise AgentError("link data belongs to contact addresses", code="PROHIBITED")
                return self._new_command(
                    corr_id,
                    conn_id,
                    CommandKind.SET_LINK,
                    "links",
                    payload={"user_data": user_data},
                )
            case GetLinkData(corr_id=corr_id, link=link):
                server = str(parse_short_link(link).server)  # LinkError to the caller
                return self._new_command(
                    corr_id, LINKS_CONN_ID, CommandKind.GET_LINK, server, payload={"link": link}
                )
            case AckEvent(corr_id=corr_id):
                conn_id = self.store.conn_of_command(corr_id)
                if conn_id is not None:
                    self.tell(connection_address(conn_id), AckCommandEvent(corr_id))
                return None
            case _:
                return super().receive(message)

    # ------------------------------------------------------------------ helpers

    def _connection(self, conn_id: str) -> Any:
        s = self.store
        with s.transaction(read_only=True):
            conn = s.Connection.get_or_none(s.Connection.conn_id == conn_id)
        if conn is None:
            raise AgentError(f"no connection {conn_id!r}", code="NO_CONNECTION")
        return conn

    def _new_command(
        self,
        corr_id: str,
        conn_id: str,
        kind: str,
        lane: str,
        *,
        payload: dict[str, Any],
        mode: str | None = None,
    ) -> str:
        """Insert (connection and) command in one transaction; idempotent by corr_id."""
        s = self.store
        now = time.time()
        with s.transaction():
            existing = s.Command.get_or_none(s.Command.corr_id == corr_id)
            if existing is not None:
                return existing.conn_id
            if mode is not None:
                s.Connection.create(
                    conn_id=conn_id, status=ConnStatus.NEW, mode=mode, created_at=now
                )
            s.Command.create(
                corr_id=corr_id,
                conn_id=conn_id,
                kind=kind,
                payload=msgspec.msgpack.encode(payload),
                lane=lane,
                deadline=now + self.services.config.command_ttl,
                created_at=now,
            )
        self.tell(connection_address(conn_id), Wake())
        return conn_id

    def _accept(self, corr_id: str, inv_id: str, info: bytes) -> str:
        s = self.store
        with s.transaction():
            existing = s.Command.get_or_none(s.Command.corr_id == corr_id)
            if existing is not None:
                return existing.conn_id
            request = s.ContactRequest.get_or_none(s.ContactRequest.inv_id == inv_id)
            if request is None:
                raise AgentError(f"no contact request {inv_id!r}", code="NO_REQUEST")
            link = request.link
            target = parse_link(link).queues[0]
            conn_id = _new_conn_id()
            now = time.time()
            s.Connection.create(
                conn_id=conn_id, status=ConnStatus.NEW, mode="invitation", created_at=now
            )
            payload = {"link": link, "info": info, "reply_server": self.services.pick_server()}
            s.Command.create(
                corr_id=corr_id,
                conn_id=conn_id,
                kind=CommandKind.JOIN,
                payload=msgspec.msgpack.encode(payload),
                lane=target.server,
                deadline=now + self.services.config.command_ttl,
                created_at=now,
            )
            request.delete_instance()
        self.tell(connection_address(conn_id), Wake())
        return conn_id
