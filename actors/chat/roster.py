"""`Roster`: at a chat relay, the rows of one group it serves — the group, its roster — and the
forwarding of its messages.

The `RelayGroupActor` (relay.py) reads and writes a served group through this, and so does the
relay's `AddressActor` (contact.py) when an owner's invitation arrives on the relay's address
(`serve`: the served group, the owner as its first roster member, the accept of the owner's
request and the create of the relay link are stored in the address's unit, owned by the
served group from then on). Every method runs inside the caller's unit.

A roster member is anyone the relay accepted for the group: the owner (through the relay's
address) and each joiner (through the relay link). A message from one is forwarded to every
other (`XGrpMsgFwd`: the author's member id and the message unchanged), at once to those
connected and as `ChatPending` rows for those accepted but not connected yet, flushed in order
once they are, so that each member gets each author's messages in the order sent.

A member that leaves is let go (`left`: LEFT, nothing more forwarded or kept for it, our
connection to it deleted); when the owner deletes the group or removes us from it, every
member is told and let go, and the relay link is deleted with them (`ended`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.chat.model import (
    ROSTER_GONE,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    Owner,
    OwnerKind,
    RosterStatus,
    ServedStatus,
)
from actors.chat.owner import Unit, refuse
from actors.chat.services import ChatServices
from protocol.chat import (
    MemberInfo,
    XGrpDel,
    XGrpDelFwd,
    XGrpMsgFwd,
    XGrpRelayInv,
    XGrpRelayRem,
    XInfo,
    XMsgNew,
    decode_chat_message,
    encode_chat_message,
    new_member_id,
)

log = logging.getLogger(__name__)


def served_owner(group_id: str) -> Owner:
    """The owner of a served group's rows and connections at the relay."""
    return Owner(OwnerKind.RELAY_GROUP, group_id)


class Roster:
    """The rows of served group `group_id` (see the module docstring)."""

    def __init__(self, services: ChatServices, group_id: str) -> None:
        self.services = services
        self.store = services.store
        self.group_id = group_id
        self.owner = served_owner(group_id)

    # ------------------------------------------------------------------ reads

    def served(self) -> Any:
        return self.store.served_group(self.group_id)

    def all(self) -> list[Any]:
        return self.store.roster(self.group_id)

    def on(self, conn_id: str) -> Any:
        return self.store.roster_member_on(self.group_id, conn_id)

    def member(self, member_id: str) -> Any:
        store = self.store
        return store.RelayMember.get_or_none(
            (store.RelayMember.group_id == self.group_id)
            & (store.RelayMember.member_id == member_id)
        )

    def owner_row(self, served: Any) -> Any:
        return self.member(served.owner_member_id)

    # ------------------------------------------------------------------ writes

    def serve(self, unit: Unit, invitation: XGrpRelayInv, request_id: str) -> None:
        """An owner invites us to serve its group (the request on our relay address): the
        group, the owner accepted as its first member, our relay link being made. An
        invitation for a group served already (a copy, or another owner's claim on its id)
        changes nothing."""
        if self.served() is not None:
            log.info("relay invitation for a group served already", extra={"group": self.group_id})
            return
        link_conn_id = new_member_id()
        self.store.RelayGroup.create(
            group_id=self.group_id,
            name=invitation.group_name,
            owner_member_id=invitation.owner.member_id,
            link_conn_id=link_conn_id,
            status=ServedStatus.LINKING,
            created_at=time.time(),
        )
        self.admit(unit, invitation.owner, request_id)
        call = AgentCall(AgentCallKind.CREATE_ADDRESS)
        unit.command(CommandFunction.CREATE_RELAY_LINK, link_conn_id, call, owner=self.owner)

    def admit(self, unit: Unit, info: MemberInfo, request_id: str) -> Any:
        """Accept the request of `info` (the owner, or a joiner on the relay link) into the
        roster; a request or a member id admitted already is not admitted again."""
        store = self.store
        if store.RelayMember.get_or_none(store.RelayMember.request_id == request_id) is not None:
            return None  # told again (a Replay): taken before
        if self.member(info.member_id) is not None:
            log.warning(
                "a second request for a member id",
                extra={"group": self.group_id, "member_id": info.member_id},
            )
            return None
        conn_id = new_member_id()
        member = store.RelayMember.create(
            group_id=self.group_id,
            member_id=info.member_id,
            role=info.role.value,
            display_name=info.profile.display_name,
            full_name=info.profile.full_name,
            conn_id=conn_id,
            request_id=request_id,
            status=RosterStatus.ACCEPTING,
            created_at=time.time(),
        )
        accept_info = encode_chat_message(XInfo(self.services.profile))
        call = AgentCall(
            AgentCallKind.ACCEPT, inv_id=request_id, info=accept_info, member_id=info.member_id
        )
        unit.command(CommandFunction.ACCEPT_RELAY_MEMBER, conn_id, call, owner=self.owner)
        return member

    # ------------------------------------------------------------------ forwarding

    def forward(self, unit: Unit, author: Any, message: XMsgNew) -> None:
        """`author`'s group message, to every other member of the roster."""
        forward = XGrpMsgFwd(author.member_id, message)
        body = encode_chat_message(forward)
        for member in self.all():
            if member.id == author.id or member.status in ROSTER_GONE:
                continue
            if member.status == RosterStatus.CONNECTED:
                unit.send(member.conn_id, forward)
            else:
                self.store.Pending.create(
                    group_id=self.group_id, member_id=member.member_id, body=body
                )

    def left(self, unit: Unit, member: Any) -> None:
        """`member` left (x.grp.leave): nothing more is forwarded to it, what was kept for it
        is dropped, and our connection to it is deleted."""
        member.status = RosterStatus.LEFT
        member.save()
        self.store.drop_pending(self.group_id, member.member_id)
        call = AgentCall(AgentCallKind.DELETE, member_id=member.member_id)
        unit.command(CommandFunction.DELETE_SERVED_CONN, member.conn_id, call, owner=self.owner)

    def ended(self, unit: Unit, served: Any, sender: Any, message: XGrpDel | XGrpRelayRem) -> None:
        """The owner `sender` deleted the group (x.grp.del) or removed us from it
        (x.grp.relay.rem): every other member connected is told (x.grp.del.fwd, or
        x.grp.relay.rem), then every member is LEFT and our connection to it deleted (after
        that message), the relay link with them, and the group DELETED or REMOVED: served
        no more. From anyone but the owner it is refused."""
        if sender.member_id != served.owner_member_id:
            raise refuse(f"{message.event} from {sender.member_id}, not the owner")
        notice: XGrpDelFwd | XGrpRelayRem
        if isinstance(message, XGrpDel):
            notice, served.status = XGrpDelFwd(sender.member_id), ServedStatus.DELETED
        else:
            notice, served.status = XGrpRelayRem(), ServedStatus.REMOVED
        served.save()
        for member in self.all():
            if member.status in ROSTER_GONE:
                continue
            if member.id != sender.id and member.status == RosterStatus.CONNECTED:
                unit.send(member.conn_id, notice)
            self.left(unit, member)
        call = AgentCall(AgentCallKind.DELETE)
        unit.command(
            CommandFunction.DELETE_SERVED_CONN, served.link_conn_id, call, owner=self.owner
        )

    def flush(self, unit: Unit, member: Any) -> None:
        """`member` is connected: the forwards kept for it, in order."""
        for body in self.store.take_pending(self.group_id, member.member_id):
            unit.send(member.conn_id, decode_chat_message(body))
