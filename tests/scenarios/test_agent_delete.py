"""Deleting a connection that waits for delivery (`wait_delivery`): the messages it stored go
out first (or expire), it takes no new ones meanwhile, and the wait survives a restart.

Alice's and bob's receive queues are on two servers, so stopping bob's server holds back
alice's messages while the DEL of her own queue could go at once.
"""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from actors.agent import events as ev
from actors.agent.model import CommandKind, Delete, decode_payload
from actors.client import Client
from protocol.errors import AgentError
from protocol.server import QueueServer
from tests.helpers import eventually
from tests.scenarios.agents import FAST, Events, connect

BODIES = [b"one", b"two", b"three"]


def _first_message_attempts(client: Client) -> int:
    """How often alice's first stored message failed so far (bob's server is down)."""
    store = client.services.store
    with store.transaction(read_only=True):
        row = store.SndMessage.select().order_by(store.SndMessage.seq).first()
    return row.attempts if row is not None else 0


@dataclasses.dataclass
class Pair:
    """Alice and bob connected, bob's server (alice → bob) stopped."""

    alice: Client
    a_events: Events
    bob: Client
    b_events: Events
    a_conn: str
    b_conn: str
    address_a: str  # alice's server, which stays up
    port_b: int  # bob's, to start it again on


def _connected_then_bobs_server_stopped(start_server, open_client) -> Pair:
    server_a: QueueServer = start_server("a")
    server_b: QueueServer = start_server("b")
    alice, a_events = open_client("alice", [server_a])
    bob, b_events = open_client("bob", [server_b])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    assert alice.connection_status(a_conn).snd_servers == [str(server_b.address)]
    pair = Pair(
        alice, a_events, bob, b_events, a_conn, b_conn, str(server_a.address), server_b.address.port
    )
    server_b.stop()
    return pair


def _send_and_delete(alice: Client, a_conn: str) -> None:
    for body in BODIES:
        alice.send_message(a_conn, body)
    alice.delete_connection_async("delete", a_conn, wait_delivery=True)


def _still_waiting(alice: Client, a_events: Events, a_conn: str) -> None:
    """Delivery was tried twice more, and the delete still waits and refuses sends."""
    retried = _first_message_attempts(alice) + 2
    eventually(lambda: _first_message_attempts(alice) >= retried, timeout=10, what="retries")
    assert not a_events.of(ev.Ok, corr_id="delete")
    assert alice.connection_status(a_conn).pending_messages == len(BODIES)
    with pytest.raises(AgentError) as refused:
        alice.send_message(a_conn, b"too late")
    assert refused.value.code == "DELETING"


def _bob_receives_all(bob: Client, b_events: Events, b_conn: str) -> None:
    for body in BODIES:
        message = b_events.wait_for(ev.Msg, conn_id=b_conn, body=body, timeout=10)
        bob.ack_message(b_conn, message.msg_id)


def _deleted_after_delivery(alice: Client, a_events: Events, a_conn: str) -> None:
    done = a_events.wait_for(ev.Ok, corr_id="delete", timeout=10)
    assert done.conn_id == a_conn
    sent = [i for i, e in enumerate(a_events.seen) if isinstance(e, ev.Sent)]
    assert len(sent) == len(BODIES) and max(sent) < a_events.seen.index(done)
    assert alice.connection_status(a_conn) is None
    assert not a_events.of(ev.MErr)


def test_a_delete_waits_until_its_messages_are_delivered(start_server, open_client) -> None:
    p = _connected_then_bobs_server_stopped(start_server, open_client)
    _send_and_delete(p.alice, p.a_conn)
    _still_waiting(p.alice, p.a_events, p.a_conn)

    start_server("b", port=p.port_b)
    _bob_receives_all(p.bob, p.b_events, p.b_conn)
    _deleted_after_delivery(p.alice, p.a_events, p.a_conn)


def test_the_wait_survives_a_restart_of_the_client(start_server, open_client) -> None:
    p = _connected_then_bobs_server_stopped(start_server, open_client)
    _send_and_delete(p.alice, p.a_conn)
    _still_waiting(p.alice, p.a_events, p.a_conn)
    p.alice.close()

    alice, a_events = open_client("alice", [p.address_a])
    _still_waiting(alice, a_events, p.a_conn)  # the stored delete waits again, refuses again
    start_server("b", port=p.port_b)
    _bob_receives_all(p.bob, p.b_events, p.b_conn)
    _deleted_after_delivery(alice, a_events, p.a_conn)


def test_messages_that_expire_end_the_wait_even_past_the_command_ttl(
    start_server, open_client
) -> None:
    p = _connected_then_bobs_server_stopped(start_server, open_client)
    p.alice.close()  # the TTLs are set when a row is stored: these apply to what comes next
    short = dataclasses.replace(FAST, message_ttl=0.6, command_ttl=0.2)
    alice, a_events = open_client("alice", [p.address_a], config=short)
    _send_and_delete(alice, p.a_conn)  # bob's server never comes back
    a_events.wait_for(ev.Ok, corr_id="delete", timeout=10)  # not ERR TIMEOUT at 0.2 s
    expired = a_events.of(ev.MErr, conn_id=p.a_conn)
    assert [e.code for e in expired] == ["EXPIRED"] * len(BODIES)
    assert alice.connection_status(p.a_conn) is None


def test_a_delete_stored_before_wait_delivery_existed_decodes_without_waiting() -> None:
    stored = msgspec.msgpack.encode({})  # what `Delete()` was stored as
    assert decode_payload(CommandKind.DELETE, stored) == Delete(wait_delivery=False)
