"""An agent on an encrypted database (SQLCipher): what it keeps at rest is unreadable without
the passphrase, a wrong passphrase changes nothing, and the passphrase can be changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from actors.agent import events as ev
from actors.client import Client
from protocol.errors import WrongPassphrase
from tests.scenarios.agents import FAST, connect

SECRET = "correct horse"


def _files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in _files(path))).hexdigest()


def test_an_encrypted_agent_keeps_nothing_readable_and_can_be_rekeyed(
    tmp_path: Path, server, open_client
) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server], passphrase=SECRET)
    a_conn, b_conn = connect(alice, a_events, bob, b_events)
    body = b"the body nobody may read at rest 4711"
    alice.send_message(a_conn, body)
    b_events.wait_for(ev.Msg, conn_id=b_conn, body=body)  # stored, not acked: it stays
    store = bob.services.store
    with store.transaction(read_only=True):
        keys = [bytes(q.auth_private) for q in store.RcvQueue.select()]
        keys += [bytes(q.e2e_private) for q in store.SndQueue.select()]
    bob.close()

    path = tmp_path / "bob.db"
    at_rest = b"".join(p.read_bytes() for p in _files(path))
    assert body not in at_rest
    assert keys and not any(key in at_rest for key in keys)

    before = _digest(path)
    url = f"sqlite:///{path}"
    with pytest.raises(WrongPassphrase):
        Client.open(url, [str(server.address)], config=FAST, passphrase="wrong")
    assert _digest(path) == before  # a wrong passphrase changed nothing

    bob, b_events = open_client("bob", [server], passphrase=SECRET)
    again = b_events.wait_for(ev.Msg, conn_id=b_conn, body=body)  # handed out again
    bob.database.rekey("battery staple")
    bob.ack_message(b_conn, again.msg_id)
    bob.close()
    with pytest.raises(WrongPassphrase):
        Client.open(url, [str(server.address)], config=FAST, passphrase=SECRET)
    bob, b_events = open_client("bob", [server], passphrase="battery staple")
    assert bob.connection_status(b_conn).status == "ready"
