"""`ChatActor`: the chat node of the tree — routing of agent events to their owners, and the
resume at boot.

It supervises the owners (virtual: `contacts`, `addresses`, `groups`, and at a chat relay
`relay-groups`, the groups it serves) and receives every
event the agent emits. Each goes to the actor that owns it: a completion of a chat command
to the command's owner (found by its corr id), anything else to the owner of its connection
(`ChatConnection`). When a queue server comes back (`UP`), the owners of the connections on
it reconcile: what they handed the agent while it could not act is handed over again. At
boot every owner with a pending command, an outbox row, an event not told, or a connection
waiting for CONF, CON or REQ is activated, which reconciles it and asks the agent to tell
again what a killed process may have lost (owner.py).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.agent import events as aev
from actors.chat.contact import AddressActor, ContactActor
from actors.chat.group import GroupActor
from actors.chat.model import (
    WAITING_ADDRESSES,
    WAITING_CONTACTS,
    WAITING_MEMBERS,
    WAITING_RELAYS,
    WAITING_ROSTER,
    WAITING_SERVED,
    Owner,
    OwnerKind,
)
from actors.chat.owner import Reconcile
from actors.chat.relay import RelayGroupActor
from actors.chat.services import CHAT, AgentEventArrived, ChatServices
from actors.kernel import (
    ActorContext,
    ChildSpec,
    Intensity,
    Strategy,
    Supervisor,
    VirtualSupervisor,
)
from storage.chat import command_number

log = logging.getLogger(__name__)

_KINDS = {
    OwnerKind.CONTACT: "contacts",
    OwnerKind.ADDRESS: "addresses",
    OwnerKind.GROUP: "groups",
    OwnerKind.RELAY_GROUP: "relay-groups",
}


def owner_address(owner: Owner) -> str:
    return f"{CHAT}/{_KINDS[owner.kind]}/{owner.key}"


def _kind(factory: Any) -> Any:
    return lambda ctx: VirtualSupervisor(ctx, factory, Intensity(max_restarts=100, period=10.0))


class ChatActor(Supervisor):
    kind = "chat"

    def __init__(self, ctx: ActorContext) -> None:
        children = [
            ChildSpec("contacts", _kind(ContactActor)),
            ChildSpec("addresses", _kind(AddressActor)),
            ChildSpec("groups", _kind(GroupActor)),
            ChildSpec("relay-groups", _kind(RelayGroupActor)),
        ]
        super().__init__(
            ctx, children, Strategy.ONE_FOR_ONE, Intensity(max_restarts=10, period=10.0)
        )
        self.services: ChatServices = ctx.runtime.services["chat"]
        self.store = self.services.store
        self._owners: dict[str, str] = {}  # conn_id → owner, as stored

    def started(self) -> None:
        super().started()
        waiting = self.store.owners_waiting(WAITING_MEMBERS, WAITING_CONTACTS, WAITING_ADDRESSES)
        relays = self.store.relay_owners_waiting(WAITING_RELAYS, WAITING_ROSTER, WAITING_SERVED)
        for owner in sorted({*self.store.owners_with_work(), *waiting, *relays}):
            self.tell(owner_address(Owner.parse(owner)), Reconcile())

    def receive(self, message: Any) -> Any:
        match message:
            case AgentEventArrived(event=event):
                self._route(event)
            case _:
                return super().receive(message)
        return None

    def _route(self, event: Any) -> None:
        if isinstance(event, aev.Up):
            for owner in sorted({o for c in event.conn_ids if (o := self._owner_of(c))}):
                self.tell(owner_address(Owner.parse(owner)), Reconcile())
            return
        if isinstance(event, aev.Down):
            return
        owner = None
        number = command_number(getattr(event, "corr_id", None))
        if number is not None:
            with self.store.transaction(read_only=True):
                command = self.store.command(number)
            owner = command.owner if command is not None else None
        if owner is None:
            owner = self._owner_of(event.conn_id)
        if owner is None:
            self._unowned(event)
            return
        self.tell(owner_address(Owner.parse(owner)), AgentEventArrived(event))

    def _owner_of(self, conn_id: str) -> str | None:
        owner = self._owners.get(conn_id)
        if owner is None:
            owner = self.store.owner_of(conn_id)
            if owner is not None:
                self._owners[conn_id] = owner
        return owner

    def _unowned(self, event: Any) -> None:
        """An event of a connection the chat did not make (a sync call at the edge, or one
        whose owner is gone): acknowledged so that nothing waits for it."""
        log.info("agent event with no chat owner", extra={"event": type(event).__name__})
        if isinstance(event, aev.Msg):
            self.services.agent.ack_message(event.conn_id, event.msg_id)
        elif getattr(event, "corr_id", None) and event.conn_id:
            self.services.agent.ack_event(event.conn_id, event.corr_id)
