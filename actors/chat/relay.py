"""`RelayGroupActor`: at a chat relay, one group it serves — its relay link, its roster, and
the forwarding of its messages.

Theory of operation
-------------------
A chat relay is a chat client with a *relay address* (`ChatClient.create_relay_address`): a
contact address that takes relay invitations instead of contacts. An owner O joins it with
`x.grp.relay.inv` as its join info; the relay R answers, each step an async agent command
stored as a chat command (owner.py) and continued here, so that it goes on after any crash::

    R's address on REQ       the served group, O admitted to its roster
                             (ACCEPT_RELAY_MEMBER), the relay link's contact address
                             created (CREATE_RELAY_LINK), in one unit (roster.py)
    on INV of that address   SET_RELAY_LINK: its short link's data is RelayLinkData(group)
    on LINK                  the relay link is ready (LINKED)
    on CON of O's conn       O connected
    once both                x.grp.relay.acpt(group, relay link) to O (ACTIVE)
    on REQ on the relay      a joiner: its join info is x.grp.mem.info(group, member);
      link                   admitted to the roster (ACCEPT_RELAY_MEMBER)
    on CON of its conn       connected: the forwards kept for it are sent (roster.py)
    on x.msg.new from a      forwarded to every other member of the roster, O included, as
      roster member          x.grp.msg.fwd(author's member id, the message unchanged)
    on x.grp.leave from a    the member LEFT: nothing more forwarded to it, what was kept
      roster member          for it dropped, our connection to it deleted (DELETE_SERVED_CONN)
    on x.grp.del from O      x.grp.del.fwd to every other member connected, then every member
                             LEFT as on a leave, the relay link's address deleted, the served
                             group DELETED: what comes for it from then on changes nothing
    on x.grp.relay.rem       O removed us: the same, with x.grp.relay.rem to the others, and
      from O                 the served group REMOVED

A relay serving many groups holds one virtual actor per group, activated by the first event
of one of its connections and passivated when idle, so what a relay keeps live is bounded by
the kernel's cap, not by the groups it serves. The relay trusts the roster it made: a message
is forwarded only from a member it admitted, on that member's own connection; a forward, a
relay acceptance, a deletion or removal from anyone but the owner, or anything else but a
group message or a leave from a member is refused (`ChatRefused`).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.agent import events as aev
from actors.chat.model import (
    SERVED_ENDED,
    WAITING_ROSTER,
    WAITING_SERVED,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    OwnerKind,
    RosterStatus,
    ServedStatus,
)
from actors.chat.owner import OwnerActor, Unit, connection_gone, refuse
from actors.chat.roster import Roster
from protocol.chat import (
    ChatMessage,
    RelayLinkData,
    XGrpDel,
    XGrpLeave,
    XGrpMemInfo,
    XGrpRelayAcpt,
    XGrpRelayRem,
    XMsgNew,
    decode_chat_message,
    encode_link_data,
)
from protocol.errors import ChatWireError

log = logging.getLogger(__name__)


class RelayGroupActor(OwnerActor):
    """The owner, at a relay, of one served group (see the module docstring)."""

    kind = "relay-group"
    owner_kind = OwnerKind.RELAY_GROUP

    def load(self) -> None:
        self.roster = Roster(self.services, self.ctx.key)

    def waiting(self) -> list[str]:
        served = self.roster.served()
        if served is None:
            return []
        waiting = [m.conn_id for m in self.roster.all() if m.status in WAITING_ROSTER]
        if served.status in WAITING_SERVED:
            waiting.append(served.link_conn_id)
        return waiting

    # ------------------------------------------------------------------ completions

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        served = self.roster.served()
        if served is None:
            return
        function = CommandFunction(command.function)
        if served.status in SERVED_ENDED and function is not CommandFunction.DELETE_SERVED_CONN:
            return  # a step that completed after we stopped serving: its connection is deleted
        match function, event:
            case CommandFunction.CREATE_RELAY_LINK, aev.Inv():
                data = encode_link_data(RelayLinkData(served.group_id))
                call = AgentCall(AgentCallKind.SET_LINK_DATA, info=data)
                unit.command(CommandFunction.SET_RELAY_LINK, served.link_conn_id, call)
            case CommandFunction.SET_RELAY_LINK, aev.Link(short_link=short_link):
                if served.status == ServedStatus.LINKING:
                    served.relay_link, served.status = short_link, ServedStatus.LINKED
                    served.save()
                    self._announce(unit, served)
            case CommandFunction.CREATE_RELAY_LINK | CommandFunction.SET_RELAY_LINK, aev.Err():
                served.status = ServedStatus.FAILED
                served.save()
                log.warning(
                    "relay link not made", extra={"group": served.group_id, "code": event.code}
                )
            case CommandFunction.ACCEPT_RELAY_MEMBER, aev.Joined():
                member = self.roster.on(command.conn_id)
                if member is not None and member.status == RosterStatus.ACCEPTING:
                    member.status = RosterStatus.ACCEPTED
                    member.save()
            case CommandFunction.DELETE_SERVED_CONN, _ if connection_gone(event):
                self.store.disown_connection(command.conn_id)
            case CommandFunction.ACCEPT_RELAY_MEMBER, aev.Err():
                member = self.roster.on(command.conn_id)
                if member is not None:
                    member.status = RosterStatus.FAILED
                    member.save()
            case _:
                pass

    def _announce(self, unit: Unit, served: Any) -> None:
        """Tell the owner our relay link, once it is ready and the owner connected."""
        owner = self.roster.owner_row(served)
        ready = served.status == ServedStatus.LINKED
        if ready and owner is not None and owner.status == RosterStatus.CONNECTED:
            unit.send(owner.conn_id, XGrpRelayAcpt(served.group_id, served.relay_link))
            served.status = ServedStatus.ACTIVE
            served.save()

    # ------------------------------------------------------------------ agent events

    def on_agent_event(self, event: Any) -> None:
        match event:
            case aev.Req(conn_id=conn_id, inv_id=inv_id, info=info):
                with self.unit("REQ") as unit:
                    served = self.roster.served()
                    if served is None or conn_id != served.link_conn_id:
                        return
                    if served.status not in WAITING_SERVED:
                        return
                    joiner = _join_info(info)
                    if joiner is None or joiner.group_id != served.group_id:
                        log.warning("a request on a relay link without its group's join info")
                        return
                    self.roster.admit(unit, joiner.member, inv_id)
            case aev.Con(conn_id=conn_id):
                with self.unit("CON") as unit:
                    served, member = self.roster.served(), self.roster.on(conn_id)
                    if served is None or member is None:
                        return
                    if member.status in (RosterStatus.ACCEPTING, RosterStatus.ACCEPTED):
                        member.status = RosterStatus.CONNECTED
                        member.save()
                        self.roster.flush(unit, member)
                        self._announce(unit, served)

    # ------------------------------------------------------------------ chat messages

    def on_chat_message(self, unit: Unit, conn_id: str, message: ChatMessage) -> None:
        served, sender = self.roster.served(), self.roster.on(conn_id)
        if served is None or sender is None:
            raise refuse("a message on a relay connection of no roster member")
        if served.status in SERVED_ENDED:
            return  # sent before its author heard that we serve the group no more
        if sender.status not in (RosterStatus.ACCEPTED, RosterStatus.CONNECTED):
            raise refuse(f"{type(message).__name__} from {sender.member_id}, {sender.status}")
        match message:
            case XMsgNew():
                self.roster.forward(unit, sender, message)
            case XGrpLeave():
                self.roster.left(unit, sender)
            case XGrpDel() | XGrpRelayRem():
                self.roster.ended(unit, served, sender, message)
            case _:
                raise refuse(f"{type(message).__name__} is not for a relay")


def _join_info(info: bytes) -> XGrpMemInfo | None:
    try:
        message = decode_chat_message(info)
    except ChatWireError:
        return None
    return message if isinstance(message, XGrpMemInfo) else None
