"""`ReceivingSwitch`: queue rotation ("switch") — a connection moves its receive queue, live.

Theory of operation
-------------------
Alice rotates her receive queue; Bob is its sender (rotation_sender.py). Every message below
travels in the connection's hash chain, so it is ordered, deduplicated and survives restarts
like any other::

    Alice  switch_connection: NEW a queue (on another server when there is one)
           → QADD(new queue, replaces old)                  on her send queue
    Bob    new send queue record → QKEY(its sender key)     on the old queue
    Alice  KEY the new queue with that key → QUSE            on her send queue
    Bob    the old send queue only drains what was queued on it; then QTEST on the new
           queue; once QTEST is sent the old send queue is dropped
    Alice  holds what arrives on the new queue until the old one is drained (a GET on it
           answers OK), then processes it and DELs the old queue

Why Alice waits for the drain: Bob sends QTEST only after everything queued on the old queue
was accepted by its server, but Alice may not have received all of it yet (the server hands
out one message at a time, and a user message waits for the user's ack). Processing the new
queue first would look like a gap in the chain and lose the rest. A GET on the old queue
from the subscribed session answers OK only when nothing is left on it.

Every step is persisted before it is acted on: the new queue's keys before its NEW, the
statuses (only through the table in switch_states.py) with the chain position, the internal
commands (`SWITCH_SECURE`, `SWITCH_DELETE`) as command rows with their retries and lanes. A
restart at any status resumes: the pending command runs again, a message is re-sent and
dropped as a duplicate by the chain, a held message is handed out again by a GET (it was
never ACKed).

Failures. Up to SENT_QADD Alice may `abort_switch`: the pending command ends with
`ERR ABORTED`, the new queue is deleted (NEWed again first if its NEW may have run, so
nothing is left on the server), the status is reset. A permanent error before the drain
deletes the new queue and ends with `SWITCH rcv failed`; after the drain the switch completes
regardless. Bob's QERR (QTEST was refused) undoes the switch the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from actors.agent import events as ev
from actors.agent.info import connection_info
from actors.agent.model import (
    CommandKind,
    CommandOrigin,
    ConnStatus,
    MessageKind,
    RcvQueueStatus,
    Switch,
    SwitchDelete,
    SwitchOutcome,
    SwitchSecure,
    command_lane,
    decode_payload,
)
from actors.agent.ports import Chain, Commands, ConnectionPort, EventLike, QueueRequest
from actors.agent.queues import QueueSteps
from actors.agent.rotation_sender import SendingSwitch
from actors.agent.switch_hold import NewQueueHold
from actors.agent.switch_states import (
    RCV_TRANSITIONS,
    RcvSwitchEvent,
    next_rcv_status,
)
from protocol.envelope import QAdd, QErr, QKey, QUse
from protocol.errors import AgentError, NoConnection, ServerError
from protocol.queue import Del, Key, Msg, QueueMode
from storage.agent import AgentCommand, AgentRcvQueue, AgentSndMessage, AgentSndQueue

log = logging.getLogger(__name__)
E = RcvSwitchEvent


class ReceivingSwitch:
    def __init__(
        self,
        port: ConnectionPort,
        commands: Commands,
        queues: QueueSteps,
        chain: Chain,
        process: Callable[[AgentRcvQueue, Msg], None],
    ) -> None:
        self.port = port
        self.commands = commands
        self.queues = queues
        self.chain = chain
        self.process = process  # the inbound side: what a released message goes to
        self.sender = SendingSwitch(port, queues, chain, self.switch_event)
        self.hold = NewQueueHold(port, process, self._drained)
        commands.register(CommandKind.SWITCH, self.step_switch, self._failed)
        commands.register(CommandKind.SWITCH_SECURE, self.step_secure, self._failed)
        commands.register(CommandKind.SWITCH_DELETE, self.step_delete, self._delete_failed)
        chain.on_sent[MessageKind.QADD] = self._qadd_sent

    # ------------------------------------------------------------------ statuses and events

    def _set(self, event: RcvSwitchEvent) -> None:
        conn = self.port.state.conn
        conn.rcv_switch_status = next_rcv_status(conn.rcv_switch_status, event)
        self.port.store.save_switch_status(conn)

    def _allowed(self, event: RcvSwitchEvent) -> bool:
        return (self.port.state.conn.rcv_switch_status, event) in RCV_TRANSITIONS

    def switch_event(self, direction: str, phase: str, corr_id: str | None = None) -> ev.Switch:
        return ev.Switch(self.port.conn_id, direction, phase, self.connection_info(), corr_id)

    def connection_info(self) -> ev.ConnectionInfo:
        return connection_info(self.port.state)

    # ------------------------------------------------------------------ asks

    def start(self, corr_id: str, server: str | None, origin: CommandOrigin) -> str:
        """Store the SWITCH command and QUEUING_SWCH in one transaction (idempotent by
        corr_id); the command then runs like any other."""
        store = self.port.store
        with store.transaction(read_only=True):
            if store.command_exists(corr_id):
                return self.port.conn_id
        conn = self.port.state.conn
        if conn is None:
            raise NoConnection(f"no connection {self.port.conn_id!r}")
        if conn.status != ConnStatus.READY:
            raise AgentError(f"connection is {conn.status}, not ready", code="PROHIBITED")
        if conn.rcv_switch_status is not None:
            raise AgentError("a switch of this connection is in progress", code="PROHIBITED")
        old = self.port.state.current_rcv_queue()
        if old is None:
            raise AgentError("the connection has no receive queue to switch", code="PROHIBITED")
        if server is None:
            others = [s for s in self.port.servers if s != old.server]
            server = others[0] if others else old.server
        with store.transaction():
            command = store.insert_command(
                conn_id=self.port.conn_id,
                kind=CommandKind.SWITCH,
                payload=Switch(server),
                server=server,
                origin=origin,
                corr_id=corr_id,
                ttl=self.port.config.command_ttl,
            )
            self._set(E.START)
        self.port.state.commands.append(command)
        return self.port.conn_id

    def abort(self) -> ev.ConnectionInfo:
        conn = self.port.state.conn
        if conn is None:
            raise NoConnection(f"no connection {self.port.conn_id!r}")
        if not self._allowed(E.ABORTED):
            status = conn.rcv_switch_status
            raise AgentError(f"the switch cannot be aborted (status {status})", code="PROHIBITED")
        new = self.port.state.switch_new_rcv_queue()
        for command in [c for c in self.port.state.commands if c.kind == CommandKind.SWITCH]:
            corr_id = self.commands.public_corr_id(command)
            aborted = ev.Err(self.port.conn_id, "ABORTED", "the switch was aborted", corr_id)
            self.commands.complete(command, aborted)
        with self.port.store.transaction():
            self._set(E.ABORTED)
            if new is not None:
                self._delete_later(new, SwitchOutcome.ABORTED)
        return self.connection_info()

    # ------------------------------------------------------------------ commands

    def step_switch(self, command: AgentCommand, payload: Switch) -> None:
        state = self.port.state
        new = state.switch_new_rcv_queue()
        if new is None:
            old = state.current_rcv_queue()
            if old is None:
                self.commands.fail(command, "PROHIBITED", "the connection has no receive queue")
                return
            with self.port.store.transaction():
                new = self.queues.create_rcv_queue(payload.server, QueueMode.MESSAGING, old.id)
                self._set(E.QUEUE_RECORDED)
        if new.status == RcvQueueStatus.NEW:
            self.queues.new_queue(command, new, lambda: self._created(command, new))
        else:
            self._created(command, new)

    def _created(self, command: AgentCommand, new: AgentRcvQueue) -> None:
        old = self.port.state.rcv_queues[new.replaces]

        def effects() -> None:
            self.port.store.save_rcv_queue(new)
            address = self.queues.queue_link(new).queues[0]
            self.chain.queue_internal(QAdd(address, bytes(old.snd_id)), MessageKind.QADD)
            self._set(E.QADD_QUEUED)

        corr_id = self.commands.public_corr_id(command)
        # the event is built after the effects, so its info shows QUEUING_QADD
        self.commands.complete(
            command, lambda: self.switch_event("rcv", "started", corr_id), effects
        )

    def step_secure(self, command: AgentCommand, payload: SwitchSecure) -> None:
        new = self.port.state.switch_new_rcv_queue()
        if new is None or new.sender_auth_public is None:
            self.commands.complete(command, None)  # aborted or failed meanwhile
            return
        if self._allowed(E.SECURE_STARTED):
            with self.port.store.transaction():
                self._set(E.SECURE_STARTED)

        def secured(_: object) -> None:
            def effects() -> None:
                self.chain.queue_internal(QUse(bytes(new.snd_id)), MessageKind.QUSE)
                self._set(E.QUSE_QUEUED)

            told = (lambda: self.switch_event("rcv", "secured"),)
            self.commands.complete(command, None, effects, told)

        keys = self.port.state.keys
        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                new.server,
                Key(bytes(new.sender_auth_public)),
                bytes(new.rcv_id),
                keys.signer(bytes(new.auth_private)),
            ),
            secured,
            self.commands.step_failed(command, new.server),
            command,
        )

    def step_delete(self, command: AgentCommand, payload: SwitchDelete) -> None:
        queue = self.port.state.rcv_queues.get(payload.queue_id)
        if queue is None:
            self._deleted(command, None, payload.outcome)
            return
        if queue.rcv_id is None:
            # Its NEW may have reached the server before an abort: NEW is idempotent by
            # key, so NEW again to learn its ids, then DEL it; nothing is left behind.
            def created() -> None:
                with self.port.store.transaction():
                    self.port.store.save_rcv_queue(queue)

            self.queues.new_queue(command, queue, created)
            return
        if payload.outcome is SwitchOutcome.COMPLETED and self._allowed(E.DELETE_STARTED):
            with self.port.store.transaction():
                self._set(E.DELETE_STARTED)

        def failed(error: BaseException) -> None:
            if isinstance(error, ServerError) and not error.temporary:
                log.info(
                    "switch: DEL of a queue failed for good, dropped here",
                    extra={"conn_id": self.port.conn_id, "error": str(error)},
                )
                self._deleted(command, queue, payload.outcome)
            else:
                self.commands.step_failed(command, queue.server)(error)

        keys = self.port.state.keys
        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                queue.server, Del(), bytes(queue.rcv_id), keys.signer(bytes(queue.auth_private))
            ),
            lambda _: self._deleted(command, queue, payload.outcome),
            failed,
            command,
        )

    def _deleted(
        self, command: AgentCommand, queue: AgentRcvQueue | None, outcome: SwitchOutcome
    ) -> None:
        state = self.port.state
        store = self.port.store
        survivor = None
        if queue is not None and outcome is SwitchOutcome.COMPLETED:
            survivor = next((q for q in state.rcv_queues.values() if q.replaces == queue.id), None)

        def effects() -> None:
            if queue is not None:
                store.delete_rcv_queue(queue)
            if survivor is not None:
                survivor.replaces = None
                store.save_rcv_queue(survivor)
            if outcome is not SwitchOutcome.ABORTED:  # an abort reset the status at once
                self._set(E.DELETED)

        if queue is not None:
            state.drop_rcv_queue(queue)
            for msg_id in [k for k, r in state.received.items() if r.rcv_queue_id == queue.id]:
                del state.received[msg_id]
            if queue.rcv_id is not None:
                self.port.forget(queue)
        told: tuple[EventLike, ...] = ()
        if outcome is not SwitchOutcome.ABORTED:
            told = (lambda: self.switch_event("rcv", outcome.value),)
        self.commands.complete(command, None, effects, told)

    def _delete_failed(self, command: AgentCommand, code: str, message: str) -> bool:
        """The DEL failed for good: the queue is dropped here all the same."""
        payload = decode_payload(CommandKind.SWITCH_DELETE, bytes(command.payload))
        assert isinstance(payload, SwitchDelete)
        queue = self.port.state.rcv_queues.get(payload.queue_id)
        self._deleted(command, queue, payload.outcome)
        return True

    def _failed(self, command: AgentCommand, code: str, message: str) -> bool:
        """A permanent error of SWITCH or SWITCH_SECURE: undo the switch."""
        new = self.port.state.switch_new_rcv_queue()

        def effects() -> None:
            if new is not None:  # the status is reset, and the failure told, once it is gone
                self._set(E.FAILED)
                self._delete_later(new, SwitchOutcome.FAILED)
            else:
                self._set(E.DELETED)

        corr_id = self.commands.public_corr_id(command)
        error = ev.Err(self.port.conn_id, code, message, corr_id) if corr_id else None
        self.commands.complete(command, error, effects)
        if new is None:
            self.port.emit(self.switch_event("rcv", "failed"))
        return True

    def _delete_later(self, queue: AgentRcvQueue, outcome: SwitchOutcome) -> None:
        """Queue the DEL of `queue` as an internal command (inside the caller's transaction)."""
        queue.status = RcvQueueStatus.DELETING
        self.port.store.save_rcv_queue(queue)
        self.commands.add_internal(SwitchDelete(queue.id, outcome), queue.server)

    # ------------------------------------------------------------------ the chain

    def chain_message(self, payload: object) -> list[EventLike]:
        """A rotation message received in the chain (inside the chain's transaction);
        returns the events to tell once it is committed."""
        match payload:
            case QAdd():
                return self.sender.qadd(payload)
            case QUse():
                return self.sender.quse(payload)
            case QKey():
                return self._qkey(payload)
            case QErr():
                return self._qerr(payload)
        return []  # QTEST: it only had to arrive

    def _qadd_sent(self, queue: AgentSndQueue, message: AgentSndMessage) -> None:
        if self._allowed(E.QADD_SENT):  # (QKEY may have come back first)
            self._set(E.QADD_SENT)

    def _qkey(self, message: QKey) -> list[EventLike]:
        """Bob's sender key for the new queue."""
        new = self.port.state.switch_new_rcv_queue()
        if (
            new is None
            or bytes(new.snd_id or b"") != message.snd_id
            or not self._allowed(E.QKEY_RECEIVED)
        ):
            log.info("switch: QKEY for no switch in progress", extra={"conn_id": self.port.conn_id})
            return []
        new.sender_auth_public = message.sender_auth_public
        self.port.store.save_rcv_queue(new)
        self.commands.add_internal(SwitchSecure(), new.server)
        self._set(E.QKEY_RECEIVED)
        return [lambda: self.switch_event("rcv", "confirmed")]

    def _qerr(self, message: QErr) -> list[EventLike]:
        """Bob could not use the new queue: undo; `SWITCH rcv failed` once it is deleted."""
        state = self.port.state
        new = state.switch_new_rcv_queue()
        if new is None or bytes(new.snd_id or b"") != message.snd_id or not self._allowed(E.FAILED):
            return []
        for command in [c for c in state.commands if c.kind == CommandKind.SWITCH_SECURE]:
            state.commands.remove(command)
            self.port.store.delete_command(command)
        self._set(E.FAILED)
        self._delete_later(new, SwitchOutcome.FAILED)
        return []

    # ------------------------------------------------------------------ holding the new queue

    @property
    def held(self) -> list[tuple[AgentRcvQueue, Msg]]:
        return self.hold.held

    def hold_if_switching(self, queue: AgentRcvQueue, reply: Msg) -> bool:
        return self.hold.hold_if_switching(queue, reply)

    def recover_held(self) -> None:
        self.hold.recover_held()

    def pump(self) -> None:
        self.hold.pump()

    def _drained(self, old: AgentRcvQueue) -> None:
        """Nothing is left on the old queue: DEL it (inside the hold's transaction)."""
        self._delete_later(old, SwitchOutcome.COMPLETED)
        self._set(E.OLD_DRAINED)
