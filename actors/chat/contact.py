"""`ContactActor` and `AddressActor`: people connected directly, and the doors they use.

A contact is made one of three ways, each an async agent command continued by this actor:

* we invite (CREATE_CONTACT_INV): INV gives the one-time link (`CONTACT_LINK`); the peer's
  CONF carries its profile and is allowed (ALLOW_CONTACT) with ours; CON connects it;
* we join a peer's link (JOIN_CONTACT) with our profile; its INFO brings the peer's; CON
  (a one-time link); or, for a peer's address, its CONF (it accepted) is allowed like ours;
* someone knocks on one of our addresses (REQ): with auto-accept the address makes the
  contact and accepts at once (ACCEPT_CONTACT), otherwise it tells `CONTACT_REQUEST` and the
  user accepts; once JOINED, the address's auto-reply is queued **in the same unit that marks
  the command done**, so it is sent exactly once however often JOINED is emitted.

A contact's chat messages: direct messages (dropped when a copy with the same shared id was
seen), and group invitations, which create the group (INVITED) for the user to join.

A chat relay's address (`CreateAddress(relay=True)`) takes no contacts: a request on it is an
owner's relay invitation (its join info is `x.grp.relay.inv`), which starts serving that group
in the same unit (roster.py; the served group's actor, relay.py, goes on from there). A
request with any other info is ignored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.agent import events as aev
from actors.chat import events as cev
from actors.chat.model import (
    WAITING_ADDRESSES,
    WAITING_CONTACTS,
    AddressStatus,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    ContactStatus,
    GroupStatus,
    Owner,
    OwnerKind,
)
from actors.chat.owner import OwnerActor, Unit, refuse
from actors.chat.roster import Roster
from protocol.chat import (
    ChatMessage,
    XGrpInv,
    XGrpRelayInv,
    XInfo,
    XMsgNew,
    decode_chat_message,
    encode_chat_message,
    new_member_id,
    new_message_id,
)
from protocol.errors import AgentError, ChatWireError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- asks


@dataclass(frozen=True, slots=True)
class CreateInvitation:
    """Make a one-time invitation for a new contact (its link comes as CONTACT_LINK)."""


@dataclass(frozen=True, slots=True)
class JoinInvitation:
    link: str


@dataclass(frozen=True, slots=True)
class SendContactMessage:
    text: str


@dataclass(frozen=True, slots=True)
class CreateAddress:
    auto_accept: bool = False
    auto_reply: str | None = None
    relay: bool = False  # a chat relay's address: it takes relay invitations


@dataclass(frozen=True, slots=True)
class AcceptRequest:
    request_id: str


def _new_id() -> str:
    return new_member_id()


def _profile_of(info: bytes) -> XInfo | None:
    try:
        message = decode_chat_message(info)
    except ChatWireError:
        return None
    return message if isinstance(message, XInfo) else None


class ContactActor(OwnerActor):
    kind = "contact"
    owner_kind = OwnerKind.CONTACT

    def _contact(self) -> Any:
        return self.store.Contact.get_or_none(self.store.Contact.contact_id == self.ctx.key)

    def _my_info(self) -> bytes:
        return encode_chat_message(XInfo(self.services.profile))

    def receive(self, message: Any) -> Any:
        match message:
            case CreateInvitation():
                return self._start(ContactStatus.INVITING, AgentCall(AgentCallKind.CREATE))
            case JoinInvitation(link=link):
                call = AgentCall(AgentCallKind.JOIN, link=link, info=self._my_info())
                return self._start(ContactStatus.JOINING, call)
            case SendContactMessage(text=text):
                return self._send(text)
        return super().receive(message)

    def _start(self, status: ContactStatus, call: AgentCall) -> str:
        function = (
            CommandFunction.CREATE_CONTACT_INV
            if call.kind is AgentCallKind.CREATE
            else CommandFunction.JOIN_CONTACT
        )
        with self.unit() as unit:
            if self._contact() is None:
                conn_id = _new_id()
                self.store.Contact.create(
                    contact_id=self.ctx.key, conn_id=conn_id, status=status, created_at=time.time()
                )
                unit.command(function, conn_id, call)
        return self.ctx.key

    def _send(self, text: str) -> str:
        msg_id = new_message_id()
        with self.unit() as unit:
            contact = self._contact()
            if contact is None or contact.status != ContactStatus.CONNECTED:
                raise AgentError("the contact is not connected", code="PROHIBITED")
            self._store_message(msg_id, "", text, sent=True)
            unit.send(contact.conn_id, XMsgNew(msg_id, text))
        return msg_id

    def _store_message(self, msg_id: str, author: str, text: str, *, sent: bool) -> bool:
        return self.store.add_message("contact", self.ctx.key, msg_id, author, text, sent=sent)

    # ------------------------------------------------------------------ agent events

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        contact = self._contact()
        if contact is None:
            return
        if isinstance(event, aev.Err):
            contact.status = ContactStatus.FAILED
            contact.save()
            unit.tell(cev.ContactFailed(contact.contact_id, event.code))
            return
        function = CommandFunction(command.function)
        if function is CommandFunction.ALLOW_CONTACT and isinstance(event, aev.Ok):
            self._connect(unit, contact)
        elif function is CommandFunction.CREATE_CONTACT_INV and isinstance(event, aev.Inv):
            contact.link = event.link
            contact.save()
            unit.tell(cev.ContactLink(contact.contact_id, event.link))
        elif function is CommandFunction.ACCEPT_CONTACT and isinstance(event, aev.Joined):
            address = self.store.Address.get_or_none(
                self.store.Address.address_id == contact.address_id
            )
            if address is not None and address.auto_reply:
                msg_id = new_message_id()
                self._store_message(msg_id, "", address.auto_reply, sent=True)
                unit.send(contact.conn_id, XMsgNew(msg_id, address.auto_reply))

    def on_agent_event(self, event: Any) -> None:
        match event:
            case aev.Conf(conn_id=conn_id, conf_id=conf_id, info=info):
                with self.unit("CONF") as unit:
                    contact = self._contact()
                    peer = _profile_of(info)
                    # INVITING: the peer joined our one-time link; JOINING: we knocked on
                    # the peer's address and it accepted (a one-time join gets no CONF)
                    waiting = (ContactStatus.INVITING, ContactStatus.JOINING)
                    if contact is None or contact.status not in waiting or peer is None:
                        return
                    contact.display_name = peer.profile.display_name
                    contact.full_name = peer.profile.full_name
                    contact.status = ContactStatus.ALLOWING  # a copy of CONF is not allowed
                    contact.save()
                    call = AgentCall(AgentCallKind.ALLOW, conf_id=conf_id, info=self._my_info())
                    unit.command(CommandFunction.ALLOW_CONTACT, conn_id, call)
            case aev.Info(info=info):
                with self.unit("INFO"):
                    contact, peer = self._contact(), _profile_of(info)
                    if contact is not None and peer is not None:
                        contact.display_name = peer.profile.display_name
                        contact.full_name = peer.profile.full_name
                        contact.save()
            case aev.Con():
                with self.unit("CON") as unit:
                    contact = self._contact()
                    if contact is not None:
                        self._connect(unit, contact)

    def _connect(self, unit: Unit, contact: Any) -> None:
        """The contact's connection is ready: CON, or the OK of our allow (which the agent
        completes with the connection ready, before it tells CON)."""
        if contact.status == ContactStatus.CONNECTED:
            return
        contact.status, contact.link = ContactStatus.CONNECTED, None
        contact.save()
        unit.tell(cev.ContactConnected(contact.contact_id, contact.display_name or ""))

    def waiting(self) -> list[str]:
        contact = self._contact()
        return [contact.conn_id] if contact and contact.status in WAITING_CONTACTS else []

    def on_chat_message(self, unit: Unit, conn_id: str, message: ChatMessage) -> None:
        contact = self._contact()
        if contact is None:
            raise refuse("a message for no contact")
        match message:
            case XMsgNew(msg_id=msg_id, text=text):
                if self._store_message(msg_id, contact.contact_id, text, sent=False):
                    event = cev.NewMessage("contact", contact.contact_id, msg_id, "", text)
                    unit.tell(event)
            case XGrpInv():
                self._invited(unit, contact, message)
            case XInfo(profile=profile):
                contact.display_name, contact.full_name = profile.display_name, profile.full_name
                contact.save()
            case _:
                raise refuse(f"{type(message).__name__} is not a contact message")

    def _invited(self, unit: Unit, contact: Any, invitation: XGrpInv) -> None:
        store = self.store
        if store.Group.get_or_none(store.Group.group_id == invitation.group_id) is not None:
            return  # invited before (a copy), or a member already
        store.Group.create(
            group_id=invitation.group_id,
            name=invitation.group.name,
            description=invitation.group.description,
            status=GroupStatus.INVITED,
            member_id=invitation.invitee_id,
            role=invitation.invitee_role.value,
            host_member_id=invitation.host.member_id,
            invitation=encode_chat_message(invitation),
            contact_id=contact.contact_id,
            created_at=time.time(),
        )
        unit.tell(
            cev.GroupInvitation(
                invitation.group_id,
                contact.contact_id,
                invitation.group.name,
                invitation.host.profile.display_name,
            )
        )


class AddressActor(OwnerActor):
    kind = "address"
    owner_kind = OwnerKind.ADDRESS

    def _address(self) -> Any:
        return self.store.Address.get_or_none(self.store.Address.address_id == self.ctx.key)

    def receive(self, message: Any) -> Any:
        match message:
            case CreateAddress(auto_accept=auto_accept, auto_reply=auto_reply, relay=relay):
                with self.unit() as unit:
                    if self._address() is None:
                        conn_id = _new_id()
                        self.store.Address.create(
                            address_id=self.ctx.key,
                            conn_id=conn_id,
                            status=AddressStatus.CREATING,
                            auto_accept=auto_accept,
                            auto_reply=auto_reply,
                            relay=relay,
                            created_at=time.time(),
                        )
                        call = AgentCall(AgentCallKind.CREATE_ADDRESS)
                        unit.command(CommandFunction.CREATE_ADDRESS, conn_id, call)
                return self.ctx.key
            case AcceptRequest(request_id=request_id):
                with self.unit() as unit:
                    return self._accept(unit, request_id)
        return super().receive(message)

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        address = self._address()
        if address is None:
            return
        if isinstance(event, aev.Inv):
            address.status, address.link = AddressStatus.ACTIVE, event.link
            address.save()
            unit.tell(cev.AddressLink(address.address_id, event.link))
        elif isinstance(event, aev.Err):
            address.status = AddressStatus.FAILED
            address.save()

    def waiting(self) -> list[str]:
        address = self._address()
        return [address.conn_id] if address and address.status in WAITING_ADDRESSES else []

    def on_agent_event(self, event: Any) -> None:
        if not isinstance(event, aev.Req):
            return
        with self.unit("REQ") as unit:
            address = self._address()
            if address is None:
                return
            if address.relay:
                self._relay_invitation(unit, event)
                return
            if self._accepted(event.inv_id) is not None:
                return  # told again (a Replay): taken before
            if address.auto_accept:
                self._accept(unit, event.inv_id)
            else:
                peer = _profile_of(event.info)
                name = peer.profile.display_name if peer is not None else ""
                unit.tell(cev.ContactRequest(address.address_id, event.inv_id, name))

    def _relay_invitation(self, unit: Unit, event: aev.Req) -> None:
        try:
            invitation = decode_chat_message(event.info)
        except ChatWireError:
            invitation = None
        if not isinstance(invitation, XGrpRelayInv):
            log.warning("a request on a relay address without a relay invitation")
            return
        Roster(self.services, invitation.group_id).serve(unit, invitation, event.inv_id)

    def _accepted(self, request_id: str) -> Any:
        store = self.store
        return store.Contact.get_or_none(store.Contact.request_id == request_id)

    def _accept(self, unit: Unit, request_id: str) -> str:
        """Make the contact of a request and accept it, owned by that contact from now on;
        a request accepted before answers the contact made then."""
        known = self._accepted(request_id)
        if known is not None:
            return known.contact_id
        contact_id, conn_id = _new_id(), _new_id()
        self.store.Contact.create(
            contact_id=contact_id,
            conn_id=conn_id,
            status=ContactStatus.ACCEPTING,
            address_id=self.ctx.key,
            request_id=request_id,
            created_at=time.time(),
        )
        info = encode_chat_message(XInfo(self.services.profile))
        call = AgentCall(AgentCallKind.ACCEPT, inv_id=request_id, info=info)
        owner = Owner(OwnerKind.CONTACT, contact_id)
        unit.command(CommandFunction.ACCEPT_CONTACT, conn_id, call, owner=owner)
        return contact_id
