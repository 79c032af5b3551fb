"""Queue rotation (switch): the receive queue moves to another server, live, both ends."""

from __future__ import annotations

from typing import Any

import pytest

from actors.agent import events as ev
from actors.client import AgentError
from tests.helpers import eventually
from tests.scenarios.agents import Events, connect


def received_in_order(
    client: Any, events: Events, conn_id: str, bodies: list[bytes], timeout: float = 15.0
) -> None:
    """Ack every MSG as it comes until `bodies` all arrived; each exactly once, in order."""
    got: list[bytes] = []
    acked: set[int] = set()

    def step() -> bool:
        for message in events.of(ev.Msg, conn_id=conn_id):
            if message.msg_id not in acked:
                acked.add(message.msg_id)
                assert message.integrity == "ok", message
                got.append(message.body)
                client.ack_message(conn_id, message.msg_id)
        return len(got) >= len(bodies)

    eventually(step, timeout=timeout, what=f"{len(bodies)} messages on {conn_id}")
    assert got == bodies


def queue_count(server: Any) -> int:
    return server.store.stats()["queues"]


def test_switch_moves_the_queue_and_no_message_is_lost_or_doubled(
    start_server, open_client
) -> None:
    old_server, new_server = start_server("old"), start_server("new")
    alice, a_events = open_client("alice", [old_server])
    bob, b_events = open_client("bob", [old_server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    # alice learns of the second server only now, so the switch has somewhere to go
    alice.services.servers = (str(old_server.address), str(new_server.address))
    queues_before = queue_count(old_server)

    before = [b"before %d" % i for i in range(5)]
    for body in before:
        bob.send_message(b_conn, body)
    info = alice.switch_connection(a_conn)
    assert info.rcv_switch_status == "queuing_qadd"
    assert not info.can_abort_switch or info.rcv_switch_status in ("queuing_qadd", "sent_qadd")
    with pytest.raises(AgentError) as refused:
        alice.switch_connection(a_conn)
    assert refused.value.code == "PROHIBITED"
    during = [b"during %d" % i for i in range(5)]
    for body in during:
        bob.send_message(b_conn, body)
        alice.send_message(a_conn, body)
    received_in_order(alice, a_events, a_conn, before + during)
    # QUSE travels behind alice's messages: the server hands bob one at a time, each
    # after his ack of the previous one, so the switch goes on as bob reads
    received_in_order(bob, b_events, b_conn, during)

    a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="completed")
    b_events.wait_for(ev.Switch, conn_id=b_conn, direction="snd", phase="completed")
    phases = [e.phase for e in a_events.of(ev.Switch, conn_id=a_conn)]
    assert phases == ["confirmed", "secured", "completed"]  # "started" was the sync answer
    assert [e.phase for e in b_events.of(ev.Switch, conn_id=b_conn)] == [
        "started",
        "secured",
        "completed",
    ]

    info = alice.connection_info(a_conn)
    assert info.rcv_servers == [str(new_server.address)]
    assert (info.rcv_switch_status, info.snd_switch_status) == (None, None)
    assert [q.direction for q in info.queues] == ["rcv", "snd"]
    bob_info = bob.connection_info(b_conn)
    assert bob_info.snd_servers == [str(new_server.address)]
    assert bob_info.snd_switch_status is None
    # the old queue is gone from its server; the new one is the only one on the new server
    eventually(lambda: queue_count(old_server) == queues_before - 1, what="old queue deleted")
    assert queue_count(new_server) == 1

    after = [b"after %d" % i for i in range(5)]
    for body in after:
        bob.send_message(b_conn, body)
    received_in_order(alice, a_events, a_conn, before + during + after)
    assert not a_events.of(ev.MErr) and not b_events.of(ev.MErr)
