"""`SendingSwitch`: the sender's side of a queue rotation (Bob follows Alice to a new queue).

::

    QADD arrives (on the chain)   record the new send queue (fresh keys) and queue
                                  QKEY(its sender key) on the old one      → QUEUING_QKEY
    QUSE arrives                  the new queue is secured: everything new goes there; QTEST
                                  waits, first on it, until the old one has drained
                                                                           → QUEUING_QTEST
    QTEST sent                    the old send queue is dropped            → none
    QKEY refused for good         the new send queue is forgotten          → none
    QTEST refused for good        QTEST and what followed it go back to the old queue,
                                  resealed (so the chain has no gap), and QERR tells Alice
                                                                           → none

Statuses change only through `switch_states.next_snd_status`. See rotation.py for Alice.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from actors.agent import events as ev
from actors.agent.model import MessageKind, SndQueueStatus
from actors.agent.ports import Chain, ConnectionPort, EventLike
from actors.agent.queues import QueueSteps
from actors.agent.switch_states import SND_TRANSITIONS, SndSwitchEvent, next_snd_status
from protocol.envelope import QAdd, QErr, QKey, QTest, QUse, open_own_envelope
from protocol.envelope import seal_envelope as seal
from protocol.links import QueueAddress
from storage.agent import AgentSndMessage, AgentSndQueue

log = logging.getLogger(__name__)


class SendingSwitch:
    def __init__(
        self,
        port: ConnectionPort,
        queues: QueueSteps,
        chain: Chain,
        switch_event: Callable[[str, str], ev.Switch],
    ) -> None:
        self.port = port
        self.queues = queues
        self.chain = chain
        self.switch_event = switch_event
        # what becomes of the rotation's messages once delivered or dropped
        chain.on_sent[MessageKind.QTEST] = self._qtest_sent
        chain.after_sent[MessageKind.QTEST] = self._told("completed")
        chain.on_dropped[MessageKind.QKEY] = self._qkey_failed
        chain.on_dropped[MessageKind.QTEST] = self._qtest_failed
        for kind in (MessageKind.QKEY, MessageKind.QTEST):
            chain.after_dropped[kind] = self._told("failed")

    def _told(self, phase: str) -> Callable[[AgentSndQueue, AgentSndMessage], None]:
        return lambda queue, message: self.port.emit(self.switch_event("snd", phase))

    def _set(self, event: SndSwitchEvent) -> None:
        conn = self.port.state.conn
        conn.snd_switch_status = next_snd_status(conn.snd_switch_status, event)
        self.port.store.save_switch_status(conn)

    def _allowed(self, event: SndSwitchEvent) -> bool:
        status = self.port.state.conn.snd_switch_status
        return (None if status is None else status, event) in SND_TRANSITIONS

    # ------------------------------------------------------------------ messages from Alice

    def qadd(self, message: QAdd) -> list[EventLike]:
        """Alice moves to a new queue (inside the chain's transaction)."""
        state = self.port.state
        old = next(
            (
                q
                for q in state.snd_queues.values()
                if bytes(q.snd_id) == message.replaces and q.status == SndQueueStatus.SECURED
            ),
            None,
        )
        if old is None or not self._allowed(SndSwitchEvent.QADD_RECEIVED):
            log.info("switch: QADD for no queue we send to", extra={"conn_id": self.port.conn_id})
            return []
        for stale in [q for q in state.snd_queues.values() if q.replaces == old.id]:
            self.port.store.delete_snd_queue(stale)  # an earlier QADD that Alice aborted
            state.snd_queues.pop(stale.id, None)
        target: QueueAddress = message.new_queue
        new = self.queues.create_snd_queue(target, replaces=old.id)
        auth = state.keys.signer(bytes(new.auth_private))
        self.chain.enqueue(old, QKey(target.snd_id, auth.public), MessageKind.QKEY)
        self._set(SndSwitchEvent.QADD_RECEIVED)
        return [lambda: self.switch_event("snd", "started")]

    def quse(self, message: QUse) -> list[EventLike]:
        """Alice secured the new queue: use it for everything new (inside the chain's
        transaction)."""
        state = self.port.state
        new = next(
            (
                q
                for q in state.snd_queues.values()
                if bytes(q.snd_id) == message.snd_id and q.replaces is not None
            ),
            None,
        )
        if (
            new is None
            or new.status != SndQueueStatus.NEW
            or not self._allowed(SndSwitchEvent.QUSE_RECEIVED)
        ):
            return []
        store = self.port.store
        new.status = SndQueueStatus.SECURED
        store.save_snd_queue(new)
        old = state.snd_queues.get(new.replaces)
        if old is not None:
            old.status = SndQueueStatus.RETIRING
            store.save_snd_queue(old)
        self.chain.enqueue(new, QTest(message.snd_id), MessageKind.QTEST)
        self._set(SndSwitchEvent.QUSE_RECEIVED)
        return [lambda: self.switch_event("snd", "secured")]

    # ------------------------------------------------------------------ delivery outcomes

    def _qtest_sent(self, new: AgentSndQueue, qtest: AgentSndMessage) -> None:
        """Inside the transaction that deleted the sent QTEST: drop the old send queue."""
        state = self.port.state
        store = self.port.store
        old = state.snd_queues.pop(new.replaces, None) if new.replaces is not None else None
        if old is not None:
            store.delete_snd_queue(old)
            state.outbox.pop(old.id, None)
        new.replaces = None
        store.save_snd_queue(new)
        self._set(SndSwitchEvent.QTEST_SENT)

    def _qkey_failed(self, old: AgentSndQueue, qkey: AgentSndMessage) -> None:
        """QKEY was refused for good: forget the new queue (inside the caller's transaction)."""
        state = self.port.state
        for new in [q for q in state.snd_queues.values() if q.replaces == old.id]:
            self.port.store.delete_snd_queue(new)
            state.snd_queues.pop(new.id, None)
        self._set(SndSwitchEvent.QKEY_FAILED)

    def _qtest_failed(self, new: AgentSndQueue, qtest: AgentSndMessage) -> None:
        """QTEST was refused for good (inside the transaction that deleted it): go back to
        the old send queue with QTEST and whatever followed it, resealed, and send QERR."""
        state = self.port.state
        store = self.port.store
        old = state.snd_queues.get(new.replaces) if new.replaces is not None else None
        moved = [qtest, *state.outbox.pop(new.id, deque())]
        for message in moved[1:]:
            store.delete_snd_message(message)
        state.snd_queues.pop(new.id, None)
        store.delete_snd_queue(new)
        self._set(SndSwitchEvent.QTEST_FAILED)
        if old is None:
            return
        old.status = SndQueueStatus.SECURED
        store.save_snd_queue(old)
        from_key = state.keys.dh(bytes(new.e2e_private))
        to_key = state.keys.dh(bytes(old.e2e_private))
        for message in moved:
            plaintext = open_own_envelope(from_key, bytes(new.e2e_peer_public), bytes(message.body))
            kind = MessageKind.INTERNAL if message.kind == MessageKind.QTEST else message.kind
            row = store.insert_snd_message(
                conn_id=self.port.conn_id,
                snd_queue_id=old.id,
                seq=message.seq,
                kind=MessageKind(kind),
                body=seal(to_key, bytes(old.e2e_peer_public), plaintext),
                expires_at=message.expires_at,
                created_at=message.created_at,
            )
            state.outbox.setdefault(old.id, deque()).append(row)
        self.chain.enqueue(old, QErr(bytes(new.snd_id)), MessageKind.QERR)
