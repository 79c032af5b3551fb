"""The agent's schema upgrades in place: a database made before queue rotation gains its
columns, and its rows stay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.agent import AGENT_LAYER, AgentStore
from storage.database import _MIGRATIONS_TABLE, open_database

ROTATION_COLUMNS = [
    ("agent_connection", "rcv_switch_status"),
    ("agent_connection", "snd_switch_status"),
    ("agent_rcv_queue", "replaces"),
    ("agent_rcv_queue", "sender_auth_public"),
    ("agent_snd_queue", "replaces"),
]


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as raw:
        return {row[1] for row in raw.execute(f"pragma table_info({table})")}


def test_a_version_100_database_gains_the_rotation_columns(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    open_database(f"sqlite:///{path}", layers=[AGENT_LAYER]).close()
    # turn it into what version 100 made, with a connection in it
    raw = sqlite3.connect(path)
    for table, column in ROTATION_COLUMNS:
        raw.execute(f"alter table {table} drop column {column}")
    raw.execute(f"delete from {_MIGRATIONS_TABLE} where version > 100")
    raw.execute(
        "insert into agent_connection (conn_id, status, mode, snd_seq, rcv_seq, created_at)"
        " values ('c1', 'ready', 'invitation', 3, 4, 0)"
    )
    raw.commit()
    raw.close()
    assert "replaces" not in columns(path, "agent_snd_queue")

    database = open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
    try:
        store = AgentStore(database)
        with store.transaction(read_only=True):
            conn = store.Connection.get(store.Connection.conn_id == "c1")
        assert (conn.snd_seq, conn.rcv_seq, conn.rcv_switch_status) == (3, 4, None)
        assert database.schema_version() >= 101
    finally:
        database.close()
    for table, column in ROTATION_COLUMNS:
        assert column in columns(path, table)


def test_a_version_103_database_gains_the_peer_info_column(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    open_database(f"sqlite:///{path}", layers=[AGENT_LAYER]).close()
    raw = sqlite3.connect(path)
    raw.execute("alter table agent_connection drop column peer_info")
    raw.execute(f"delete from {_MIGRATIONS_TABLE} where version > 103")
    raw.execute(
        "insert into agent_connection (conn_id, status, mode, snd_seq, rcv_seq, created_at)"
        " values ('c1', 'ready', 'invitation', 3, 4, 0)"
    )
    raw.commit()
    raw.close()

    database = open_database(f"sqlite:///{path}", layers=[AGENT_LAYER])
    try:
        store = AgentStore(database)
        with store.transaction(read_only=True):
            conn = store.Connection.get(store.Connection.conn_id == "c1")
        assert (conn.snd_seq, conn.peer_info) == (3, None)
        assert database.schema_version() == 104
    finally:
        database.close()
    assert "peer_info" in columns(path, "agent_connection")
