"""The chat's schema upgrades in place: outbox rows stored before their sends were
acknowledged (migration 203) get corr ids of their own and stay; a database from before relay
groups (migration 204) gets their tables and columns, its rows unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.chat import CHAT_LAYER, CHAT_MIGRATIONS, ChatStore, is_outbox_corr_id
from storage.database import _MIGRATIONS_TABLE, open_database


def test_outbox_rows_from_before_203_get_distinct_corr_ids(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    open_database(f"sqlite:///{path}", layers=[CHAT_LAYER]).close()
    raw = sqlite3.connect(path)  # what version 202 made, with two rows waiting
    raw.execute("drop index if exists chatoutbox_corr_id")
    raw.execute("drop index if exists chatoutbox_conn_id")
    raw.execute("alter table chat_outbox drop column corr_id")
    raw.execute(f"delete from {_MIGRATIONS_TABLE} where version > 202")
    for body in (b"one", b"two"):
        raw.execute(
            "insert into chat_outbox (owner, conn_id, body) values ('group:g', 'c1', ?)", (body,)
        )
    raw.commit()
    raw.close()

    database = open_database(f"sqlite:///{path}", layers=[CHAT_LAYER])
    try:
        store = ChatStore(database)
        with store.transaction():
            rows = store.outbox("group:g")
            assert [bytes(row.body) for row in rows] == [b"one", b"two"]
            corr_ids = [row.corr_id for row in rows]
            assert len(set(corr_ids)) == 2 and all(map(is_outbox_corr_id, corr_ids))
            assert store.outbox_waits("c1")
            assert store.drop_outbox(corr_ids[0]) and not store.drop_outbox(corr_ids[0])
        assert database.schema_version(CHAT_LAYER.versions) == CHAT_MIGRATIONS[-1].version
    finally:
        database.close()


def test_a_database_from_before_204_gets_the_relay_tables_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    open_database(f"sqlite:///{path}", layers=[CHAT_LAYER]).close()
    raw = sqlite3.connect(path)  # what version 203 made, with a group and an address
    for table in ("chat_group_relay", "chat_relay_group", "chat_relay_member"):
        raw.execute(f"drop table {table}")
    for column in ("kind", "group_link", "link_conn_id", "incognito_name"):
        raw.execute(f"alter table chat_group drop column {column}")
    raw.execute("alter table chat_address drop column relay")
    raw.execute(f"delete from {_MIGRATIONS_TABLE} where version > 203")
    raw.execute(
        "insert into chat_group (group_id, name, description, status, member_id, role,"
        " created_at) values ('g', 'club', '', 'connected', 'm', 'owner', 0)"
    )
    raw.execute(
        "insert into chat_address (address_id, conn_id, status, auto_accept, created_at)"
        " values ('a', 'c', 'active', 1, 0)"
    )
    raw.commit()
    raw.close()

    database = open_database(f"sqlite:///{path}", layers=[CHAT_LAYER])
    try:
        store = ChatStore(database)
        with store.transaction():
            group = store.Group.get(store.Group.group_id == "g")
            assert (group.name, group.kind, group.group_link, group.incognito_name) == (
                "club",
                "p2p",
                None,
                None,
            )
            assert store.Address.get(store.Address.address_id == "a").relay is False
            assert store.GroupRelay.select().count() == 0
            assert store.RelayGroup.select().count() == store.RelayMember.select().count() == 0
        assert database.schema_version(CHAT_LAYER.versions) == 204
    finally:
        database.close()
