"""The queue rotation's state machines, as tables: every allowed (status, event) pair.

Pure and sans-io: `next_rcv_status` and `next_snd_status` take the stored status and what
happened, and return the status to store, or raise `InvalidSwitchTransition`. The rotation
(rotation.py) writes a status only through them, so a transition that is not in the tables
below cannot happen silently; tests/actors/test_switch_states.py walks every pair.

Alice rotates her receive queue (`RcvSwitchStatus`, on her connection row); Bob, her sender,
follows (`SndSwitchStatus`, on his). `None` is "no switch in progress".

Seed 3 lists a few more statuses (RECEIVED_QKEY, MESSAGE_RECEIVED; RECEIVED_QADD,
RECEIVED_QUSE, SENT_QTEST). Each of them is entered and left inside one transaction here
(e.g. QKEY arrives: the key is stored and the KEY command queued in the same commit), so no
row could ever hold one; they are not members, and the tables go straight past them.

Receiving side (Alice)::

    None            START           → QUEUING_SWCH     switch_connection stored the command
    QUEUING_SWCH    QUEUE_RECORDED  → SWCH_STARTED     the new queue's keys stored; NEW runs
    SWCH_STARTED    QADD_QUEUED     → QUEUING_QADD     NEW answered, QADD queued
    QUEUING_QADD    QADD_SENT       → SENT_QADD        the server took QADD
    QUEUING_QADD    QKEY_RECEIVED   → QUEUING_SECURE   (Bob answered before our SENT landed)
    SENT_QADD       QKEY_RECEIVED   → QUEUING_SECURE   Bob's key stored, KEY queued
    QUEUING_SECURE  SECURE_STARTED  → SECURE_STARTED
    SECURE_STARTED  QUSE_QUEUED     → QUEUING_QUSE     KEY answered, QUSE queued
    QUEUING_QUSE    OLD_DRAINED     → QUEUING_DELETE   the old queue is empty: DEL it
    QUEUING_DELETE  DELETE_STARTED  → DELETE_STARTED
    DELETE_STARTED  DELETED         → None             done
    up to SENT_QADD ABORTED         → None             abort_switch (the peer knows nothing)
    before the drain FAILED         → (unchanged)      the new queue's DEL is queued …
    before the drain DELETED        → None             … and once it is gone, it is over
"""

from __future__ import annotations

import enum

from protocol.errors import AgentError


class RcvSwitchStatus(enum.StrEnum):
    QUEUING_SWCH = "queuing_swch"
    SWCH_STARTED = "swch_started"
    QUEUING_QADD = "queuing_qadd"
    SENT_QADD = "sent_qadd"
    QUEUING_SECURE = "queuing_secure"
    SECURE_STARTED = "secure_started"
    QUEUING_QUSE = "queuing_quse"
    QUEUING_DELETE = "queuing_delete"
    DELETE_STARTED = "delete_started"


class RcvSwitchEvent(enum.Enum):
    START = "start"
    QUEUE_RECORDED = "queue_recorded"
    QADD_QUEUED = "qadd_queued"
    QADD_SENT = "qadd_sent"
    QKEY_RECEIVED = "qkey_received"
    SECURE_STARTED = "secure_started"
    QUSE_QUEUED = "quse_queued"
    OLD_DRAINED = "old_drained"
    DELETE_STARTED = "delete_started"
    DELETED = "deleted"
    ABORTED = "aborted"
    FAILED = "failed"


class SndSwitchStatus(enum.StrEnum):
    QUEUING_QKEY = "queuing_qkey"
    QUEUING_QTEST = "queuing_qtest"


class SndSwitchEvent(enum.Enum):
    QADD_RECEIVED = "qadd_received"
    QUSE_RECEIVED = "quse_received"
    QTEST_SENT = "qtest_sent"
    QKEY_FAILED = "qkey_failed"
    QTEST_FAILED = "qtest_failed"


class InvalidSwitchTransition(AgentError):
    """A rotation step that its stored status does not allow (a bug, or a corrupt row)."""

    code = "INTERNAL"


R = RcvSwitchStatus
RE = RcvSwitchEvent

# Until QADD is out the peer knows nothing of the new queue, so the switch can be undone.
ABORTABLE = frozenset({R.QUEUING_SWCH, R.SWCH_STARTED, R.QUEUING_QADD, R.SENT_QADD})
# Before the old queue is drained a failure undoes the switch; from then on it completes.
UNDOABLE = ABORTABLE | {R.QUEUING_SECURE, R.SECURE_STARTED, R.QUEUING_QUSE}

RCV_TRANSITIONS: dict[tuple[RcvSwitchStatus | None, RcvSwitchEvent], RcvSwitchStatus | None] = {
    (None, RE.START): R.QUEUING_SWCH,
    (R.QUEUING_SWCH, RE.QUEUE_RECORDED): R.SWCH_STARTED,
    (R.SWCH_STARTED, RE.QADD_QUEUED): R.QUEUING_QADD,
    (R.QUEUING_QADD, RE.QADD_SENT): R.SENT_QADD,
    (R.QUEUING_QADD, RE.QKEY_RECEIVED): R.QUEUING_SECURE,
    (R.SENT_QADD, RE.QKEY_RECEIVED): R.QUEUING_SECURE,
    (R.QUEUING_SECURE, RE.SECURE_STARTED): R.SECURE_STARTED,
    (R.SECURE_STARTED, RE.QUSE_QUEUED): R.QUEUING_QUSE,
    (R.QUEUING_QUSE, RE.OLD_DRAINED): R.QUEUING_DELETE,
    (R.QUEUING_DELETE, RE.DELETE_STARTED): R.DELETE_STARTED,
    (R.DELETE_STARTED, RE.DELETED): None,
    **{(status, RE.ABORTED): None for status in ABORTABLE},
    **{(status, RE.FAILED): status for status in UNDOABLE},
    **{(status, RE.DELETED): None for status in UNDOABLE},
}

S = SndSwitchStatus
SE = SndSwitchEvent

SND_TRANSITIONS: dict[tuple[SndSwitchStatus | None, SndSwitchEvent], SndSwitchStatus | None] = {
    (None, SE.QADD_RECEIVED): S.QUEUING_QKEY,
    # a QADD that replaces one Alice aborted before our QKEY reached her
    (S.QUEUING_QKEY, SE.QADD_RECEIVED): S.QUEUING_QKEY,
    (S.QUEUING_QKEY, SE.QUSE_RECEIVED): S.QUEUING_QTEST,
    (S.QUEUING_QKEY, SE.QKEY_FAILED): None,
    (S.QUEUING_QTEST, SE.QTEST_SENT): None,
    (S.QUEUING_QTEST, SE.QTEST_FAILED): None,
}


def next_rcv_status(
    status: RcvSwitchStatus | str | None, event: RcvSwitchEvent
) -> RcvSwitchStatus | None:
    try:
        current = None if status is None else RcvSwitchStatus(status)
        return RCV_TRANSITIONS[(current, event)]
    except (KeyError, ValueError):
        raise InvalidSwitchTransition(
            f"receiving switch: {event.value} is not allowed at {status}"
        ) from None


def next_snd_status(
    status: SndSwitchStatus | str | None, event: SndSwitchEvent
) -> SndSwitchStatus | None:
    try:
        current = None if status is None else SndSwitchStatus(status)
        return SND_TRANSITIONS[(current, event)]
    except (KeyError, ValueError):
        raise InvalidSwitchTransition(
            f"sending switch: {event.value} is not allowed at {status}"
        ) from None
