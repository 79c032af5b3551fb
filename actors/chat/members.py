"""`Members`: one group's stored rows — the group, its members — and its messages.

The `GroupActor` (group.py) and its collaborators (introductions.py, endings.py) read and
write the group through this: who we are in it, who its members are and on which
connection, the host, and the group's messages (sent to every connected member, kept as
`ChatPending` for a member not connected yet and flushed to it once it is, never for a
member gone nor in a group that ended; a received copy with a shared id already held is
dropped). Every method runs inside the caller's unit.
"""

from __future__ import annotations

import time
from typing import Any

from actors.chat import events as cev
from actors.chat.model import ENDED_GROUPS, ENDED_MEMBERS, GroupStatus, MemberStatus
from actors.chat.owner import Unit
from actors.chat.services import ChatServices
from protocol.chat import (
    GroupProfile,
    GroupRole,
    MemberInfo,
    Profile,
    XMsgNew,
    decode_chat_message,
    encode_chat_message,
    new_member_id,
)
from protocol.errors import AgentError

# A member that will not be connected (again): nothing is sent or kept for it.
GONE = ENDED_MEMBERS | {MemberStatus.FAILED}


def ended_error(group: Any) -> AgentError:
    """What a call for a group that ended for us (left, removed, deleted) raises."""
    return AgentError(f"the group is {group.status}", code="GROUP_ENDED")


def new_conn_id() -> str:
    return new_member_id()  # the same shape: 16 base64url characters


class Members:
    """The rows of group `group_id`, owned by `owner` (see the module docstring)."""

    def __init__(self, services: ChatServices, group_id: str, owner: str) -> None:
        self.services = services
        self.store = services.store
        self.group_id = group_id
        self.owner = owner

    # ------------------------------------------------------------------ reads

    def group(self) -> Any:
        return self.store.group(self.group_id)

    def all(self) -> list[Any]:
        store = self.store
        return list(store.Member.select().where(store.Member.group_id == self.group_id))

    def member(self, member_id: str) -> Any:
        store = self.store
        return store.Member.get_or_none(
            (store.Member.group_id == self.group_id) & (store.Member.member_id == member_id)
        )

    def on(self, conn_id: str) -> Any:
        """The member whose connection is `conn_id` (None if none is)."""
        return self.store.group_member_on(self.group_id, conn_id)

    def create_owned(self, profile: GroupProfile, **kind: Any) -> Any:
        """Our new group, with us as its owner and host (`kind`: a relay group's fields)."""
        me = new_member_id()
        return self.store.Group.create(
            group_id=self.group_id,
            name=profile.name,
            description=profile.description,
            status=GroupStatus.CONNECTED,
            member_id=me,
            role=GroupRole.OWNER.value,
            host_member_id=me,
            created_at=time.time(),
            **kind,
        )

    def me(self, group: Any) -> MemberInfo:
        """Us as the group knows us: with the incognito name we chose for it, if we did."""
        profile = self.services.profile
        if group.incognito_name:
            profile = Profile(group.incognito_name)
        return MemberInfo(group.member_id, GroupRole(group.role), profile)

    @staticmethod
    def info(member: Any) -> MemberInfo:
        profile = Profile(member.display_name, member.full_name or "")
        return MemberInfo(member.member_id, GroupRole(member.role), profile)

    @staticmethod
    def is_host(group: Any) -> bool:
        return group.host_member_id == group.member_id

    @staticmethod
    def from_host(group: Any, member: Any) -> bool:
        return member is not None and member.member_id == group.host_member_id

    def host_conn(self, group: Any) -> str | None:
        """Our connection to the host (None if we are the host or have none)."""
        host = self.member(group.host_member_id)
        return host.conn_id if host is not None else None

    # ------------------------------------------------------------------ writes

    def add(self, info: MemberInfo, status: MemberStatus, conn_id: str | None = None) -> Any:
        member = self.store.Member.create(
            group_id=self.group_id,
            member_id=info.member_id,
            role=info.role.value,
            status=status,
            display_name=info.profile.display_name,
            full_name=info.profile.full_name,
            conn_id=conn_id,
            created_at=time.time(),
        )
        if conn_id is not None:
            self.store.own_connection(conn_id, self.owner)
        return member

    # ------------------------------------------------------------------ messages

    def send(self, unit: Unit, msg_id: str, text: str) -> str:
        """Our group message: to every connected member, kept for those not connected yet."""
        store = self.store
        group = self.group()
        if group is not None and group.status in ENDED_GROUPS:
            raise ended_error(group)
        if group is None or group.status != GroupStatus.CONNECTED:
            raise AgentError("not a member of this group (yet)", code="PROHIBITED")
        message = XMsgNew(msg_id, text)
        store.add_message("group", self.group_id, msg_id, "", text, sent=True)
        body = encode_chat_message(message)
        for member in self.all():
            if member.status == MemberStatus.CONNECTED:
                unit.send(member.conn_id, message)
            elif member.status not in GONE:
                store.Pending.create(group_id=self.group_id, member_id=member.member_id, body=body)
        return msg_id

    def received(self, unit: Unit, author: str, message: XMsgNew) -> None:
        """A member's group message: stored and told once (a copy is dropped)."""
        if not self.store.add_message(
            "group", self.group_id, message.msg_id, author, message.text, sent=False
        ):
            return
        unit.tell(cev.NewMessage("group", self.group_id, message.msg_id, author, message.text))

    def flush_pending(self, unit: Unit, member: Any) -> None:
        """`member` is connected: send it the group messages kept for it, in order."""
        for body in self.store.take_pending(self.group_id, member.member_id):
            unit.send(member.conn_id, decode_chat_message(body))
