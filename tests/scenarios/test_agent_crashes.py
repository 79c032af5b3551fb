"""Crash recovery: each async command's ConnectionActor crashes before it runs, after its
effects were committed but before its event went out, and after the event went out but
before the chat acknowledged it. After the supervisor's restart the outcome is as if the
command ran once, and its event arrives (again, identical, when it was not acknowledged)."""

from __future__ import annotations

import pytest

from actors.agent import events as ev
from actors.agent import faults
from actors.agent.sessions import connection_address
from protocol.queue import QueueMode
from protocol.server import QueueServer
from tests.scenarios.agents import connect

POINTS = [faults.BEFORE_RUN, faults.AFTER_EFFECTS, faults.AFTER_EMIT]


def completions(events, corr_id: str) -> list:
    events.drain()
    return [e for e in events.seen if getattr(e, "corr_id", None) == corr_id]


def check_once(events, corr_id: str, point: str) -> object:
    """The completion arrived, every copy identical; a second copy only when it was
    emitted before the crash (the restart re-emits what was not acknowledged)."""
    done = completions(events, corr_id)
    assert done and all(e == done[0] for e in done), done
    if point == faults.AFTER_EMIT:
        assert len(done) == 2, done
    else:
        assert len(done) == 1, done
    return done[0]


def restarted(client, conn_id: str) -> bool:
    view = client.runtime.directory.view(connection_address(conn_id))
    return view is not None and view.restarts >= 1


@pytest.mark.parametrize("point", POINTS)
def test_create(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    faults.arm(point, "create")
    a_conn = alice.create_connection_async("cmd")
    inv = a_events.wait_for(ev.Inv, corr_id="cmd")
    a_events.wait(
        lambda e: len(completions(a_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(alice, a_conn)
    b_conn = bob.join_connection_async("join", inv.link, b"")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.allow_connection_async("allow", a_conn, conf.conf_id, b"")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    check_once(a_events, "cmd", point)
    assert server.store.stats()["queues"] == 2  # the NEW after the crash made no orphan


@pytest.mark.parametrize("point", POINTS)
def test_join(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    faults.arm(point, "join")
    b_conn = bob.join_connection_async("cmd", link, b"bob")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.allow_connection_async("allow", a_conn, conf.conf_id, b"")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    b_events.wait(
        lambda e: len(completions(b_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(bob, b_conn)
    check_once(b_events, "cmd", point)
    assert len(a_events.of(ev.Conf, conn_id=a_conn)) == 1  # one confirmation reached alice
    assert server.store.stats()["queues"] == 2


@pytest.mark.parametrize("point", POINTS)
def test_allow(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    b_conn = bob.join_connection_async("join", link, b"bob")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    faults.arm(point, "allow")
    alice.allow_connection_async("cmd", a_conn, conf.conf_id, b"alice")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    a_events.wait(
        lambda e: len(completions(a_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(alice, a_conn)
    check_once(a_events, "cmd", point)
    assert len(b_events.of(ev.Info, conn_id=b_conn)) == 1  # the info went once
    alice.send_message(a_conn, b"after")
    assert b_events.wait_for(ev.Msg, conn_id=b_conn).integrity == "ok"  # chain intact
    assert server.store.stats()["queues"] == 2


@pytest.mark.parametrize("point", POINTS)
def test_accept(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    address = a_events.wait_for(ev.Inv, corr_id="addr").link
    b_conn = bob.join_connection_async("knock", address, b"")
    b_events.wait_for(ev.Joined, corr_id="knock")
    request = a_events.wait_for(ev.Req, conn_id=address_conn)
    faults.arm(point, "join")  # accept runs as a join of bob's invitation
    a_conn = alice.accept_contact_async("cmd", request.inv_id, b"")
    conf = b_events.wait_for(ev.Conf, conn_id=b_conn)
    bob.allow_connection_async("allow", b_conn, conf.conf_id, b"")
    a_events.wait_for(ev.Con, conn_id=a_conn)
    a_events.wait(
        lambda e: len(completions(a_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(alice, a_conn)
    check_once(a_events, "cmd", point)
    assert server.store.stats()["queues"] == 3  # the address, bob's queue, alice's reply


@pytest.mark.parametrize("point", POINTS)
def test_ack(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    alice.send_message(a_conn, b"first")
    alice.send_message(a_conn, b"second")
    first = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"first")
    faults.arm(point, "ack")
    bob.ack_message_async("cmd", b_conn, first.msg_id)
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"second")
    b_events.wait(
        lambda e: len(completions(b_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(bob, b_conn)
    check_once(b_events, "cmd", point)
    bodies = [e.body for e in b_events.of(ev.Msg, conn_id=b_conn)]
    assert bodies.count(b"second") == 1


@pytest.mark.parametrize("point", POINTS)
def test_delete(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, _ = connect(alice, a_events, bob, b_events)
    faults.arm(point, "delete")
    alice.delete_connection_async("cmd", a_conn)
    a_events.wait(
        lambda e: len(completions(a_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(alice, a_conn)
    check_once(a_events, "cmd", point)
    assert alice.connection_status(a_conn) is None
    assert server.store.stats()["queues"] == 1  # only bob's reply queue is left


@pytest.mark.parametrize("point", POINTS)
def test_acknowledged_send(point: str, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    faults.arm(point, "send")
    alice.send_message_async("cmd", a_conn, b"once")
    a_events.wait(
        lambda e: len(completions(a_events, "cmd")) >= (2 if point == faults.AFTER_EMIT else 1)
    )
    assert restarted(alice, a_conn)
    assert isinstance(check_once(a_events, "cmd", point), ev.Ok)
    alice.send_message(a_conn, b"after")  # in order behind it: once this came, all did
    once = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"once")
    bob.ack_message(b_conn, once.msg_id)
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"after")
    bodies = [e.body for e in b_events.of(ev.Msg, conn_id=b_conn)]
    assert bodies == [b"once", b"after"]
