"""`OwnerActor`: what every chat actor that owns agent connections does the same way.

Theory of operation
-------------------
A contact, a contact address and a group are each owned by one virtual actor. The owner
keeps its state in the chat's tables and changes it in *units*: one transaction that may
also store chat commands (async agent calls) and outbox rows (chat messages to send), whose
effects — the agent calls, the sends, the events to the user — happen only once the unit is
committed. So every continuation is written before it is acted on.

Agent events reach the owner of their connection (routed by the `ChatActor`):

* a completion of a chat command (its corr id is `chat-<command id>`) runs the command's
  continuation and marks the command done **in one unit**, and only then is the event
  acknowledged to the agent (`ack_command_event`); a completion of a command that is done
  already (the agent emits it again after a restart) is only acknowledged again;
* a user message is decoded as a chat message and handled in one unit that also records the
  agent message id as processed, then acknowledged (`ack_message`); a copy the agent hands out
  again is only acknowledged again. A message that cannot be decoded, or that the owner
  refuses (`ChatRefused`: an introduction for a group the peer is not in, a forged member id),
  changes nothing and is acknowledged, so it cannot stall the connection;
* anything else (a confirmation, the peer's info, CON) goes to the owner's `on_agent_event`.

Events for the user are stored in the unit too (`ChatNotice`) and told once it is committed.

An outbox row is handed to the agent as an *acknowledged* send, with the corr id stored in
the row: the agent stores the message and tells `OK` with that corr id, and the owner drops
the row before acknowledging the `OK`. The same corr id handed over again (after any crash, by
a reconcile) is sent once, so nothing is lost and nothing doubled. A refused send (`ERR`: the
connection cannot send, or is gone) drops the row too. The answers that arrive together (a
relay's forward of one message to every member is a burst of them) drop their rows in one
unit, a turn later (`_DropTaken`): a crash before it loses nothing, the rows are handed over
again and the agent answers again. A delete of a connection waits until no outbox row of that
connection is left, and the agent's delete then waits until what it took is delivered
(`wait_delivery`): a group's last message to a member (x.grp.leave …) reaches it before the
connection goes.

What was told to the user is forgotten a turn later: the rows of notices told are dropped in
the owner's next unit or next turn (`_Forget`, told to itself), not in the turn that told
them, so that a kill -9 right after a step leaves the row, and the next process tells it again.

On every activation, and when a server the owner uses comes back (`Reconcile`), the owner
hands the agent again what it may not have taken: every outbox row, then every pending
command (the agent is idempotent by corr id), the order a unit's own effects have.
A unit whose effects fail after its commit tells its owner to reconcile as well: an ask that
fails does not crash the actor (the asker gets the error), so no restart would. An
activation also tells the user the events a crashed one stored and may not have told.

What a crash loses. The agent keeps a completion until it is acknowledged and tells it again
when the connection is activated, but it tells CONF, REQ and CON once: again only when asked
(`Replay`). The kernel keeps a crashed activation's mailbox for the next one, so an actor
crash loses only the agent event being handled: the owner notes its connection (`crashed`)
and the next activation asks that connection to tell again. A process killed -9 loses
whatever was in flight: so the first activation of an owner in a process asks every
connection of it that waits for such an event (`waiting`, by status: `WAITING_MEMBERS` …) to
tell again, and the `ChatActor` activates those owners at boot. Never a connection whose
create, join or accept is still pending here: the agent may not have it yet, and a Replay
would activate it as missing (its create then fails NO_CONNECTION); its completion is kept
by the agent anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.agent import api, faults
from actors.agent import events as aev
from actors.chat.events import ChatEvent, decode_event, encode_event
from actors.chat.model import (
    CREATING_CALLS,
    AgentCall,
    AgentCallKind,
    CommandFunction,
    CommandStatus,
    Owner,
    OwnerKind,
    decode_call,
    encode_call,
)
from actors.chat.services import AgentEventArrived, ChatServices
from actors.kernel import Actor, ActorContext
from protocol.chat import ChatMessage, decode_chat_message, encode_chat_message
from protocol.errors import ChatRefused, ChatWireError, NoConnection
from protocol.queue import QueueMode
from storage.chat import ChatStore, command_number, corr_id_of, is_outbox_corr_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Forget:
    """Told to itself after telling the user: drop the rows of what was told."""


@dataclass(frozen=True, slots=True)
class _DropTaken:
    """Told to itself on the first of a burst of the agent's answers to outbox sends: drop
    the rows of every answer taken since, in one unit."""


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A server this owner uses is back (or the chat restarted): hand the agent again what
    it may not have taken."""


class Unit:
    """One transaction of an owner, and what to do once it is committed."""

    def __init__(self, owner: OwnerActor) -> None:
        self._owner = owner
        self.after: list[Callable[[], None]] = []

    @property
    def store(self) -> ChatStore:
        return self._owner.store

    def command(
        self, function: CommandFunction, conn_id: str, call: AgentCall, owner: Owner | None = None
    ) -> Any:
        """Store a chat command; the agent call is made once the unit is committed."""
        command = self.store.add_command(
            str(owner or self._owner.owner), function, conn_id, encode_call(call)
        )
        self.store.own_connection(conn_id, str(owner or self._owner.owner))
        self.after.append(lambda: self._owner.submit(command))
        return command

    def send(self, conn_id: str, message: ChatMessage) -> None:
        """Store a chat message for `conn_id`; it goes to the agent once committed."""
        row = self.store.add_outbox(str(self._owner.owner), conn_id, encode_chat_message(message))
        self.after.append(lambda: self._owner.hand_over(row))

    def tell(self, event: ChatEvent) -> None:
        """Store an event for the user; it is told once the unit is committed."""
        number = self.store.add_notice(str(self._owner.owner), encode_event(event))
        self.after.append(lambda: self._owner.notify(number, event))


class OwnerActor(Actor):
    """Base of the contact, address and group actors; see the module docstring."""

    owner_kind: ClassVar[OwnerKind]

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.services: ChatServices = ctx.runtime.services["chat"]
        self.store = self.services.store
        self.agent = self.services.agent
        self.owner = Owner(self.owner_kind, ctx.key)
        self._told: list[int] = []  # notices told, their rows not dropped yet
        self._handling: str | None = None  # the connection whose agent event is being handled
        self._taken: list[aev.Ok | aev.Err] = []  # answers to outbox sends, rows not dropped

    # ------------------------------------------------------------------ to override

    def load(self) -> None:
        """Load this owner's rows (in `started`)."""

    def on_completion(self, unit: Unit, command: Any, event: Any) -> None:
        """Continue `command`, which the agent completed with `event` (INV, JOINED, OK, ERR)."""

    def on_chat_message(self, unit: Unit, conn_id: str, message: ChatMessage) -> None:
        """A chat message arrived on one of our connections; raise ChatRefused to drop it."""
        raise ChatRefused(f"{type(message).__name__} is not for a {self.owner_kind}")

    def on_agent_event(self, event: Any) -> None:
        """CONF, INFO, CON, REQ and the like for one of our connections."""

    def waiting(self) -> list[str]:
        """Our connections that wait for CONF, CON or REQ (by their stored status)."""
        return []

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        self.load()
        self._retell()
        creating = self._reconcile()
        again = set()
        if str(self.owner) not in self.services.resumed:  # first activation in this process
            self.services.resumed.add(str(self.owner))
            with self.store.transaction(read_only=True):
                again.update(self.waiting())
        again -= creating  # the agent may not have these yet
        lost = self.services.lost_events.pop(str(self.owner), None)
        if lost:  # the agent has it: the event came from it
            again.add(lost)
        for conn_id in sorted(again):
            self.agent.replay(conn_id)

    def stopped(self) -> None:
        self._drop_taken()
        self._forget_done()

    def crashed(self, error: BaseException | None) -> None:
        if self._handling is not None:
            self.services.lost_events[str(self.owner)] = self._handling
        self._forget_done()

    def _forget_done(self) -> None:
        if self._told:
            with self.store.transaction():
                self._drop_done()

    def _drop_done(self) -> None:
        """Drop the rows of what was told (inside a transaction)."""
        self.store.drop_notices(self._told)
        self._told = []

    def receive(self, message: Any) -> Any:
        match message:
            case AgentEventArrived(event=event):
                self._agent_event(event)
            case Reconcile():
                self._reconcile()
            case _Forget():
                self._forget_done()
            case _DropTaken():
                self._drop_taken()
            case _:
                return super().receive(message)
        return None

    @contextlib.contextmanager
    def unit(self, step: str | None = None) -> Iterator[Unit]:
        """A transaction; its after-effects run only if it commits. `step` names it for the
        fault points of the crash tests (before it runs, between its commit and its
        effects): the function of the chat command a completion continues, the event of a
        chat message ("x.grp.mem.intro"), or the agent event handled ("CONF", "CON", "INFO",
        "REQ"; these are not acknowledged, so they have no point after the unit)."""
        unit = Unit(self)
        if step is not None:
            faults.hit(faults.BEFORE_RUN, step)
        told = list(self._told)
        try:
            with self.store.transaction():
                self._drop_done()
                yield unit
        except BaseException:  # rolled back: those rows are still there
            self._told = told + self._told
            raise
        try:
            if step is not None:
                faults.hit(faults.AFTER_EFFECTS, step)
            for effect in unit.after:
                effect()
        except BaseException:
            # Committed, not all handed over: a reconcile does it. A crash restarts the
            # actor, which reconciles anyway; a failed ask does not (the asker gets the
            # error, the actor keeps serving), so nothing else would until the next boot.
            self.tell_self(Reconcile())
            raise

    def notify(self, number: int, event: ChatEvent) -> None:
        """Tell the user `event` (stored as notice `number`, dropped a turn later)."""
        self.services.events.put(event)
        if not self._told:
            self.tell_self(_Forget())
        self._told.append(number)

    def _retell(self) -> None:
        """Tell the events an activation before this one stored and may not have told."""
        with self.store.transaction(read_only=True):
            notices = self.store.notices(str(self.owner))
        for notice in notices:
            self.notify(notice.id, decode_event(bytes(notice.body)))

    def _reconcile(self) -> set[str]:
        """Hand over the outbox and the pending commands; the connections that a pending
        command creates (the agent may not have them yet). The outbox goes first, as a unit's
        own effects do: a group's last message to a member (x.grp.leave …) then reaches its
        connection before the delete of that connection."""
        with self.store.transaction(read_only=True):
            commands = self.store.pending_commands(str(self.owner))
            outbox = self.store.outbox(str(self.owner))
        for row in outbox:
            self.hand_over(row)
        creating = set()
        for command in commands:
            if self.submit(command):
                creating.add(command.conn_id)
        return creating

    # ------------------------------------------------------------------ to the agent

    def submit(self, command: Any) -> bool:
        """Make (again) the agent call of a stored chat command, with its corr id; True if
        the call creates its connection."""
        call = decode_call(bytes(command.payload))
        corr_id, conn_id = corr_id_of(command), command.conn_id
        match call.kind:
            case AgentCallKind.CREATE:
                self.agent.submit(api.CreateConnection(corr_id, conn_id=conn_id))
            case AgentCallKind.CREATE_ADDRESS:
                mode = QueueMode.CONTACT
                self.agent.submit(api.CreateConnection(corr_id, mode, conn_id=conn_id))
            case AgentCallKind.JOIN:
                self.agent.submit(
                    api.JoinConnection(corr_id, call.link, call.info, conn_id=conn_id)
                )
            case AgentCallKind.ALLOW:
                self.agent.submit(api.AllowConnection(corr_id, conn_id, call.conf_id, call.info))
            case AgentCallKind.ACCEPT:
                self.agent.submit(
                    api.AcceptContact(corr_id, call.inv_id, call.info, conn_id=conn_id)
                )
            case AgentCallKind.DELETE:
                with self.store.transaction(read_only=True):
                    waits = self.store.outbox_waits(conn_id)
                if not waits:  # else once the agent took the last message (`_sent`)
                    # the agent deletes once what it took is delivered (or expired)
                    self.agent.submit(api.DeleteConnection(corr_id, conn_id, wait_delivery=True))
            case AgentCallKind.SET_LINK_DATA:
                self.agent.set_link_data(corr_id, conn_id, call.info)
            case AgentCallKind.GET_LINK_DATA:
                self.agent.get_link_data(corr_id, call.link)
        return call.kind in CREATING_CALLS

    def hand_over(self, row: Any) -> None:
        """Give an outbox row to the agent, acknowledged by the row's corr id (again after a
        crash: the agent sends a corr id's message once)."""
        self.agent.send(row.conn_id, bytes(row.body), row.corr_id)

    # ------------------------------------------------------------------ from the agent

    def _agent_event(self, event: Any) -> None:
        self._handling = event.conn_id or None
        corr_id = getattr(event, "corr_id", None)
        number = command_number(corr_id)
        if number is not None:
            self._completion(number, event)
        elif is_outbox_corr_id(corr_id):
            self._sent(event)
        elif isinstance(event, aev.Msg):
            self._message(event)
        else:
            self.on_agent_event(event)
        self._handling = None

    def _completion(self, number: int, event: Any) -> None:
        with self.store.transaction(read_only=True):
            command = self.store.command(number)
        step = command.function if command is not None else None
        with self.unit(step) as unit:
            command = self.store.command(number)
            if command is not None and command.status == CommandStatus.PENDING:
                self.on_completion(unit, command, event)
                failed = isinstance(event, aev.Err)
                status = CommandStatus.FAILED if failed else CommandStatus.DONE
                self.store.finish_command(command, status)
        if step is not None:
            faults.hit(faults.AFTER_EMIT, step)
        if event.conn_id:  # a refused Submit of a connection never made has none
            self.agent.ack_event(event.conn_id, event.corr_id)

    def _sent(self, event: aev.Ok | aev.Err) -> None:
        """The agent took an outbox row's message (OK) or refused it for good (ERR): the row
        goes, with those of the other answers that arrive before our next turn."""
        if not self._taken:
            self.tell_self(_DropTaken())
        self._taken.append(event)

    def _drop_taken(self) -> None:
        """Drop the rows of the answers taken, in one unit; make the deletes of connections
        that waited for them; then acknowledge the answers."""
        taken, self._taken = self._taken, []
        if not taken:
            return
        with self.unit() as unit:
            for event in taken:
                if self.store.drop_outbox(event.corr_id) and isinstance(event, aev.Err):
                    log.warning(
                        "chat message not sent",
                        extra={
                            "owner": str(self.owner),
                            "conn_id": event.conn_id,
                            "code": event.code,
                        },
                    )
            for conn_id in {event.conn_id for event in taken}:
                if self.store.outbox_waits(conn_id):
                    continue
                for command in self.store.pending_commands_on(conn_id):
                    deleting = decode_call(bytes(command.payload)).kind is AgentCallKind.DELETE
                    if deleting and command.owner == str(self.owner):
                        unit.after.append(lambda command=command: self.submit(command))
        for event in taken:
            self.agent.ack_event(event.conn_id, event.corr_id)

    def _message(self, event: aev.Msg) -> None:
        try:
            message = decode_chat_message(event.body)
        except ChatWireError as exc:
            message, refused = None, exc
        step = _event_name(message)
        try:
            with self.unit(step) as unit:
                if self.store.first_time(event.conn_id, event.msg_id):
                    if message is None:
                        raise refused
                    self.on_chat_message(unit, event.conn_id, message)
        except (ChatWireError, ChatRefused) as exc:
            log.warning(
                "chat message refused",
                extra={
                    "owner": str(self.owner),
                    "conn_id": event.conn_id,
                    "code": exc.code,
                    "error": str(exc),
                },
            )
            with self.store.transaction():  # dropped, but not handled again
                self.store.first_time(event.conn_id, event.msg_id)
        if step is not None:
            faults.hit(faults.AFTER_EMIT, step)
        self.agent.ack_message(event.conn_id, event.msg_id)


def _event_name(message: ChatMessage | None) -> str | None:
    """The chat event's name ("x.grp.mem.intro"), the kind its fault points go by."""
    return type(message).event if message is not None else None


def refuse(message: str) -> ChatRefused:
    return ChatRefused(message)


def connection_gone(event: Any) -> bool:
    """The agent's answer to the DELETE of a connection says it is gone: OK, or
    NO_CONNECTION (gone already). Any other ERR leaves it ours."""
    return isinstance(event, aev.Ok) or (
        isinstance(event, aev.Err) and event.code == NoConnection.code
    )
