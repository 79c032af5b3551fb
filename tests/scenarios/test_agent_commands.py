"""Async commands: completions with their corr ids, retries through outages, permanent
errors, durable events, and independence of servers."""

from __future__ import annotations

import time

import pytest

from actors.agent import api
from actors.agent import events as ev
from protocol.errors import AgentError
from protocol.queue import QueueMode
from protocol.server import QueueServer
from tests.helpers import eventually
from tests.scenarios.agents import connect


def test_every_async_command_completes_with_its_corr_id(server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    for corr_id, events in (("create", a_events), ("join", b_events), ("allow", a_events)):
        [done] = [e for e in events.seen if getattr(e, "corr_id", None) == corr_id]
        assert done.conn_id in (a_conn, b_conn)

    msg_id = alice.send_message(a_conn, b"ack me")
    message = b_events.wait_for(ev.Msg, conn_id=b_conn)
    assert message.msg_id == msg_id
    bob.ack_message_async("ack-1", b_conn, message.msg_id)
    assert b_events.wait_for(ev.Ok, corr_id="ack-1").conn_id == b_conn

    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    address = a_events.wait_for(ev.Inv, corr_id="addr").link
    bob.join_connection_async("knock", address, b"")
    request = a_events.wait_for(ev.Req, conn_id=address_conn)
    accepted = alice.accept_contact_async("accept-1", request.inv_id, b"")
    assert a_events.wait_for(ev.Joined, corr_id="accept-1").conn_id == accepted

    alice.delete_connection_async("delete-1", a_conn)
    assert a_events.wait_for(ev.Ok, corr_id="delete-1").conn_id == a_conn
    assert alice.connection_status(a_conn) is None
    # repeating a call with the same corr id does not do the work twice
    assert alice.create_connection_async("addr", QueueMode.CONTACT) == address_conn


def test_a_join_while_the_server_is_down_completes_when_it_returns(
    start_server, open_client
) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    port = server.address.port
    server.stop()

    b_conn = bob.join_connection_async("join", link, b"bob")
    store = bob.services.store

    def attempts() -> int:
        with store.transaction():
            row = store.Command.get_or_none(store.Command.corr_id == "join")
        return row.attempts if row is not None else 0

    eventually(lambda: attempts() >= 3, timeout=10, what="join retried")
    assert not b_events.of(ev.Err) and not b_events.of(ev.Joined)
    assert bob.connection_status(b_conn).status == "new"

    start_server(port=port)  # the same server comes back (same store, same address)
    b_events.wait_for(ev.Joined, corr_id="join", timeout=15)
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn, timeout=15)
    alice.allow_connection_async("allow", a_conn, conf.conf_id, b"alice")
    b_events.wait_for(ev.Con, conn_id=b_conn, timeout=15)
    assert not b_events.of(ev.Err)


def test_a_permanent_error_ends_the_command_with_err(server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    alice.delete_connection(a_conn)  # the invitation's queue is gone from the server

    b_conn = bob.join_connection_async("join", link, b"bob")
    error = b_events.wait_for(ev.Err, corr_id="join")
    assert error.conn_id == b_conn and error.code == "AUTH"
    status = bob.connection_status(b_conn)
    assert status.status == "failed" and "AUTH" in status.error
    assert not b_events.of(ev.Joined)


def test_an_unacked_event_is_emitted_again_until_acknowledged(
    server: QueueServer, open_client
) -> None:
    alice, a_events = open_client("alice", [server])
    alice.create_connection_async("create")
    first = a_events.wait_for(ev.Inv, corr_id="create")
    alice.close()

    again, again_events = open_client("alice", [server])
    replayed = again_events.wait_for(ev.Inv, corr_id="create")
    assert replayed == first  # same corr id, same payload
    again.ack_command_event("create")
    store = again.services.store

    def kept() -> int:
        with store.transaction():
            return store.Command.select().where(store.Command.corr_id == "create").count()

    eventually(lambda: kept() == 0, what="event forgotten")
    again.close()
    third, third_events = open_client("alice", [server])
    third.create_connection_async("other")
    third_events.wait_for(ev.Inv, corr_id="other")
    assert not third_events.of(ev.Inv, corr_id="create")


def test_a_dead_server_delays_neither_other_connections_nor_other_servers(
    start_server, open_client
) -> None:
    first, second = start_server("first"), start_server("second")
    alice, a_events = open_client("alice", [first])
    bob, b_events = open_client("bob", [second])
    # alice receives on `first`, bob receives on `second`
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    carol, c_events = open_client("carol", [second])
    dave, d_events = open_client("dave", [second])
    c_conn, d_conn = connect(carol, c_events, dave, d_events, tag="-cd")

    alice.send_message(a_conn, b"to bob before")
    pending = b_events.wait_for(ev.Msg, conn_id=b_conn)
    first.stop()

    bob.send_message(b_conn, b"to alice while first is down")  # retried in its lane
    started = time.monotonic()
    bob.ack_message_async("ack-on-second", b_conn, pending.msg_id)  # same conn, other server
    b_events.wait_for(ev.Ok, corr_id="ack-on-second", timeout=5)
    carol.send_message(c_conn, b"unrelated")  # another connection
    d_events.wait_for(ev.Msg, conn_id=d_conn, body=b"unrelated", timeout=5)
    assert time.monotonic() - started < 3.0
    assert bob.connection_status(b_conn).pending_messages == 1
    assert not b_events.of(ev.Sent, conn_id=b_conn)


def test_after_a_restart_pending_work_resumes_when_the_server_answers(
    start_server, open_client
) -> None:
    """The stored retry time of a command may lie far ahead; a recovered server must not
    wait for it: the server's session probes it and wakes the waiting connection."""
    import dataclasses

    from actors.agent.services import RetryPolicy
    from tests.scenarios.agents import FAST

    server = start_server()
    alice, a_events = open_client("alice", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    port = server.address.port
    address = str(server.address)
    server.stop()
    patient = dataclasses.replace(FAST, retry=RetryPolicy(initial=60.0, slow_after=600.0))
    bob, b_events = open_client("bob", [address], config=patient)
    bob.join_connection_async("join", link, b"")
    store = bob.services.store

    def next_attempt() -> float:
        with store.transaction():
            row = store.Command.get_or_none(store.Command.corr_id == "join")
        return row.next_attempt_at if row is not None and row.attempts else 0.0

    eventually(lambda: next_attempt() > time.time() + 30, what="a retry a minute ahead")
    bob.close()
    start_server(port=port)
    bob, b_events = open_client("bob", [address], config=patient)
    b_events.wait_for(ev.Joined, corr_id="join", timeout=10)  # long before the minute
    assert a_events.wait_for(ev.Conf, conn_id=a_conn, timeout=10)


def test_an_acknowledged_send_handed_over_again_is_sent_once(server, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    alice.send_message_async("send-1", a_conn, b"hello")
    first = a_events.wait_for(ev.Ok, corr_id="send-1")
    alice.send_message_async("send-1", a_conn, b"hello")  # unsure it was taken: again
    a_events.wait(lambda e: len(a_events.of(ev.Ok, corr_id="send-1")) == 2)
    assert a_events.of(ev.Ok, corr_id="send-1") == [first, first]
    alice.ack_command_event("send-1")
    alice.send_message(a_conn, b"next")
    hello = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"hello")
    bob.ack_message(b_conn, hello.msg_id)  # the server holds the next one back till then
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"next")
    assert [e.body for e in b_events.of(ev.Msg, conn_id=b_conn)] == [b"hello", b"next"]
    assert alice.connection_status(a_conn).pending_commands == 0


def test_an_acknowledged_send_on_a_connection_that_cannot_send_is_refused(
    server, open_client
) -> None:
    alice, a_events = open_client("alice", [server])
    a_conn = alice.create_connection_async("create")
    a_events.wait_for(ev.Inv, corr_id="create")
    with pytest.raises(AgentError) as refused:
        alice.send_message_async("send-early", a_conn, b"too early")
    assert refused.value.code == "PROHIBITED"
    assert alice.connection_status(a_conn).pending_messages == 0
    assert not a_events.of(ev.Ok, corr_id="send-early")


def test_replay_tells_a_ready_connection_again_its_info_and_con(server, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    bob.ack_command_event("join")  # else its completion is told again too
    alice.send_message(a_conn, b"not acked")
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"not acked")
    told_before = len(b_events.seen)

    bob.runtime.tell(api.connection_address(b_conn), api.Tell(api.Replay()))
    b_events.wait(lambda e: len(b_events.of(ev.Msg, conn_id=b_conn)) == 2)
    again = [e for e in b_events.seen[told_before:] if e.conn_id == b_conn]
    assert [type(e).__name__ for e in again] == ["Info", "Con", "Msg"], again
    assert again[0].info == b"alice"  # the inviter's info, kept by the joiner
    assert again[2].body == b"not acked"

    alice.runtime.tell(api.connection_address(a_conn), api.Tell(api.Replay()))
    a_events.wait(lambda e: len(a_events.of(ev.Con, conn_id=a_conn)) == 2)
    assert not a_events.of(ev.Info, conn_id=a_conn)  # the inviter had the joiner's in CONF


def test_a_told_acknowledged_send_that_is_refused_comes_back_as_err(server, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    a_conn = alice.create_connection_async("create")
    a_events.wait_for(ev.Inv, corr_id="create")
    send = api.SendMessage(b"too early", "told-1")  # a layer above tells; it never asks
    alice.runtime.tell(api.connection_address(a_conn), api.Tell(send))
    refused = a_events.wait_for(ev.Err, corr_id="told-1")
    assert (refused.conn_id, refused.code) == (a_conn, "PROHIBITED")
    assert alice.connection_status(a_conn).pending_messages == 0
