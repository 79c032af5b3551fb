"""The agent's core under the faults the chat will meet: an I/O thread that is not there at
boot, a server that answers late or goes away, an ACK the server cannot take yet (also
across kill -9), and messages that arrive before their connection is ready."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from actors.agent import events as ev
from actors.kernel import IoError, IoResult, Runtime
from tests.helpers import eventually
from tests.scenarios.agents import connect


def _sent(events, conn_id: str, msg_id: int) -> None:
    """Wait until the server took message `msg_id` (its SENT)."""
    events.wait_for(ev.Sent, conn_id=conn_id, msg_id=msg_id)


def test_subscriptions_are_made_when_the_io_thread_restarts_at_boot(
    server, open_client, monkeypatch
) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    bob.close()
    _sent(a_events, a_conn, alice.send_message(a_conn, b"while you were away"))

    # The next runtime's first I/O requests find the I/O thread restarting, as they would
    # if it crashed just as the agent booted: they are answered IoError, never run.
    refused: list[int] = []
    submit = Runtime.submit_io

    def restarting_at_first(self, reply_to, coroutine_fn, *args, request_id=None):
        if len(refused) < 4:
            request_id = self.next_request_id() if request_id is None else request_id
            refused.append(request_id)
            error = IoError("I/O thread restarting")
            self.directory.tell(reply_to, IoResult(request_id, error=error))
            return request_id
        return submit(self, reply_to, coroutine_fn, *args, request_id=request_id)

    monkeypatch.setattr(Runtime, "submit_io", restarting_at_first)
    bob, b_events = open_client("bob", [server])
    message = b_events.wait_for(ev.Msg, conn_id=b_conn, timeout=15)
    assert message.body == b"while you were away"
    assert len(refused) == 4  # the injection happened: the boot's requests were refused


def test_a_client_whose_server_answers_late_subscribes_when_it_does(
    start_server, open_client
) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    bob.close()
    _sent(a_events, a_conn, alice.send_message(a_conn, b"queued"))
    port, address = server.address.port, str(server.address)
    server.stop()

    bob, b_events = open_client("bob", [address])
    down = b_events.wait_for(ev.Down, server=address, timeout=15)
    assert b_conn in down.conn_ids
    assert not b_events.of(ev.Msg)

    start_server(port=port)  # the same server answers again (same store, same address)
    assert b_events.wait_for(ev.Msg, conn_id=b_conn, timeout=15).body == b"queued"
    b_events.wait_for(ev.Up, server=address)
    assert len(b_events.of(ev.Down)) == 1 and len(b_events.of(ev.Up)) == 1


def test_down_and_up_are_told_once_per_transition(start_server, open_client) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    port = server.address.port
    address = str(server.address)
    server.stop()

    msg_id = alice.send_message(a_conn, b"during the outage")
    down = a_events.wait_for(ev.Down, server=address, timeout=15)
    assert a_conn in down.conn_ids
    b_events.wait_for(ev.Down, server=address, timeout=15)  # bob's session lost it too

    store = alice.services.store

    def retried() -> bool:  # several failed attempts, each one a chance to tell DOWN again
        with store.transaction(read_only=True):
            row = store.SndMessage.get_or_none(store.SndMessage.seq == msg_id)
        return row is not None and row.attempts >= 3

    eventually(retried, timeout=15, what="the message retried")
    start_server(port=port)
    _sent(a_events, a_conn, msg_id)
    assert b_events.wait_for(ev.Msg, conn_id=b_conn, timeout=15).body == b"during the outage"
    a_events.wait_for(ev.Up, server=address, timeout=15)
    b_events.wait_for(ev.Up, server=address, timeout=15)
    for events in (a_events, b_events):
        assert len(events.of(ev.Down, server=address)) == 1
        assert len(events.of(ev.Up, server=address)) == 1


def _two_messages_the_second_held(alice, a_events, bob, b_events):
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    alice.send_message(a_conn, b"first")
    second = alice.send_message(a_conn, b"second")
    _sent(a_events, a_conn, second)  # on the server, behind the unacknowledged first
    first = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"first")
    return a_conn, b_conn, first


def test_an_ack_while_the_server_is_down_is_delivered_when_it_returns(
    start_server, open_client
) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn, first = _two_messages_the_second_held(alice, a_events, bob, b_events)
    port = server.address.port
    server.stop()

    bob.ack_message(b_conn, first.msg_id)  # returns: the ACK is stored, the server is down
    start_server(port=port)
    # no further call from bob: the stored ACK reaches the server, which hands out the next
    second = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"second", timeout=15)
    bob.ack_message(b_conn, second.msg_id)
    _sent(a_events, a_conn, alice.send_message(a_conn, b"third"))
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"third", timeout=15)
    assert len(b_events.of(ev.Msg, body=b"first")) == 1
    assert len(b_events.of(ev.Msg, body=b"second")) == 1


def test_an_ack_survives_kill_9_right_after_it_returned(
    tmp_path: Path, start_server, open_client
) -> None:
    server = start_server()
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    _, b_conn, first = _two_messages_the_second_held(alice, a_events, bob, b_events)
    bob.close()
    port, address = server.address.port, str(server.address)
    server.stop()

    # bob's process acks while the server is down and is killed the moment the call returns
    spec = {
        "db": f"sqlite:///{tmp_path / 'bob'}.db",
        "servers": [address],
        "command": "ack_then_kill",
        "corr_id": "",
        "args": {"conn_id": b_conn, "msg_id": first.msg_id},
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.scenarios.agent_child", json.dumps(spec)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)

    start_server(port=port)
    bob, b_events = open_client("bob", [address])
    second = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"second", timeout=15)
    assert second.integrity == "ok"
    # the server may hand "first" over again before the stored ACK reaches it: then it is
    # the same message, acknowledged already, and it is not told again
    assert not b_events.of(ev.Msg, body=b"first")


def test_con_comes_before_the_first_msg_of_a_connection(open_client, server) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    alice.close()

    b_conn = bob.join_connection_async("join", link, b"bob")
    b_events.wait_for(ev.Joined, corr_id="join")
    sent = [bob.send_message(b_conn, f"early {n}".encode()) for n in range(3)]
    for msg_id in sent:
        _sent(b_events, b_conn, msg_id)  # all three wait on alice's queue

    alice, a_events = open_client("alice", [server])
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.allow_connection_async("allow", a_conn, conf.conf_id, b"alice")
    for n in range(3):
        msg = a_events.wait_for(ev.Msg, conn_id=a_conn, body=f"early {n}".encode())
        alice.ack_message(a_conn, msg.msg_id)
    mine = [e for e in a_events.seen if getattr(e, "conn_id", None) == a_conn]
    kinds = [type(e).__name__ for e in mine]
    assert kinds.index("Con") < kinds.index("Msg"), kinds
    assert [e.body for e in mine if isinstance(e, ev.Msg)] == [b"early 0", b"early 1", b"early 2"]
