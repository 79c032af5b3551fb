"""`QueueSteps`: the queue-level steps that the handshake and the rotation share.

Making a receive queue (keys stored first, then `NEW`), recording a send queue to a peer's
queue (fresh keys) and securing it with `SKEY`, and the link that describes a receive queue.
Every key is persisted before the request that uses it, and `NEW` / `SKEY` are idempotent on
the server for the same key, so a step repeated after a crash finds the same queue.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.agent.model import RcvQueueStatus, SndQueueStatus, command_lane
from actors.agent.ports import Commands, ConnectionPort, QueueRequest
from protocol import crypto
from protocol.links import ConnectionLink, QueueAddress
from protocol.queue import Ids, New, QueueMode, SKey
from storage.agent import AgentCommand, AgentRcvQueue, AgentSndQueue


class QueueSteps:
    def __init__(self, port: ConnectionPort, commands: Commands) -> None:
        self.port = port
        self.commands = commands

    # ------------------------------------------------------------------ receive queues

    def own_rcv_queue(self, server: str, mode: QueueMode) -> AgentRcvQueue:
        """This connection's receive queue on `server`, recorded (keys only) if missing."""
        queue = self.port.state.own_rcv_queue(server, mode)
        if queue is None:
            with self.port.store.transaction():
                queue = self.create_rcv_queue(server, mode)
        return queue

    def create_rcv_queue(
        self, server: str, mode: QueueMode, replaces: int | None = None
    ) -> AgentRcvQueue:
        """A new receive queue's row with fresh keys, before its NEW (in the caller's
        transaction)."""
        queue = self.port.store.insert_rcv_queue(
            conn_id=self.port.conn_id,
            server=server,
            mode=mode.value,
            auth_private=crypto.SigningKey.generate().private,
            dh_private=crypto.DhKey.generate().private,
            e2e_private=crypto.DhKey.generate().private,
            status=RcvQueueStatus.NEW,
            replaces=replaces,
        )
        self.port.state.add_rcv_queue(queue)
        return queue

    def new_queue(
        self, command: AgentCommand, queue: AgentRcvQueue, then: Callable[[], None]
    ) -> None:
        """NEW one of our receive queues with its stored keys, subscribed at once; `then`
        runs once the server answered (it saves the queue row)."""
        keys = self.port.state.keys
        auth = keys.signer(bytes(queue.auth_private))
        dh = keys.dh(bytes(queue.dh_private))

        def created(ids: Ids) -> None:
            queue.rcv_id, queue.snd_id = ids.rcv_id, ids.snd_id
            queue.srv_dh_public = ids.srv_dh_key
            if queue.status == RcvQueueStatus.NEW:
                queue.status = RcvQueueStatus.ACTIVE
            self.port.state.rcv_queue_created(queue)
            self.port.track(queue)
            then()

        new = New(auth.public, dh.public, QueueMode(queue.mode), subscribe=True)
        self.port.submit(
            command_lane(command.server),
            QueueRequest(queue.server, new, b"", auth),
            created,
            self.commands.step_failed(command, queue.server),
            command,
        )

    def queue_link(self, queue: AgentRcvQueue) -> ConnectionLink:
        e2e = self.port.state.keys.dh(bytes(queue.e2e_private))
        address = QueueAddress.create(
            queue.server, bytes(queue.snd_id), e2e.public, QueueMode(queue.mode)
        )
        return ConnectionLink.create(address)

    # ------------------------------------------------------------------ send queues

    def snd_queue_to(self, target: QueueAddress) -> AgentSndQueue:
        queue = self.port.state.snd_queue_to(target.snd_id)
        if queue is None:
            with self.port.store.transaction():
                queue = self.create_snd_queue(target)
        return queue

    def create_snd_queue(self, target: QueueAddress, replaces: int | None = None) -> AgentSndQueue:
        """A send queue's row to the peer's queue `target`, with fresh keys, before use (in
        the caller's transaction)."""
        queue = self.port.store.insert_snd_queue(
            conn_id=self.port.conn_id,
            server=target.server,
            snd_id=target.snd_id,
            mode=target.mode.value,
            auth_private=crypto.SigningKey.generate().private,
            e2e_private=crypto.DhKey.generate().private,
            e2e_peer_public=target.dh_public,
            status=SndQueueStatus.NEW,
            replaces=replaces,
        )
        self.port.state.snd_queues[queue.id] = queue
        return queue

    def skey(self, command: AgentCommand, queue: AgentSndQueue) -> None:
        """Secure the peer's queue with our sender key (idempotent on the server)."""
        key = self.port.state.keys.signer(bytes(queue.auth_private))

        def secured(_: object) -> None:
            queue.status = SndQueueStatus.SECURED
            with self.port.store.transaction():
                self.port.store.save_snd_queue(queue)

        self.port.submit(
            command_lane(command.server),
            QueueRequest(queue.server, SKey(key.public), bytes(queue.snd_id), key),
            secured,
            self.commands.step_failed(command, queue.server),
            command,
        )
