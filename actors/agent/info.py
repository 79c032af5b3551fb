"""What a connection tells about itself: its status, its queues and where a queue rotation
stands, and what the debug console shows of it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from actors.agent import events as ev
from actors.agent.model import Lane, RcvQueueStatus, SndQueueStatus
from actors.agent.state import ConnectionState
from actors.agent.switch_states import ABORTABLE
from protocol.errors import NoConnection
from storage.agent import AgentCommand


def connection_info(state: ConnectionState) -> ev.ConnectionInfo:
    """The `ConnectionInfo` of `connection_info(conn_id)` and of every SWITCH event."""
    conn = state.conn
    if conn is None:
        raise NoConnection(f"no connection {state.conn_id!r}")
    rcv = sorted(state.rcv_queues.values(), key=lambda q: q.id)
    snd = sorted(state.snd_queues.values(), key=lambda q: q.id)
    return ev.ConnectionInfo(
        conn_id=state.conn_id,
        status=conn.status,
        rcv_servers=sorted({q.server for q in rcv if q.status != RcvQueueStatus.DELETING}),
        snd_servers=sorted({q.server for q in snd if q.status != SndQueueStatus.RETIRING}),
        rcv_switch_status=conn.rcv_switch_status,
        snd_switch_status=conn.snd_switch_status,
        can_abort_switch=conn.rcv_switch_status in ABORTABLE,
        queues=[ev.QueueInfo("rcv", q.server, q.status) for q in rcv]
        + [ev.QueueInfo("snd", q.server, q.status) for q in snd],
    )


def connection_status(state: ConnectionState) -> ev.ConnectionStatus | None:
    """The `ConnectionStatus` of `connection_status(conn_id)`; None if there is no connection."""
    conn = state.conn
    if conn is None:
        return None
    return ev.ConnectionStatus(
        conn_id=state.conn_id,
        status=conn.status,
        error=conn.error,
        rcv_servers=sorted({q.server for q in state.rcv_queues.values()}),
        snd_servers=sorted({q.server for q in state.snd_queues.values()}),
        rcv_switch_status=conn.rcv_switch_status,
        snd_switch_status=conn.snd_switch_status,
        pending_commands=len(state.commands),
        pending_messages=state.pending_messages(),
    )


def inspection(
    state: ConnectionState, stored: Sequence[AgentCommand], lanes: Iterable[Lane], now: float
) -> dict[str, Any]:
    """For the debug console: the pending commands, the events told and not acknowledged
    (`stored`: the command rows read from the store, since the actor does not keep them), the
    queues, the last error, and the lanes with a step in flight."""
    conn = state.conn
    return {
        "mode": conn.mode if conn is not None else None,
        "error": conn.error if conn is not None else None,
        "switch": (conn.rcv_switch_status, conn.snd_switch_status) if conn else None,
        "pending_commands": [
            f"{c.kind} corr={c.corr_id} attempts={c.attempts} "
            f"next in {max(0.0, c.next_attempt_at - now):.1f}s"
            for c in state.commands
        ],
        "unacknowledged_events": [f"{c.kind} corr={c.corr_id}" for c in stored if c.event],
        "receive_queues": [f"{q.server} {q.status}" for q in state.rcv_queues.values()],
        "send_queues": [f"{q.server} {q.status}" for q in state.snd_queues.values()],
        "received_unacked": len(state.received),
        "in_flight": sorted(f"{lane.kind.value} {lane.key}" for lane in lanes),
    }
