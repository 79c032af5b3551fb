"""`ConnectionState`: what one connection actor holds in memory, loaded once per activation.

The rows of the connection (its queues, pending commands, outgoing and received messages)
are read in one transaction when the actor starts and kept up to date by the collaborators
that change them, so no step reads back what the actor already holds. Lookups that run for
every message are indexed here (a receive queue by its server-side id, a received message
by its server message id), and key objects are built once per queue (`KeyCache`): loading a
raw X25519 key costs as much as using it, and an X25519 agreement with the same peer key
gives the same secret every time, so each key keeps the few it made (`_AgreeingKey`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from actors.agent.model import MessageKind, RcvQueueStatus, SndQueueStatus
from protocol import crypto
from protocol.queue import QueueMode
from storage.agent import (
    AgentCommand,
    AgentConnection,
    AgentRcvMessage,
    AgentRcvQueue,
    AgentSndMessage,
    AgentSndQueue,
    AgentStore,
)


@dataclass(frozen=True, eq=False, repr=False)  # DhKey's repr: no private key shown
class _AgreeingKey(crypto.DhKey):
    """A `DhKey` that keeps the shared secrets it agreed (an e2e key is one agreement with
    the peer's key per message sealed or opened: ~200 µs here, a dict lookup once kept).

    At most `KEPT` secrets: a connection talks to one peer key at a time (two during a
    switch), and a body under any other key is refused before agreement once the peer's key
    is known, so the bound only matters before that (confirmations from strangers)."""

    KEPT = 8
    agreed: dict[bytes, bytes] = field(default_factory=dict)

    def shared_secret(self, peer_public: bytes) -> bytes:
        secret = self.agreed.get(peer_public)
        if secret is None:
            secret = crypto.DhKey.shared_secret(self, peer_public)  # raises on a bad key
            if len(self.agreed) >= self.KEPT:
                self.agreed.clear()
            self.agreed[bytes(peer_public)] = secret
        return secret


class KeyCache:
    """Key objects of this connection's queues, built on first use (the rows hold raw bytes)."""

    def __init__(self) -> None:
        self._signers: dict[bytes, crypto.SigningKey] = {}
        self._dh: dict[bytes, crypto.DhKey] = {}
        self._box: dict[int, bytes] = {}

    def signer(self, private: bytes) -> crypto.SigningKey:
        key = self._signers.get(private)
        if key is None:
            key = self._signers[private] = crypto.SigningKey.from_private(bytes(private))
        return key

    def dh(self, private: bytes) -> crypto.DhKey:
        key = self._dh.get(private)
        if key is None:
            loaded = crypto.DhKey.from_private(bytes(private))
            key = self._dh[private] = _AgreeingKey(loaded.private, loaded.public)
        return key

    def box_key(self, queue: AgentRcvQueue) -> bytes:
        """What opens the server's MSG bodies on `queue`."""
        key = self._box.get(queue.id)
        if key is None:
            key = crypto.server_recipient_key(
                bytes(queue.srv_dh_public), self.dh(bytes(queue.dh_private))
            )
            self._box[queue.id] = key
        return key

    def forget_queue(self, queue_id: int) -> None:
        self._box.pop(queue_id, None)


@dataclass(eq=False)
class ConnectionState:
    """One connection's rows; the collaborators of `ConnectionActor` share it."""

    conn_id: str
    conn: AgentConnection | None = None
    rcv_queues: dict[int, AgentRcvQueue] = field(default_factory=dict)
    snd_queues: dict[int, AgentSndQueue] = field(default_factory=dict)
    commands: list[AgentCommand] = field(default_factory=list)  # pending, in creation order
    outbox: dict[int, deque[AgentSndMessage]] = field(default_factory=dict)  # per send queue
    received: dict[bytes, AgentRcvMessage] = field(default_factory=dict)  # by server msg id
    keys: KeyCache = field(default_factory=KeyCache)
    _by_rcv_id: dict[bytes, AgentRcvQueue] = field(default_factory=dict)

    @classmethod
    def load(cls, store: AgentStore, conn_id: str) -> tuple[ConnectionState, list[AgentCommand]]:
        """The state of `conn_id`, and its commands that completed with an event the caller
        has not acknowledged yet (to be emitted again, in order)."""
        rows = store.load_connection(conn_id)
        state = cls(conn_id, rows.conn)
        for queue in rows.rcv_queues:
            state.add_rcv_queue(queue)
        for queue in rows.snd_queues:
            state.snd_queues[queue.id] = queue
        for message in rows.snd_messages:
            state.outbox.setdefault(message.snd_queue_id, deque()).append(message)
        for message in rows.rcv_messages:
            state.received[bytes(message.broker_msg_id)] = message
        unacknowledged = [c for c in rows.commands if c.event is not None]
        state.commands = [c for c in rows.commands if c.event is None]
        return state, unacknowledged

    # ------------------------------------------------------------------ receive queues

    def add_rcv_queue(self, queue: AgentRcvQueue) -> None:
        self.rcv_queues[queue.id] = queue
        if queue.rcv_id is not None:
            self._by_rcv_id[bytes(queue.rcv_id)] = queue

    def rcv_queue_created(self, queue: AgentRcvQueue) -> None:
        """NEW answered: index the queue by its server id."""
        self._by_rcv_id[bytes(queue.rcv_id)] = queue

    def drop_rcv_queue(self, queue: AgentRcvQueue) -> None:
        self.rcv_queues.pop(queue.id, None)
        if queue.rcv_id is not None:
            self._by_rcv_id.pop(bytes(queue.rcv_id), None)
        self.keys.forget_queue(queue.id)

    def rcv_queue_of(self, rcv_id: bytes) -> AgentRcvQueue | None:
        return self._by_rcv_id.get(rcv_id)

    def current_rcv_queue(self) -> AgentRcvQueue | None:
        """The receive queue in use: active, messaging, and not a switch's new queue."""
        for queue in sorted(self.rcv_queues.values(), key=lambda q: q.id):
            if (
                queue.status == RcvQueueStatus.ACTIVE
                and queue.mode == QueueMode.MESSAGING.value
                and queue.replaces is None
            ):
                return queue
        return None

    def switch_new_rcv_queue(self) -> AgentRcvQueue | None:
        """The new queue of the switch in progress (not one being deleted)."""
        for queue in self.rcv_queues.values():
            if queue.replaces is not None and queue.status != RcvQueueStatus.DELETING:
                return queue
        return None

    def own_rcv_queue(self, server: str, mode: QueueMode) -> AgentRcvQueue | None:
        for queue in self.rcv_queues.values():
            if queue.server == server and queue.mode == mode.value:
                return queue
        return None

    # ------------------------------------------------------------------ send queues

    def active_snd_queue(self) -> AgentSndQueue | None:
        for queue in self.snd_queues.values():
            if queue.status == SndQueueStatus.SECURED and queue.mode == QueueMode.MESSAGING.value:
                return queue
        return None

    def snd_queue_to(self, snd_id: bytes) -> AgentSndQueue | None:
        for queue in self.snd_queues.values():
            if bytes(queue.snd_id) == snd_id:
                return queue
        return None

    def pending_messages(self) -> int:
        return sum(len(q) for q in self.outbox.values())

    def has_queued(self, queue_id: int, kind: MessageKind | None = None) -> bool:
        pending = self.outbox.get(queue_id)
        if not pending:
            return False
        return kind is None or any(m.kind == kind for m in pending)
