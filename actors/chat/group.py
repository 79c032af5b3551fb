"""`GroupActor`: one peer-to-peer group, its members, their connections and introductions.

Theory of operation
-------------------
A group is joined through its host H (who added the member) and then connected peer to
peer: every member gets a connection to every other. When invitee I joins (the table in
protocol/chat.py)::

    H add_member       H made I's invitation (a sync create at the edge); x.grp.inv to I
    I join_group       JOIN_GROUP: join H's link async, info x.grp.acpt
    H on CONF          ALLOW_MEMBER: allow async, info x.grp.mem.info(H)
    H on OK (or CON)   x.grp.mem.new(I) to every connected M, x.grp.mem.intro(M) to I
    I on intro of M    CREATE_INTRO_INV: create async; on INV x.grp.mem.inv(M, link) to H
    H on mem.inv       x.grp.mem.fwd(I, link) to M (once M is connected to H)
    M on mem.fwd       JOIN_INTRO: join I's link async, info x.grp.mem.info(M)
    I on CONF          ALLOW_INTRO: allow async, info x.grp.mem.info(I)
    I on OK, M on CON  the member is connected; x.grp.mem.con to H

The side that allows counts its connection as made on the OK of its allow: the agent makes
the connection ready in the transaction that completes the allow and tells CON only after
it, so a crash in between must not leave the member connecting (CON then changes nothing).

Every connection the group makes by itself is an async agent command stored as a chat
command (owner.py), so it is retried by the agent and continued after any crash. Each step
is idempotent by the stored state: a member already known is not introduced again, an intro
already answered is not answered again, a member that has a connection is not joined again.
What a peer says is checked against that state (only the host introduces or forwards; an
invitation or a report of a connection must name an introduction of its sender); anything
else is refused (`ChatRefused`) and changes nothing.

How a group ends (endings.py)::

    we leave           x.grp.leave to every connected member; our group LEFT
    an owner or admin  x.grp.mem.del(X) to every connected member, X included; X REMOVED
      removes X        (only a member of a role not above the remover's)
    the owner deletes  x.grp.del to every connected member; our group DELETED
    on x.grp.leave     its sender LEFT                          (MEMBER_LEFT)
    on x.grp.mem.del   X REMOVED, or our group REMOVED if X is us (MEMBER_REMOVED,
                       GROUP_REMOVED), if the sender's stored role allows it
    on x.grp.del       our group DELETED, if the sender is an owner (GROUP_DELETED)

In the same unit, every connection to what ended (the member gone, or every member when the
group ended for us) gets an async delete (DELETE_MEMBER_CONN), stored after the ending
messages so that they reach their connections first; its OK clears the member's connection.
From then on nothing is sent to what ended, a peer's message to it or from a member gone is
refused, and a joining step that completes late only deletes the connection it made.

Group messages go to every member connected to us; a member known but not connected yet gets
them once it is (`ChatPending`), in order. A copy of a message with a shared id we already
hold is dropped, so each message is told once.

Where it lives
--------------
The actor is a shell: it opens one unit per ask, agent event, completion or chat message
(owner.py), checks who may say what, and hands the step to a collaborator, which changes
rows and queues effects on that unit but never opens one itself:

* `Members` (members.py)              the group's rows, who is who, and group messages;
* `Introductions` (introductions.py)  the joining steps above, on every side;
* `Endings` (endings.py)              leave, remove, delete, on every side;
* `Relays` (relays.py)                a relay group (kind RELAY): its relays, our
                                      connection to each, its group link, its messages.

A relay group has no member connections: its events, completions and messages are on the
connections to its relays, and go to `Relays` (leaving, removing and deleting it are not
there yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actors.agent import events as aev
from actors.chat import events as cev
from actors.chat.endings import Endings
from actors.chat.introductions import Introductions
from actors.chat.members import Members, ended_error, new_conn_id
from actors.chat.model import (
    ENDED_GROUPS,
    ENDED_MEMBERS,
    WAITING_MEMBERS,
    WAITING_RELAYS,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    ContactStatus,
    GroupKind,
    GroupStatus,
    MemberStatus,
    OwnerKind,
    RelayStatus,
    decode_call,
)
from actors.chat.owner import OwnerActor, Unit, connection_gone, refuse
from actors.chat.relays import RELAY_FUNCTIONS, PreparedLink, RelayGroupAsk, Relays
from protocol.chat import (
    ChatMessage,
    GroupProfile,
    GroupRole,
    XGrpAcpt,
    XGrpDel,
    XGrpInv,
    XGrpLeave,
    XGrpMemCon,
    XGrpMemDel,
    XGrpMemFwd,
    XGrpMemIntro,
    XGrpMemInv,
    XGrpMemNew,
    XMsgNew,
    decode_chat_message,
    encode_chat_message,
    new_member_id,
    new_message_id,
)
from protocol.errors import AgentError, ChatWireError

# ---------------------------------------------------------------------- asks


@dataclass(frozen=True, slots=True)
class CreateGroup:
    profile: GroupProfile


@dataclass(frozen=True, slots=True)
class AddMember:
    """The host invites contact `contact_id` over `link` (made by a sync create at the edge,
    on connection `conn_id`)."""

    contact_id: str
    conn_id: str
    link: str
    role: GroupRole = GroupRole.MEMBER


@dataclass(frozen=True, slots=True)
class JoinGroup:
    pass


@dataclass(frozen=True, slots=True)
class SendGroupMessage:
    text: str


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    pass


@dataclass(frozen=True, slots=True)
class RemoveMember:
    member_id: str


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    pass


@dataclass(frozen=True, slots=True)
class GroupState:
    """Ask: the group and its members as stored (for the user and for tests)."""


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    role: str
    status: str
    display_name: str


@dataclass(frozen=True, slots=True)
class RelayView:
    relay_id: str
    status: str
    relay_link: str | None
    address: str | None = None  # the owner's: the relay address it invited


@dataclass(frozen=True, slots=True)
class GroupView:
    group_id: str
    name: str
    status: str
    member_id: str
    members: tuple[MemberView, ...]
    kind: str = GroupKind.P2P.value
    relays: tuple[RelayView, ...] = ()
    active_relays: int = 0  # connected (a member) or verified (the owner)
    group_link: str | None = None

    @property
    def relays_active(self) -> str:
        """Where the relays stand, for the user: "N/M relays active"."""
        return f"{self.active_relays}/{len(self.relays)} relays active"


class GroupActor(OwnerActor):
    """The owner of one group: turns asks, agent events, completions and chat messages into
    units and hands each to the collaborator whose step it is."""

    kind = "group"
    owner_kind = OwnerKind.GROUP

    def load(self) -> None:
        self.group_id = self.ctx.key
        self.members = Members(self.services, self.group_id, str(self.owner))
        self.introductions = Introductions(self.members)
        self.relays = Relays(self.members)
        self.endings = Endings(self.members, self.relays)

    # ------------------------------------------------------------------ asks

    def receive(self, message: Any) -> Any:
        match message:
            case CreateGroup(profile=profile):
                return self._create(profile)
            case AddMember():
                return self._add_member(message)
            case JoinGroup():
                return self._join()
            case SendGroupMessage(text=text):
                msg_id = new_message_id()
                with self.unit() as unit:
                    group = self.members.group()
                    if group is not None and group.kind == GroupKind.RELAY:
                        return self.relays.send(unit, group, msg_id, text)
                    return self.members.send(unit, msg_id, text)
            case RelayGroupAsk():
                return self._relay_ask(message)
            case LeaveGroup():
                with self.unit("leave_group") as unit:
                    self.endings.leave(unit)
                return None
            case RemoveMember(member_id=member_id):
                with self.unit("remove_member") as unit:
                    self.endings.remove(unit, member_id)
                return None
            case DeleteGroup():
                with self.unit("delete_group") as unit:
                    self.endings.delete(unit)
                return None
            case GroupState():
                return self._view()
        return super().receive(message)

    def _create(self, profile: GroupProfile) -> str:
        with self.unit():
            if self.members.group() is None:
                self.members.create_owned(profile)
        return self.group_id

    def _relay_ask(self, ask: RelayGroupAsk) -> Any:
        """An ask about a relay group (relays.py has the rows), in a unit of its own."""
        if isinstance(ask, PreparedLink):
            with self.store.transaction(read_only=True):
                group = self.members.group()
            return self.relays.prepared_link(group)
        with self.unit(ask.step) as unit:
            return self.relays.asked(unit, self.members.group(), ask)

    def _add_member(self, ask: AddMember) -> str:
        store = self.store
        with self.unit() as unit:
            group = self.members.group()
            if group is not None and group.status in ENDED_GROUPS:
                raise ended_error(group)
            if group is None or not Members.is_host(group):
                raise AgentError("only the group's host adds members", code="PROHIBITED")
            contact = store.Contact.get_or_none(store.Contact.contact_id == ask.contact_id)
            if contact is None or contact.status != ContactStatus.CONNECTED:
                raise AgentError(f"no connected contact {ask.contact_id!r}", code="NO_CONTACT")
            member_id = new_member_id()
            store.Member.create(
                group_id=self.group_id,
                member_id=member_id,
                role=ask.role.value,
                status=MemberStatus.INVITED,
                display_name=contact.display_name or "",
                full_name=contact.full_name or "",
                conn_id=ask.conn_id,
                contact_id=ask.contact_id,
                invited_by=group.member_id,
                created_at=time.time(),
            )
            store.own_connection(ask.conn_id, str(self.owner))
            invitation = XGrpInv(
                self.group_id,
                GroupProfile(group.name, group.description),
                self.members.me(group),
                member_id,
                ask.role,
                ask.link,
            )
            unit.send(contact.conn_id, invitation)
        return member_id

    def _join(self) -> str:
        store = self.store
        with self.unit() as unit:
            group = self.members.group()
            if group is None:
                raise AgentError(f"no group {self.group_id!r}", code="NO_GROUP")
            if group.status != GroupStatus.INVITED:
                return self.group_id  # joined already (or failed: see its status)
            invitation = decode_chat_message(bytes(group.invitation))
            assert isinstance(invitation, XGrpInv)
            conn_id = new_conn_id()
            host = invitation.host
            store.Member.create(
                group_id=self.group_id,
                member_id=host.member_id,
                role=host.role.value,
                status=MemberStatus.ACCEPTED,
                display_name=host.profile.display_name,
                full_name=host.profile.full_name,
                conn_id=conn_id,
                created_at=time.time(),
            )
            group.status = GroupStatus.JOINING
            group.save()
            info = encode_chat_message(XGrpAcpt(group.member_id, self.services.profile))
            call = AgentCall(AgentCallKind.JOIN, link=invitation.link, info=info)
            unit.command(CommandFunction.JOIN_GROUP, conn_id, call)
        return self.group_id

    def _view(self) -> GroupView | None:
        with self.store.transaction(read_only=True):
            group = self.members.group()
            if group is None:
                return None
            members = tuple(
                MemberView(m.member_id, m.role, m.status, m.display_name)
                for m in sorted(self.members.all(), key=lambda m: m.id)
            )
            relays = tuple(
                RelayView(r.relay_id, r.status, r.relay_link, r.address)
                for r in self.relays.all()
                if r.status != RelayStatus.REMOVED
            )
            active = self.relays.active(group)
        return GroupView(
            self.group_id,
            group.name,
            group.status,
            group.member_id,
            members,
            group.kind,
            relays,
            active,
            group.group_link,
        )

    def waiting(self) -> list[str]:
        store = self.store
        group = self.members.group()
        if group is None or group.status in ENDED_GROUPS:
            return []  # its connections are deleted, or being deleted
        rows = store.Member.select(store.Member.conn_id).where(
            (store.Member.group_id == self.group_id)
            & store.Member.status.in_(WAITING_MEMBERS)
            & store.Member.conn_id.is_null(False)
        )
        relays = [r.conn_id for r in self.relays.all() if r.status in WAITING_RELAYS]
        return [row.conn_id for row in rows] + relays

    # ------------------------------------------------------------------ agent events

    def on_agent_event(self, event: Any) -> None:
        relay = self._relay_event(event)
        if relay:
            return
        match event:
            case aev.Conf(conn_id=conn_id, conf_id=conf_id, info=info):
                with self.unit("CONF") as unit:
                    if not self._after_end(unit, conn_id):
                        self.introductions.confirmed(unit, conn_id, conf_id, _decode(info))
            case aev.Info(conn_id=conn_id, info=info):
                with self.unit("INFO") as unit:
                    if not self._after_end(unit, conn_id):
                        self.introductions.peer_info(conn_id, _decode(info))
            case aev.Con(conn_id=conn_id):
                with self.unit("CON") as unit:
                    group, member = self.members.group(), self.members.on(conn_id)
                    if group is None or member is None:
                        return
                    if not self.endings.completed_after(unit, group, member):
                        self.introductions.connect(unit, group, member)

    def _relay_event(self, event: Any) -> bool:
        """CONF or CON on a connection to one of our relays (True: it was one)."""
        if not isinstance(event, aev.Conf | aev.Con):
            return False
        with self.store.transaction(read_only=True):
            known = self.relays.on(event.conn_id) is not None
        if not known:
            return False
        with self.unit(type(event).__name__.upper()) as unit:
            group, relay = self.members.group(), self.relays.on(event.conn_id)
            if group is None or relay is None:
                return True
            if isinstance(event, aev.Conf):
                self.relays.confirmed(unit, group, relay, event.conf_id)
            else:
                self.relays.connected(unit, group, relay)
        return True

    def _after_end(self, unit: Unit, conn_id: str) -> bool:
        """The group ended for us or the member of `conn_id` is gone: the event changes
        nothing but the deletion of its connection (True)."""
        group, member = self.members.group(), self.members.on(conn_id)
        if group is None or member is None:
            return False
        return self.endings.completed_after(unit, group, member)

    # ------------------------------------------------------------------ completions

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        call = decode_call(bytes(command.payload))
        group = self.members.group()
        if CommandFunction(command.function) in RELAY_FUNCTIONS:
            if group is not None:
                self.relays.completed(unit, group, command, event)
            return
        member = self.members.on(command.conn_id)
        if group is None or member is None:
            return
        function = CommandFunction(command.function)
        if function is CommandFunction.DELETE_MEMBER_CONN:
            if connection_gone(event):
                self.endings.connection_deleted(member, command.conn_id)
            return  # another ERR: the command is FAILED; the connection stays the member's
        if self.endings.completed_after(unit, group, member):
            return
        if isinstance(event, aev.Err):
            self._failed(unit, group, member, command, event.code)
            return
        match function, event:
            case CommandFunction.ALLOW_MEMBER | CommandFunction.ALLOW_INTRO, aev.Ok():
                self.introductions.connect(unit, group, member)
            case CommandFunction.CREATE_INTRO_INV, aev.Inv(link=link):
                self.introductions.invitation_made(unit, group, member, call, link)
            case _:
                pass  # JOINED / OK: the connection goes on; CON ends it

    def _failed(self, unit: Unit, group: Any, member: Any, command: Any, code: str) -> None:
        member.status = MemberStatus.FAILED
        member.save()
        if CommandFunction(command.function) is CommandFunction.JOIN_GROUP:
            group.status = GroupStatus.FAILED
            group.save()
            unit.tell(cev.GroupFailed(self.group_id, code))
        else:
            unit.tell(cev.MemberFailed(self.group_id, member.member_id, code))

    # ------------------------------------------------------------------ chat messages

    def on_chat_message(self, unit: Unit, conn_id: str, message: ChatMessage) -> None:
        group, relay = self.members.group(), self.relays.on(conn_id)
        if group is not None and relay is not None:
            self.relays.message(unit, group, relay, message)
            return
        sender = self.members.on(conn_id)
        if group is None or sender is None:
            raise refuse("a group message on a connection of no member")
        if group.status in ENDED_GROUPS:
            raise refuse(f"{type(message).__name__} for a group that is {group.status}")
        if sender.status in ENDED_MEMBERS:
            raise refuse(f"{type(message).__name__} from {sender.member_id}, {sender.status}")
        from_host = Members.from_host(group, sender)
        joining = self.introductions
        match message:
            case XMsgNew():
                self.members.received(unit, sender.member_id, message)
            case XGrpMemNew(member=member) if from_host:
                joining.announced(member)
            case XGrpMemIntro(member=member) if from_host:
                joining.introduced(unit, member)
            case XGrpMemInv(member_id=member_id, link=link) if Members.is_host(group):
                joining.intro_invitation(unit, sender, member_id, link)
            case XGrpMemFwd(member=member, link=link) if from_host:
                joining.forwarded(unit, group, member, link)
            case XGrpMemCon(member_id=member_id) if Members.is_host(group):
                joining.intro_done(sender.member_id, member_id)
            case XGrpLeave():
                self.endings.left(unit, sender)
            case XGrpMemDel(member_id=member_id):
                self.endings.removed(unit, group, sender, member_id)
            case XGrpDel():
                self.endings.deleted(unit, group, sender)
            case _:
                raise refuse(f"{type(message).__name__} from {sender.member_id} is not expected")


def _decode(info: bytes) -> ChatMessage | None:
    """A peer's join/allow info; None if it is not a chat message (ignored like garbage)."""
    try:
        return decode_chat_message(info)
    except ChatWireError:
        return None
