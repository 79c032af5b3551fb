"""`ConnectionActor`: one duplex connection, its queues, commands, deliveries and events.

Theory of operation
-------------------
A connection actor is virtual (`client/agent/conns/<conn_id>`): it is activated by the
first message for its connection, loads everything from the agent's tables in `started()`,
and passivates when it has nothing in flight. It is the only writer of its rows.

On every activation it first re-emits the completion events of its commands that the chat
has not acknowledged, in order, then resumes whatever is due. Work is driven by `_pump`:

* **commands** run in *lanes*, one lane per queue server: a lane runs its commands one at
  a time in creation order, so a dead server delays only the commands aimed at it. Each
  command is a small state machine that looks at what is already persisted and does the
  next step: keys are stored before the `NEW`/`SKEY` that uses them, a sealed body is stored
  before the `SEND` that carries it, so a step repeated after a crash sends the same request
  and the server's idempotence (or the receiver's duplicate check) absorbs it. A command
  completes by storing its event *in the same transaction* as its last effects; a command
  with an event is never run again.
* **deliveries** run per send queue: stored, sealed messages are sent strictly in order.
* temporary errors (network, timeouts, a restarting server) are retried on a timer with
  the persisted attempt count (`RetryPolicy`); permanent ones end the command with `ERR`
  or the message with `MERR`; a command still failing after its TTL ends with `ERR TIMEOUT`.

Incoming queue messages arrive from the server's session actor. Agent-internal messages
(confirmation, invitation, connection info, QCONT, quota markers) are processed and ACKed
by the actor itself; user messages are stored and emitted as `MSG`, and ACKed on the server
only when the chat calls `ack_message`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.agent import events as ev
from actors.agent import faults
from actors.agent.rotation import QueueRotation, RcvSwitchStatus, SwitchKind
from actors.agent.services import AgentServices
from actors.agent.sessions import (
    Forget,
    ServerUp,
    SessionPush,
    Track,
    WaitingForServer,
    session_address,
)
from actors.kernel import Actor, ActorContext, IoError, IoResult
from protocol import crypto
from protocol.address import ServerAddress, b64url
from protocol.envelope import (
    GENESIS_HASH,
    AgentMessage,
    Confirmation,
    ConnInfo,
    Integrity,
    Invitation,
    QCont,
    UserMessage,
    check_integrity,
    encode_agent_message,
    message_hash,
    open_agent_message,
    seal_envelope,
)
from protocol.errors import DuplexError, EnvelopeError, LinkError, QueueFault, ServerError
from protocol.links import (
    ConnectionLink,
    LinkData,
    QueueAddress,
    ShortLink,
    decrypt_link_data,
    encrypt_link_data,
    parse_link,
    parse_short_link,
)
from protocol.queue import (
    Ack,
    Del,
    End,
    Ids,
    LGet,
    Lnk,
    LSet,
    Msg,
    MsgFlag,
    New,
    QueueMode,
    Send,
    SKey,
    decode_content,
)

log = logging.getLogger(__name__)


class ConnStatus:
    NEW = "new"
    JOINED = "joined"
    CONFIRMED = "confirmed"
    READY = "ready"
    FAILED = "failed"


class CommandKind:
    CREATE = "create"
    JOIN = "join"
    ALLOW = "allow"
    ACK = "ack"
    DELETE = "delete"
    SET_LINK = "set_link"
    GET_LINK = "get_link"
    SWITCH = SwitchKind.SWITCH
    SWITCH_SECURE = SwitchKind.SECURE
    SWITCH_DELETE = SwitchKind.DELETE


# Link lookups belong to no connection: they run on this pseudo-connection's actor.
LINKS_CONN_ID = "links"


SYNC_PREFIX = "sync:"


# ---------------------------------------------------------------------- messages to the actor


@dataclass(frozen=True, slots=True)
class Wake:
    """New commands or messages were stored for this connection: look for work."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Ask: store a user message for delivery; answers its msg id."""

    body: bytes


@dataclass(frozen=True, slots=True)
class AckCommandEvent:
    corr_id: str


@dataclass(frozen=True, slots=True)
class GetStatus:
    """Ask: the connection's status summary (None if it does not exist)."""


@dataclass(frozen=True, slots=True)
class GetInfo:
    """Ask: the connection's `ConnectionInfo` (its queues and any switch in progress)."""


@dataclass(frozen=True, slots=True)
class StartSwitch:
    """Ask: rotate the receive queue (to `server`, or another configured one); answers the
    conn id at once. The command is stored, idempotent by `corr_id`."""

    corr_id: str
    server: str | None = None


@dataclass(frozen=True, slots=True)
class AbortSwitch:
    """Ask: undo a switch that the peer does not know of yet; answers `ConnectionInfo`."""


@dataclass(frozen=True, slots=True)
class _Due:
    """The actor's own timer: something is due (a retry)."""


class AgentError(DuplexError):
    """An agent command was refused or failed; `code` says why (e.g. PROHIBITED)."""

    code = "AGENT"


@dataclass(frozen=True, slots=True)
class _Step:
    """A network step in flight: which lane it blocks and what to do with its outcome."""

    lane: str
    server: str
    on_done: Callable[[Any], None]
    on_fail: Callable[[BaseException], None]
    command: Any = None  # the command it belongs to; its outcome is dropped if that ended


class ConnectionActor(QueueRotation, Actor):
    kind = "connection"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.services: AgentServices = ctx.runtime.services["agent"]
        self.store = self.services.store
        self.conn_id = ctx.key
        self.conn: Any = None
        self.rcv_queues: dict[int, Any] = {}
        self.snd_queues: dict[int, Any] = {}
        self.commands: list[Any] = []  # pending (no event yet), in creation order
        self.outbox: dict[int, deque[Any]] = {}  # snd queue id -> pending messages in order
        self._steps: dict[int, _Step] = {}
        self._busy_lanes: set[str] = set()
        self._timer: Any = None
        self._timer_at = 0.0
        self._box_keys: dict[int, bytes] = {}
        self._emitted_msgs: set[int] = set()  # MSG seqs emitted by this activation
        self._init_rotation()

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        s = self.store
        with s.transaction(read_only=True):
            self.conn = s.Connection.get_or_none(s.Connection.conn_id == self.conn_id)
            self.rcv_queues = {
                q.id: q for q in s.RcvQueue.select().where(s.RcvQueue.conn_id == self.conn_id)
            }
            self.snd_queues = {
                q.id: q for q in s.SndQueue.select().where(s.SndQueue.conn_id == self.conn_id)
            }
            commands = list(
                s.Command.select().where(s.Command.conn_id == self.conn_id).order_by(s.Command.id)
            )
            messages = list(
                s.SndMessage.select()
                .where(s.SndMessage.conn_id == self.conn_id)
                .order_by(s.SndMessage.id)
            )
        for message in messages:
            self.outbox.setdefault(message.snd_queue_id, deque()).append(message)
        for command in commands:
            if command.event is not None:
                self._emit(ev.decode_event(bytes(command.event)))  # unacknowledged: again
            else:
                self.commands.append(command)
        self._recover_held()
        self._pump()

    def may_passivate(self) -> bool:
        return not (self._steps or self.commands or self._held or any(self.outbox.values()))

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.conn.status if self.conn is not None else "none",
            "commands": len(self.commands),
            "outbox": sum(len(q) for q in self.outbox.values()),
            "in_flight": len(self._steps),
        }

    # ------------------------------------------------------------------ messages

    def receive(self, message: Any) -> Any:
        match message:
            case IoResult():
                self._io_result(message)
            case SessionPush(rcv_id=rcv_id, reply=reply):
                self._queue_message(rcv_id, reply)
            case Wake():
                self._reload_commands()
            case _Due():
                self._timer = None
            case ServerUp(server=server):
                self._server_up(server)
            case SendMessage(body=body):
                return self._send_user_message(body)
            case AckCommandEvent(corr_id=corr_id):
                self._ack_command_event(corr_id)
                return None
            case GetStatus():
                return self._status()
            case GetInfo():
                return self._connection_info()
            case StartSwitch(corr_id=corr_id, server=server):
                answer = self._start_switch(corr_id, server)
                self.tell_self(Wake())  # run it in its own turn, not in the caller's ask
                return answer
            case AbortSwitch():
                answer = self._abort_switch()
                self.tell_self(Wake())
                return answer
            case _:
                return super().receive(message)
        self._pump()
        self._check_drained()
        return None

    # ------------------------------------------------------------------ the pump

    def _pump(self) -> None:
        now = time.time()
        earliest = float("inf")
        seen: set[str] = set()
        for command in list(self.commands):
            lane = command.lane
            if lane in seen or lane in self._busy_lanes:
                seen.add(lane)
                continue
            seen.add(lane)
            if command.next_attempt_at > now:
                earliest = min(earliest, command.next_attempt_at)
                continue
            self._run_command(command)
        for queue_id, pending in self.outbox.items():
            lane = f"send:{queue_id}"
            if not pending or lane in self._busy_lanes:
                continue
            message = pending[0]
            if message.next_attempt_at > now:
                earliest = min(earliest, message.next_attempt_at)
                continue
            if self._may_deliver(self.snd_queues[queue_id]):
                self._deliver(queue_id, message)
        if earliest < float("inf"):
            self._wake_at(earliest)

    def _wake_at(self, at: float) -> None:
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.send_after(max(0.0, at - time.time()), _Due())

    def _server_up(self, server: str) -> None:
        now = time.time()
        for command in self.commands:
            if command.lane == server:
                command.next_attempt_at = min(command.next_attempt_at, now)
        for queue_id, pending in self.outbox.items():
            queue = self.snd_queues.get(queue_id)
            if queue is not None and queue.server == server and pending:
                pending[0].next_attempt_at = min(pending[0].next_attempt_at, now)

    # ------------------------------------------------------------------ network steps

    def _submit(
        self,
        lane: str,
        server: str,
        on_done: Callable[[Any], None],
        on_fail: Callable[[BaseException], None],
        coroutine_fn: Callable[..., Any],
        *args: Any,
        command: Any = None,
    ) -> None:
        request_id = self.submit_io(coroutine_fn, *args)
        self._steps[request_id] = _Step(lane, server, on_done, on_fail, command)
        self._busy_lanes.add(lane)

    def _io_result(self, result: IoResult) -> None:
        step = self._steps.pop(result.request_id, None)
        if step is None:
            return
        self._busy_lanes.discard(step.lane)
        if step.command is not None and step.command not in self.commands:
            return  # the command ended meanwhile (an abort): its step no longer matters
        if result.ok:
            step.on_done(result.value)
        else:
            assert result.error is not None
            step.on_fail(result.error)

    def _request(self, server: str, command: Any, entity: bytes = b"", key: bytes | None = None):
        clients = self.services.clients
        signer = crypto.SigningKey.from_private(key) if key is not None else None

        async def run() -> Any:
            return await clients.request(server, command, entity, signer)

        return run

    # ------------------------------------------------------------------ commands

    def _reload_commands(self) -> None:
        s = self.store
        known = {c.id for c in self.commands}
        with s.transaction(read_only=True):
            rows = list(
                s.Command.select()
                .where((s.Command.conn_id == self.conn_id) & s.Command.event.is_null())
                .order_by(s.Command.id)
            )
            if self.conn is None:
                self.conn = s.Connection.get_or_none(s.Connection.conn_id == self.conn_id)
        self.commands += [row for row in rows if row.id not in known]
        self.commands.sort(key=lambda c: c.id)

    def _run_command(self, command: Any) -> None:
        if self.conn is None and command.kind not in (CommandKind.DELETE, CommandKind.GET_LINK):
            self._fail(command, "NO_CONNECTION", "the connection does not exist")
            return
        handler = {
            CommandKind.CREATE: self._step_create,
            CommandKind.JOIN: self._step_join,
            CommandKind.ALLOW: self._step_allow,
            CommandKind.ACK: self._step_ack,
            CommandKind.DELETE: self._step_delete,
            CommandKind.SET_LINK: self._step_set_link,
            CommandKind.GET_LINK: self._step_get_link,
            CommandKind.SWITCH: self._step_switch,
            CommandKind.SWITCH_SECURE: self._step_switch_secure,
            CommandKind.SWITCH_DELETE: self._step_switch_delete,
        }.get(command.kind)
        if handler is None:
            self._fail(command, "PROHIBITED", f"unknown command {command.kind!r}")
            return
        faults.hit(faults.BEFORE_RUN, command.kind)
        try:
            handler(command, msgspec.msgpack.decode(bytes(command.payload)))
        except (EnvelopeError, DuplexError) as exc:
            self._fail(command, getattr(exc, "code", "INTERNAL"), str(exc))

    def _step_failed(self, command: Any, server: str) -> Callable[[BaseException], None]:
        def on_fail(error: BaseException) -> None:
            temporary = isinstance(error, IoError) or (
                isinstance(error, QueueFault) and error.temporary
            )
            if not isinstance(error, QueueFault | IoError):
                log.error(
                    "command step raised",
                    exc_info=error,
                    extra={"conn_id": self.conn_id, "kind": command.kind},
                )
            if temporary and not self._is_sync(command):
                self._retry_command(command, server, error)
            else:
                self._fail(command, getattr(error, "code", "INTERNAL"), str(error))

        return on_fail

    def _retry_command(self, command: Any, server: str, error: BaseException) -> None:
        now = time.time()
        if now > command.deadline:
            self._fail(command, "TIMEOUT", f"still failing after the command TTL: {error}")
            return
        command.attempts += 1
        delay = self.services.config.retry.delay(command.attempts, now - command.created_at)
        command.next_attempt_at = now + delay
        with self.store.transaction():
            command.save(only=[type(command).attempts, type(command).next_attempt_at])
        self.tell(session_address(server), WaitingForServer(self.conn_id))
        log.info(
            "command will be retried",
            extra={
                "conn_id": self.conn_id,
                "kind": command.kind,
                "delay": delay,
                "error": str(error),
            },
        )

    def _complete(
        self,
        command: Any,
        event: Any,
        effects: Callable[[], None] | None = None,
        extra_events: tuple[Any, ...] = (),
    ) -> None:
        """Store the command's effects and its event in one transaction, then emit.

        `event` may be a function, called after the effects (so it can describe them), and
        so may `extra_events` (called after the commit).
        Internal commands (no corr id) have no event: their row goes with the effects.
        """
        sync = self._is_sync(command)
        internal = command.corr_id is None
        with self.store.transaction():
            if effects is not None:
                effects()
            if callable(event):
                event = event()
            if sync or internal:
                command.delete_instance()
            else:
                command.event = ev.encode_event(event)
                command.save(only=[type(command).event])
        if command in self.commands:
            self.commands.remove(command)
        faults.hit(faults.AFTER_EFFECTS, command.kind)
        if sync:
            waiter = self.services.take_waiter(command.corr_id)
            if waiter is not None:
                if isinstance(event, ev.Err):
                    waiter.set_exception(
                        exc_info=(
                            AgentError,
                            AgentError(f"{event.message or event.code}", code=event.code),
                            None,
                        )
                    )
                else:
                    waiter.set(event)
        elif not internal:
            self._emit(event)
        for extra in extra_events:
            self._emit(extra() if callable(extra) else extra)
        faults.hit(faults.AFTER_EMIT, command.kind)

    def _fail(self, command: Any, code: str, message: str) -> None:
        log.info(
            "command failed",
            extra={"conn_id": self.conn_id, "kind": command.kind, "code": code, "error": message},
        )
        if self._fail_switch_command(command, code, message):
            return

        def effects() -> None:
            if self.conn is not None and command.kind in (CommandKind.CREATE, CommandKind.JOIN):
                self.conn.status = ConnStatus.FAILED
                self.conn.error = f"{code}: {message}"
                self.conn.save()

        self._complete(command, ev.Err(self.conn_id, code, message, command.corr_id), effects)

    def _is_sync(self, command: Any) -> bool:
        return bool(command.corr_id) and command.corr_id.startswith(SYNC_PREFIX)

    def _public_corr_id(self, command: Any) -> str | None:
        return None if self._is_sync(command) else command.corr_id

    # ------------------------------------------------------------------ CREATE

    def _step_create(self, command: Any, payload: dict[str, Any]) -> None:
        queue = self._own_rcv_queue(command.lane, payload.get("mode", QueueMode.MESSAGING.value))
        if queue.status == "new":
            # the queue row is saved with the command's event, in one transaction
            self._new_queue(command, queue, lambda: self._finish_create(command, queue))
            return
        self._finish_create(command, queue)

    def _new_queue(self, command: Any, queue: Any, then: Callable[[], None]) -> None:
        """NEW one of our receive queues with its stored keys, subscribed at once; a NEW
        repeated after a crash finds the same queue (the server is idempotent by key)."""
        auth = crypto.SigningKey.from_private(bytes(queue.auth_private))
        dh = crypto.DhKey.from_private(bytes(queue.dh_private))

        def created(ids: Ids) -> None:
            queue.rcv_id, queue.snd_id = ids.rcv_id, ids.snd_id
            queue.srv_dh_public, queue.status = ids.srv_dh_key, "active"
            self.tell(session_address(queue.server), Track(ids.rcv_id, self.conn_id))
            then()

        new = New(auth.public, dh.public, QueueMode(queue.mode), subscribe=True)
        self._submit(
            command.lane,
            queue.server,
            created,
            self._step_failed(command, queue.server),
            self._request(queue.server, new, b"", bytes(queue.auth_private)),
        )

    def _finish_create(self, command: Any, queue: Any) -> None:
        link = self._queue_link(queue).to_uri()
        self._complete(
            command, ev.Inv(self.conn_id, link, self._public_corr_id(command)), queue.save
        )

    @staticmethod
    def _queue_link(queue: Any) -> ConnectionLink:
        e2e = crypto.DhKey.from_private(bytes(queue.e2e_private))
        address = QueueAddress.create(
            queue.server, bytes(queue.snd_id), e2e.public, QueueMode(queue.mode)
        )
        return ConnectionLink.create(address)

    def _own_rcv_queue(self, server: str, mode: str) -> Any:
        """This connection's receive queue on `server`, created (keys only) if missing."""
        for queue in self.rcv_queues.values():
            if queue.server == server and queue.mode == mode:
                return queue
        with self.store.transaction():
            return self._create_rcv_queue(server, QueueMode(mode))

    def _create_rcv_queue(self, server: str, mode: QueueMode, replaces: int | None = None) -> Any:
        """A new receive queue's row with fresh keys, before its NEW."""
        queue = self.store.RcvQueue.create(
            conn_id=self.conn_id,
            server=server,
            mode=mode.value,
            auth_private=crypto.SigningKey.generate().private,
            dh_private=crypto.DhKey.generate().private,
            e2e_private=crypto.DhKey.generate().private,
            status="new",
            replaces=replaces,
        )
        self.rcv_queues[queue.id] = queue
        return queue

    # ------------------------------------------------------------------ JOIN (and ACCEPT)

    def _step_join(self, command: Any, payload: dict[str, Any]) -> None:
        link = parse_link(payload["link"])
        target = link.queues[0]
        contact = target.mode is QueueMode.CONTACT
        send_queue = self._snd_queue_to(target)
        reply_queue = self._own_rcv_queue(payload["reply_server"], QueueMode.MESSAGING.value)
        if not contact and send_queue.status == "new":
            self._skey(command, send_queue)
            return
        if reply_queue.status == "new":
            self._new_queue(command, reply_queue, lambda: self._save(reply_queue))
            return
        body = payload.get("body")
        if body is None:
            body = self._seal_handshake(send_queue, reply_queue, payload["info"], contact)
            payload["body"] = body
            command.payload = msgspec.msgpack.encode(payload)
            with self.store.transaction():
                command.save(only=[type(command).payload])
        key = None if contact else bytes(send_queue.auth_private)
        self._submit(
            command.lane,
            send_queue.server,
            lambda _: self._joined(command, send_queue, contact),
            self._step_failed(command, send_queue.server),
            self._request(send_queue.server, Send(0, body), bytes(send_queue.snd_id), key),
        )

    def _seal_handshake(
        self, send_queue: Any, reply_queue: Any, info: bytes, contact: bool
    ) -> bytes:
        e2e = crypto.DhKey.from_private(bytes(reply_queue.e2e_private))
        reply_address = QueueAddress.create(
            reply_queue.server, bytes(reply_queue.snd_id), e2e.public, QueueMode.MESSAGING
        )
        if contact:
            message: Any = Invitation(ConnectionLink.create(reply_address), info)
        else:
            message = Confirmation(reply_address, None, info)
        sender = crypto.DhKey.from_private(bytes(send_queue.e2e_private))
        return seal_envelope(
            sender, bytes(send_queue.e2e_peer_public), encode_agent_message(message)
        )

    def _snd_queue_to(self, target: QueueAddress) -> Any:
        for queue in self.snd_queues.values():
            if bytes(queue.snd_id) == target.snd_id:
                return queue
        with self.store.transaction():
            return self._create_snd_queue(target)

    def _create_snd_queue(self, target: QueueAddress, replaces: int | None = None) -> Any:
        """A send queue's row to the peer's queue `target`, with fresh keys, before use."""
        queue = self.store.SndQueue.create(
            conn_id=self.conn_id,
            server=target.server,
            snd_id=target.snd_id,
            mode=target.mode.value,
            auth_private=crypto.SigningKey.generate().private,
            e2e_private=crypto.DhKey.generate().private,
            e2e_peer_public=target.dh_public,
            status="new",
            replaces=replaces,
        )
        self.snd_queues[queue.id] = queue
        return queue

    def _skey(self, command: Any, send_queue: Any) -> None:
        """Secure the peer's queue with our sender key (idempotent on the server)."""
        key = crypto.SigningKey.from_private(bytes(send_queue.auth_private))
        self._submit(
            command.lane,
            send_queue.server,
            lambda _: self._secured(send_queue),
            self._step_failed(command, send_queue.server),
            self._request(
                send_queue.server,
                SKey(key.public),
                bytes(send_queue.snd_id),
                bytes(send_queue.auth_private),
            ),
        )

    def _secured(self, queue: Any) -> None:
        queue.status = "secured"
        with self.store.transaction():
            queue.save(only=[type(queue).status])

    def _save(self, row: Any) -> None:
        with self.store.transaction():
            row.save()

    def _joined(self, command: Any, send_queue: Any, contact: bool) -> None:
        def effects() -> None:
            self.conn.status = ConnStatus.JOINED
            self.conn.save(only=[type(self.conn).status])
            if contact:  # the contact address was only a door: nothing more goes there
                send_queue.delete_instance()

        if contact:
            self.snd_queues.pop(send_queue.id, None)
        self._complete(command, ev.Joined(self.conn_id, self._public_corr_id(command)), effects)

    # ------------------------------------------------------------------ ALLOW

    def _step_allow(self, command: Any, payload: dict[str, Any]) -> None:
        pending = self.conn.pending_conf
        if pending is None:
            self._fail(command, "PROHIBITED", "no confirmation waits on this connection")
            return
        conf_id, reply = msgspec.msgpack.decode(bytes(pending), type=tuple[str, QueueAddress])
        if conf_id != payload["conf_id"]:
            self._fail(command, "PROHIBITED", f"unknown confirmation {payload['conf_id']!r}")
            return
        send_queue = self._snd_queue_to(reply)
        if send_queue.status == "new":
            self._skey(command, send_queue)
            return
        body = payload.get("body")
        if body is None:
            body = self._seal_chain_message(send_queue, ConnInfo(payload["info"]))
            payload["body"] = body
            command.payload = msgspec.msgpack.encode(payload)
            with self.store.transaction():
                command.save(only=[type(command).payload])
                self.conn.save()
        self._submit(
            command.lane,
            send_queue.server,
            lambda _: self._allowed(command),
            self._step_failed(command, send_queue.server),
            self._request(
                send_queue.server,
                Send(0, body),
                bytes(send_queue.snd_id),
                bytes(send_queue.auth_private),
            ),
        )

    def _allowed(self, command: Any) -> None:
        def effects() -> None:
            self.conn.status = ConnStatus.READY
            self.conn.pending_conf = None
            self.conn.save()

        self._complete(
            command,
            ev.Ok(self.conn_id, self._public_corr_id(command)),
            effects,
            extra_events=(ev.Con(self.conn_id),),
        )

    def _seal_chain_message(self, send_queue: Any, payload: Any) -> bytes:
        """Seal the next message of this connection's chain; the caller persists `conn`."""
        message = AgentMessage(
            self.conn.snd_seq + 1, bytes(self.conn.snd_hash or GENESIS_HASH), payload
        )
        plaintext = encode_agent_message(message)
        self.conn.snd_seq += 1
        self.conn.snd_hash = message_hash(plaintext)
        sender = crypto.DhKey.from_private(bytes(send_queue.e2e_private))
        return seal_envelope(sender, bytes(send_queue.e2e_peer_public), plaintext)

    # ------------------------------------------------------------------ ACK (user acks)

    def _step_ack(self, command: Any, payload: dict[str, Any]) -> None:
        s = self.store
        with s.transaction(read_only=True):
            row = s.RcvMessage.get_or_none(
                (s.RcvMessage.conn_id == self.conn_id) & (s.RcvMessage.seq == payload["msg_id"])
            )
        if row is None:
            self._complete(command, ev.Ok(self.conn_id, self._public_corr_id(command)))
            return
        queue = self.rcv_queues.get(row.rcv_queue_id)
        if queue is None or queue.rcv_id is None:  # its queue is gone: nothing to ACK there
            self._complete(
                command, ev.Ok(self.conn_id, self._public_corr_id(command)), row.delete_instance
            )
            return

        def on_fail(error: BaseException) -> None:
            if isinstance(error, ServerError) and error.code == "NO_MSG":
                acked(None)  # acknowledged before a crash: done
            else:
                self._step_failed(command, queue.server)(error)

        def acked(_: Any) -> None:
            self._complete(
                command, ev.Ok(self.conn_id, self._public_corr_id(command)), row.delete_instance
            )

        self._submit(
            command.lane,
            queue.server,
            acked,
            on_fail,
            self._request(
                queue.server,
                Ack(bytes(row.broker_msg_id)),
                bytes(queue.rcv_id),
                bytes(queue.auth_private),
            ),
        )

    # ------------------------------------------------------------------ DELETE

    def _step_delete(self, command: Any, payload: dict[str, Any]) -> None:
        for queue in list(self.rcv_queues.values()):
            if queue.rcv_id is None:
                continue

            def deleted(_: Any, queue: Any = queue) -> None:
                with self.store.transaction():
                    queue.delete_instance()
                self.rcv_queues.pop(queue.id, None)
                self.tell(session_address(queue.server), Forget(bytes(queue.rcv_id)))

            def on_fail(error: BaseException, queue: Any = queue) -> None:
                if isinstance(error, ServerError) and error.code == "AUTH":
                    deleted(None, queue)  # gone already (a retry after a crash)
                else:
                    self._step_failed(command, queue.server)(error)

            self._submit(
                command.lane,
                queue.server,
                deleted,
                on_fail,
                self._request(queue.server, Del(), bytes(queue.rcv_id), bytes(queue.auth_private)),
            )
            return
        s = self.store

        def effects() -> None:
            for model in (s.RcvQueue, s.SndQueue, s.SndMessage, s.RcvMessage):
                model.delete().where(model.conn_id == self.conn_id).execute()
            s.Connection.delete().where(s.Connection.conn_id == self.conn_id).execute()

        self.rcv_queues.clear()
        self.snd_queues.clear()
        self.outbox.clear()
        self._complete(command, ev.Ok(self.conn_id, self._public_corr_id(command)), effects)
        self.conn = None

    # ------------------------------------------------------------------ link data

    def _step_set_link(self, command: Any, payload: dict[str, Any]) -> None:
        queue = next(
            (
                q
                for q in self.rcv_queues.values()
                if q.mode == QueueMode.CONTACT.value and q.status == "active"
            ),
            None,
        )
        if queue is None:
            self._fail(command, "PROHIBITED", "link data needs a contact address connection")
            return
        if self.conn.link_key is None:
            self.conn.link_key = os.urandom(32)
            with self.store.transaction():
                self.conn.save(only=[type(self.conn).link_key])
        short = ShortLink.from_key(ServerAddress.parse(queue.server), bytes(self.conn.link_key))
        blob = encrypt_link_data(short, LinkData(self._queue_link(queue), payload["user_data"]))
        event = ev.Link(self.conn_id, short.to_uri(), self._public_corr_id(command))
        self._submit(
            command.lane,
            queue.server,
            lambda _: self._complete(command, event),
            self._step_failed(command, queue.server),
            self._request(
                queue.server,
                LSet(short.link_id, blob),
                bytes(queue.rcv_id),
                bytes(queue.auth_private),
            ),
        )

    def _step_get_link(self, command: Any, payload: dict[str, Any]) -> None:
        short = parse_short_link(payload["link"])
        server = str(short.server)

        def fetched(reply: Lnk) -> None:
            try:
                data = decrypt_link_data(short, reply.data)
            except LinkError as exc:
                self._fail(command, exc.code, str(exc))
                return
            self._complete(
                command,
                ev.LData(
                    self.conn_id, data.link.to_uri(), data.user_data, self._public_corr_id(command)
                ),
            )

        self._submit(
            command.lane,
            server,
            fetched,
            self._step_failed(command, server),
            self._request(server, LGet(short.link_id)),
        )

    # ------------------------------------------------------------------ sending user messages

    def _send_user_message(self, body: bytes) -> int:
        if self.conn is None:
            raise AgentError("no such connection", code="NO_CONNECTION")
        queue = self._active_snd_queue()
        if queue is None or self.conn.status not in (ConnStatus.JOINED, ConnStatus.READY):
            raise AgentError(
                f"connection is {self.conn.status}: it cannot send yet", code="PROHIBITED"
            )
        row = self._enqueue(queue, UserMessage(body), "user")
        self._pump()
        return row.seq

    def _active_snd_queue(self) -> Any:
        for queue in self.snd_queues.values():
            if queue.status == "secured" and queue.mode == QueueMode.MESSAGING.value:
                return queue
        return None

    def _queue_internal(self, payload: Any, kind: str = "internal") -> None:
        queue = self._active_snd_queue()
        if queue is not None:
            self._enqueue(queue, payload, kind)

    def _enqueue(self, queue: Any, payload: Any, kind: str) -> Any:
        """Seal the next chain message and store it for delivery, with the chain position,
        in one transaction: a resend after a crash sends these very bytes."""
        sealed = self._seal_chain_message(queue, payload)
        now = time.time()
        s = self.store
        with s.transaction():
            self.conn.save(only=[type(self.conn).snd_seq, type(self.conn).snd_hash])
            row = s.SndMessage.create(
                conn_id=self.conn_id,
                snd_queue_id=queue.id,
                seq=self.conn.snd_seq,
                kind=kind,
                body=sealed,
                expires_at=now + self.services.config.message_ttl,
                created_at=now,
            )
        self.outbox.setdefault(queue.id, deque()).append(row)
        return row

    def _deliver(self, queue_id: int, message: Any) -> None:
        queue = self.snd_queues.get(queue_id)
        if queue is None:
            self.outbox.pop(queue_id, None)
            return
        if time.time() > message.expires_at:
            self._drop_message(queue_id, message, "EXPIRED")
            return
        lane = f"send:{queue_id}"

        def sent(_: Any) -> None:
            with self.store.transaction():
                message.delete_instance()
                if queue.quota_blocked:
                    queue.quota_blocked = False
                    queue.save(only=[type(queue).quota_blocked])
                if (
                    message.kind == "qadd"
                    and self.conn.rcv_switch_status == RcvSwitchStatus.QUEUING_QADD
                ):
                    self._set_rcv_switch(RcvSwitchStatus.SENT_QADD)
                elif message.kind == "qtest":
                    self._qtest_sent(queue)
            self.outbox[queue_id].popleft()
            if message.kind == "user":
                self._emit(ev.Sent(self.conn_id, message.seq))
            elif message.kind == "qtest":
                self._emit(self._switch_event("snd", "completed"))

        def failed(error: BaseException) -> None:
            now = time.time()
            if isinstance(error, ServerError) and error.code == "QUOTA":
                queue.quota_blocked = True
                delay = self.services.config.quota_retry
            elif isinstance(error, IoError) or (isinstance(error, QueueFault) and error.temporary):
                delay = self.services.config.retry.delay(
                    message.attempts + 1, now - message.created_at
                )
                self.tell(session_address(queue.server), WaitingForServer(self.conn_id))
            else:
                self._drop_message(queue_id, message, getattr(error, "code", "INTERNAL"))
                return
            message.attempts += 1
            message.next_attempt_at = now + delay
            with self.store.transaction():
                message.save(only=[type(message).attempts, type(message).next_attempt_at])
                queue.save(only=[type(queue).quota_blocked])

        self._submit(
            lane,
            queue.server,
            sent,
            failed,
            self._request(
                queue.server,
                Send(0, bytes(message.body)),
                bytes(queue.snd_id),
                bytes(queue.auth_private),
            ),
        )

    def _drop_message(self, queue_id: int, message: Any, code: str) -> None:
        queue = self.snd_queues[queue_id]
        with self.store.transaction():
            message.delete_instance()
            self.outbox[queue_id].popleft()
            if message.kind == "qkey":
                self._qkey_failed(queue)
            elif message.kind == "qtest":
                self._qtest_failed(queue, message)
        if message.kind == "user":
            self._emit(ev.MErr(self.conn_id, message.seq, code))
        elif message.kind in ("qkey", "qtest"):
            self._emit(self._switch_event("snd", "failed"))

    # ------------------------------------------------------------------ receiving

    def _queue_message(self, rcv_id: bytes, reply: Any) -> None:
        queue = next(
            (
                q
                for q in self.rcv_queues.values()
                if q.rcv_id is not None and bytes(q.rcv_id) == rcv_id
            ),
            None,
        )
        if queue is None or self.conn is None:
            return
        if isinstance(reply, End):
            log.info("subscription ended", extra={"conn_id": self.conn_id})
            return
        if not isinstance(reply, Msg):
            return
        if self._hold_if_switching(queue, rcv_id, reply):
            return
        try:
            content = decode_content(
                crypto.open_with_id(self._box_key(queue), reply.msg_id, reply.enc_body)
            )
        except (DuplexError, Exception) as exc:  # noqa: BLE001 (bad input is dropped, acked)
            log.warning(
                "undecodable queue message dropped",
                extra={"conn_id": self.conn_id, "error": repr(exc)},
            )
            self._ack_internal(queue, reply.msg_id)
            return
        if content.flags & MsgFlag.QUOTA_MARKER:
            self._ack_internal(queue, reply.msg_id)
            self._queue_internal(QCont())  # drained up to the marker: the peer may go on
            return
        s = self.store
        with s.transaction(read_only=True):
            known = s.RcvMessage.get_or_none(s.RcvMessage.broker_msg_id == reply.msg_id)
        if known is not None:  # delivered again before the user acked
            if known.seq not in self._emitted_msgs:  # not yet told since this activation
                self._emit_msg(ev.Msg(self.conn_id, known.seq, bytes(known.body), known.integrity))
            return
        expected = bytes(queue.e2e_peer_public) if queue.e2e_peer_public is not None else None
        try:
            opened = open_agent_message(
                crypto.DhKey.from_private(bytes(queue.e2e_private)), content.body, expected
            )
        except EnvelopeError as exc:
            log.warning(
                "unreadable agent message dropped",
                extra={"conn_id": self.conn_id, "error": str(exc)},
            )
            self._ack_internal(queue, reply.msg_id)
            return
        message = opened.message
        if isinstance(message, Confirmation):
            self._confirmation(queue, reply.msg_id, opened.sender_public, message)
        elif isinstance(message, Invitation):
            self._invitation(queue, reply.msg_id, message)
        else:
            self._chain_message(queue, reply.msg_id, opened.sender_public, message, opened.hash)

    def _confirmation(
        self, queue: Any, msg_id: bytes, sender: bytes, message: Confirmation
    ) -> None:
        # The inviter (NEW) and a contact-address joiner whose invitation was accepted
        # (JOINED, no send queue yet) take one confirmation; anything else is a re-send.
        expecting = self.conn.status == ConnStatus.NEW or (
            self.conn.status == ConnStatus.JOINED and self._active_snd_queue() is None
        )
        if self.conn.pending_conf is not None or not expecting or message.reply_queue is None:
            self._ack_internal(queue, msg_id)  # a duplicate (re-sent) or a late one
            return
        conf_id = b64url(os.urandom(9))

        with self.store.transaction():
            queue.e2e_peer_public = sender
            queue.save(only=[type(queue).e2e_peer_public])
            self.conn.pending_conf = msgspec.msgpack.encode((conf_id, message.reply_queue))
            self.conn.status = ConnStatus.CONFIRMED
            self.conn.save()
        self._emit(ev.Conf(self.conn_id, conf_id, message.info))
        self._ack_internal(queue, msg_id)

    def _invitation(self, queue: Any, msg_id: bytes, message: Invitation) -> None:
        s = self.store
        link = message.link.to_uri()
        with s.transaction():
            known = s.ContactRequest.get_or_none(
                (s.ContactRequest.conn_id == self.conn_id) & (s.ContactRequest.link == link)
            )
            if known is None:
                inv_id = b64url(os.urandom(9))
                s.ContactRequest.create(
                    inv_id=inv_id,
                    conn_id=self.conn_id,
                    link=link,
                    info=message.info,
                    created_at=time.time(),
                )
        if known is None:
            self._emit(ev.Req(self.conn_id, inv_id, message.info))
        self._ack_internal(queue, msg_id)

    def _chain_message(
        self, queue: Any, msg_id: bytes, sender: bytes, message: Any, received_hash: bytes
    ) -> None:
        if not isinstance(message, AgentMessage):
            self._ack_internal(queue, msg_id)
            return
        check = check_integrity(
            self.conn.rcv_seq,
            bytes(self.conn.rcv_hash) if self.conn.rcv_hash else None,
            message,
            received_hash,
        )
        if check.integrity in (Integrity.DUPLICATE, Integrity.BAD_ID):
            self._ack_internal(queue, msg_id)  # a re-sent SEND after the sender's crash
            return
        payload = message.payload
        s = self.store
        extra: list[Any] = []
        with s.transaction():
            self.conn.rcv_seq, self.conn.rcv_hash = check.last_seq, check.last_hash
            if queue.e2e_peer_public is None:
                queue.e2e_peer_public = sender
                queue.save(only=[type(queue).e2e_peer_public])
            if isinstance(payload, ConnInfo) and self.conn.status == ConnStatus.JOINED:
                self.conn.status = ConnStatus.READY
                extra = [ev.Info(self.conn_id, payload.info), ev.Con(self.conn_id)]
            elif isinstance(payload, QCont):
                for snd in self.snd_queues.values():
                    if snd.quota_blocked:
                        snd.quota_blocked = False
                        snd.save(only=[type(snd).quota_blocked])
                        if self.outbox.get(snd.id):
                            self.outbox[snd.id][0].next_attempt_at = 0.0
            elif isinstance(payload, UserMessage):
                s.RcvMessage.create(
                    conn_id=self.conn_id,
                    rcv_queue_id=queue.id,
                    seq=message.seq,
                    broker_msg_id=msg_id,
                    body=payload.body,
                    integrity=check.integrity.value,
                )
                extra = [ev.Msg(self.conn_id, message.seq, payload.body, check.integrity.value)]
            else:
                extra = self._switch_message(payload)
            self.conn.save()
        for pending in extra:
            event = pending() if callable(pending) else pending
            if isinstance(event, ev.Msg):
                self._emit_msg(event)
            else:
                self._emit(event)
        if not isinstance(payload, UserMessage):
            self._ack_internal(queue, msg_id)

    def _ack_internal(self, queue: Any, msg_id: bytes) -> None:
        def done(_: Any) -> None:
            pass

        def failed(error: BaseException) -> None:
            # Not retried: the server delivers the message again and it is recognised then.
            log.info("internal ACK failed", extra={"conn_id": self.conn_id, "error": repr(error)})

        request_id = self.submit_io(
            self._request(queue.server, Ack(msg_id), bytes(queue.rcv_id), bytes(queue.auth_private))
        )
        self._steps[request_id] = _Step(f"ack:{queue.id}:{request_id}", queue.server, done, failed)

    def _box_key(self, queue: Any) -> bytes:
        key = self._box_keys.get(queue.id)
        if key is None:
            key = crypto.server_recipient_key(
                bytes(queue.srv_dh_public), crypto.DhKey.from_private(bytes(queue.dh_private))
            )
            self._box_keys[queue.id] = key
        return key

    # ------------------------------------------------------------------ events

    def _emit(self, event: Any) -> None:
        self.services.events.put(event)

    def _emit_msg(self, event: ev.Msg) -> None:
        self._emitted_msgs.add(event.msg_id)
        self._emit(event)

    def _require_connection(self) -> None:
        if self.conn is None:
            raise AgentError(f"no connection {self.conn_id!r}", code="NO_CONNECTION")

    @staticmethod
    def _error(message: str, code: str) -> AgentError:
        return AgentError(message, code=code)

    def _ack_command_event(self, corr_id: str) -> None:
        s = self.store
        with s.transaction():
            s.Command.delete().where(
                (s.Command.corr_id == corr_id) & s.Command.event.is_null(False)
            ).execute()

    def _status(self) -> dict[str, Any] | None:
        if self.conn is None:
            return None
        return {
            "conn_id": self.conn_id,
            "status": self.conn.status,
            "error": self.conn.error,
            "rcv_servers": sorted({q.server for q in self.rcv_queues.values()}),
            "snd_servers": sorted({q.server for q in self.snd_queues.values()}),
            "rcv_switch_status": self.conn.rcv_switch_status,
            "snd_switch_status": self.conn.snd_switch_status,
            "pending_commands": len(self.commands),
            "pending_messages": sum(len(q) for q in self.outbox.values()),
        }
