"""`Handshake`: making a connection (create, join, allow, accept) and ending it (delete).

Invitation handshake (A invites, B joins)::

    A  CREATE  keys stored → NEW a receive queue → INV link
    B  JOIN    send queue to A's queue (keys) → SKEY it → NEW B's reply queue →
               SEND the sealed confirmation (stored in the payload first) → JOINED
    A          the confirmation arrives → CONFIRMED, CONF conf_id
    A  ALLOW   send queue to B's reply queue → SKEY it → SEND the connection info, sealed
               as the first link of A's chain (stored first) → READY, OK, CON
    B          the connection info arrives → READY, INFO, CON

A contact address is a reusable queue: a joiner SENDs an invitation (unsigned, sealed to the
address key) to it instead of a confirmation; the owner gets `REQ` and `accept_contact` joins
the invitation like B above. Every network step is idempotent (see queues.py), so each
command just does the next step that its persisted rows say is missing.

Delete: DEL each receive queue in turn, then the connection's rows in one transaction with
`OK`. What the connection stored for delivery and had not sent yet goes with them — unless
the delete was asked with `wait_delivery` (as a layer above does after a last message, such
as a group member leaving). Then the step first waits until the outbox is empty, each
message sent (`SENT`) or dropped (`MERR`, e.g. `EXPIRED` past the message TTL), and only
then deletes. The wait is no busy loop and holds no thread: the step returns and runs again
when a delivery settles (`Delivery.after_settled`) or at the slowest retry's pace; the
command is stored, so a restart just runs it again. While such a delete is pending the
connection refuses new sends and switches (`AgentError` code `DELETING`): they would only
prolong the wait, or be deleted unsent. The command TTL never cuts the wait short (the
messages' own TTL bounds it); when the wait ends, that is stored with a deadline one
command TTL later, for the DELs that follow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import msgspec

from actors.agent import events as ev
from actors.agent.model import (
    Allow,
    CommandKind,
    ConnStatus,
    Create,
    Delete,
    Join,
    PendingConf,
    RcvQueueStatus,
    SndQueueStatus,
    command_lane,
    decode_payload,
    decode_pending_conf,
)
from actors.agent.ports import Chain, Commands, ConnectionPort, EventLike, QueueRequest
from actors.agent.queues import QueueSteps
from protocol.address import b64url
from protocol.envelope import Confirmation, ConnInfo, Invitation, encode_agent_message
from protocol.envelope import seal_envelope as seal
from protocol.errors import AgentError, ServerError
from protocol.links import ConnectionLink, QueueAddress, parse_link
from protocol.queue import Del, QueueMode, Send
from storage.agent import AgentCommand, AgentRcvQueue, AgentSndQueue


class Handshake:
    def __init__(
        self,
        port: ConnectionPort,
        commands: Commands,
        queues: QueueSteps,
        chain: Chain,
        on_ready: Callable[[], None],
    ) -> None:
        self.port = port
        self.commands = commands
        self.queues = queues
        self.chain = chain
        self.on_ready = on_ready  # the connection became READY: release what waited for it
        commands.register(CommandKind.CREATE, self.step_create, self._failed)
        commands.register(CommandKind.JOIN, self.step_join, self._failed)
        commands.register(CommandKind.ALLOW, self.step_allow)
        commands.register(CommandKind.DELETE, self.step_delete)
        self._waiting: AgentCommand | None = None  # a delete waiting for delivery
        chain.after_settled.append(self._delivery_settled)

    def _failed(self, command: AgentCommand, code: str, message: str) -> bool:
        """A create or join that failed for good leaves the connection FAILED, never
        'connecting' forever."""
        conn = self.port.state.conn

        def effects() -> None:
            if conn is not None:
                conn.status = ConnStatus.FAILED
                conn.error = f"{code}: {message}"
                self.port.store.save_connection(conn)

        corr_id = self.commands.public_corr_id(command)
        self.commands.complete(command, ev.Err(self.port.conn_id, code, message, corr_id), effects)
        return True

    # ------------------------------------------------------------------ CREATE

    def step_create(self, command: AgentCommand, payload: Create) -> None:
        queue = self.queues.own_rcv_queue(command.server, payload.mode)
        if queue.status == RcvQueueStatus.NEW:
            self.queues.new_queue(command, queue, lambda: self._created(command, queue))
        else:
            self._created(command, queue)

    def _created(self, command: AgentCommand, queue: AgentRcvQueue) -> None:
        link = self.queues.queue_link(queue).to_uri()
        corr_id = self.commands.public_corr_id(command)
        self.commands.complete(
            command,
            ev.Inv(self.port.conn_id, link, corr_id),
            lambda: self.port.store.save_rcv_queue(queue),
        )

    # ------------------------------------------------------------------ JOIN (and ACCEPT)

    def step_join(self, command: AgentCommand, payload: Join) -> None:
        target = parse_link(payload.link).queues[0]
        contact = target.mode is QueueMode.CONTACT
        send_queue = self.queues.snd_queue_to(target)
        reply_queue = self.queues.own_rcv_queue(payload.reply_server, QueueMode.MESSAGING)
        if not contact and send_queue.status == SndQueueStatus.NEW:
            self.queues.skey(command, send_queue)
            return
        if reply_queue.status == RcvQueueStatus.NEW:
            save = lambda: self._save_rcv_queue(reply_queue)  # noqa: E731
            self.queues.new_queue(command, reply_queue, save)
            return
        body = payload.body
        if body is None:
            body = self._seal_handshake(send_queue, reply_queue, payload.info, contact)
            self.commands.save_payload(command, msgspec.structs.replace(payload, body=body))
        keys = self.port.state.keys
        key = None if contact else keys.signer(bytes(send_queue.auth_private))
        self.port.submit(
            command_lane(command.server),
            QueueRequest(send_queue.server, Send(0, body), bytes(send_queue.snd_id), key),
            lambda _: self._joined(command, send_queue, contact),
            self.commands.step_failed(command, send_queue.server),
            command,
        )

    def _save_rcv_queue(self, queue: AgentRcvQueue) -> None:
        with self.port.store.transaction():
            self.port.store.save_rcv_queue(queue)

    def _seal_handshake(
        self, send_queue: AgentSndQueue, reply_queue: AgentRcvQueue, info: bytes, contact: bool
    ) -> bytes:
        keys = self.port.state.keys
        e2e = keys.dh(bytes(reply_queue.e2e_private))
        reply_address = QueueAddress.create(
            reply_queue.server, bytes(reply_queue.snd_id), e2e.public, QueueMode.MESSAGING
        )
        if contact:
            message: Invitation | Confirmation = Invitation(
                ConnectionLink.create(reply_address), info
            )
        else:
            message = Confirmation(reply_address, None, info)
        sender = keys.dh(bytes(send_queue.e2e_private))
        return seal(sender, bytes(send_queue.e2e_peer_public), encode_agent_message(message))

    def _joined(self, command: AgentCommand, send_queue: AgentSndQueue, contact: bool) -> None:
        conn = self.port.state.conn
        store = self.port.store

        def effects() -> None:
            # A join run again after a crash may complete when the peer's answer came
            # already (a contact address's CONF made the connection CONFIRMED): JOINED only
            # ever moves a connection forward, never back over what arrived.
            if conn.status == ConnStatus.NEW:
                conn.status = ConnStatus.JOINED
            store.save_connection(conn)
            if contact:  # the contact address was only a door: nothing more goes there
                store.delete_snd_queue(send_queue)

        if contact:
            self.port.state.snd_queues.pop(send_queue.id, None)
        corr_id = self.commands.public_corr_id(command)
        self.commands.complete(command, ev.Joined(self.port.conn_id, corr_id), effects)

    # ------------------------------------------------------------------ ALLOW

    def step_allow(self, command: AgentCommand, payload: Allow) -> None:
        conn = self.port.state.conn
        if conn.pending_conf is None:
            self.commands.fail(command, "PROHIBITED", "no confirmation waits on this connection")
            return
        pending = decode_pending_conf(bytes(conn.pending_conf))
        conf_id, reply = pending.conf_id, pending.reply_queue
        if conf_id != payload.conf_id:
            self.commands.fail(command, "PROHIBITED", f"unknown confirmation {payload.conf_id!r}")
            return
        send_queue = self.queues.snd_queue_to(reply)
        if send_queue.status == SndQueueStatus.NEW:
            self.queues.skey(command, send_queue)
            return
        body = payload.body
        if body is None:
            body = self.chain.seal_chain_message(send_queue, ConnInfo(payload.info))
            with self.port.store.transaction():
                self.port.store.save_command_payload(
                    command, msgspec.structs.replace(payload, body=body)
                )
                self.port.store.save_snd_position(conn)
        keys = self.port.state.keys
        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                send_queue.server,
                Send(0, body),
                bytes(send_queue.snd_id),
                keys.signer(bytes(send_queue.auth_private)),
            ),
            lambda _: self._allowed(command),
            self.commands.step_failed(command, send_queue.server),
            command,
        )

    def _allowed(self, command: AgentCommand) -> None:
        conn = self.port.state.conn

        def effects() -> None:
            conn.status = ConnStatus.READY
            conn.pending_conf = None
            self.port.store.save_connection(conn)

        corr_id = self.commands.public_corr_id(command)
        self.commands.complete(
            command,
            ev.Ok(self.port.conn_id, corr_id),
            effects,
            extra_events=(ev.Con(self.port.conn_id),),
        )
        self.on_ready()

    # ------------------------------------------------------------------ what arrives

    def confirmation(
        self, queue: AgentRcvQueue, msg_id: bytes, sender: bytes, message: Confirmation
    ) -> bool:
        """The joiner's confirmation (inside no transaction); True if it was taken."""
        conn = self.port.state.conn
        # The inviter (NEW) and a contact-address joiner whose invitation was accepted
        # (JOINED, no send queue yet) take one confirmation; anything else is a re-send.
        expecting = conn.status == ConnStatus.NEW or (
            conn.status == ConnStatus.JOINED and self.port.state.active_snd_queue() is None
        )
        if conn.pending_conf is not None or not expecting or message.reply_queue is None:
            return False
        conf_id = b64url(os.urandom(9))
        store = self.port.store
        with store.transaction():
            queue.e2e_peer_public = sender
            store.save_rcv_queue(queue)
            pending = PendingConf(conf_id, message.reply_queue, message.info)
            conn.pending_conf = msgspec.msgpack.encode(pending)
            conn.status = ConnStatus.CONFIRMED
            store.save_connection(conn)
        self.port.emit(ev.Conf(self.port.conn_id, conf_id, message.info))
        return True

    def invitation(self, message: Invitation) -> None:
        """Someone knocked on our contact address: keep the request (once) and tell."""
        store = self.port.store
        link = message.link.to_uri()
        with store.transaction():
            inv_id = store.add_contact_request(
                self.port.conn_id, b64url(os.urandom(9)), link, message.info, time.time()
            )
        if inv_id is not None:
            self.port.emit(ev.Req(self.port.conn_id, inv_id, message.info))

    def conn_info(self, payload: ConnInfo) -> list[EventLike]:
        """The inviter's connection info arrived on our chain (inside its transaction)."""
        conn = self.port.state.conn
        if conn.status != ConnStatus.JOINED:
            return []
        conn.status = ConnStatus.READY
        conn.peer_info = payload.info  # kept, for `Replay`
        return [ev.Info(self.port.conn_id, payload.info), ev.Con(self.port.conn_id)]

    # ------------------------------------------------------------------ DELETE

    def step_delete(self, command: AgentCommand, payload: Delete) -> None:
        if payload.wait_delivery and not payload.delivered and self._wait_for_delivery(command):
            return
        state = self.port.state
        for queue in list(state.rcv_queues.values()):
            if queue.rcv_id is None:
                continue
            self._delete_queue(command, queue)
            return  # one DEL at a time; the command runs again for the next one
        store = self.port.store

        def effects() -> None:
            store.delete_connection(self.port.conn_id)

        state.rcv_queues.clear()
        state.snd_queues.clear()
        state.outbox.clear()
        state.received.clear()
        corr_id = self.commands.public_corr_id(command)
        self.commands.complete(command, ev.Ok(self.port.conn_id, corr_id), effects)
        state.conn = None
        self._waiting = None

    def _wait_for_delivery(self, command: AgentCommand) -> bool:
        """True while messages stored for delivery remain: the step runs again when one is
        sent or dropped (`_delivery_settled`), or at the slowest retry's pace in case the
        outbox shrank another way. Once none remain the wait is over, for good: that is
        stored with a new deadline, so the deletion's steps get the whole command TTL."""
        if self.port.state.pending_messages():
            self._waiting = command
            command.next_attempt_at = time.time() + self.port.config.retry.maximum
            self.port.wake_at(command.next_attempt_at)
            return True
        self._waiting = None
        command.deadline = max(command.deadline, time.time() + self.port.config.command_ttl)
        store = self.port.store
        with store.transaction():
            store.save_command_payload(command, Delete(wait_delivery=True, delivered=True))
            store.save_command_deadline(command)
        return False

    def _delivery_settled(self) -> None:
        """A message was sent or dropped: once none remain, the waiting delete runs now."""
        waiting = self._waiting
        if waiting is None or self.port.state.pending_messages():
            return
        waiting.next_attempt_at = 0.0
        self.port.wake_at(time.time())

    def refuse_if_deleting(self) -> None:
        """AgentError `DELETING` if a delete that waits for delivery is pending: what is
        stored now would only prolong the wait, or be deleted unsent."""
        for command in self.port.state.commands:
            if command.kind != CommandKind.DELETE:
                continue
            payload = decode_payload(CommandKind.DELETE, bytes(command.payload))
            if isinstance(payload, Delete) and payload.wait_delivery:
                raise AgentError(
                    f"connection {self.port.conn_id!r} is being deleted", code="DELETING"
                )

    def _delete_queue(self, command: AgentCommand, queue: AgentRcvQueue) -> None:
        def deleted(_: object) -> None:
            with self.port.store.transaction():
                self.port.store.delete_rcv_queue(queue)
            self.port.state.drop_rcv_queue(queue)
            self.port.forget(queue)

        def failed(error: BaseException) -> None:
            if isinstance(error, ServerError) and error.code == "AUTH":
                deleted(None)  # gone already (a retry after a crash)
            else:
                self.commands.step_failed(command, queue.server)(error)

        keys = self.port.state.keys
        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                queue.server, Del(), bytes(queue.rcv_id), keys.signer(bytes(queue.auth_private))
            ),
            deleted,
            failed,
            command,
        )
