"""Queue rotation ("switch"): a connection moves its receive queue to a new one, live.

`QueueRotation` is the part of `ConnectionActor` that runs the switch on both ends; it uses
the actor's state and helpers (`_enqueue`, `_submit`, `_complete`, the lanes) and owns the
two status columns of the connection row.

Theory of operation
-------------------
Alice rotates her receive queue; Bob is its sender. Every message below travels in the
connection's hash chain (so it is ordered, deduplicated and survives restarts like any other)::

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
statuses with the chain position, internal commands (`SWITCH_SECURE`, `SWITCH_DELETE`) as
command rows with their retries and lanes. A restart at any status resumes: the pending
command runs again, a message is re-sent and dropped as a duplicate by the chain, a held
message is delivered again by the server because it was never ACKed.

Statuses (`RcvSwitchStatus` on Alice's row, `SndSwitchStatus` on Bob's):

============================  ==============================================================
RcvSwitchStatus               meaning
============================  ==============================================================
QUEUING_SWCH                  switch_connection stored the command
SWCH_STARTED                  the new queue's keys are stored, its NEW runs
QUEUING_QADD / SENT_QADD      QADD is queued / was accepted by the server
RECEIVED_QKEY                 Bob's key for the new queue arrived
QUEUING_SECURE / SECURE_...   the KEY of the new queue is queued / runs
QUEUING_QUSE                  QUSE is queued; Bob will move to the new queue
MESSAGE_RECEIVED              the old queue is drained, the new one is in use
QUEUING_DELETE / DELETE_...   the DEL of the old queue is queued / runs; then none
============================  ==============================================================

=============================  =============================================================
SndSwitchStatus                meaning
=============================  =============================================================
RECEIVED_QADD / QUEUING_QKEY   the new send queue is recorded / QKEY is queued on the old one
RECEIVED_QUSE / QUEUING_QTEST  the new queue is secured / QTEST waits for the old to drain
SENT_QTEST                     QTEST is sent: the old send queue is dropped; then none
=============================  =============================================================

Failures. Up to SENT_QADD Alice may `abort_switch`: the pending command ends with
`ERR ABORTED`, the new queue is deleted (created first if its NEW may have run, so nothing is
left on the server), the status is reset. A permanent error on Alice's side before the drain
deletes the new queue and ends with `SWITCH rcv failed`; after the drain the switch completes
regardless. A permanent error on Bob's side sending QTEST (the new queue is gone) moves what
was queued on the new queue back to the old one, resealed, and sends `QERR`: Alice deletes
her new queue and reports `SWITCH rcv failed`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from typing import Any

import msgspec

from actors.agent import events as ev
from actors.agent.sessions import Forget, session_address
from protocol import crypto
from protocol.envelope import (
    QAdd,
    QErr,
    QKey,
    QTest,
    QUse,
    open_own_envelope,
    seal_envelope,
)
from protocol.errors import ServerError
from protocol.links import QueueAddress
from protocol.queue import Del, Get, Key, Ok, QueueMode

log = logging.getLogger(__name__)


class RcvSwitchStatus(enum.StrEnum):
    QUEUING_SWCH = "queuing_swch"
    SWCH_STARTED = "swch_started"
    QUEUING_QADD = "queuing_qadd"
    SENT_QADD = "sent_qadd"
    RECEIVED_QKEY = "received_qkey"
    QUEUING_SECURE = "queuing_secure"
    SECURE_STARTED = "secure_started"
    QUEUING_QUSE = "queuing_quse"
    MESSAGE_RECEIVED = "message_received"
    QUEUING_DELETE = "queuing_delete"
    DELETE_STARTED = "delete_started"


class SndSwitchStatus(enum.StrEnum):
    RECEIVED_QADD = "received_qadd"
    QUEUING_QKEY = "queuing_qkey"
    RECEIVED_QUSE = "received_quse"
    QUEUING_QTEST = "queuing_qtest"
    SENT_QTEST = "sent_qtest"


# Until QADD is out the peer knows nothing of the new queue, so the switch can be undone.
ABORTABLE = frozenset(
    {
        RcvSwitchStatus.QUEUING_SWCH,
        RcvSwitchStatus.SWCH_STARTED,
        RcvSwitchStatus.QUEUING_QADD,
        RcvSwitchStatus.SENT_QADD,
    }
)
# Before the old queue is drained a failure undoes the switch; from then on it completes.
_UNDOABLE = ABORTABLE | {
    RcvSwitchStatus.RECEIVED_QKEY,
    RcvSwitchStatus.QUEUING_SECURE,
    RcvSwitchStatus.SECURE_STARTED,
    RcvSwitchStatus.QUEUING_QUSE,
}


class SwitchKind:
    SWITCH = "switch"  # the user's command: NEW the new queue, queue QADD
    SECURE = "switch_secure"  # internal: KEY the new queue, queue QUSE
    DELETE = "switch_delete"  # internal: DEL a receive queue the switch is done with


class QueueRotation:
    """The switch, both ends; mixed into `ConnectionActor` (see the module docstring)."""

    # state the actor keeps for the rotation (set up in `_init_rotation`)
    _held: list[tuple[bytes, Any]]
    _drain_in_flight: bool

    def _init_rotation(self) -> None:
        self._held = []  # (rcv_id, MSG) from a new queue, not ACKed, until the old drains
        self._drain_in_flight = False

    # ------------------------------------------------------------------ asks

    def _start_switch(self, corr_id: str, server: str | None) -> str:
        """Store the SWITCH command and QUEUING_SWCH in one transaction (idempotent by
        corr_id); the command runs like any other."""
        s = self.store
        with s.transaction(read_only=True):
            existing = s.Command.get_or_none(s.Command.corr_id == corr_id)
        if existing is not None:
            return existing.conn_id
        self._require_connection()
        if self.conn.status != "ready":
            raise self._error(f"connection is {self.conn.status}, not ready", "PROHIBITED")
        if self.conn.rcv_switch_status is not None:
            raise self._error("a switch of this connection is in progress", "PROHIBITED")
        old = self._current_rcv_queue()
        if old is None:
            raise self._error("the connection has no receive queue to switch", "PROHIBITED")
        if server is None:
            others = [x for x in self.services.servers if x != old.server]
            server = others[0] if others else old.server
        now = time.time()
        with s.transaction():
            command = s.Command.create(
                corr_id=corr_id,
                conn_id=self.conn_id,
                kind=SwitchKind.SWITCH,
                payload=msgspec.msgpack.encode({"server": server}),
                lane=server,
                deadline=now + self.services.config.command_ttl,
                created_at=now,
            )
            self._set_rcv_switch(RcvSwitchStatus.QUEUING_SWCH)
        self.commands.append(command)
        return self.conn_id

    def _abort_switch(self) -> ev.ConnectionInfo:
        self._require_connection()
        status = self.conn.rcv_switch_status
        if status is None or status not in ABORTABLE:
            raise self._error(f"the switch cannot be aborted (status {status})", "PROHIBITED")
        new = self._switch_new_rcv_queue()
        pending = [c for c in self.commands if c.kind == SwitchKind.SWITCH]
        for command in pending:
            self._complete(
                command, ev.Err(self.conn_id, "ABORTED", "the switch was aborted", command.corr_id)
            )
        with self.store.transaction():
            self._set_rcv_switch(None)
            if new is not None:
                self._delete_rcv_queue_later(new, "aborted")
        return self._connection_info()

    def _connection_info(self) -> ev.ConnectionInfo:
        self._require_connection()
        rcv = sorted(self.rcv_queues.values(), key=lambda q: q.id)
        snd = sorted(self.snd_queues.values(), key=lambda q: q.id)
        return ev.ConnectionInfo(
            conn_id=self.conn_id,
            status=self.conn.status,
            rcv_servers=sorted({q.server for q in rcv if q.status != "deleting"}),
            snd_servers=sorted({q.server for q in snd if q.status != "retiring"}),
            rcv_switch_status=self.conn.rcv_switch_status,
            snd_switch_status=self.conn.snd_switch_status,
            can_abort_switch=self.conn.rcv_switch_status in ABORTABLE,
            queues=[ev.QueueInfo("rcv", q.server, q.status) for q in rcv]
            + [ev.QueueInfo("snd", q.server, q.status) for q in snd],
        )

    # ------------------------------------------------------------------ Alice: commands

    def _step_switch(self, command: Any, payload: dict[str, Any]) -> None:
        new = self._switch_new_rcv_queue()
        if new is None:
            old = self._current_rcv_queue()
            if old is None:
                self._fail(command, "PROHIBITED", "the connection has no receive queue")
                return
            with self.store.transaction():
                new = self._create_rcv_queue(payload["server"], QueueMode.MESSAGING, old.id)
                self._set_rcv_switch(RcvSwitchStatus.SWCH_STARTED)
        if new.status == "new":
            self._new_queue(command, new, lambda: self._switch_created(command, new))
            return
        self._switch_created(command, new)

    def _switch_created(self, command: Any, new: Any) -> None:
        old = self.rcv_queues[new.replaces]

        def effects() -> None:
            new.save()
            address = self._queue_link(new).queues[0]
            self._queue_internal(QAdd(address, bytes(old.snd_id)), "qadd")
            self._set_rcv_switch(RcvSwitchStatus.QUEUING_QADD)

        # the event is built after the effects, so its info shows QUEUING_QADD
        self._complete(
            command,
            lambda: self._switch_event("rcv", "started", self._public_corr_id(command)),
            effects,
        )

    def _step_switch_secure(self, command: Any, payload: dict[str, Any]) -> None:
        new = self._switch_new_rcv_queue()
        if new is None or new.sender_auth_public is None:
            self._complete(command, None)  # aborted or failed meanwhile
            return
        if self.conn.rcv_switch_status == RcvSwitchStatus.QUEUING_SECURE:
            with self.store.transaction():
                self._set_rcv_switch(RcvSwitchStatus.SECURE_STARTED)

        def secured(_: Any) -> None:
            def effects() -> None:
                self._queue_internal(QUse(bytes(new.snd_id)), "quse")
                self._set_rcv_switch(RcvSwitchStatus.QUEUING_QUSE)

            self._complete(command, None, effects, (lambda: self._switch_event("rcv", "secured"),))

        self._submit(
            command.lane,
            new.server,
            secured,
            self._step_failed(command, new.server),
            self._request(
                new.server,
                Key(bytes(new.sender_auth_public)),
                bytes(new.rcv_id),
                bytes(new.auth_private),
            ),
            command=command,
        )

    def _step_switch_delete(self, command: Any, payload: dict[str, Any]) -> None:
        queue = self.rcv_queues.get(payload["queue_id"])
        outcome = payload["outcome"]
        if queue is None:
            self._switch_deleted(command, None, outcome)
            return
        if queue.rcv_id is None:
            # Its NEW may have reached the server before an abort: NEW is idempotent by
            # key, so NEW again to learn its ids, then DEL it; nothing is left behind.
            def created() -> None:
                queue.status = "deleting"
                self._save(queue)

            self._new_queue(command, queue, created)
            return
        if outcome == "completed" and self.conn.rcv_switch_status in (
            RcvSwitchStatus.QUEUING_DELETE,
            RcvSwitchStatus.MESSAGE_RECEIVED,
        ):
            with self.store.transaction():
                self._set_rcv_switch(RcvSwitchStatus.DELETE_STARTED)

        def failed(error: BaseException) -> None:
            if isinstance(error, ServerError) and not error.temporary:
                log.info(
                    "switch: DEL of a queue failed for good, dropped here",
                    extra={"conn_id": self.conn_id, "error": str(error)},
                )
                self._switch_deleted(command, queue, outcome)
            else:
                self._step_failed(command, queue.server)(error)

        self._submit(
            command.lane,
            queue.server,
            lambda _: self._switch_deleted(command, queue, outcome),
            failed,
            self._request(queue.server, Del(), bytes(queue.rcv_id), bytes(queue.auth_private)),
            command=command,
        )

    def _switch_deleted(self, command: Any, queue: Any, outcome: str) -> None:
        s = self.store
        survivor = None
        if queue is not None and outcome == "completed":
            survivor = next((q for q in self.rcv_queues.values() if q.replaces == queue.id), None)

        def effects() -> None:
            if queue is not None:
                s.RcvMessage.delete().where(s.RcvMessage.rcv_queue_id == queue.id).execute()
                queue.delete_instance()
            if survivor is not None:
                survivor.replaces = None
                survivor.save(only=[type(survivor).replaces])
            if outcome != "aborted":  # an abort reset the status at once
                self._set_rcv_switch(None)

        if queue is not None:
            self.rcv_queues.pop(queue.id, None)
            self._box_keys.pop(queue.id, None)
            if queue.rcv_id is not None:
                self.tell(session_address(queue.server), Forget(bytes(queue.rcv_id)))
        told = () if outcome == "aborted" else (lambda: self._switch_event("rcv", outcome),)
        self._complete(command, None, effects, told)

    def _fail_switch_command(self, command: Any, code: str, message: str) -> bool:
        """A permanent error of a switch command; True if it was handled here."""
        if command.kind == SwitchKind.DELETE:
            payload = msgspec.msgpack.decode(bytes(command.payload))
            queue = self.rcv_queues.get(payload["queue_id"])
            self._switch_deleted(command, queue, payload["outcome"])
            return True
        if command.kind not in (SwitchKind.SWITCH, SwitchKind.SECURE):
            return False
        new = self._switch_new_rcv_queue()

        def effects() -> None:
            if new is not None:  # the status is reset, and the failure told, once it is gone
                self._delete_rcv_queue_later(new, "failed")
            else:
                self._set_rcv_switch(None)

        event = (
            ev.Err(self.conn_id, code, message, command.corr_id)
            if command.corr_id is not None
            else None
        )
        self._complete(command, event, effects)
        if new is None:
            self._emit(self._switch_event("rcv", "failed"))
        return True

    # ------------------------------------------------------------------ Alice: messages

    def _switch_message(self, payload: Any) -> list[Any]:
        """A rotation message received in the chain (inside the chain's transaction);
        returns the events to emit once it is committed."""
        match payload:
            case QAdd():
                return self._switch_qadd(payload)
            case QKey():
                return self._switch_qkey(payload)
            case QUse():
                return self._switch_quse(payload)
            case QErr():
                return self._switch_qerr(payload)
        return []  # QTEST: it only had to arrive

    def _switch_qkey(self, message: QKey) -> list[Any]:
        """Bob's sender key for the new queue."""
        new = self._switch_new_rcv_queue()
        if (
            new is None
            or bytes(new.snd_id or b"") != message.snd_id
            or self.conn.rcv_switch_status
            not in (RcvSwitchStatus.QUEUING_QADD, RcvSwitchStatus.SENT_QADD)
        ):
            log.info("switch: QKEY for no switch in progress", extra={"conn_id": self.conn_id})
            return []
        s = self.store
        new.sender_auth_public = message.sender_auth_public
        new.save(only=[type(new).sender_auth_public])
        now = time.time()
        command = s.Command.create(
            conn_id=self.conn_id,
            kind=SwitchKind.SECURE,
            payload=msgspec.msgpack.encode({}),
            lane=new.server,
            deadline=now + self.services.config.command_ttl,
            created_at=now,
        )
        self.commands.append(command)
        self._set_rcv_switch(RcvSwitchStatus.QUEUING_SECURE)  # RECEIVED_QKEY passed within
        return [lambda: self._switch_event("rcv", "confirmed")]

    def _switch_qerr(self, message: QErr) -> list[Any]:
        """Bob could not use the new queue: undo; `SWITCH rcv failed` once it is deleted."""
        new = self._switch_new_rcv_queue()
        if new is None or bytes(new.snd_id or b"") != message.snd_id:
            return []
        for command in [c for c in self.commands if c.kind == SwitchKind.SECURE]:
            self.commands.remove(command)
            command.delete_instance()
        self._delete_rcv_queue_later(new, "failed")
        return []

    def _hold_if_switching(self, queue: Any, rcv_id: bytes, reply: Any) -> bool:
        """A message on a new queue waits, un-ACKed, until the old queue is drained."""
        old = self.rcv_queues.get(queue.replaces) if queue.replaces is not None else None
        if old is None or old.status != "active":
            return False
        if not any(held.msg_id == reply.msg_id for _, held in self._held):
            self._held.append((rcv_id, reply))
        return True

    def _check_drained(self) -> None:
        """With messages held: ask the old queue's server whether anything is left on it,
        once nothing of ours is in flight there (a GET would hand that message out again)."""
        if not self._held or self._drain_in_flight:
            return
        rcv_id = self._held[0][0]
        new = next((q for q in self.rcv_queues.values() if bytes(q.rcv_id or b"") == rcv_id), None)
        old = self.rcv_queues.get(new.replaces) if new is not None else None
        if old is None or old.status != "active":
            self._release_held()
            return
        if any(step.lane.startswith(f"ack:{old.id}:") for step in self._steps.values()):
            return
        s = self.store
        with s.transaction(read_only=True):
            unacked = s.RcvMessage.select().where(s.RcvMessage.rcv_queue_id == old.id).exists()
        if unacked:
            return  # the user's ack of it will bring the next one, or leave the queue empty

        def answered(reply: Any) -> None:
            self._drain_in_flight = False
            if isinstance(reply, Ok):
                self._old_queue_drained(old)
            # a MSG answer is also pushed to us: its processing checks again

        def failed(error: BaseException) -> None:
            self._drain_in_flight = False
            if isinstance(error, ServerError) and not error.temporary:
                self._old_queue_drained(old)  # it is gone: nothing can be left on it
            else:
                self._wake_at(time.time() + self.services.config.retry.initial)

        self._drain_in_flight = True
        self._submit(
            f"drain:{old.id}",
            old.server,
            answered,
            failed,
            self._request(old.server, Get(), bytes(old.rcv_id), bytes(old.auth_private)),
        )

    def _old_queue_drained(self, old: Any) -> None:
        with self.store.transaction():  # MESSAGE_RECEIVED is passed within it
            self._delete_rcv_queue_later(old, "completed")
            self._set_rcv_switch(RcvSwitchStatus.QUEUING_DELETE)
        self._release_held()

    def _recover_held(self) -> None:
        """At activation: a message held by the previous activation (which crashed) was
        never ACKed, and a live subscription does not deliver it again by itself; a GET on
        the new queue from the subscribed session hands it out once more."""
        new = self._switch_new_rcv_queue()
        old = self.rcv_queues.get(new.replaces) if new is not None else None
        if new is None or new.rcv_id is None or old is None or old.status != "active":
            return
        rcv_id = bytes(new.rcv_id)

        def answered(reply: Any) -> None:
            if not isinstance(reply, Ok):
                self._queue_message(rcv_id, reply)  # held again (a pushed copy is ignored)

        def failed(error: BaseException) -> None:
            log.info("switch: GET on the new queue failed", extra={"error": repr(error)})

        self._submit(
            f"redeliver:{new.id}",
            new.server,
            answered,
            failed,
            self._request(new.server, Get(), rcv_id, bytes(new.auth_private)),
        )

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for rcv_id, reply in held:
            self._queue_message(rcv_id, reply)

    def _delete_rcv_queue_later(self, queue: Any, outcome: str) -> None:
        """Queue the DEL of `queue` as an internal command (inside the caller's transaction)."""
        s = self.store
        queue.status = "deleting"
        queue.save(only=[type(queue).status])
        now = time.time()
        command = s.Command.create(
            conn_id=self.conn_id,
            kind=SwitchKind.DELETE,
            payload=msgspec.msgpack.encode({"queue_id": queue.id, "outcome": outcome}),
            lane=queue.server,
            deadline=now + self.services.config.command_ttl,
            created_at=now,
        )
        self.commands.append(command)

    # ------------------------------------------------------------------ Bob: messages

    def _switch_qadd(self, message: QAdd) -> list[Any]:
        """Alice moves to a new queue: record the new send queue, send its key on the old
        one."""
        old = next(
            (
                q
                for q in self.snd_queues.values()
                if bytes(q.snd_id) == message.replaces and q.status == "secured"
            ),
            None,
        )
        if old is None:
            log.info("switch: QADD for a queue we do not send to", extra={"conn_id": self.conn_id})
            return []
        for stale in [q for q in self.snd_queues.values() if q.replaces == old.id]:
            stale.delete_instance()  # an earlier QADD that Alice aborted
            self.snd_queues.pop(stale.id, None)
        target: QueueAddress = message.new_queue
        new = self._create_snd_queue(target, replaces=old.id)
        self._set_snd_switch(SndSwitchStatus.RECEIVED_QADD)
        auth = crypto.SigningKey.from_private(bytes(new.auth_private))
        self._enqueue(old, QKey(target.snd_id, auth.public), "qkey")
        self._set_snd_switch(SndSwitchStatus.QUEUING_QKEY)
        return [lambda: self._switch_event("snd", "started")]

    def _switch_quse(self, message: QUse) -> list[Any]:
        """Alice secured the new queue: use it for everything new; QTEST goes first on it,
        once the old queue has drained."""
        new = next(
            (
                q
                for q in self.snd_queues.values()
                if bytes(q.snd_id) == message.snd_id and q.replaces is not None
            ),
            None,
        )
        if new is None or new.status != "new":
            return []
        old = self.snd_queues.get(new.replaces)
        new.status = "secured"
        new.save(only=[type(new).status])
        if old is not None:
            old.status = "retiring"
            old.save(only=[type(old).status])
        self._set_snd_switch(SndSwitchStatus.RECEIVED_QUSE)
        self._enqueue(new, QTest(message.snd_id), "qtest")
        self._set_snd_switch(SndSwitchStatus.QUEUING_QTEST)
        return [lambda: self._switch_event("snd", "secured")]

    def _may_deliver(self, queue: Any) -> bool:
        """A switch's new send queue waits until the one it replaces has drained."""
        return queue.replaces is None or not self.outbox.get(queue.replaces)

    def _qtest_sent(self, new: Any) -> None:
        """Inside the transaction that deleted the sent QTEST: drop the old send queue."""
        old = self.snd_queues.pop(new.replaces, None) if new.replaces is not None else None
        if old is not None:
            old.delete_instance()
            self.outbox.pop(old.id, None)
        new.replaces = None
        new.save(only=[type(new).replaces])
        self._set_snd_switch(None)  # SENT_QTEST is passed within this transaction

    def _qkey_failed(self, old: Any) -> None:
        """QKEY was refused for good (inside the caller's transaction): forget the new queue."""
        for new in [q for q in self.snd_queues.values() if q.replaces == old.id]:
            new.delete_instance()
            self.snd_queues.pop(new.id, None)
        self._set_snd_switch(None)

    def _qtest_failed(self, new: Any, qtest: Any) -> None:
        """QTEST was refused for good (inside the caller's transaction, which deleted it):
        go back to the old send queue with QTEST and whatever followed it on the new one,
        resealed (so the chain has no gap), and tell Alice with QERR."""
        old = self.snd_queues.get(new.replaces) if new.replaces is not None else None
        moved = [qtest, *self.outbox.pop(new.id, deque())]
        for message in moved:
            message.delete_instance()
        self.snd_queues.pop(new.id, None)
        new.delete_instance()
        self._set_snd_switch(None)
        if old is None:
            return
        old.status = "secured"
        old.save(only=[type(old).status])
        from_key = crypto.DhKey.from_private(bytes(new.e2e_private))
        to_key = crypto.DhKey.from_private(bytes(old.e2e_private))
        s = self.store
        for message in moved:
            plaintext = open_own_envelope(from_key, bytes(new.e2e_peer_public), bytes(message.body))
            row = s.SndMessage.create(
                conn_id=self.conn_id,
                snd_queue_id=old.id,
                seq=message.seq,
                kind="internal" if message.kind == "qtest" else message.kind,
                body=seal_envelope(to_key, bytes(old.e2e_peer_public), plaintext),
                expires_at=message.expires_at,
                created_at=message.created_at,
            )
            self.outbox.setdefault(old.id, deque()).append(row)
        self._enqueue(old, QErr(bytes(new.snd_id)), "qerr")

    # ------------------------------------------------------------------ helpers

    def _current_rcv_queue(self) -> Any:
        """The receive queue in use: active, messaging, and not a switch's new queue."""
        for queue in sorted(self.rcv_queues.values(), key=lambda q: q.id):
            if (
                queue.status == "active"
                and queue.mode == QueueMode.MESSAGING.value
                and queue.replaces is None
            ):
                return queue
        return None

    def _switch_new_rcv_queue(self) -> Any:
        """The new queue of the switch in progress (not one being deleted)."""
        for queue in self.rcv_queues.values():
            if queue.replaces is not None and queue.status != "deleting":
                return queue
        return None

    def _set_rcv_switch(self, status: RcvSwitchStatus | None) -> None:
        self.conn.rcv_switch_status = None if status is None else status.value
        self.conn.save(only=[type(self.conn).rcv_switch_status])

    def _set_snd_switch(self, status: SndSwitchStatus | None) -> None:
        self.conn.snd_switch_status = None if status is None else status.value
        self.conn.save(only=[type(self.conn).snd_switch_status])

    def _switch_event(self, direction: str, phase: str, corr_id: str | None = None) -> ev.Switch:
        return ev.Switch(self.conn_id, direction, phase, self._connection_info(), corr_id)
