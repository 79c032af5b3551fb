"""`Inbound`: what arrives on a connection's receive queues, and the user's acknowledgements.

A `MSG` pushed by the server is opened twice: with the queue's server↔recipient key (the
server's layer) and with the e2e key (the peer's envelope). Then:

* a confirmation or an invitation goes to the handshake; whatever else is the next link of
  the peer's hash chain and is checked against it (duplicate, skipped, bad hash …);
* agent-internal messages (connection info, QCONT, rotation messages, quota markers, and
  anything unreadable, which is dropped) are processed and ACKed by the agent itself; an
  internal ACK that fails is retried on the connection's schedule;
* a user message is stored (one transaction: the chain position and the row) and told as
  `MSG` — but never before the connection is READY: messages that arrive before `CON` (a
  joiner may send as soon as it joined) wait and are told right after it.

A user message is ACKed on the server only after the user's `ack_message`. That call is
durable: it stores an ACK command and returns; the command delivers the ACK with retries,
across restarts (the ACK of a message the server no longer holds — `NO_MSG` — was done
before a crash). Until then the server holds back the queue's next message, and a message
the server hands out again is recognised by its server id and not stored twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from actors.agent import events as ev
from actors.agent.model import (
    Ack,
    CommandKind,
    CommandOrigin,
    ConnStatus,
    Lane,
    LaneKind,
    command_lane,
    decode_payload,
)
from actors.agent.ports import (
    Chain,
    Commands,
    ConnectionPort,
    EventLike,
    Handshake,
    QueueRequest,
    Rotation,
    unreachable,
)
from actors.kernel import IoError
from protocol import crypto
from protocol.envelope import (
    AgentMessage,
    Confirmation,
    ConnInfo,
    Integrity,
    Invitation,
    QCont,
    UserMessage,
    check_integrity,
    open_agent_message,
)
from protocol.errors import (
    DuplexError,
    EnvelopeError,
    NoConnection,
    QueueFault,
    ServerError,
)
from protocol.queue import Ack as AckCommand
from protocol.queue import End, Msg, MsgFlag, decode_content
from storage.agent import AgentCommand, AgentRcvMessage, AgentRcvQueue

log = logging.getLogger(__name__)


class Inbound:
    def __init__(
        self,
        port: ConnectionPort,
        commands: Commands,
        chain: Chain,
        handshake: Handshake,
        rotation: Callable[[], Rotation],
    ) -> None:
        self.port = port
        self.commands = commands
        self.chain = chain
        self.handshake = handshake
        self._rotation = rotation
        self.emitted: set[int] = set()  # MSG seqs told in this activation
        self.acking: set[int] = set()  # seqs whose ACK command is stored, not yet done
        self._internal_acks: list[tuple[float, AgentRcvQueue, bytes]] = []  # to retry
        commands.register(CommandKind.ACK, self.step_ack)
        for command in port.state.commands:
            if command.kind == CommandKind.ACK:
                self.acking.add(decode_payload(CommandKind.ACK, bytes(command.payload)).msg_id)

    # ------------------------------------------------------------------ pushes

    def push(self, rcv_id: bytes, reply: object) -> None:
        queue = self.port.state.rcv_queue_of(rcv_id)
        if queue is None or self.port.state.conn is None:
            return
        if isinstance(reply, End):
            log.info("subscription ended", extra={"conn_id": self.port.conn_id})
            return
        if isinstance(reply, Msg) and not self._rotation().hold_if_switching(queue, reply):
            self.process(queue, reply)

    def process(self, queue: AgentRcvQueue, reply: Msg) -> None:
        state = self.port.state
        try:
            content = decode_content(
                crypto.open_with_id(state.keys.box_key(queue), reply.msg_id, reply.enc_body)
            )
        except DuplexError as exc:
            log.warning(
                "undecodable queue message dropped",
                extra={"conn_id": self.port.conn_id, "error": repr(exc)},
            )
            self.ack_internal(queue, reply.msg_id)
            return
        if content.flags & MsgFlag.QUOTA_MARKER:
            self.ack_internal(queue, reply.msg_id)
            self.chain.queue_internal(QCont())  # drained up to the marker: the peer may go on
            return
        known = state.received.get(reply.msg_id)
        if known is not None:  # handed out again before the user's ACK reached the server
            self._tell(known)
            return
        expected = bytes(queue.e2e_peer_public) if queue.e2e_peer_public is not None else None
        try:
            opened = open_agent_message(
                state.keys.dh(bytes(queue.e2e_private)), content.body, expected
            )
        except EnvelopeError as exc:
            log.warning(
                "unreadable agent message dropped",
                extra={"conn_id": self.port.conn_id, "error": str(exc)},
            )
            self.ack_internal(queue, reply.msg_id)
            return
        message = opened.message
        if isinstance(message, Confirmation):
            self.handshake.confirmation(queue, reply.msg_id, opened.sender_public, message)
            self.ack_internal(queue, reply.msg_id)
        elif isinstance(message, Invitation):
            self.handshake.invitation(message)
            self.ack_internal(queue, reply.msg_id)
        elif isinstance(message, AgentMessage):
            self._chain_message(queue, reply.msg_id, opened.sender_public, message, opened.hash)
        else:
            self.ack_internal(queue, reply.msg_id)

    def _chain_message(
        self,
        queue: AgentRcvQueue,
        msg_id: bytes,
        sender: bytes,
        message: AgentMessage,
        received_hash: bytes,
    ) -> None:
        conn = self.port.state.conn
        check = check_integrity(
            conn.rcv_seq, bytes(conn.rcv_hash) if conn.rcv_hash else None, message, received_hash
        )
        if check.integrity in (Integrity.DUPLICATE, Integrity.BAD_ID):
            self.ack_internal(queue, msg_id)  # a re-sent SEND after the sender's crash
            return
        payload = message.payload
        store = self.port.store
        events: list[EventLike] = []
        stored: AgentRcvMessage | None = None
        was_ready = conn.status == ConnStatus.READY
        with self.commands.transaction():
            conn.rcv_seq, conn.rcv_hash = check.last_seq, check.last_hash
            if queue.e2e_peer_public is None:
                queue.e2e_peer_public = sender
                store.save_rcv_queue(queue)
            if isinstance(payload, UserMessage):
                store.save_rcv_position(conn)
                stored = store.insert_rcv_message(
                    conn_id=self.port.conn_id,
                    rcv_queue_id=queue.id,
                    seq=message.seq,
                    broker_msg_id=msg_id,
                    body=payload.body,
                    integrity=check.integrity.value,
                )
            else:
                if isinstance(payload, ConnInfo):
                    events = self.handshake.conn_info(payload)
                elif isinstance(payload, QCont):
                    self.chain.resume_after_qcont()
                else:
                    events = self._rotation().chain_message(payload)
                store.save_connection(conn)
        for event in events:
            self.port.emit(event() if callable(event) else event)
        if stored is not None:
            self.port.state.received[msg_id] = stored
            self._tell(stored)
        else:
            self.ack_internal(queue, msg_id)
        if not was_ready and conn.status == ConnStatus.READY:
            self.release()

    def _tell(self, row: AgentRcvMessage) -> None:
        """Tell `MSG` for a stored message, once per activation, and only once READY."""
        conn = self.port.state.conn
        if (
            conn is None
            or conn.status != ConnStatus.READY
            or row.seq in self.emitted
            or row.seq in self.acking
        ):
            return
        self.emitted.add(row.seq)
        self.port.emit(ev.Msg(self.port.conn_id, row.seq, bytes(row.body), row.integrity))

    def release(self, *, again: bool = False) -> None:
        """Tell every stored message not told yet, in order (the connection became READY);
        `again`: also those told before (the layer above lost what it was told)."""
        if again:
            self.emitted.clear()
        for row in sorted(self.port.state.received.values(), key=lambda r: r.seq):
            self._tell(row)

    # ------------------------------------------------------------------ internal ACKs

    def ack_internal(self, queue: AgentRcvQueue, msg_id: bytes) -> None:
        """ACK a message the agent processed itself; a failure is retried on our timer."""

        def failed(error: BaseException) -> None:
            if isinstance(error, ServerError) and not error.temporary:
                return  # NO_MSG: it was ACKed already; AUTH: the queue is gone
            retry_at = time.time() + self.port.config.retry.initial
            self._internal_acks.append((retry_at, queue, msg_id))
            if unreachable(error):  # not ERR INTERNAL: an UP would retry it at once
                self.port.server_unavailable(queue.server)
            self.port.wake_at(retry_at)

        keys = self.port.state.keys
        request = QueueRequest(
            queue.server,
            AckCommand(msg_id),
            bytes(queue.rcv_id),
            keys.signer(bytes(queue.auth_private)),
        )
        self.port.submit(Lane(LaneKind.ACK, msg_id), request, lambda _: None, failed)

    def pump(self, now: float) -> float:
        due = [entry for entry in self._internal_acks if entry[0] <= now]
        self._internal_acks = [entry for entry in self._internal_acks if entry[0] > now]
        for _, queue, msg_id in due:
            if queue.id in self.port.state.rcv_queues:
                self.ack_internal(queue, msg_id)
        return min((entry[0] for entry in self._internal_acks), default=float("inf"))

    def server_up(self, server: str, now: float) -> None:
        self._internal_acks = [
            (now if queue.server == server else at, queue, msg_id)
            for at, queue, msg_id in self._internal_acks
        ]

    # ------------------------------------------------------------------ the user's ACK

    def ack_message(self, msg_id: int, corr_id: str | None) -> None:
        """Record the user's ACK of `msg_id` (an ask: returns once it is stored)."""
        state = self.port.state
        if state.conn is None:
            raise NoConnection(f"no connection {self.port.conn_id!r}")
        row = next((r for r in state.received.values() if r.seq == msg_id), None)
        if corr_id is None and (row is None or msg_id in self.acking):
            return  # acknowledged before: nothing more to do
        queue = state.rcv_queues.get(row.rcv_queue_id) if row is not None else None
        store = self.port.store
        fields = {
            "conn_id": self.port.conn_id,
            "kind": CommandKind.ACK,
            "payload": Ack(msg_id),
            "server": queue.server if queue is not None else None,
            "ttl": self.port.config.command_ttl,
        }
        with self.commands.transaction():  # with the ACKs done meanwhile (complete_soon)
            if corr_id is None:
                command = store.insert_command(
                    origin=CommandOrigin.INTERNAL, corr_id=None, **fields
                )
            else:
                command = store.insert_command_once(
                    origin=CommandOrigin.ASYNC, corr_id=corr_id, **fields
                )
        if command is None:
            return  # the same call again (the caller crashed): stored already
        state.commands.append(command)
        self.acking.add(msg_id)

    def step_ack(self, command: AgentCommand, payload: Ack) -> None:
        state = self.port.state
        corr_id = self.commands.public_corr_id(command)
        done = ev.Ok(self.port.conn_id, corr_id)
        row = next((r for r in state.received.values() if r.seq == payload.msg_id), None)
        if row is None:
            self.acking.discard(payload.msg_id)
            self.commands.complete(command, done)
            return
        queue = state.rcv_queues.get(row.rcv_queue_id)

        def acked(_: object) -> None:
            state.received.pop(bytes(row.broker_msg_id), None)
            self.acking.discard(payload.msg_id)
            # stored with the next ACK's insert, usually: the user makes it a moment later
            self.commands.complete_soon(
                command, done, lambda: self.port.store.delete_rcv_message(row)
            )

        if queue is None or queue.rcv_id is None:  # its queue is gone: nothing to ACK there
            acked(None)
            return

        def failed(error: BaseException) -> None:
            if isinstance(error, ServerError) and error.code == "NO_MSG":
                acked(None)  # acknowledged before a crash: done
            elif isinstance(error, IoError | QueueFault) and getattr(error, "temporary", True):
                self.commands.step_failed(command, queue.server)(error)
            else:
                self.acking.discard(payload.msg_id)
                self.commands.step_failed(command, queue.server)(error)

        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                queue.server,
                AckCommand(bytes(row.broker_msg_id)),
                bytes(queue.rcv_id),
                state.keys.signer(bytes(queue.auth_private)),
            ),
            acked,
            failed,
            command,
        )
