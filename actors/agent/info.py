"""What a connection tells about itself: its queues and where a queue rotation stands."""

from __future__ import annotations

from actors.agent import events as ev
from actors.agent.model import RcvQueueStatus, SndQueueStatus
from actors.agent.state import ConnectionState
from actors.agent.switch_states import ABORTABLE
from protocol.errors import AgentError


def connection_info(state: ConnectionState) -> ev.ConnectionInfo:
    """The `ConnectionInfo` of `connection_info(conn_id)` and of every SWITCH event."""
    conn = state.conn
    if conn is None:
        raise AgentError(f"no connection {state.conn_id!r}", code="NO_CONNECTION")
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
