"""`Relays`: a relay group at its owner and at its members — the relays, our connection to
each, the group link, and the group's messages through the relays.

Theory of operation
-------------------
In a relay group nobody connects to anybody but the group's relays (relay.py is the relay's
side). The owner O creates the group with the contact addresses of its relays; a joiner J
reads the group link and joins every relay link it lists. Each step is an async agent
command stored as a chat command of the group (owner.py) — one relay row each
(`ChatGroupRelay`), so every relay's join has its own persisted continuation and goes on by
itself after a crash, a restart or an outage, whatever the other relays do::

    O create_relay_group   the group (kind relay), per relay JOIN_RELAY: join its address
                           with x.grp.relay.inv; CREATE_GROUP_LINK: the contact address
                           behind the group link (nobody joins it: only its data is read)
    J prepare_group        (sync, at the edge) the group link's data read; the group PREPARED
    J connect_prepared_    (sync, at the edge) every relay link's data read, each naming the
      group                group, or the call raises and nothing changes; then per relay
                           JOIN_RELAY: join its relay link with x.grp.mem.info(J)
    on JOINED              the relay took our join (J: the first makes the group JOINED,
                           GROUP_JOINED: what J sends from now on waits for a relay)
    on CONF                the relay accepted: ALLOW_RELAY
    on OK of the allow     connected (as in group.py, the allow's OK makes the connection;
      (or CON)             CON then changes nothing); J: the first makes the group
                           CONNECTED (GROUP_CONNECTED); what waited for this relay is sent
    O on x.grp.relay.acpt  VERIFY_RELAY_LINK: read the relay link's data
    O on LDATA             it names our group: the relay is ACTIVE and the group link's data
                           (SET_GROUP_LINK) lists every active relay; on LINK,
                           GROUP_LINK_READY (again each time the list grows)
    on ERR                 that relay FAILED; J: once every relay failed, the group FAILED
                           (GROUP_JOIN_FAILED)
    O add_group_relay      one more relay, invited as those at the start; listed once verified
    O remove_group_relay   the relay REMOVED: x.grp.relay.rem to it, DELETE_RELAY_CONN our
                           connection to it, and the group link's data published again
                           without it (joiners from then on do not join it)
    J on x.grp.relay.rem   the relay passed on its removal: REMOVED, our connection to it
                           deleted; the other relays serve us still
    leave_group            x.grp.leave to every relay connected; every relay LEFT and our
                           connection to it deleted (after that message); the group LEFT, and
                           what relays send from then on changes nothing
    O delete_group         the same with x.grp.del, the group DELETED, and the group link's
                           address deleted (DELETE_GROUP_LINK): nobody reads it any more
    J on x.grp.del.fwd     a relay passed on the owner's deletion: as for a leave, without a
                           message; the group DELETED (GROUP_DELETED, once: the copies other
                           relays pass on come to an ended group, which drops them)

A group message (ours) goes to every relay connected, and waits (`ChatPending`, by the
relay's `relay_id`) for every relay not connected yet, sent in order once it is. A message
from the group comes from a relay as `x.grp.msg.fwd` (its author's member id and the message
unchanged): each relay forwards it, and the copies after the first are dropped by its shared
id (members.py). Each relay sends an author's messages in the order it got them, and the
author sends each to every relay in order, so the first copy of each is in the author's
order too.

What a relay says is checked against the rows: only the owner takes a relay acceptance, and
only from a relay it invited, for this group; a forward must not claim to be ours; a deletion
passed on must be the owner's. Anything else is refused (`ChatRefused`) and changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.agent import events as aev
from actors.chat import events as cev
from actors.chat.members import Members, ended_error, new_conn_id
from actors.chat.model import (
    ENDED_GROUPS,
    RELAYS_CONNECTED,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    GroupKind,
    GroupStatus,
    RelayStatus,
    decode_call,
)
from actors.chat.owner import Unit, connection_gone, refuse
from protocol.chat import (
    ChatMessage,
    GroupLinkData,
    GroupProfile,
    GroupRole,
    RelayLinkData,
    XGrpDelFwd,
    XGrpMemInfo,
    XGrpMsgFwd,
    XGrpRelayAcpt,
    XGrpRelayInv,
    XGrpRelayRem,
    XMsgNew,
    decode_chat_message,
    decode_link_data,
    encode_chat_message,
    encode_link_data,
    new_member_id,
)
from protocol.errors import AgentError, ChatWireError

log = logging.getLogger(__name__)

RELAY_FUNCTIONS = frozenset(
    {
        CommandFunction.JOIN_RELAY,
        CommandFunction.ALLOW_RELAY,
        CommandFunction.VERIFY_RELAY_LINK,
        CommandFunction.CREATE_GROUP_LINK,
        CommandFunction.SET_GROUP_LINK,
        CommandFunction.DELETE_RELAY_CONN,
        CommandFunction.DELETE_GROUP_LINK,
    }
)
DELETES = (CommandFunction.DELETE_RELAY_CONN, CommandFunction.DELETE_GROUP_LINK)
# Relays that are no longer part of the group: nothing they say or complete changes it.
RELAYS_GONE = (RelayStatus.FAILED, RelayStatus.REMOVED, RelayStatus.LEFT)
# A member's group is functional from its first relay JOINED, until the group failed.
SENDING = (GroupStatus.JOINED, GroupStatus.CONNECTED)


# ---------------------------------------------------------------------- asks (to GroupActor)


class RelayGroupAsk:
    """An ask about a relay group: its `GroupActor` hands it to `Relays.asked` in a unit
    named `step` (the fault points of the crash tests), or reads `PreparedLink`."""

    __slots__ = ()
    step: ClassVar[str | None] = None


@dataclass(frozen=True, slots=True)
class CreateRelayGroup(RelayGroupAsk):
    """The owner: a relay group served by the relays of these contact addresses."""

    profile: GroupProfile
    relays: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddGroupRelay(RelayGroupAsk):
    """The owner: one more relay (its relay address) for a relay group."""

    address: str
    step: ClassVar[str | None] = "add_group_relay"


@dataclass(frozen=True, slots=True)
class RemoveGroupRelay(RelayGroupAsk):
    """The owner: a relay (by its relay address) no longer serves new joiners."""

    address: str
    step: ClassVar[str | None] = "remove_group_relay"


@dataclass(frozen=True, slots=True)
class PrepareGroup(RelayGroupAsk):
    """A joiner: the group as its link says (read at the edge), not joined."""

    group_link: str
    data: GroupLinkData


@dataclass(frozen=True, slots=True)
class PreparedLink(RelayGroupAsk):
    """Ask: the group link of a prepared group, None once it is connecting (or more)."""


@dataclass(frozen=True, slots=True)
class ConnectPrepared(RelayGroupAsk):
    """A joiner: join every relay — (relay link, the address link it resolved to), read at
    the edge — with `incognito_name` shown instead of our profile, if given."""

    targets: tuple[tuple[str, str], ...]
    incognito_name: str | None = None
    step: ClassVar[str | None] = "connect_prepared_group"


class Relays:
    """The relays of one relay group (see the module docstring); every method runs inside
    the caller's unit."""

    def __init__(self, members: Members) -> None:
        self.members = members
        self.store = members.store
        self.group_id = members.group_id

    # ------------------------------------------------------------------ reads

    def all(self) -> list[Any]:
        store = self.store
        rows = store.GroupRelay.select().where(store.GroupRelay.group_id == self.group_id)
        return list(rows.order_by(store.GroupRelay.id))

    def on(self, conn_id: str) -> Any:
        return self.store.group_relay_on(self.group_id, conn_id)

    def active(self, group: Any) -> int:
        """Relays that do their part: connected (a member), verified (the owner)."""
        done = (RelayStatus.ACTIVE,) if Members.is_host(group) else RELAYS_CONNECTED
        return sum(1 for relay in self.all() if relay.status in done)

    # ------------------------------------------------------------------ asks

    def asked(self, unit: Unit, group: Any, ask: RelayGroupAsk) -> Any:
        """A relay group's ask (`group` is its row, None if there is none yet)."""
        match ask:
            case CreateRelayGroup(profile=profile, relays=relays):
                if group is None:
                    group = self.members.create_owned(
                        profile, kind=GroupKind.RELAY, link_conn_id=new_conn_id()
                    )
                    self.invite(unit, group, list(relays))
                return self.group_id
            case PrepareGroup(group_link=group_link, data=data):
                if group is None:
                    self.store.Group.create(
                        group_id=self.group_id,
                        name=data.group.name,
                        description=data.group.description,
                        status=GroupStatus.PREPARED,
                        member_id=new_member_id(),
                        role=GroupRole.MEMBER.value,
                        host_member_id=data.owner.member_id,
                        kind=GroupKind.RELAY,
                        group_link=group_link,
                        created_at=time.time(),
                    )
                return self.group_id
            case ConnectPrepared(targets=targets, incognito_name=incognito_name):
                group = self._relay_group(group)
                if group.status == GroupStatus.PREPARED:  # else connecting already, or failed
                    group.status, group.incognito_name = GroupStatus.JOINING, incognito_name
                    group.save()
                    self.connect(unit, group, list(targets))
                return self.group_id
            case AddGroupRelay(address=address):
                self.add(unit, self._ours(group), address)
            case RemoveGroupRelay(address=address):
                self.remove(unit, self._ours(group), address)
        return None

    def prepared_link(self, group: Any) -> str | None:
        """The group link of a prepared group, None once it is connecting (or more)."""
        group = self._relay_group(group)
        return group.group_link if group.status == GroupStatus.PREPARED else None

    def _relay_group(self, group: Any) -> Any:
        if group is None or group.kind != GroupKind.RELAY:
            raise AgentError(f"no relay group {self.group_id!r}", code="NO_GROUP")
        return group

    def _ours(self, group: Any) -> Any:
        if group is None or group.kind != GroupKind.RELAY or not Members.is_host(group):
            raise AgentError("not a relay group of ours", code="PROHIBITED")
        return group

    # ------------------------------------------------------------------ starting

    def invite(self, unit: Unit, group: Any, addresses: list[str]) -> None:
        """The owner: join each relay's address with our invitation; make the group link."""
        for address in addresses:
            self._invite(unit, group, address)
        call = AgentCall(AgentCallKind.CREATE_ADDRESS)
        unit.command(CommandFunction.CREATE_GROUP_LINK, group.link_conn_id, call)

    def _invite(self, unit: Unit, group: Any, address: str) -> None:
        invitation = XGrpRelayInv(self.group_id, group.name, self.members.me(group))
        self._join(unit, address, encode_chat_message(invitation), address=address)

    def add(self, unit: Unit, group: Any, address: str) -> None:
        """The owner: one more relay, invited as at the start; the group link lists it once
        its relay link is verified (GROUP_LINK_READY again, with one relay more)."""
        if self._serving(address) is not None:
            raise AgentError("that relay already serves the group", code="DUPLICATE")
        self._invite(unit, group, address)

    def remove(self, unit: Unit, group: Any, address: str) -> None:
        """The owner: the relay of `address` is removed — told so (x.grp.relay.rem: it
        passes that on to its members, which drop it, and serves the group no more), no
        longer listed in the group link (published again without it), our connection to it
        deleted. The last relay the link lists cannot be removed before another is
        verified: the link would list none, and nobody could join."""
        relay = self._serving(address)
        if relay is None:
            raise AgentError("no relay of the group has that address", code="NO_RELAY")
        others = [r for r in self.all() if r.id != relay.id and r.status not in RELAYS_GONE]
        listed = relay.status == RelayStatus.ACTIVE
        if listed and not any(r.status == RelayStatus.ACTIVE for r in others):
            raise AgentError(
                "the group link would list no relay: add another first", code="PROHIBITED"
            )
        if relay.status in RELAYS_CONNECTED:
            unit.send(relay.conn_id, XGrpRelayRem())  # it tells its members, and stops
        self._drop(unit, relay, RelayStatus.REMOVED)
        if listed:
            self._publish(unit, group)

    def end(self, unit: Unit, group: Any, status: GroupStatus, last: ChatMessage | None) -> None:
        """The group ends for us (`status`: we left, or its owner deleted it): `last` to every
        relay connected, then every relay LEFT and our connection to it deleted (after that
        message: owner.py), and every kept message dropped. A join still on its way is
        deleted too: what it completes later is that of a relay that is gone."""
        for relay in self.all():
            if relay.status in RELAYS_GONE:
                continue
            if last is not None and relay.status in RELAYS_CONNECTED:
                unit.send(relay.conn_id, last)
            self._drop(unit, relay, RelayStatus.LEFT)
        if status == GroupStatus.DELETED and Members.is_host(group):
            # nobody is to read a deleted group's link any more
            call = AgentCall(AgentCallKind.DELETE)
            unit.command(CommandFunction.DELETE_GROUP_LINK, group.link_conn_id, call)
        group.status = status
        group.save()

    def _drop(self, unit: Unit, relay: Any, status: RelayStatus) -> None:
        """`relay` is gone (`status`): what was kept for it dropped, our connection to it
        deleted (after what was sent to it: owner.py)."""
        relay.status = status
        relay.save()
        self.store.drop_pending(self.group_id, relay.relay_id)
        call = AgentCall(AgentCallKind.DELETE)
        unit.command(CommandFunction.DELETE_RELAY_CONN, relay.conn_id, call)

    def _serving(self, address: str) -> Any:
        """The relay of `address` that is not gone (failed or removed), if any."""
        return next(
            (r for r in self.all() if r.address == address and r.status not in RELAYS_GONE),
            None,
        )

    def connect(self, unit: Unit, group: Any, targets: list[tuple[str, str]]) -> None:
        """A joiner: join each relay link — (its short link, the address link behind it)."""
        info = encode_chat_message(XGrpMemInfo(self.group_id, self.members.me(group)))
        for relay_link, address in targets:
            self._join(unit, address, info, address=address, relay_link=relay_link)

    def _join(
        self, unit: Unit, link: str, info: bytes, *, address: str, relay_link: str | None = None
    ) -> None:
        conn_id = new_conn_id()
        self.store.GroupRelay.create(
            relay_id=new_member_id(),
            group_id=self.group_id,
            address=address,
            relay_link=relay_link,
            conn_id=conn_id,
            status=RelayStatus.JOINING,
            created_at=time.time(),
        )
        call = AgentCall(AgentCallKind.JOIN, link=link, info=info)
        unit.command(CommandFunction.JOIN_RELAY, conn_id, call)

    # ------------------------------------------------------------------ agent events

    def confirmed(self, unit: Unit, group: Any, relay: Any, conf_id: str) -> None:
        """CONF: the relay accepted our join; allowed once (a copy of CONF is not)."""
        if relay.status not in (RelayStatus.JOINING, RelayStatus.JOINED):
            return
        relay.status = RelayStatus.ALLOWING
        relay.save()
        info = encode_chat_message(XGrpMemInfo(self.group_id, self.members.me(group)))
        call = AgentCall(AgentCallKind.ALLOW, conf_id=conf_id, info=info)
        unit.command(CommandFunction.ALLOW_RELAY, relay.conn_id, call)

    def connected(self, unit: Unit, group: Any, relay: Any) -> None:
        """Our connection to `relay` is ready (the OK of our allow, or CON)."""
        if relay.status not in (RelayStatus.JOINING, RelayStatus.JOINED, RelayStatus.ALLOWING):
            return
        relay.status = RelayStatus.CONNECTED
        relay.save()
        self._flush(unit, relay)
        if group.status in (GroupStatus.JOINING, GroupStatus.JOINED):
            if group.status == GroupStatus.JOINING:
                unit.tell(cev.GroupJoined(self.group_id))
            group.status = GroupStatus.CONNECTED
            group.save()
            unit.tell(cev.GroupConnected(self.group_id))

    # ------------------------------------------------------------------ completions

    def completed(self, unit: Unit, group: Any, command: Any, event: Any) -> None:
        function = CommandFunction(command.function)
        if function in DELETES:
            if connection_gone(event):
                self.store.disown_connection(command.conn_id)
            return
        if group.status in ENDED_GROUPS:
            return  # a step that completed after the group ended for us: its conn is deleted
        if function in (CommandFunction.CREATE_GROUP_LINK, CommandFunction.SET_GROUP_LINK):
            self._group_link_completed(unit, group, command, event)
            return
        relay = self.on(command.conn_id)
        if relay is None or relay.status in RELAYS_GONE:
            return
        match function, event:
            case _, aev.Err(code=code):
                self._failed(unit, group, relay, code)
            case CommandFunction.JOIN_RELAY, aev.Joined():
                if relay.status == RelayStatus.JOINING:
                    relay.status = RelayStatus.JOINED
                    relay.save()
                if group.status == GroupStatus.JOINING:
                    group.status = GroupStatus.JOINED
                    group.save()
                    unit.tell(cev.GroupJoined(self.group_id))
            case CommandFunction.ALLOW_RELAY, aev.Ok():
                self.connected(unit, group, relay)
            case CommandFunction.VERIFY_RELAY_LINK, aev.LData(user_data=user_data):
                self._verified(unit, group, relay, user_data)
            case _:
                pass

    def _failed(self, unit: Unit, group: Any, relay: Any, code: str) -> None:
        relay.status = RelayStatus.FAILED
        relay.save()
        log.warning(
            "a relay of the group failed",
            extra={"group": self.group_id, "relay": relay.relay_id, "code": code},
        )
        self.store.drop_pending(self.group_id, relay.relay_id)
        joining = (GroupStatus.JOINING, GroupStatus.JOINED)
        if group.status in joining and all(r.status == RelayStatus.FAILED for r in self.all()):
            group.status = GroupStatus.FAILED
            group.save()
            unit.tell(cev.GroupJoinFailed(self.group_id, code))

    def _verified(self, unit: Unit, group: Any, relay: Any, user_data: bytes) -> None:
        """The owner read a relay link: it must name this group."""
        try:
            data = decode_link_data(user_data)
        except ChatWireError:
            data = None
        if not isinstance(data, RelayLinkData) or data.group_id != self.group_id:
            self._failed(unit, group, relay, "RELAY_LINK")
            return
        if relay.status == RelayStatus.VERIFYING:
            relay.status = RelayStatus.ACTIVE
            relay.save()
            self._publish(unit, group)

    def _group_link_completed(self, unit: Unit, group: Any, command: Any, event: Any) -> None:
        match event:
            case aev.Inv():
                self._publish(unit, group)  # relays verified before the address was made
            case aev.Link(short_link=short_link):
                data = decode_link_data(decode_call(bytes(command.payload)).info)
                assert isinstance(data, GroupLinkData)
                group.group_link = short_link
                group.save()
                unit.tell(cev.GroupLinkReady(self.group_id, short_link, len(data.relays)))
            case aev.Err(code=code):
                log.warning(
                    "the group link was not made", extra={"group": self.group_id, "code": code}
                )

    def _publish(self, unit: Unit, group: Any) -> None:
        """The owner: the group link's data lists every active relay (once the contact address
        behind it is made). Each publish stores the whole list, so the last one wins."""
        relays = [r.relay_link for r in self.all() if r.status == RelayStatus.ACTIVE]
        creating = self.store.pending_command_of(
            group.link_conn_id, CommandFunction.CREATE_GROUP_LINK
        )
        if not relays or creating is not None:
            return
        profile = GroupProfile(group.name, group.description)
        data = GroupLinkData(self.group_id, profile, self.members.me(group), relays)
        call = AgentCall(AgentCallKind.SET_LINK_DATA, info=encode_link_data(data))
        unit.command(CommandFunction.SET_GROUP_LINK, group.link_conn_id, call)

    # ------------------------------------------------------------------ chat messages

    def message(self, unit: Unit, group: Any, relay: Any, message: ChatMessage) -> None:
        """A chat message from one of our relays."""
        if group.status in ENDED_GROUPS:
            return  # sent before the relay heard that the group ended for us: nothing to do
        if relay.status not in RELAYS_CONNECTED:
            raise refuse(f"{type(message).__name__} from a relay that is {relay.status}")
        match message:
            case XGrpMsgFwd(author_id=author_id, message=forwarded):
                if author_id == group.member_id:
                    raise refuse("a relay forwards a message as ours")
                self.members.received(unit, author_id, forwarded)
            case XGrpRelayRem():
                if Members.is_host(group):
                    raise refuse("a relay removing itself at the owner, who removes relays")
                self._drop(unit, relay, RelayStatus.REMOVED)  # the others serve us still
            case XGrpDelFwd(author_id=author_id):
                if author_id != group.host_member_id:
                    raise refuse(f"a deletion passed on from {author_id}, not the owner")
                self.end(unit, group, GroupStatus.DELETED, None)
                unit.tell(cev.GroupDeleted(self.group_id, author_id))
            case XGrpRelayAcpt(group_id=group_id, relay_link=relay_link):
                if not Members.is_host(group):
                    raise refuse("a relay acceptance at a member that is not the owner")
                if group_id != self.group_id:
                    raise refuse(f"a relay acceptance for group {group_id}, not ours")
                if relay.status != RelayStatus.CONNECTED:
                    return  # a copy: verifying or verified already
                relay.relay_link, relay.status = relay_link, RelayStatus.VERIFYING
                relay.save()
                call = AgentCall(AgentCallKind.GET_LINK_DATA, link=relay_link)
                unit.command(CommandFunction.VERIFY_RELAY_LINK, relay.conn_id, call)
            case _:
                raise refuse(f"{type(message).__name__} from a relay is not expected")

    # ------------------------------------------------------------------ our messages

    def send(self, unit: Unit, group: Any, msg_id: str, text: str) -> str:
        """Our group message: to every relay connected, kept for those not connected yet."""
        if group.status in ENDED_GROUPS:
            raise ended_error(group)
        if group.status not in SENDING:
            raise AgentError(f"the group is {group.status}: not joined (yet)", code="PROHIBITED")
        message = XMsgNew(msg_id, text)
        self.store.add_message("group", self.group_id, msg_id, "", text, sent=True)
        body = encode_chat_message(message)
        for relay in self.all():
            if relay.status in RELAYS_CONNECTED:
                unit.send(relay.conn_id, message)
            elif relay.status != RelayStatus.FAILED:
                self.store.Pending.create(
                    group_id=self.group_id, member_id=relay.relay_id, body=body
                )
        return msg_id

    def _flush(self, unit: Unit, relay: Any) -> None:
        for body in self.store.take_pending(self.group_id, relay.relay_id):
            unit.send(relay.conn_id, decode_chat_message(body))
