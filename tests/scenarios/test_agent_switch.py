"""Queue rotation (switch): the receive queue moves to another server, live, both ends."""

from __future__ import annotations

from typing import Any

import pytest

from actors.agent import events as ev
from actors.agent import faults
from actors.agent.sessions import connection_address
from actors.client import AgentError
from protocol import crypto
from protocol.queue import Del
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


def two_servers(start_server) -> tuple[Any, Any]:
    return start_server("old"), start_server("new")


def connected_pair(open_client, old_server, new_server) -> tuple[Any, Any, Any, Any, str, str]:
    """Alice and bob connected through `old_server`; alice may switch to `new_server`."""
    alice, a_events = open_client("alice", [old_server])
    bob, b_events = open_client("bob", [old_server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    alice.services.servers = (str(old_server.address), str(new_server.address))
    return alice, a_events, bob, b_events, a_conn, b_conn


def sent_all(client: Any, conn_id: str) -> None:
    """Wait until everything queued on the connection went out (before taking it offline)."""
    eventually(lambda: client.connection_status(conn_id).pending_messages == 0)


def switch_status(client: Any, conn_id: str, side: str = "rcv") -> str | None:
    info = client.connection_info(conn_id)
    return info.rcv_switch_status if side == "rcv" else info.snd_switch_status


@pytest.mark.parametrize("point", [faults.BEFORE_RUN, faults.AFTER_EFFECTS, faults.AFTER_EMIT])
@pytest.mark.parametrize("kind", ["switch", "switch_secure", "switch_delete"])
def test_switch_survives_a_crash_at_every_step(
    kind: str, point: str, start_server, open_client
) -> None:
    old_server, new_server = two_servers(start_server)
    alice, a_events, bob, b_events, a_conn, b_conn = connected_pair(
        open_client, old_server, new_server
    )
    queues_before = queue_count(old_server)
    faults.arm(point, kind)
    bob.send_message(b_conn, b"one")
    assert alice.switch_connection_async("rotate", a_conn) == a_conn
    bob.send_message(b_conn, b"two")
    received_in_order(alice, a_events, a_conn, [b"one", b"two"])
    started = a_events.wait_for(ev.Switch, corr_id="rotate", phase="started")
    assert started.direction == "rcv"
    eventually(lambda: switch_status(alice, a_conn) is None, what="alice's switch done")
    if (kind, point) != ("switch_delete", faults.AFTER_EFFECTS):  # else lost in the crash:
        # progress events are not durable, only command completions are
        a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="completed")
    b_events.wait_for(ev.Switch, conn_id=b_conn, direction="snd", phase="completed")
    view = alice.runtime.directory.view(connection_address(a_conn))
    assert view is not None and view.restarts >= 1  # the fault did fire

    # the completion is durable: identical copies, a second one when the crash came after
    # it was emitted (the restart re-emits it); after ack_command_event it is gone
    copies = [e for e in a_events.of(ev.Switch) if e.corr_id == "rotate"]
    assert all(copy == copies[0] for copy in copies)
    once = kind == "switch" and point != faults.AFTER_EMIT
    assert len(copies) == (1 if once else 2), copies
    alice.ack_command_event("rotate")
    eventually(lambda: alice.services.store.conn_of_command("rotate") is None)

    bob.send_message(b_conn, b"three")
    received_in_order(alice, a_events, a_conn, [b"one", b"two", b"three"])
    assert alice.connection_info(a_conn).rcv_servers == [str(new_server.address)]
    eventually(lambda: queue_count(old_server) == queues_before - 1, what="old queue deleted")
    assert queue_count(new_server) == 1  # the NEW repeated after a crash left no orphan


def test_switch_resumes_after_either_side_restarts_at_each_waiting_status(
    start_server, open_client
) -> None:
    """Each side goes offline and restarts while it waits for the other, at every status
    the switch can wait in; messages flow both ways all along."""
    old_server, new_server = two_servers(start_server)
    alice, a_events, bob, b_events, a_conn, b_conn = connected_pair(
        open_client, old_server, new_server
    )
    to_alice: list[bytes] = []
    to_bob: list[bytes] = []

    def say(step: str) -> None:
        to_alice.append(f"to alice {step}".encode())
        to_bob.append(f"to bob {step}".encode())

    def reopen(name: str) -> tuple[Any, Events]:
        client, _ = {"alice": (alice, a_events), "bob": (bob, b_events)}[name]
        client.close()
        servers = [old_server] if name == "bob" else [old_server, new_server]
        return open_client(name, servers)

    def restart_then_go_away(name: str, conn_id: str, side: str, status: str) -> None:
        """Everything sent, `name` restarts, still waits in `status`, and goes offline."""
        client = alice if name == "alice" else bob
        sent_all(client, conn_id)
        client, _ = reopen(name)
        assert switch_status(client, conn_id, side) == status
        client.close()

    # bob is away: alice's switch stops at SENT_QADD
    bob.close()
    alice.switch_connection(a_conn)
    say("1")
    alice.send_message(a_conn, to_bob[-1])
    eventually(lambda: switch_status(alice, a_conn) == "sent_qadd")
    restart_then_go_away("alice", a_conn, "rcv", "sent_qadd")

    # bob takes QADD and sends QKEY; alice is away, so bob waits in QUEUING_QKEY
    bob, b_events = open_client("bob", [old_server])
    bob.send_message(b_conn, to_alice[-1])
    eventually(lambda: switch_status(bob, b_conn, "snd") == "queuing_qkey")
    received_in_order(bob, b_events, b_conn, to_bob)
    restart_then_go_away("bob", b_conn, "snd", "queuing_qkey")

    # alice secures the new queue and sends QUSE; bob is away: QUEUING_QUSE
    alice, a_events = open_client("alice", [old_server, new_server])
    received_in_order(alice, a_events, a_conn, to_alice)  # QKEY comes behind it
    say("2")
    alice.send_message(a_conn, to_bob[-1])
    eventually(lambda: switch_status(alice, a_conn) == "queuing_quse")
    restart_then_go_away("alice", a_conn, "rcv", "queuing_quse")

    # bob moves to the new queue and sends QTEST there; then he restarts once more
    bob, b_events = open_client("bob", [old_server])
    bob.send_message(b_conn, to_alice[-1])
    received_in_order(bob, b_events, b_conn, to_bob[-1:])  # QUSE comes behind it
    b_events.wait_for(ev.Switch, conn_id=b_conn, direction="snd", phase="completed")
    to_alice.append(b"to alice on the new queue")
    bob.send_message(b_conn, to_alice[-1])
    sent_all(bob, b_conn)
    bob, b_events = reopen("bob")

    # alice drains the old queue, takes the new one, deletes the old
    alice, a_events = open_client("alice", [old_server, new_server])
    received_in_order(alice, a_events, a_conn, to_alice[1:])
    a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="completed")
    say("3")
    alice.send_message(a_conn, to_bob[-1])
    bob.send_message(b_conn, to_alice[-1])
    received_in_order(alice, a_events, a_conn, [*to_alice[1:-1], to_alice[-1]])
    received_in_order(bob, b_events, b_conn, to_bob[-1:])
    assert alice.connection_info(a_conn).rcv_servers == [str(new_server.address)]
    assert bob.connection_info(b_conn).snd_servers == [str(new_server.address)]


def test_abort_undoes_a_switch_the_peer_does_not_know_of(start_server, open_client) -> None:
    old_server, new_server = two_servers(start_server)
    alice, a_events, bob, _, a_conn, b_conn = connected_pair(open_client, old_server, new_server)
    port = new_server.address.port
    new_server.stop()  # the NEW of the new queue cannot get through
    alice.switch_connection_async("rotate", a_conn)
    eventually(lambda: switch_status(alice, a_conn) == "swch_started")
    info = alice.abort_switch(a_conn)
    assert info.rcv_switch_status is None and not info.can_abort_switch
    error = a_events.wait_for(ev.Err, corr_id="rotate")
    assert error.code == "ABORTED"
    # back up, the server is asked to NEW and DEL the queue: nothing is left behind
    new_server = start_server("new", port=port)
    eventually(lambda: len(alice.connection_info(a_conn).queues) == 2, what="new queue gone")
    assert queue_count(new_server) == 0
    with pytest.raises(AgentError) as refused:
        alice.abort_switch(a_conn)
    assert refused.value.code == "PROHIBITED"

    # a second switch may start; once QUSE is out it can no longer be aborted
    alice.switch_connection(a_conn)
    eventually(lambda: switch_status(alice, a_conn) in ("queuing_quse", None))
    with pytest.raises(AgentError) as late:
        alice.abort_switch(a_conn)
    assert late.value.code == "PROHIBITED"
    a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="completed")
    bob.send_message(b_conn, b"still here")
    received_in_order(alice, a_events, a_conn, [b"still here"])


def test_a_new_queue_lost_before_qtest_ends_the_switch_with_qerr(start_server, open_client) -> None:
    old_server, new_server = two_servers(start_server)
    alice, a_events, bob, b_events, a_conn, b_conn = connected_pair(
        open_client, old_server, new_server
    )
    alice.switch_connection(a_conn)
    eventually(lambda: switch_status(bob, b_conn, "snd") == "queuing_qkey")
    sent_all(bob, b_conn)  # QKEY is out
    bob.close()  # bob will see QUSE only after the new queue is gone
    eventually(lambda: switch_status(alice, a_conn) == "queuing_quse")
    store = alice.services.store
    with store.transaction():
        new = store.RcvQueue.get(store.RcvQueue.replaces.is_null(False))
    alice.runtime.io.run(
        alice.services.clients.request,
        new.server,
        Del(),
        bytes(new.rcv_id),
        crypto.SigningKey.from_private(bytes(new.auth_private)),
        timeout=5,
    )
    bob, b_events = open_client("bob", [old_server])
    bob.send_message(b_conn, b"after the failure")
    b_events.wait_for(ev.Switch, conn_id=b_conn, direction="snd", phase="failed")
    received_in_order(alice, a_events, a_conn, [b"after the failure"])  # QERR is behind it
    a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="failed")
    info = alice.connection_info(a_conn)
    assert info.rcv_servers == [str(old_server.address)] and info.rcv_switch_status is None
    assert bob.connection_info(b_conn).snd_servers == [str(old_server.address)]
    bob.send_message(b_conn, b"on the old queue")
    received_in_order(alice, a_events, a_conn, [b"after the failure", b"on the old queue"])
