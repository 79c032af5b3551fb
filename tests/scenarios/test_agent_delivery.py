"""Delivery: QUOTA and QCONT, message TTL, command TTL."""

from __future__ import annotations

import dataclasses

from actors.agent import events as ev
from protocol.server import QueueServer, ServerConfig
from tests.helpers import eventually
from tests.scenarios.agents import FAST, connect


def rcv_id_of(store) -> bytes:
    with store.transaction():
        return bytes(store.RcvQueue.get().rcv_id)


def test_quota_pauses_delivery_and_qcont_resumes_it(start_server, open_client) -> None:
    server: QueueServer = start_server(config=ServerConfig(quota=3))
    slow_quota = dataclasses.replace(FAST, quota_retry=30.0)  # only QCONT can resume in time
    alice, a_events = open_client("alice", [server], config=slow_quota)
    bob, b_events = open_client("bob", [server], config=slow_quota)
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    bob_queue = rcv_id_of(bob.services.store)
    bob.close()  # bob is away: the queue fills up to the quota
    bodies = [b"m%d" % i for i in range(10)]
    for body in bodies:
        alice.send_message(a_conn, body)
    eventually(
        lambda: server.store.message_count(bob_queue) == 4,
        what="three messages and the quota marker stored",
    )
    # seven wait, or eight when bob left before his own ACK of alice's connection info went
    # out (that message still takes a place in the queue; redelivered, it is a duplicate)
    eventually(lambda: alice.connection_status(a_conn).pending_messages >= 7)

    bob, b_events = open_client("bob", [server], config=slow_quota)
    received = []
    while len(received) < len(bodies):
        message = b_events.wait_for(ev.Msg, conn_id=b_conn, body=bodies[len(received)])
        received.append(message.body)
        bob.ack_message(b_conn, message.msg_id)
    assert received == bodies  # in order, none lost across the quota
    a_events.wait(lambda e: len(a_events.of(ev.Sent, conn_id=a_conn)) == len(bodies))
    assert not a_events.of(ev.MErr)


def test_an_undeliverable_message_expires(start_server, open_client) -> None:
    server = start_server()
    short_ttl = dataclasses.replace(FAST, message_ttl=0.3)
    alice, a_events = open_client("alice", [server], config=short_ttl)
    bob, b_events = open_client("bob", [server])
    a_conn, _ = connect(alice, a_events, bob, b_events)
    server.stop()
    msg_id = alice.send_message(a_conn, b"never delivered")
    error = a_events.wait_for(ev.MErr, conn_id=a_conn, timeout=10)
    assert (error.msg_id, error.code) == (msg_id, "EXPIRED")
    assert alice.connection_status(a_conn).pending_messages == 0


def test_a_command_past_its_ttl_ends_with_err_timeout(start_server, open_client) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    address = str(server.address)
    server.stop()
    short_ttl = dataclasses.replace(FAST, command_ttl=0.5)
    bob, b_events = open_client("bob", [address], config=short_ttl)
    b_conn = bob.join_connection_async("join", link, b"")
    error = b_events.wait_for(ev.Err, corr_id="join", timeout=10)
    assert error.conn_id == b_conn and error.code == "TIMEOUT"
    assert bob.connection_status(b_conn).status == "failed"
    assert a_conn
