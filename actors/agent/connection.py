"""`ConnectionActor`: one duplex connection — the actor that owns its state and its work.

Theory of operation
-------------------
A connection actor is virtual (`client/agent/conns/<conn_id>`): activated by the first
message for its connection, it loads every row of the connection once (`ConnectionState`),
re-emits the completion events the caller has not acknowledged (in order), and resumes
whatever is due. It passivates when nothing is in flight. It is the only writer of its rows.

The actor is a shell: it turns messages into calls on its collaborators and offers them one
`ConnectionPort` (emit an event, run a queue request on the I/O thread, wake up later, tell
the server's session). The collaborators, each in its own module, are:

* `CommandRunner` (commands.py)  persisted commands in lanes, retries, completion;
* `Delivery` (delivery.py)       the outgoing hash chain and the ordered sending of it;
* `Inbound` (inbound.py)         what arrives on the receive queues, the user's ACKs;
* `Handshake` (handshake.py)     create, join, allow, accept, delete;
* `LinkData` (link_data.py)      short links to contact addresses;
* `UserSends` (sending.py)       the user's messages, plain or acknowledged by corr id;
* `ReceivingSwitch` (rotation.py, with rotation_sender.py)  queue rotation, both ends.

After every message the actor *pumps*: each collaborator starts what is due, and the actor
sets one timer for the earliest later due time. Every network step is submitted to the I/O
thread with a request id; its `IoResult` comes back as a message and is matched by that id
to the step's callbacks, so the actor never blocks on the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.agent import events as ev
from actors.agent.commands import CommandRunner
from actors.agent.delivery import Delivery
from actors.agent.handshake import Handshake
from actors.agent.inbound import Inbound
from actors.agent.info import connection_status, inspection
from actors.agent.link_data import LinkData
from actors.agent.model import (
    CommandOrigin,
    ConnStatus,
    Lane,
    Replay,
    Tell,
    decode_pending_conf,
)
from actors.agent.ports import OnDone, OnFail, QueueRequest
from actors.agent.queues import QueueSteps
from actors.agent.rotation import ReceivingSwitch
from actors.agent.sending import UserSends
from actors.agent.services import AgentConfig, AgentServices
from actors.agent.sessions import (
    Forget,
    ServerUp,
    SessionPush,
    Track,
    WaitingForServer,
    session_address,
)
from actors.agent.state import ConnectionState
from actors.kernel import Actor, ActorContext, IoResult, TimerHandle
from protocol.errors import AgentError, DuplexError
from storage.agent import AgentCommand, AgentRcvQueue, AgentStore

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- messages to the actor


@dataclass(frozen=True, slots=True)
class Wake:
    """A command was stored for this connection (`command`, or look them up): run it."""

    command: AgentCommand | None = None


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Ask: store a user message for delivery; answers its msg id. With `corr_id` (the
    acknowledged form, for a layer above that tells): answers None, and `OK` with the corr
    id is told (and kept until acknowledged) once the message is stored; the same corr id
    again stores nothing new (sending.py)."""

    body: bytes
    corr_id: str | None = None


@dataclass(frozen=True, slots=True)
class AckMessage:
    """Ask: record the user's ACK of a received message; answers once it is stored."""

    msg_id: int
    corr_id: str | None = None  # the async form's: OK is told (and kept) once it is done


@dataclass(frozen=True, slots=True)
class AckCommandEvent:
    """Told (in a `Tell`) by an actor above the agent: the completion event of `corr_id`
    was processed; forget it. (`Client.ack_command_event` deletes it on the caller's
    thread.)"""

    corr_id: str


@dataclass(frozen=True, slots=True)
class GetStatus:
    """Ask: the connection's `ConnectionStatus` (None if it does not exist)."""


@dataclass(frozen=True, slots=True)
class GetInfo:
    """Ask: the connection's `ConnectionInfo` (its queues and any switch in progress)."""


@dataclass(frozen=True, slots=True)
class StartSwitch:
    """Ask: rotate the receive queue (to `server`, or another configured one); answers the
    conn id at once. The command is stored, idempotent by `corr_id`."""

    corr_id: str
    server: str | None = None
    origin: CommandOrigin = CommandOrigin.ASYNC


@dataclass(frozen=True, slots=True)
class AbortSwitch:
    """Ask: undo a switch that the peer does not know of yet; answers `ConnectionInfo`."""


@dataclass(frozen=True, slots=True)
class _Due:
    """The actor's own timer: something is due (a retry)."""


@dataclass(frozen=True, slots=True)
class _Raise:
    """The actor's own: an error of a pump run inside an ask, to crash on in a turn of its own."""

    error: Exception


@dataclass(frozen=True, slots=True)
class _Step:
    """A network step in flight: the lane it holds and what to do with its outcome."""

    lane: Lane
    on_done: OnDone
    on_fail: OnFail
    command: AgentCommand | None


class ConnectionActor(Actor):
    kind = "connection"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.services: AgentServices = ctx.runtime.services["agent"]
        self.store: AgentStore = self.services.store
        self.config: AgentConfig = self.services.config
        self.conn_id = ctx.key
        self.state = ConnectionState(self.conn_id)
        self._steps: dict[int, _Step] = {}
        self._lanes: set[Lane] = set()
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def servers(self) -> Sequence[str]:
        return self.services.servers

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        self.state, unacknowledged = ConnectionState.load(self.store, self.conn_id)
        self.commands = CommandRunner(self)
        self.delivery = Delivery(self)
        queues = QueueSteps(self, self.commands)
        self.handshake = Handshake(self, self.commands, queues, self.delivery, self._ready)
        self.inbound = Inbound(
            self, self.commands, self.delivery, self.handshake, lambda: self.rotation
        )
        self.rotation = ReceivingSwitch(
            self, self.commands, queues, self.delivery, self.inbound.process
        )
        LinkData(self, self.commands, queues)
        self.sends = UserSends(
            self, self.commands, self.delivery, self.handshake.refuse_if_deleting
        )
        for command in unacknowledged:
            self.emit(ev.decode_event(bytes(command.event)))  # not acknowledged: again
        self.rotation.recover_held()
        self._pump()

    def stopped(self) -> None:
        # A clean stop (the runtime shuts down; passivation waits for these): what waits to
        # be stored is stored now, rather than done again by the next activation.
        try:
            self.commands.flush()
        except Exception:  # noqa: BLE001 (stopping: the next activation does it again)
            log.warning("completions not stored at stop", extra={"conn_id": self.conn_id})

    def may_passivate(self) -> bool:
        state = self.state
        return not (
            self._steps
            or state.commands
            or self.commands.completing
            or self.rotation.held
            or any(state.outbox.values())
            or self.inbound.pump(0.0) != float("inf")
        )

    def summary(self) -> dict[str, Any]:
        conn = self.state.conn
        return {
            "status": conn.status if conn is not None else "none",
            "commands": len(self.state.commands),
            "outbox": self.state.pending_messages(),
            "in_flight": len(self._steps),
        }

    def inspect(self) -> dict[str, Any]:
        """For the debug console (info.py)."""
        stored = self.store.load_connection(self.conn_id).commands
        return inspection(self.state, stored, self._lanes, time.time())

    # ------------------------------------------------------------------ messages

    def receive(self, message: Any) -> Any:
        match message:
            case IoResult():
                self._io_result(message)
            case SessionPush(rcv_id=rcv_id, reply=reply):
                self.inbound.push(rcv_id, reply)
            case Wake(command=command):
                if command is None:
                    self.commands.reload()
                else:
                    self.commands.add(command)
            case _Due():
                self._timer = None
            case _Raise(error=error):
                raise error
            case ServerUp(server=server):
                now = time.time()
                self.commands.server_up(server, now)
                self.delivery.server_up(server, now)
                self.inbound.server_up(server, now)
            case GetStatus():
                return connection_status(self.state)
            case GetInfo():
                return self.rotation.connection_info()
            case Tell(message=told):
                self._told(told)
                return None
            case _:
                return self._ask(message)
        self._pump()
        return None

    def _told(self, message: Any) -> None:
        """An ask-type message told by an actor above the agent: nobody waits for its
        answer, and what the ask would raise is logged instead of crashing this actor."""
        if isinstance(message, AckCommandEvent):
            self.store.forget_command_event(message.corr_id)
            return
        if isinstance(message, Replay):
            self._replay()
            return
        try:
            self._ask(message)
        except DuplexError as exc:
            log.warning(
                "told message refused",
                extra={"conn_id": self.conn_id, "kind": type(message).__name__, "code": exc.code},
            )
            if isinstance(message, SendMessage) and message.corr_id is not None:
                # the acknowledged send's teller waits for its outcome, not for a log line
                self.emit(ev.Err(self.conn_id, exc.code, exc.message, message.corr_id))

    def _ask(self, message: Any) -> Any:
        """The asks that store work. Once it is stored the actor pumps at once (what is due,
        such as the stored message's SEND or the stored ACK, starts before the answer goes
        back); a pump that raises is re-raised in a turn of its own, where it crashes the
        actor instead of being the asker's error (its work is stored: the asker must not
        try again)."""
        if isinstance(message, StartSwitch):
            self.handshake.refuse_if_deleting()  # DELETING: a delete waits for delivery
        match message:
            case SendMessage(body=body, corr_id=corr_id):
                answer = self.sends.send(body, corr_id)
            case AckMessage(msg_id=msg_id, corr_id=corr_id):
                answer = self.inbound.ack_message(msg_id, corr_id)
            case StartSwitch(corr_id=corr_id, server=server, origin=origin):
                answer = self.rotation.start(corr_id, server, origin)
            case AbortSwitch():
                answer = self.rotation.abort()
            case _:
                return super().receive(message)
        try:
            self._pump()
        except Exception as exc:  # noqa: BLE001 (raised again by _Raise, as the actor's)
            self.tell_self(_Raise(exc))
        return answer

    def _replay(self) -> None:
        """Tell again what the layer above may have lost with an activation of its own: the
        unacknowledged completions, a confirmation waiting for allow, the contact requests
        not answered, INFO (at the joiner) and CON of a ready connection, and the received
        messages not ACKed —
        in the order they were first told. The layer above is idempotent by its state."""
        for event in self.store.unacknowledged_events(self.conn_id):
            self.emit(ev.decode_event(event))
        conn = self.state.conn
        if conn is None:
            return
        if conn.status == ConnStatus.CONFIRMED and conn.pending_conf is not None:
            pending = decode_pending_conf(bytes(conn.pending_conf))
            self.emit(ev.Conf(self.conn_id, pending.conf_id, pending.info))
        for inv_id, info in self.store.contact_requests(self.conn_id):
            self.emit(ev.Req(self.conn_id, inv_id, info))
        if conn.status == ConnStatus.READY:
            if conn.peer_info is not None:
                self.emit(ev.Info(self.conn_id, bytes(conn.peer_info)))
            self.emit(ev.Con(self.conn_id))
        self.inbound.release(again=True)

    def _ready(self) -> None:
        self.inbound.release()

    # ------------------------------------------------------------------ the pump

    def _pump(self) -> None:
        now = time.time()
        earliest = min(self.commands.pump(now), self.delivery.pump(now), self.inbound.pump(now))
        self.rotation.pump()
        if earliest < float("inf"):
            self.wake_at(earliest)

    # ------------------------------------------------------------------ the port

    def emit(self, event: ev.AgentEvent) -> None:
        self.services.events.put(event)

    def submit(
        self,
        lane: Lane,
        request: QueueRequest,
        on_done: OnDone,
        on_fail: OnFail,
        command: AgentCommand | None = None,
    ) -> None:
        request_id = self.submit_io(
            self.services.clients.request,
            request.server,
            request.command,
            request.entity,
            request.key,
        )
        self._steps[request_id] = _Step(lane, on_done, on_fail, command)
        self._lanes.add(lane)

    def lane_busy(self, lane: Lane) -> bool:
        return lane in self._lanes

    def wake_at(self, at: float) -> None:
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.send_after(max(0.0, at - time.time()), _Due())

    def server_unavailable(self, server: str) -> None:
        self.tell(session_address(server), WaitingForServer(self.conn_id))

    def track(self, queue: AgentRcvQueue) -> None:
        self.tell(session_address(queue.server), Track(bytes(queue.rcv_id), self.conn_id))

    def forget(self, queue: AgentRcvQueue) -> None:
        self.tell(session_address(queue.server), Forget(bytes(queue.rcv_id)))

    def resolve_waiter(self, corr_id: str, event: ev.AgentEvent) -> None:
        waiter = self.services.take_waiter(corr_id)
        if waiter is None:
            return
        if isinstance(event, ev.Err):
            error = AgentError(event.message or event.code, code=event.code)
            waiter.set_exception(exc_info=(AgentError, error, None))
        else:
            waiter.set(event)

    def _io_result(self, result: IoResult) -> None:
        step = self._steps.pop(result.request_id, None)
        if step is None:
            return  # a step of an earlier activation: its command runs again from its rows
        self._lanes.discard(step.lane)
        if step.command is not None and step.command not in self.state.commands:
            return  # the command ended meanwhile (an abort): its step no longer matters
        if result.ok:
            step.on_done(result.value)
        else:
            assert result.error is not None
            step.on_fail(result.error)
