"""`Endings`: how a group ends for a member, or for us — leave, remove, delete — on both sides.

Ours (asks of the user, each in one unit of the `GroupActor`):

* leave: x.grp.leave to every connected member (in a relay group, to every relay
  connected: relays.py); our group LEFT;
* remove a member (an owner or admin, of a role not above ours): x.grp.mem.del to every
  connected member, the removed one included; the member REMOVED;
* delete the group (its owner): x.grp.del to every connected member; our group DELETED.

A peer's (chat messages, each in the unit that records the agent message as processed):

* x.grp.leave: its sender LEFT (`MemberLeft`);
* x.grp.mem.del from an owner or admin of a role not below the removed member's: that
  member REMOVED (`MemberRemoved`), or, naming us, our group REMOVED (`GroupRemoved`);
* x.grp.del from an owner: our group DELETED (`GroupDeleted`).

A right is checked against the roles we stored (which only the host's introductions set),
never against what the message claims: a removal or a deletion from anyone else is refused
(`ChatRefused`) and changes nothing.

Whatever ends, its connections go: each connection to a member that is gone, or every one of
ours when the group ended for us, is deleted by an async agent command (DELETE_MEMBER_CONN),
stored in the same unit after the ending messages, so the messages reach their connections
first (the unit's effects and the owner's reconcile run in that order). Its OK clears the
member's connection. Group messages kept for a member that is gone (`ChatPending`) are
dropped. A member that is gone, and a group that ended, stay so: a step of the joining
protocol that completes later changes nothing and deletes the connection it made, and a
peer's message for an ended group is refused (`ChatRefused`). Each ending is idempotent by
state: a member already gone or a group already ended is not ended again.

Order. The ending message goes first: the delete of a connection is made only once the agent
took every chat message for it (owner.py), and the agent's delete waits until those are
delivered, or expired by the message TTL (`wait_delivery`), so the peer hears of the ending
before the queues go, also when its server is down for a while.
"""

from __future__ import annotations

from typing import Any

from actors.chat import events as cev
from actors.chat.members import Members, ended_error
from actors.chat.model import (
    ENDED_GROUPS,
    ENDED_MEMBERS,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    GroupKind,
    GroupStatus,
    MemberStatus,
)
from actors.chat.owner import Unit, refuse
from actors.chat.relays import Relays
from protocol.chat import ChatMessage, GroupRole, XGrpDel, XGrpLeave, XGrpMemDel
from protocol.errors import AgentError


def may_remove(remover: GroupRole, removed: GroupRole) -> bool:
    """An owner or admin removes a member of a role not above its own."""
    return remover.at_least(GroupRole.ADMIN) and remover.at_least(removed)


class Endings:
    """The endings of one group (see the module docstring)."""

    def __init__(self, members: Members, relays: Relays) -> None:
        self.members = members
        self.relays = relays
        self.store = members.store
        self.group_id = members.group_id

    # ------------------------------------------------------------------ ours

    def leave(self, unit: Unit) -> None:
        group = self._group()
        if group.status == GroupStatus.LEFT:
            return  # left before (a retried call)
        if group.status in ENDED_GROUPS:
            raise ended_error(group)
        self._end_for_us(unit, group, GroupStatus.LEFT, XGrpLeave())

    def remove(self, unit: Unit, member_id: str) -> None:
        group = self._group()
        if group.status in ENDED_GROUPS:
            raise ended_error(group)
        member = self.members.member(member_id)
        if member is None:
            raise AgentError(f"no member {member_id!r} in the group", code="NO_MEMBER")
        if member.status in ENDED_MEMBERS:
            return  # removed before (a retried call), or it left
        if not may_remove(GroupRole(group.role), GroupRole(member.role)):
            raise AgentError(f"a {group.role} cannot remove a {member.role}", code="PROHIBITED")
        self._broadcast(unit, XGrpMemDel(member_id))
        self._member_gone(unit, member, MemberStatus.REMOVED)

    def delete(self, unit: Unit) -> None:
        group = self._group()
        if group.status == GroupStatus.DELETED:
            return  # deleted before (a retried call)
        if group.status in ENDED_GROUPS:
            raise ended_error(group)
        if GroupRole(group.role) is not GroupRole.OWNER:
            raise AgentError("only the group's owner deletes it", code="PROHIBITED")
        self._end_for_us(unit, group, GroupStatus.DELETED, XGrpDel())

    def _group(self) -> Any:
        group = self.members.group()
        if group is None:
            raise AgentError(f"no group {self.group_id!r}", code="NO_GROUP")
        return group

    # ------------------------------------------------------------------ a peer's

    def left(self, unit: Unit, sender: Any) -> None:
        self._member_gone(unit, sender, MemberStatus.LEFT)
        unit.tell(cev.MemberLeft(self.group_id, sender.member_id))

    def removed(self, unit: Unit, group: Any, sender: Any, member_id: str) -> None:
        by = sender.member_id
        if member_id == group.member_id:
            if not may_remove(GroupRole(sender.role), GroupRole(group.role)):
                raise refuse(f"{by}, a {sender.role}, may not remove us, a {group.role}")
            self._end_for_us(unit, group, GroupStatus.REMOVED, None)
            unit.tell(cev.GroupRemoved(self.group_id, by))
            return
        member = self.members.member(member_id)
        if member is None:
            raise refuse(f"no member {member_id} to remove")
        if not may_remove(GroupRole(sender.role), GroupRole(member.role)):
            raise refuse(f"{by}, a {sender.role}, may not remove a {member.role}")
        if member.status in ENDED_MEMBERS and member.conn_id is None:
            return  # gone before, and its connection with it
        if member.status not in ENDED_MEMBERS:
            unit.tell(cev.MemberRemoved(self.group_id, member_id, by))
        self._member_gone(unit, member, MemberStatus.REMOVED)

    def deleted(self, unit: Unit, group: Any, sender: Any) -> None:
        if GroupRole(sender.role) is not GroupRole.OWNER:
            raise refuse(f"{sender.member_id}, a {sender.role}, may not delete the group")
        self._end_for_us(unit, group, GroupStatus.DELETED, None)
        unit.tell(cev.GroupDeleted(self.group_id, sender.member_id))

    # ------------------------------------------------------------------ after an ending

    def completed_after(self, unit: Unit, group: Any, member: Any) -> bool:
        """A joining step of `member` completed: if the member left or was removed, or the
        group ended, it changes nothing but the deletion of the connection it made; True
        if so."""
        if group.status not in ENDED_GROUPS and member.status not in ENDED_MEMBERS:
            return False
        self.delete_connection(unit, member)
        return True

    def connection_deleted(self, member: Any, conn_id: str) -> None:
        """The OK of a DELETE_MEMBER_CONN: the member has no connection any more."""
        if member.conn_id == conn_id:
            member.conn_id = None
            member.save()
        self.store.disown_connection(conn_id)

    # ------------------------------------------------------------------ shared

    def _end_for_us(
        self, unit: Unit, group: Any, status: GroupStatus, last: ChatMessage | None
    ) -> None:
        """The group ends for us: `last` to every connected member, then every connection
        deleted and every kept message dropped (in a relay group, to and of its relays)."""
        if group.kind == GroupKind.RELAY:
            self.relays.end(unit, group, status, last)
            return
        if last is not None:
            self._broadcast(unit, last)
        for member in self.members.all():
            self.delete_connection(unit, member)
        self.store.drop_pending(self.group_id)
        group.status = status
        group.save()

    def _member_gone(self, unit: Unit, member: Any, status: MemberStatus) -> None:
        """`member` left or was removed: nothing more for it, its connection deleted."""
        self.store.drop_pending(self.group_id, member.member_id)
        if member.status not in ENDED_MEMBERS:
            member.status = status
            member.save()
        self.delete_connection(unit, member)

    def _broadcast(self, unit: Unit, message: ChatMessage) -> None:
        for member in self.members.all():
            if member.status == MemberStatus.CONNECTED:
                unit.send(member.conn_id, message)

    def delete_connection(self, unit: Unit, member: Any) -> None:
        """Delete our connection to `member` (once: not while a delete of it is pending)."""
        conn_id = member.conn_id
        function = CommandFunction.DELETE_MEMBER_CONN
        if conn_id is None or self.store.pending_command_of(conn_id, function) is not None:
            return
        call = AgentCall(AgentCallKind.DELETE, member_id=member.member_id)
        unit.command(function, conn_id, call)
