"""Both handshakes end in CON on both sides; messages flow both ways, in order, intact."""

from __future__ import annotations

import pytest

from actors.agent import events as ev
from protocol.queue import QueueMode
from protocol.server import QueueServer
from tests.scenarios.agents import connect


@pytest.mark.parametrize("passphrase", [None, "correct horse"], ids=["plain", "encrypted"])
def test_invitation_handshake_and_messages_both_ways(
    server: QueueServer, open_client, passphrase: str | None
) -> None:
    alice, a_events = open_client("alice", [server], passphrase=passphrase)
    bob, b_events = open_client("bob", [server], passphrase=passphrase)
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    info = b_events.wait_for(ev.Info, conn_id=b_conn)
    assert info.info == b"alice"
    assert alice.connection_status(a_conn).status == "ready"
    assert bob.connection_status(b_conn).status == "ready"

    sent = [alice.send_message(a_conn, b"a->b %d" % i) for i in range(20)]
    assert sent == list(range(sent[0], sent[0] + 20))  # sequential ids
    for i in range(20):
        message = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"a->b %d" % i)
        assert message.integrity == "ok"
        bob.ack_message(b_conn, message.msg_id)
    for i in range(10):
        bob.send_message(b_conn, b"b->a %d" % i)
    for i in range(10):
        message = a_events.wait_for(ev.Msg, conn_id=a_conn, body=b"b->a %d" % i)
        assert message.integrity == "ok"
        alice.ack_message(a_conn, message.msg_id)
    received = [e.body for e in b_events.of(ev.Msg, conn_id=b_conn)]
    assert received == [b"a->b %d" % i for i in range(20)]  # in order, none twice
    assert server.store.stats()["queues"] == 2  # one queue per direction, no orphan


def test_contact_address_handshake(server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    address = a_events.wait_for(ev.Inv, corr_id="addr").link
    assert address.startswith("duplex:/contact#")

    b_conn = bob.join_connection_async("knock", address, b"bob here")
    b_events.wait_for(ev.Joined, corr_id="knock")
    request = a_events.wait_for(ev.Req, conn_id=address_conn)
    assert request.info == b"bob here"

    a_conn = alice.accept_contact_async("accept", request.inv_id, b"alice here")
    a_events.wait_for(ev.Joined, corr_id="accept")
    conf = b_events.wait_for(ev.Conf, conn_id=b_conn)
    assert conf.info == b"alice here"
    bob.allow_connection_async("allow", b_conn, conf.conf_id, b"bob again")
    b_events.wait_for(ev.Ok, corr_id="allow")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    a_events.wait_for(ev.Con, conn_id=a_conn)
    assert a_events.wait_for(ev.Info, conn_id=a_conn).info == b"bob again"

    alice.send_message(a_conn, b"hi bob")
    assert b_events.wait_for(ev.Msg, conn_id=b_conn).body == b"hi bob"
    bob.send_message(b_conn, b"hi alice")
    assert a_events.wait_for(ev.Msg, conn_id=a_conn).body == b"hi alice"

    # the address stays usable for the next one
    carol, _c_events = open_client("carol", [server])
    carol.join_connection_async("knock2", address, b"carol")
    assert a_events.wait_for(ev.Req, conn_id=address_conn, info=b"carol")


def test_sync_forms_return_values_and_raise(server: QueueServer, open_client) -> None:
    import pytest

    from actors.client import AgentError

    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, link = alice.create_connection()
    assert link.startswith("duplex:/invitation#")
    b_conn = bob.join_connection(link, b"bob")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.allow_connection(a_conn, conf.conf_id, b"alice")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    with pytest.raises(AgentError) as refused:
        alice.allow_connection(a_conn, conf.conf_id, b"again")
    assert refused.value.code == "PROHIBITED"
    alice.delete_connection(a_conn)
    assert alice.connection_status(a_conn) is None
    # no event was kept for the sync commands
    assert not [e for e in a_events.of(ev.Ok) if e.corr_id]
