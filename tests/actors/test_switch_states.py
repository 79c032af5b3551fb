"""The rotation's state tables, without sockets: every (status, event) pair, valid or not."""

from __future__ import annotations

import itertools

import pytest

from actors.agent.switch_states import (
    ABORTABLE,
    RCV_TRANSITIONS,
    SND_TRANSITIONS,
    UNDOABLE,
    InvalidSwitchTransition,
    RcvSwitchEvent,
    RcvSwitchStatus,
    SndSwitchEvent,
    SndSwitchStatus,
    next_rcv_status,
    next_snd_status,
)
from protocol.errors import AgentError

R, RE = RcvSwitchStatus, RcvSwitchEvent
S, SE = SndSwitchStatus, SndSwitchEvent

# The receiving side's walk when nothing goes wrong, and the sending side's.
RCV_HAPPY_PATH = [
    (None, RE.START, R.QUEUING_SWCH),
    (R.QUEUING_SWCH, RE.QUEUE_RECORDED, R.SWCH_STARTED),
    (R.SWCH_STARTED, RE.QADD_QUEUED, R.QUEUING_QADD),
    (R.QUEUING_QADD, RE.QADD_SENT, R.SENT_QADD),
    (R.SENT_QADD, RE.QKEY_RECEIVED, R.QUEUING_SECURE),
    (R.QUEUING_SECURE, RE.SECURE_STARTED, R.SECURE_STARTED),
    (R.SECURE_STARTED, RE.QUSE_QUEUED, R.QUEUING_QUSE),
    (R.QUEUING_QUSE, RE.OLD_DRAINED, R.QUEUING_DELETE),
    (R.QUEUING_DELETE, RE.DELETE_STARTED, R.DELETE_STARTED),
    (R.DELETE_STARTED, RE.DELETED, None),
]
SND_HAPPY_PATH = [
    (None, SE.QADD_RECEIVED, S.QUEUING_QKEY),
    (S.QUEUING_QKEY, SE.QUSE_RECEIVED, S.QUEUING_QTEST),
    (S.QUEUING_QTEST, SE.QTEST_SENT, None),
]


def _expected_rcv(status: RcvSwitchStatus | None, event: RcvSwitchEvent) -> object:
    """The receiving table as the design states it, written out independently."""
    happy = {(s, e): after for s, e, after in RCV_HAPPY_PATH}
    if (status, event) in happy:
        return happy[(status, event)]
    if status is R.QUEUING_QADD and event is RE.QKEY_RECEIVED:
        return R.QUEUING_SECURE  # Bob's QKEY may come back before our SENT of QADD lands
    if event is RE.ABORTED and status in ABORTABLE:
        return None
    if event is RE.FAILED and status in UNDOABLE:
        return status  # unchanged: the new queue's DEL is queued
    if event is RE.DELETED and status in UNDOABLE:
        return None
    return InvalidSwitchTransition


def _expected_snd(status: SndSwitchStatus | None, event: SndSwitchEvent) -> object:
    happy = {(s, e): after for s, e, after in SND_HAPPY_PATH}
    if (status, event) in happy:
        return happy[(status, event)]
    if status is S.QUEUING_QKEY and event is SE.QADD_RECEIVED:
        return S.QUEUING_QKEY  # a new QADD replaces one Alice aborted
    if (status, event) in ((S.QUEUING_QKEY, SE.QKEY_FAILED), (S.QUEUING_QTEST, SE.QTEST_FAILED)):
        return None
    return InvalidSwitchTransition


@pytest.mark.parametrize(
    ("status", "event"), list(itertools.product([None, *RcvSwitchStatus], RcvSwitchEvent))
)
def test_every_receiving_pair(status: RcvSwitchStatus | None, event: RcvSwitchEvent) -> None:
    expected = _expected_rcv(status, event)
    if expected is InvalidSwitchTransition:
        with pytest.raises(InvalidSwitchTransition) as refused:
            next_rcv_status(status, event)
        assert isinstance(refused.value, AgentError) and refused.value.code == "INTERNAL"
        assert (status, event) not in RCV_TRANSITIONS
    else:
        assert next_rcv_status(status, event) == expected
        # a status read back from a row is its string value
        stored = None if status is None else status.value
        assert next_rcv_status(stored, event) == expected


@pytest.mark.parametrize(
    ("status", "event"), list(itertools.product([None, *SndSwitchStatus], SndSwitchEvent))
)
def test_every_sending_pair(status: SndSwitchStatus | None, event: SndSwitchEvent) -> None:
    expected = _expected_snd(status, event)
    if expected is InvalidSwitchTransition:
        with pytest.raises(InvalidSwitchTransition):
            next_snd_status(status, event)
        assert (status, event) not in SND_TRANSITIONS
    else:
        assert next_snd_status(status, event) == expected


def test_the_happy_paths_end_where_they_began() -> None:
    status = None
    for before, event, after in RCV_HAPPY_PATH:
        assert status == before
        status = next_rcv_status(status, event)
        assert status == after
    assert status is None
    status = None
    for _, event, _ in SND_HAPPY_PATH:
        status = next_snd_status(status, event)
    assert status is None


def test_every_status_is_reachable_and_every_walk_can_end() -> None:
    """No status is a dead end: from each one, some events lead back to none."""
    for table, statuses in ((RCV_TRANSITIONS, RcvSwitchStatus), (SND_TRANSITIONS, SndSwitchStatus)):
        reachable = {after for after in table.values()}
        assert set(statuses) <= reachable
        for status in statuses:
            seen, frontier = set(), {status}
            while frontier:
                current = frontier.pop()
                seen.add(current)
                frontier |= {a for (b, _), a in table.items() if b == current} - seen
            assert None in seen, status


def test_a_status_this_program_does_not_know_is_refused() -> None:
    with pytest.raises(InvalidSwitchTransition):
        next_rcv_status("message_received", RE.DELETED)
    with pytest.raises(InvalidSwitchTransition):
        next_snd_status("sent_qtest", SE.QTEST_SENT)
