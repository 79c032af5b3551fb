"""`Delivery`: the connection's outgoing hash chain and the sending of stored messages.

Every message a connection sends after the handshake — the user's, and the agent's own
(connection info, QCONT, the rotation's QADD/QKEY/QUSE/QTEST/QERR) — is the next link of the
connection's chain: sequential id plus the hash of the previous message, sealed for the send
queue's peer. `enqueue` seals it and stores the sealed bytes with the new chain position in
one transaction, so a resend after a crash sends these very bytes and the receiver's chain
check drops the copy.

Each send queue delivers its stored messages strictly in order, one in flight at a time.
Temporary errors retry on the persisted schedule; `QUOTA` waits for the peer's QCONT (or a
slow retry); a permanent error drops the message with `MERR`. What a delivered or dropped
message means beyond that (a QTEST sent ends the sender's rotation) is for its owner:
`on_sent` / `on_dropped` hooks per `MessageKind`. Whoever waits for the outbox as a whole
(a delete that waits for delivery) registers in `after_settled`, run after every outcome.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.agent import events as ev
from actors.agent.model import Lane, LaneKind, MessageKind
from actors.agent.ports import ConnectionPort, DeliveryHook, QueueRequest, unreachable
from actors.kernel import IoError
from protocol.envelope import GENESIS_HASH, AgentMessage, encode_agent_message, message_hash
from protocol.envelope import seal_envelope as seal
from protocol.errors import QueueFault, ServerError
from protocol.queue import Send
from storage.agent import AgentSndMessage, AgentSndQueue


class Delivery:
    """The outbox of one connection; see the module docstring."""

    def __init__(self, port: ConnectionPort) -> None:
        self.port = port
        # on_*: inside the transaction that deletes the message (may change more rows);
        # after_*: once it is committed (may tell events)
        self.on_sent: dict[MessageKind, DeliveryHook] = {}
        self.after_sent: dict[MessageKind, DeliveryHook] = {}
        self.on_dropped: dict[MessageKind, DeliveryHook] = {}
        self.after_dropped: dict[MessageKind, DeliveryHook] = {}
        # after any message of any kind was sent or dropped (committed, and its own hooks ran)
        self.after_settled: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ the chain

    def seal_chain_message(self, queue: AgentSndQueue, payload: Any) -> bytes:
        """Seal the next message of the chain for `queue`; the caller persists the new
        position (`store.save_snd_position`) with whatever carries the bytes."""
        conn = self.port.state.conn
        assert conn is not None
        message = AgentMessage(conn.snd_seq + 1, bytes(conn.snd_hash or GENESIS_HASH), payload)
        plaintext = encode_agent_message(message)
        conn.snd_seq += 1
        conn.snd_hash = message_hash(plaintext)
        keys = self.port.state.keys
        return seal(keys.dh(bytes(queue.e2e_private)), bytes(queue.e2e_peer_public), plaintext)

    def enqueue(self, queue: AgentSndQueue, payload: Any, kind: MessageKind) -> AgentSndMessage:
        """Seal the next chain message and store it for delivery with the chain position, in
        one transaction (nested in the caller's, when there is one)."""
        sealed = self.seal_chain_message(queue, payload)
        now = time.time()
        store = self.port.store
        conn = self.port.state.conn
        with store.transaction():
            store.save_snd_position(conn)
            row = store.insert_snd_message(
                conn_id=self.port.conn_id,
                snd_queue_id=queue.id,
                seq=conn.snd_seq,
                kind=kind,
                body=sealed,
                expires_at=now + self.port.config.message_ttl,
                created_at=now,
            )
        self.port.state.outbox.setdefault(queue.id, deque()).append(row)
        return row

    def queue_internal(self, payload: Any, kind: MessageKind = MessageKind.INTERNAL) -> None:
        """Enqueue an agent message on the send queue in use (if the connection has one)."""
        queue = self.port.state.active_snd_queue()
        if queue is not None:
            self.enqueue(queue, payload, kind)

    def resume_after_qcont(self) -> None:
        """The peer drained its queue up to the quota marker: send again at once (inside
        the caller's transaction)."""
        state = self.port.state
        for queue in state.snd_queues.values():
            if queue.quota_blocked:
                queue.quota_blocked = False
                self.port.store.save_quota_blocked(queue)
                if state.outbox.get(queue.id):
                    state.outbox[queue.id][0].next_attempt_at = 0.0

    # ------------------------------------------------------------------ sending

    def pump(self, now: float) -> float:
        """Start the next delivery of every idle send queue; the earliest later due time."""
        earliest = float("inf")
        state = self.port.state
        for queue_id, pending in list(state.outbox.items()):
            if not pending:
                continue
            lane = Lane(LaneKind.SEND, queue_id)
            if self.port.lane_busy(lane):
                continue
            message = pending[0]
            if message.next_attempt_at > now:
                earliest = min(earliest, message.next_attempt_at)
                continue
            queue = state.snd_queues.get(queue_id)
            if queue is None:
                state.outbox.pop(queue_id, None)
            elif queue.replaces is None or not state.outbox.get(queue.replaces):
                # a switch's new send queue waits until the one it replaces has drained
                self._deliver(queue, message, lane)
        return earliest

    def server_up(self, server: str, now: float) -> None:
        state = self.port.state
        for queue_id, pending in state.outbox.items():
            queue = state.snd_queues.get(queue_id)
            if queue is not None and queue.server == server and pending:
                pending[0].next_attempt_at = min(pending[0].next_attempt_at, now)

    def _deliver(self, queue: AgentSndQueue, message: AgentSndMessage, lane: Lane) -> None:
        if time.time() > message.expires_at:
            self._drop(queue, message, "EXPIRED")
            return
        keys = self.port.state.keys
        request = QueueRequest(
            queue.server,
            Send(0, bytes(message.body)),
            bytes(queue.snd_id),
            keys.signer(bytes(queue.auth_private)),
        )
        self.port.submit(
            lane,
            request,
            lambda _: self._sent(queue, message),
            lambda error: self._failed(queue, message, error),
        )

    def _sent(self, queue: AgentSndQueue, message: AgentSndMessage) -> None:
        kind = MessageKind(message.kind)
        store = self.port.store
        with store.transaction():
            store.delete_snd_message(message)
            if queue.quota_blocked:
                queue.quota_blocked = False
                store.save_quota_blocked(queue)
            hook = self.on_sent.get(kind)
            if hook is not None:
                hook(queue, message)
        pending = self.port.state.outbox.get(queue.id)
        if pending and pending[0] is message:
            pending.popleft()
        if kind is MessageKind.USER:
            self.port.emit(ev.Sent(self.port.conn_id, message.seq))
        after = self.after_sent.get(kind)
        if after is not None:
            after(queue, message)
        self._settled()

    def _failed(self, queue: AgentSndQueue, message: AgentSndMessage, error: BaseException) -> None:
        now = time.time()
        config = self.port.config
        if isinstance(error, ServerError) and error.code == "QUOTA":
            queue.quota_blocked = True
            delay = config.quota_retry
        elif isinstance(error, IoError) or (isinstance(error, QueueFault) and error.temporary):
            delay = config.retry.delay(message.attempts + 1, now - message.created_at)
            if unreachable(error):  # not ERR INTERNAL: an UP would retry it at once
                self.port.server_unavailable(queue.server)
        else:
            self._drop(queue, message, getattr(error, "code", "INTERNAL"))
            return
        message.attempts += 1
        message.next_attempt_at = now + delay
        with self.port.store.transaction():
            self.port.store.save_snd_attempts(message)
            self.port.store.save_quota_blocked(queue)

    def _drop(self, queue: AgentSndQueue, message: AgentSndMessage, code: str) -> None:
        kind = MessageKind(message.kind)
        with self.port.store.transaction():
            self.port.store.delete_snd_message(message)
            self.port.state.outbox[queue.id].popleft()
            hook = self.on_dropped.get(kind)
            if hook is not None:
                hook(queue, message)
        if kind is MessageKind.USER:
            self.port.emit(ev.MErr(self.port.conn_id, message.seq, code))
        after = self.after_dropped.get(kind)
        if after is not None:
            after(queue, message)
        self._settled()

    def _settled(self) -> None:
        for hook in self.after_settled:
            hook()
