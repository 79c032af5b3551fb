"""The chat's schema upgrades in place: outbox rows stored before their sends were
acknowledged (migration 203) get corr ids of their own and stay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.chat import CHAT_LAYER, ChatStore, is_outbox_corr_id
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
        assert database.schema_version(CHAT_LAYER.versions) == 203
    finally:
        database.close()
