"""`NewQueueHold`: during a switch, what arrives on the new queue waits for the old one.

Bob sends QTEST on the new queue only once everything he queued on the old one was accepted
by its server, but Alice may not have received all of it yet: the server hands out one
message at a time, and a user message waits for the user's ack. So a message that arrives on
a switch's new queue is held, un-ACKed, until a GET on the old queue — from the subscribed
session, with nothing of ours in flight there — answers OK (nothing left). Then the old
queue's DEL is queued (`on_drained`, in one transaction) and the held messages are
processed in order.

A held message survives a crash: the server still has it, un-ACKed. A live subscription
does not hand it out again by itself, so a new activation GETs it from the new queue
(`recover_held`), retried until the server answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from actors.agent.model import Lane, LaneKind, RcvQueueStatus
from actors.agent.ports import ConnectionPort, QueueRequest, unreachable
from protocol.errors import ServerError
from protocol.queue import Get, Msg, Ok
from storage.agent import AgentRcvQueue

log = logging.getLogger(__name__)


class NewQueueHold:
    def __init__(
        self,
        port: ConnectionPort,
        process: Callable[[AgentRcvQueue, Msg], None],
        on_drained: Callable[[AgentRcvQueue], None],
    ) -> None:
        self.port = port
        self.process = process  # the inbound side: what a released message goes to
        self.on_drained = on_drained  # inside a transaction: the old queue is empty
        self.held: list[tuple[AgentRcvQueue, Msg]] = []  # from the new queue, not ACKed
        self._drain_in_flight = False
        self._recover_pending = False  # the GET of recover_held failed: try again

    def hold_if_switching(self, queue: AgentRcvQueue, reply: Msg) -> bool:
        """A message on a new queue waits, un-ACKed, until the old queue is drained."""
        rcv_queues = self.port.state.rcv_queues
        old = rcv_queues.get(queue.replaces) if queue.replaces is not None else None
        if old is None or old.status != RcvQueueStatus.ACTIVE:
            return False
        if not any(held.msg_id == reply.msg_id for _, held in self.held):
            self.held.append((queue, reply))
        return True

    def pump(self) -> None:
        if self._recover_pending:
            self.recover_held()
        self.check_drained()

    def check_drained(self) -> None:
        """With messages held: ask the old queue's server whether anything is left on it,
        once nothing of ours is in flight there (a GET would hand that message out again)."""
        if not self.held or self._drain_in_flight:
            return
        state = self.port.state
        new = self.held[0][0]
        old = state.rcv_queues.get(new.replaces) if new.replaces is not None else None
        if old is None or old.status != RcvQueueStatus.ACTIVE:
            self._release()
            return
        if any(r.rcv_queue_id == old.id for r in state.received.values()):
            return  # the user's ack of it will bring the next one, or leave the queue empty

        def answered(reply: object) -> None:
            self._drain_in_flight = False
            if isinstance(reply, Ok):
                self._drained(old)
            # a MSG answer is also pushed to us: its processing checks again

        def failed(error: BaseException) -> None:
            self._drain_in_flight = False
            if isinstance(error, ServerError) and not error.temporary:
                self._drained(old)  # it is gone: nothing can be left on it
            else:
                self.port.wake_at(time.time() + self.port.config.retry.initial)

        self._drain_in_flight = True
        self.port.submit(
            Lane(LaneKind.DRAIN, old.id),
            QueueRequest(
                old.server, Get(), bytes(old.rcv_id), state.keys.signer(bytes(old.auth_private))
            ),
            answered,
            failed,
        )

    def _drained(self, old: AgentRcvQueue) -> None:
        with self.port.store.transaction():
            self.on_drained(old)
        self._release()

    def _release(self) -> None:
        held, self.held = self.held, []
        for queue, reply in held:
            self.process(queue, reply)

    def recover_held(self) -> None:
        """At activation: GET the message the last activation held (see the docstring)."""
        state = self.port.state
        new = state.switch_new_rcv_queue()
        old = state.rcv_queues.get(new.replaces) if new is not None and new.replaces else None
        if new is None or new.rcv_id is None or old is None or old.status != RcvQueueStatus.ACTIVE:
            return

        def answered(reply: object) -> None:
            if isinstance(reply, Msg):
                self.hold_if_switching(new, reply)  # held again (a pushed copy is ignored)

        def failed(error: BaseException) -> None:
            log.info("switch: GET on the new queue failed", extra={"error": repr(error)})
            if isinstance(error, ServerError) and not error.temporary:
                return  # the queue is gone: nothing is held there
            if unreachable(error):  # not ERR INTERNAL: an UP would retry it at once
                self.port.server_unavailable(new.server)
            self.port.wake_at(time.time() + self.port.config.retry.initial)
            self._recover_pending = True

        self._recover_pending = False
        self.port.submit(
            Lane(LaneKind.REDELIVER, new.id),
            QueueRequest(
                new.server, Get(), bytes(new.rcv_id), state.keys.signer(bytes(new.auth_private))
            ),
            answered,
            failed,
        )
