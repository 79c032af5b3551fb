"""A queue server's refusal (`ERR QUOTA` for its per-session new-queue limit) is retried on
the agent's retry policy — never at once — until the server takes the request or the
command's deadline passes, which ends it with `ERR QUOTA`.

The server answered, so it is not down: the refusal must not make the connection wait for
the server's `UP`, which a server that answers gives at once (the session's PING succeeds),
and which used to retry the command at once, again and again (a measured run saw 1,751
attempts of one accept in about 140 s, and as many DOWN/UP pairs).

The servers run on a clock the test moves on, so the new-queue window ends when the test
says, not after a sleep.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from actors.agent import events as ev
from actors.agent.services import RetryPolicy
from actors.client import Client
from protocol.errors import AgentError
from protocol.queue import QueueMode
from protocol.server import QueueServer
from protocol.server.shell import ServerConfig
from tests.scenarios.agents import FAST, Events, connect

# The retry policy under test: 0.3 s, growing once the command failed for 1 s, at most 1 s.
POLICY = RetryPolicy(initial=0.3, slow_after=1.0, factor=1.5, maximum=1.0)
BACKOFF = dataclasses.replace(FAST, retry=POLICY)
WINDOW = 3600.0  # the server's new-queue window: it ends only when the test moves the clock


class Clock:
    """The server's clock: real time plus what the test moved it on by."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def pass_window(self) -> None:
        self.offset += WINDOW + 1


@pytest.fixture
def limited(start_server) -> tuple[QueueServer, Clock]:
    """A server on which each session may create one queue per (test-moved) window."""
    clock = Clock()
    config = ServerConfig(new_queues=1, new_queue_window=WINDOW)
    return start_server("limited", config=config, clock=clock), clock


def attempts(client: Client, corr_id: str) -> int | None:
    """The stored attempts of the command `corr_id`; None once it is done and forgotten."""
    store = client.services.store
    with store.transaction(read_only=True):
        row = store.command_by_corr_id(corr_id)
    return None if row is None else row.attempts


def assert_backs_off(
    client: Client, events: Events, corr_id: str, watch: float = 2.5, timeout: float = 30.0
) -> int:
    """Watch the stored attempts of `corr_id` from its first refusal for `watch` seconds
    (and until it was retried twice): at no poll may they exceed what the retry policy
    allows in the time passed (one attempt per `POLICY.initial` s at most, the shortest
    delay, plus the first two). A machine too busy to retry only makes attempts fewer."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        count = attempts(client, corr_id)
        now = time.monotonic()
        assert count is not None, f"{corr_id} completed while the server refused it"
        if count >= 1 and first is None:
            first = now  # the first refusal is stored
        if first is not None:
            allowed = (now - first) / POLICY.initial + 2
            assert count <= allowed, f"{count} attempts in {now - first:.2f} s: no backoff"
            if now - first >= watch and count >= 3:
                break
        assert now < deadline, f"{corr_id}: {count} attempts within {timeout} s"
        time.sleep(0.01)
    # a refusal is an answer: the server is not reported down for it (once at most, for a
    # real timeout on a busy machine; the flaw told DOWN and UP once per attempt)
    assert len(events.of(ev.Down)) <= 1, events.of(ev.Down)
    assert not events.of(ev.Err)
    return count


def test_an_accept_refused_by_the_new_queue_limit_backs_off_and_completes_later(
    limited, open_client
) -> None:
    server, clock = limited
    alice, a_events = open_client("alice", [server], config=BACKOFF)
    bob, b_events = open_client("bob", [server], config=BACKOFF)
    address_conn, address = alice.create_connection(QueueMode.CONTACT)  # alice's one NEW
    bob_conn = bob.join_connection_async("knock", address, b"bob")  # bob's own session's one
    request = a_events.wait_for(ev.Req, conn_id=address_conn)

    accepted = alice.accept_contact_async("accept", request.inv_id, b"alice")  # needs NEW
    assert_backs_off(alice, a_events, "accept")
    assert alice.connection_status(accepted).status == "new"

    clock.pass_window()  # the server takes a new queue again: the next retry succeeds
    assert a_events.wait_for(ev.Joined, corr_id="accept", timeout=15).conn_id == accepted
    conf = b_events.wait_for(ev.Conf, conn_id=bob_conn, timeout=15)
    bob.allow_connection(bob_conn, conf.conf_id, b"bob")
    a_events.wait_for(ev.Con, conn_id=accepted, timeout=15)
    b_events.wait_for(ev.Con, conn_id=bob_conn, timeout=15)
    assert not a_events.of(ev.Err) and not b_events.of(ev.Err)


def test_a_switch_refused_by_the_new_queue_limit_backs_off_and_completes_later(
    limited, open_client
) -> None:
    server, clock = limited
    alice, a_events = open_client("alice", [server], config=BACKOFF)
    bob, b_events = open_client("bob", [server], config=BACKOFF)
    a_conn, b_conn = connect(alice, a_events, bob, b_events)  # one new queue each

    alice.switch_connection_async("rotate", a_conn)  # a new receive queue: NEW, refused
    assert_backs_off(alice, a_events, "rotate")

    clock.pass_window()
    a_events.wait_for(ev.Switch, corr_id="rotate", phase="started", timeout=15)
    a_events.wait_for(ev.Switch, conn_id=a_conn, direction="rcv", phase="completed", timeout=15)
    alice.send_message(a_conn, b"over the new queue")
    bob.send_message(b_conn, b"to the new queue")
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"over the new queue")
    a_events.wait_for(ev.Msg, conn_id=a_conn, body=b"to the new queue")


def test_a_create_refused_until_its_deadline_ends_with_err_quota(limited, open_client) -> None:
    server, _ = limited
    ttl = 2.5
    alice, a_events = open_client(
        "alice", [server], config=dataclasses.replace(BACKOFF, command_ttl=ttl)
    )
    alice.create_connection()  # alice's one new queue of the window
    with pytest.raises(AgentError) as refused:  # a synchronous caller learns it at once
        alice.create_connection()
    assert refused.value.code == "QUOTA"

    conn_id = alice.create_connection_async("late")
    started = time.monotonic()
    error = a_events.wait_for(ev.Err, corr_id="late", timeout=ttl + 15)
    took = time.monotonic() - started
    assert (error.conn_id, error.code) == (conn_id, "QUOTA"), error
    assert "deadline" in error.message
    assert took >= ttl - 0.5  # retried until its deadline, not given up on at once
    status = alice.connection_status(conn_id)
    assert status.status == "failed" and "QUOTA" in status.error
    # its last stored attempt count, kept with the event until acknowledged
    count = attempts(alice, "late")
    assert count is not None and 2 <= count <= took / POLICY.initial + 2, count
    assert len(a_events.of(ev.Down)) <= 1
