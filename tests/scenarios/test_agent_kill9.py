"""kill -9 of the client process at each persisted step of each async command.

The command runs in a child process on the client's SQLite file and the child kills itself
with SIGKILL before the command runs, after its effects and event were committed, or after
the event was emitted; then a fresh `Client.open` on the same file must deliver the event
(with the same corr id and payload) and leave the outcome of a single run: one queue per
side, no orphan queue on the server, one completion per corr id, nothing delivered twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors.agent import events as ev
from actors.agent import faults
from protocol.queue import QueueMode
from protocol.server import QueueServer
from tests.scenarios.agents import connect

POINTS = [faults.BEFORE_RUN, faults.AFTER_EFFECTS, faults.AFTER_EMIT]


def run_killed(
    db: str, server: QueueServer, command: str, kind: str, point: str, **args: object
) -> None:
    """Run `command` as "cmd" in a child that SIGKILLs itself at `point` of `kind`."""
    spec = {
        "db": db,
        "servers": [str(server.address)],
        "command": command,
        "corr_id": "cmd",
        "args": args,
    }
    env = {**os.environ, "DUPLEX_FAULTS": f"{point}:{kind}:kill"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.scenarios.agent_child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


def db_url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


@pytest.mark.parametrize("point", POINTS)
def test_create_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    run_killed(db_url(tmp_path, "alice"), server, "create", "create", point)
    alice, a_events = open_client("alice", [server])
    inv = a_events.wait_for(ev.Inv, corr_id="cmd")
    bob, b_events = open_client("bob", [server])
    b_conn = bob.join_connection_async("join", inv.link, b"")
    conf = a_events.wait_for(ev.Conf, conn_id=inv.conn_id)
    alice.allow_connection_async("allow", inv.conn_id, conf.conf_id, b"")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    assert len(a_events.of(ev.Inv, corr_id="cmd")) == 1
    assert server.store.stats()["queues"] == 2


@pytest.mark.parametrize("point", POINTS)
def test_join_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    run_killed(db_url(tmp_path, "bob"), server, "join", "join", point, link=link)
    _bob, b_events = open_client("bob", [server])
    joined = b_events.wait_for(ev.Joined, corr_id="cmd")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.allow_connection_async("allow", a_conn, conf.conf_id, b"")
    b_events.wait_for(ev.Con, conn_id=joined.conn_id)
    assert len(a_events.of(ev.Conf, conn_id=a_conn)) == 1
    assert server.store.stats()["queues"] == 2


@pytest.mark.parametrize("point", POINTS)
def test_allow_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn = alice.create_connection_async("create")
    link = a_events.wait_for(ev.Inv, corr_id="create").link
    b_conn = bob.join_connection_async("join", link, b"")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    alice.close()
    run_killed(
        db_url(tmp_path, "alice"),
        server,
        "allow",
        "allow",
        point,
        conn_id=a_conn,
        conf_id=conf.conf_id,
    )
    alice, a_events = open_client("alice", [server])
    a_events.wait_for(ev.Ok, corr_id="cmd")
    b_events.wait_for(ev.Con, conn_id=b_conn)
    assert len(b_events.of(ev.Info, conn_id=b_conn)) == 1
    alice.send_message(a_conn, b"after the kill")
    assert b_events.wait_for(ev.Msg, conn_id=b_conn).integrity == "ok"
    assert server.store.stats()["queues"] == 2


@pytest.mark.parametrize("point", POINTS)
def test_accept_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    address = a_events.wait_for(ev.Inv, corr_id="addr").link
    b_conn = bob.join_connection_async("knock", address, b"")
    request = a_events.wait_for(ev.Req, conn_id=address_conn)
    alice.close()
    run_killed(db_url(tmp_path, "alice"), server, "accept", "join", point, inv_id=request.inv_id)
    alice, a_events = open_client("alice", [server])
    joined = a_events.wait_for(ev.Joined, corr_id="cmd")
    conf = b_events.wait_for(ev.Conf, conn_id=b_conn)
    bob.allow_connection_async("allow", b_conn, conf.conf_id, b"")
    a_events.wait_for(ev.Con, conn_id=joined.conn_id)
    assert len(b_events.of(ev.Conf, conn_id=b_conn)) == 1
    assert server.store.stats()["queues"] == 3


@pytest.mark.parametrize("point", POINTS)
def test_ack_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    alice.send_message(a_conn, b"first")
    alice.send_message(a_conn, b"second")
    first = b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"first")
    bob.close()
    run_killed(
        db_url(tmp_path, "bob"), server, "ack", "ack", point, conn_id=b_conn, msg_id=first.msg_id
    )
    bob, b_events = open_client("bob", [server])
    b_events.wait_for(ev.Ok, corr_id="cmd")
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=b"second")
    # If the kill came before the ACK, the server may hand "first" over again before the
    # resumed ACK reaches it: then it is the same message (same id), not a second one.
    assert all(e.msg_id == first.msg_id for e in b_events.of(ev.Msg, body=b"first"))
    assert len(b_events.of(ev.Msg, body=b"second")) == 1


@pytest.mark.parametrize("point", POINTS)
def test_delete_killed(point: str, tmp_path: Path, server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    a_conn, _ = connect(alice, a_events, bob, b_events)
    alice.close()
    run_killed(db_url(tmp_path, "alice"), server, "delete", "delete", point, conn_id=a_conn)
    alice, a_events = open_client("alice", [server])
    a_events.wait_for(ev.Ok, corr_id="cmd")
    assert alice.connection_status(a_conn) is None
    assert server.store.stats()["queues"] == 1
