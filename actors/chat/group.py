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
What a peer says is checked against that state (only the host introduces, forwards or
deletes; an invitation or a report of a connection must name an introduction of its sender);
anything else is refused (`ChatRefused`) and changes nothing.

Group messages go to every member connected to us; a member known but not connected yet gets
them once it is (`ChatPending`), in order. A copy of a message with a shared id we already
hold is dropped, so each message is told once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actors.agent import events as aev
from actors.chat import events as cev
from actors.chat.model import (
    WAITING_MEMBERS,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    ContactStatus,
    GroupStatus,
    IntroStatus,
    MemberStatus,
    OwnerKind,
    decode_call,
)
from actors.chat.owner import OwnerActor, Unit, refuse
from protocol.chat import (
    ChatMessage,
    GroupProfile,
    GroupRole,
    MemberInfo,
    Profile,
    XGrpAcpt,
    XGrpDel,
    XGrpInv,
    XGrpLeave,
    XGrpMemCon,
    XGrpMemFwd,
    XGrpMemInfo,
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

_GONE = {MemberStatus.LEFT, MemberStatus.REMOVED, MemberStatus.FAILED}


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
class GroupState:
    """Ask: the group and its members as stored (for the user and for tests)."""


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    role: str
    status: str
    display_name: str


@dataclass(frozen=True, slots=True)
class GroupView:
    group_id: str
    name: str
    status: str
    member_id: str
    members: tuple[MemberView, ...]


def _new_conn_id() -> str:
    return new_member_id()  # the same shape: 16 base64url characters


class GroupActor(OwnerActor):
    kind = "group"
    owner_kind = OwnerKind.GROUP

    def load(self) -> None:
        self.group_id = self.ctx.key

    # ------------------------------------------------------------------ helpers

    def _group(self) -> Any:
        return self.store.Group.get_or_none(self.store.Group.group_id == self.group_id)

    def _members(self) -> list[Any]:
        store = self.store
        return list(store.Member.select().where(store.Member.group_id == self.group_id))

    def _member(self, member_id: str) -> Any:
        store = self.store
        return store.Member.get_or_none(
            (store.Member.group_id == self.group_id) & (store.Member.member_id == member_id)
        )

    def _member_on(self, conn_id: str) -> Any:
        store = self.store
        return store.Member.get_or_none(
            (store.Member.group_id == self.group_id) & (store.Member.conn_id == conn_id)
        )

    def _me(self, group: Any) -> MemberInfo:
        profile = self.services.profile
        return MemberInfo(group.member_id, GroupRole(group.role), profile)

    @staticmethod
    def _info(member: Any) -> MemberInfo:
        profile = Profile(member.display_name, member.full_name or "")
        return MemberInfo(member.member_id, GroupRole(member.role), profile)

    def _is_host(self, group: Any) -> bool:
        return group.host_member_id == group.member_id

    def _from_host(self, group: Any, member: Any) -> bool:
        return member is not None and member.member_id == group.host_member_id

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
                return self._send(text)
            case GroupState():
                return self._view()
        return super().receive(message)

    def _create(self, profile: GroupProfile) -> str:
        with self.unit():
            if self._group() is None:
                me = new_member_id()
                self.store.Group.create(
                    group_id=self.group_id,
                    name=profile.name,
                    description=profile.description,
                    status=GroupStatus.CONNECTED,
                    member_id=me,
                    role=GroupRole.OWNER.value,
                    host_member_id=me,
                    created_at=time.time(),
                )
        return self.group_id

    def _add_member(self, ask: AddMember) -> str:
        store = self.store
        with self.unit() as unit:
            group = self._group()
            if group is None or not self._is_host(group):
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
                self._me(group),
                member_id,
                ask.role,
                ask.link,
            )
            unit.send(contact.conn_id, invitation)
        return member_id

    def _join(self) -> str:
        store = self.store
        with self.unit() as unit:
            group = self._group()
            if group is None:
                raise AgentError(f"no group {self.group_id!r}", code="NO_GROUP")
            if group.status != GroupStatus.INVITED:
                return self.group_id  # joined already (or failed: see its status)
            invitation = decode_chat_message(bytes(group.invitation))
            assert isinstance(invitation, XGrpInv)
            conn_id = _new_conn_id()
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

    def _send(self, text: str) -> str:
        store = self.store
        msg_id = new_message_id()
        with self.unit() as unit:
            group = self._group()
            if group is None or group.status != GroupStatus.CONNECTED:
                raise AgentError("not a member of this group (yet)", code="PROHIBITED")
            message = XMsgNew(msg_id, text)
            store.Message.create(
                chat_kind="group",
                chat_id=self.group_id,
                msg_id=msg_id,
                author="",
                text=text,
                sent=True,
                created_at=time.time(),
            )
            body = encode_chat_message(message)
            for member in self._members():
                if member.status == MemberStatus.CONNECTED:
                    unit.send(member.conn_id, message)
                elif member.status not in _GONE:
                    store.Pending.create(
                        group_id=self.group_id, member_id=member.member_id, body=body
                    )
        return msg_id

    def _view(self) -> GroupView | None:
        with self.store.transaction(read_only=True):
            group = self._group()
            if group is None:
                return None
            members = tuple(
                MemberView(m.member_id, m.role, m.status, m.display_name)
                for m in sorted(self._members(), key=lambda m: m.id)
            )
        return GroupView(self.group_id, group.name, group.status, group.member_id, members)

    def waiting(self) -> list[str]:
        store = self.store
        rows = store.Member.select(store.Member.conn_id).where(
            (store.Member.group_id == self.group_id)
            & store.Member.status.in_(WAITING_MEMBERS)
            & store.Member.conn_id.is_null(False)
        )
        return [row.conn_id for row in rows]

    # ------------------------------------------------------------------ agent events

    def on_agent_event(self, event: Any) -> None:
        match event:
            case aev.Conf(conn_id=conn_id, conf_id=conf_id, info=info):
                self._confirmed(conn_id, conf_id, info)
            case aev.Info(conn_id=conn_id, info=info):
                self._peer_info(conn_id, info)
            case aev.Con(conn_id=conn_id):
                self._connected(conn_id)

    def _confirmed(self, conn_id: str, conf_id: str, info: bytes) -> None:
        """A peer joined a link we made: the host's member link, or our intro link."""
        with self.unit("CONF") as unit:
            group, member = self._group(), self._member_on(conn_id)
            if group is None or member is None:
                return
            message = _decode(info)
            if member.status == MemberStatus.INVITED and isinstance(message, XGrpAcpt):
                if message.member_id != member.member_id:
                    return  # not the member this link was made for: left unanswered
                member.display_name = message.profile.display_name
                member.full_name = message.profile.full_name
                member.status = MemberStatus.ACCEPTED
                function = CommandFunction.ALLOW_MEMBER
            elif member.status == MemberStatus.INTRO_INV and isinstance(message, XGrpMemInfo):
                if message.member.member_id != member.member_id:
                    return
                member.status = MemberStatus.CONNECTING
                function = CommandFunction.ALLOW_INTRO
            else:
                return  # a confirmation we did not wait for (a copy): nothing to do
            member.save()
            mine = encode_chat_message(XGrpMemInfo(self.group_id, self._me(group)))
            call = AgentCall(AgentCallKind.ALLOW, conf_id=conf_id, info=mine)
            unit.command(function, conn_id, call)

    def _peer_info(self, conn_id: str, info: bytes) -> None:
        with self.unit("INFO"):
            member = self._member_on(conn_id)
            message = _decode(info)
            if (
                member is not None
                and isinstance(message, XGrpMemInfo)
                and message.member.member_id == member.member_id
            ):
                member.display_name = message.member.profile.display_name
                member.full_name = message.member.profile.full_name
                member.save()

    def _connected(self, conn_id: str) -> None:
        with self.unit("CON") as unit:
            group, member = self._group(), self._member_on(conn_id)
            if group is not None and member is not None:
                self._connect(unit, group, member)

    def _connect(self, unit: Unit, group: Any, member: Any) -> None:
        """`member`'s connection is ready: CON, or the OK of our allow (the agent makes the
        connection ready in the transaction that completes the allow, and tells CON after
        it: a crash between the two must not leave the member connecting)."""
        if member.status == MemberStatus.CONNECTED:
            return
        member.status = MemberStatus.CONNECTED
        member.save()
        unit.tell(cev.MemberConnected(self.group_id, member.member_id, member.display_name))
        if self._from_host(group, member) and group.status == GroupStatus.JOINING:
            group.status = GroupStatus.CONNECTED
            group.save()
            unit.tell(cev.GroupConnected(self.group_id))
        elif self._is_host(group):
            self._introduce(unit, group, member)
            self._forward_waiting(unit, member)
        else:
            host = self._member(group.host_member_id)
            if host is not None and host.conn_id is not None:
                unit.send(host.conn_id, XGrpMemCon(member.member_id))
        self._flush_pending(unit, member)

    def _introduce(self, unit: Unit, group: Any, new: Any) -> None:
        """The host: `new` is connected; introduce it to every connected member."""
        store = self.store
        for other in self._members():
            if other.member_id == new.member_id or other.status != MemberStatus.CONNECTED:
                continue
            known = store.Intro.get_or_none(
                (store.Intro.group_id == self.group_id)
                & (store.Intro.re_member_id == other.member_id)
                & (store.Intro.to_member_id == new.member_id)
            )
            if known is not None:
                continue
            store.Intro.create(
                group_id=self.group_id,
                re_member_id=other.member_id,
                to_member_id=new.member_id,
                status=IntroStatus.INTRO_SENT,
            )
            unit.send(other.conn_id, XGrpMemNew(self._info(new)))
            unit.send(new.conn_id, XGrpMemIntro(self._info(other)))

    def _forward_waiting(self, unit: Unit, member: Any) -> None:
        """The host: invitations for `member` that came while it was not connected."""
        store = self.store
        waiting = store.Intro.select().where(
            (store.Intro.group_id == self.group_id)
            & (store.Intro.re_member_id == member.member_id)
            & (store.Intro.status == IntroStatus.INV_RECEIVED)
        )
        for intro in list(waiting):
            new = self._member(intro.to_member_id)
            if new is not None:
                unit.send(member.conn_id, XGrpMemFwd(self._info(new), intro.link))
                intro.status = IntroStatus.FWD_SENT
                intro.save()

    def _flush_pending(self, unit: Unit, member: Any) -> None:
        store = self.store
        rows = list(
            store.Pending.select()
            .where(
                (store.Pending.group_id == self.group_id)
                & (store.Pending.member_id == member.member_id)
            )
            .order_by(store.Pending.id)
        )
        for row in rows:
            message = decode_chat_message(bytes(row.body))
            unit.send(member.conn_id, message)
            row.delete_instance()

    # ------------------------------------------------------------------ completions

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        call = decode_call(bytes(command.payload))
        group = self._group()
        member = self._member_on(command.conn_id)
        if group is None or member is None:
            return
        if isinstance(event, aev.Err):
            self._failed(unit, group, member, command, event.code)
            return
        match CommandFunction(command.function), event:
            case CommandFunction.ALLOW_MEMBER | CommandFunction.ALLOW_INTRO, aev.Ok():
                self._connect(unit, group, member)
            case CommandFunction.CREATE_INTRO_INV, aev.Inv(link=link):
                member.status = MemberStatus.INTRO_INV
                member.save()
                host = self._member(group.host_member_id)
                if host is not None and host.conn_id is not None:
                    unit.send(host.conn_id, XGrpMemInv(call.member_id or member.member_id, link))
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
        group, sender = self._group(), self._member_on(conn_id)
        if group is None or sender is None:
            raise refuse("a group message on a connection of no member")
        from_host = self._from_host(group, sender)
        match message:
            case XMsgNew():
                self._received(unit, sender.member_id, message)
            case XGrpMemNew(member=member) if from_host:
                self._announced(member)
            case XGrpMemIntro(member=member) if from_host:
                self._introduced(unit, member)
            case XGrpMemInv(member_id=member_id, link=link) if self._is_host(group):
                self._intro_invitation(unit, sender, member_id, link)
            case XGrpMemFwd(member=member, link=link) if from_host:
                self._forwarded(unit, group, member, link)
            case XGrpMemCon(member_id=member_id) if self._is_host(group):
                self._intro_done(sender.member_id, member_id)
            case XGrpLeave():
                sender.status = MemberStatus.LEFT
                sender.save()
            case XGrpDel() if from_host:
                group.status = GroupStatus.DELETED
                group.save()
            case _:
                raise refuse(f"{type(message).__name__} from {sender.member_id} is not expected")

    def _received(self, unit: Unit, author: str, message: XMsgNew) -> None:
        store = self.store
        known = store.Message.get_or_none(
            (store.Message.chat_kind == "group")
            & (store.Message.chat_id == self.group_id)
            & (store.Message.msg_id == message.msg_id)
        )
        if known is not None:
            return
        store.Message.create(
            chat_kind="group",
            chat_id=self.group_id,
            msg_id=message.msg_id,
            author=author,
            text=message.text,
            sent=False,
            created_at=time.time(),
        )
        unit.tell(cev.NewMessage("group", self.group_id, message.msg_id, author, message.text))

    def _announced(self, info: MemberInfo) -> None:
        if self._member(info.member_id) is None and info.member_id != self._group().member_id:
            self._new_member(info, MemberStatus.ANNOUNCED)

    def _introduced(self, unit: Unit, info: MemberInfo) -> None:
        """We are the new member: make an invitation for the member the host introduced."""
        if self._member(info.member_id) is not None or info.member_id == self._group().member_id:
            return  # introduced before (a copy)
        conn_id = _new_conn_id()
        self._new_member(info, MemberStatus.INTRODUCED, conn_id)
        call = AgentCall(AgentCallKind.CREATE, member_id=info.member_id)
        unit.command(CommandFunction.CREATE_INTRO_INV, conn_id, call)

    def _intro_invitation(self, unit: Unit, sender: Any, member_id: str, link: str) -> None:
        """The host: the new member (`sender`) made its invitation for `member_id`."""
        store = self.store
        intro = store.Intro.get_or_none(
            (store.Intro.group_id == self.group_id)
            & (store.Intro.re_member_id == member_id)
            & (store.Intro.to_member_id == sender.member_id)
        )
        if intro is None:
            raise refuse(f"no introduction of {member_id} to {sender.member_id}")
        if intro.status != IntroStatus.INTRO_SENT:
            return  # answered before
        intro.status, intro.link = IntroStatus.INV_RECEIVED, link
        other = self._member(member_id)
        if other is not None and other.status == MemberStatus.CONNECTED:
            unit.send(other.conn_id, XGrpMemFwd(self._info(sender), link))
            intro.status = IntroStatus.FWD_SENT
        intro.save()

    def _forwarded(self, unit: Unit, group: Any, info: MemberInfo, link: str) -> None:
        """An existing member: the new member `info` invites us over `link`: join it."""
        member = self._member(info.member_id)
        if member is not None and member.conn_id is not None:
            return  # joined before (a copy)
        if info.member_id == group.member_id:
            raise refuse("a forwarded invitation from ourselves")
        conn_id = _new_conn_id()
        if member is None:
            member = self._new_member(info, MemberStatus.CONNECTING, conn_id)
        else:
            member.status, member.conn_id = MemberStatus.CONNECTING, conn_id
            member.save()
            self.store.own_connection(conn_id, str(self.owner))
        mine = encode_chat_message(XGrpMemInfo(self.group_id, self._me(group)))
        call = AgentCall(AgentCallKind.JOIN, link=link, info=mine, member_id=info.member_id)
        unit.command(CommandFunction.JOIN_INTRO, conn_id, call)

    def _intro_done(self, reporter: str, member_id: str) -> None:
        """The host: `reporter` is connected to `member_id`; that introduction is done."""
        store = self.store
        known = False
        for re_id, to_id in ((reporter, member_id), (member_id, reporter)):
            intro = store.Intro.get_or_none(
                (store.Intro.group_id == self.group_id)
                & (store.Intro.re_member_id == re_id)
                & (store.Intro.to_member_id == to_id)
            )
            if intro is None:
                continue
            known = True
            if intro.status != IntroStatus.CONNECTED:
                intro.status = IntroStatus.CONNECTED
                intro.save()
        if not known:
            raise refuse(f"no introduction of {reporter} and {member_id}")

    def _new_member(
        self, info: MemberInfo, status: MemberStatus, conn_id: str | None = None
    ) -> Any:
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
            self.store.own_connection(conn_id, str(self.owner))
        return member


def _decode(info: bytes) -> ChatMessage | None:
    """A peer's join/allow info; None if it is not a chat message (ignored like garbage)."""
    try:
        return decode_chat_message(info)
    except ChatWireError:
        return None
