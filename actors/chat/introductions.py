"""`Introductions`: the steps of a member joining a group, on every side of it.

The joining protocol of group.py's docstring (and protocol/chat.py's table), one method per
step: the host's allow of the invitee, its introductions of the new member to every
connected member and the forwarding of the new member's invitations; the new member's
invitations for the members introduced to it; an existing member's join of the invitation
forwarded to it; and the connection of any member made, by CON or by the OK of our allow.

Each step runs inside the unit its `GroupActor` opened for the event, stores what it did and
queues its effects on that unit (chat commands, chat messages, events for the user). Each is
idempotent by the stored state: a member already known is not introduced again, an intro
already answered is not answered again, a member that has a connection is not joined again.
"""

from __future__ import annotations

from typing import Any

from actors.chat import events as cev
from actors.chat.members import Members, new_conn_id
from actors.chat.model import (
    ENDED_MEMBERS,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    GroupStatus,
    IntroStatus,
    MemberStatus,
)
from actors.chat.owner import Unit, refuse
from protocol.chat import (
    ChatMessage,
    MemberInfo,
    XGrpAcpt,
    XGrpMemCon,
    XGrpMemFwd,
    XGrpMemInfo,
    XGrpMemIntro,
    XGrpMemInv,
    XGrpMemNew,
    encode_chat_message,
)


class Introductions:
    """The joining steps of one group (see the module docstring)."""

    def __init__(self, members: Members) -> None:
        self.members = members
        self.store = members.store
        self.group_id = members.group_id

    # ------------------------------------------------------------------ agent events

    def confirmed(
        self, unit: Unit, conn_id: str, conf_id: str, message: ChatMessage | None
    ) -> None:
        """A peer joined a link we made: the host's member link, or our intro link."""
        group, member = self.members.group(), self.members.on(conn_id)
        if group is None or member is None:
            return
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
        mine = encode_chat_message(XGrpMemInfo(self.group_id, self.members.me(group)))
        call = AgentCall(AgentCallKind.ALLOW, conf_id=conf_id, info=mine)
        unit.command(function, conn_id, call)

    def peer_info(self, conn_id: str, message: ChatMessage | None) -> None:
        member = self.members.on(conn_id)
        if (
            member is not None
            and isinstance(message, XGrpMemInfo)
            and message.member.member_id == member.member_id
        ):
            member.display_name = message.member.profile.display_name
            member.full_name = message.member.profile.full_name
            member.save()

    def connect(self, unit: Unit, group: Any, member: Any) -> None:
        """`member`'s connection is ready: CON, or the OK of our allow (the agent makes the
        connection ready in the transaction that completes the allow, and tells CON after
        it: a crash between the two must not leave the member connecting)."""
        if member.status == MemberStatus.CONNECTED:
            return
        member.status = MemberStatus.CONNECTED
        member.save()
        unit.tell(cev.MemberConnected(self.group_id, member.member_id, member.display_name))
        if Members.from_host(group, member) and group.status == GroupStatus.JOINING:
            group.status = GroupStatus.CONNECTED
            group.save()
            unit.tell(cev.GroupConnected(self.group_id))
        elif Members.is_host(group):
            self._introduce(unit, member)
            self._forward_waiting(unit, member)
        else:
            host_conn = self.members.host_conn(group)
            if host_conn is not None:
                unit.send(host_conn, XGrpMemCon(member.member_id))
        self.members.flush_pending(unit, member)

    def _introduce(self, unit: Unit, new: Any) -> None:
        """The host: `new` is connected; introduce it to every connected member."""
        store = self.store
        for other in self.members.all():
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
            unit.send(other.conn_id, XGrpMemNew(Members.info(new)))
            unit.send(new.conn_id, XGrpMemIntro(Members.info(other)))

    def _forward_waiting(self, unit: Unit, member: Any) -> None:
        """The host: invitations for `member` that came while it was not connected."""
        store = self.store
        waiting = store.Intro.select().where(
            (store.Intro.group_id == self.group_id)
            & (store.Intro.re_member_id == member.member_id)
            & (store.Intro.status == IntroStatus.INV_RECEIVED)
        )
        for intro in list(waiting):
            new = self.members.member(intro.to_member_id)
            if new is not None:
                unit.send(member.conn_id, XGrpMemFwd(Members.info(new), intro.link))
                intro.status = IntroStatus.FWD_SENT
                intro.save()

    # ------------------------------------------------------------------ completions

    def invitation_made(
        self, unit: Unit, group: Any, member: Any, call: AgentCall, link: str
    ) -> None:
        """The new member: the INV of our invitation for `member`: to the host."""
        member.status = MemberStatus.INTRO_INV
        member.save()
        host_conn = self.members.host_conn(group)
        if host_conn is not None:
            unit.send(host_conn, XGrpMemInv(call.member_id or member.member_id, link))

    # ------------------------------------------------------------------ chat messages

    def announced(self, info: MemberInfo) -> None:
        """An existing member: the host says `info` joined; its invitation will follow."""
        group = self.members.group()
        if self.members.member(info.member_id) is None and info.member_id != group.member_id:
            self.members.add(info, MemberStatus.ANNOUNCED)

    def introduced(self, unit: Unit, info: MemberInfo) -> None:
        """We are the new member: make an invitation for the member the host introduced."""
        group = self.members.group()
        if self.members.member(info.member_id) is not None or info.member_id == group.member_id:
            return  # introduced before (a copy)
        conn_id = new_conn_id()
        self.members.add(info, MemberStatus.INTRODUCED, conn_id)
        call = AgentCall(AgentCallKind.CREATE, member_id=info.member_id)
        unit.command(CommandFunction.CREATE_INTRO_INV, conn_id, call)

    def intro_invitation(self, unit: Unit, sender: Any, member_id: str, link: str) -> None:
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
        other = self.members.member(member_id)
        if other is not None and other.status == MemberStatus.CONNECTED:
            unit.send(other.conn_id, XGrpMemFwd(Members.info(sender), link))
            intro.status = IntroStatus.FWD_SENT
        intro.save()

    def forwarded(self, unit: Unit, group: Any, info: MemberInfo, link: str) -> None:
        """An existing member: the new member `info` invites us over `link`: join it."""
        member = self.members.member(info.member_id)
        if member is not None and member.conn_id is not None:
            return  # joined before (a copy)
        if member is not None and member.status in ENDED_MEMBERS:
            return  # it left or was removed before its invitation came
        if info.member_id == group.member_id:
            raise refuse("a forwarded invitation from ourselves")
        conn_id = new_conn_id()
        if member is None:
            member = self.members.add(info, MemberStatus.CONNECTING, conn_id)
        else:
            member.status, member.conn_id = MemberStatus.CONNECTING, conn_id
            member.save()
            self.store.own_connection(conn_id, self.members.owner)
        mine = encode_chat_message(XGrpMemInfo(self.group_id, self.members.me(group)))
        call = AgentCall(AgentCallKind.JOIN, link=link, info=mine, member_id=info.member_id)
        unit.command(CommandFunction.JOIN_INTRO, conn_id, call)

    def intro_done(self, reporter: str, member_id: str) -> None:
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
