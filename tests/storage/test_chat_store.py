"""The chat store's statements of the message path, written as SQL text once per database
kind, on SQLite and on PostgreSQL: they must read and write what the query builder's
versions did (rows as model instances, nothing dirty, saves that work)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from storage.chat import CHAT_LAYER, ChatStore
from storage.database import open_database


@pytest.fixture
def store(database_url: str) -> Iterator[ChatStore]:
    database = open_database(database_url, layers=[CHAT_LAYER])
    try:
        yield ChatStore(database)
    finally:
        database.close()


def test_a_message_is_stored_once_per_chat_and_shared_id(store: ChatStore) -> None:
    with store.transaction():
        assert store.add_message("group", "g1", "m1", "alice", "hi", sent=False)
        assert not store.add_message("group", "g1", "m1", "bob", "a copy", sent=False)
        assert store.add_message("group", "g2", "m1", "alice", "another chat", sent=False)
        assert store.add_message("contact", "g1", "m1", "", "ours", sent=True)
    with store.transaction(read_only=True):
        rows = store.Message.select().order_by(store.Message.id)
        got = [(r.chat_kind, r.chat_id, r.author, r.text, r.sent) for r in rows]
    assert got == [
        ("group", "g1", "alice", "hi", False),
        ("group", "g2", "alice", "another chat", False),
        ("contact", "g1", "", "ours", True),
    ]


def test_an_agent_message_is_processed_once_per_connection(store: ChatStore) -> None:
    with store.transaction():
        store.own_connection("c1", "group:g1")
        assert store.first_time("c1", 5)
        assert not store.first_time("c1", 5) and not store.first_time("c1", 4)
        assert store.first_time("c1", 6)
        assert store.first_time("unowned", 1)  # no row: nothing to compare with
    with store.transaction(read_only=True):
        row = store.connection("c1")
    assert (row.owner, row.last_msg_id) == ("group:g1", 6)


def test_outbox_rows_are_added_taken_and_waited_for(store: ChatStore) -> None:
    with store.transaction():
        first = store.add_outbox("group:g1", "c1", b"one")
        second = store.add_outbox("group:g1", "c1", b"two")
        assert first.id < second.id and first.corr_id != second.corr_id
        assert store.outbox_waits("c1") and not store.outbox_waits("c2")
        assert [bytes(r.body) for r in store.outbox("group:g1")] == [b"one", b"two"]
        assert store.drop_outbox(first.corr_id) and not store.drop_outbox(first.corr_id)
        assert store.drop_outbox(second.corr_id)
        assert not store.outbox_waits("c1")


def test_notices_are_numbered_and_dropped_together(store: ChatStore) -> None:
    with store.transaction():
        numbers = [store.add_notice("group:g1", body) for body in (b"a", b"b", b"c")]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3
        store.drop_notices(numbers[:2])
        assert [bytes(n.body) for n in store.notices("group:g1")] == [b"c"]


def test_rows_read_by_text_are_model_rows_that_save(store: ChatStore) -> None:
    now = time.time()
    with store.transaction():
        store.Group.create(
            group_id="g1", name="town", status="connected", member_id="me", role="member",
            kind="relay", created_at=now,
        )  # fmt: skip
        store.Member.create(
            group_id="g1", member_id="bob", role="member", status="connected",
            display_name="Bob", conn_id="c-bob", created_at=now,
        )  # fmt: skip
        store.GroupRelay.create(
            relay_id="r1", group_id="g1", conn_id="c-r1", status="connected", created_at=now
        )
        store.RelayGroup.create(
            group_id="g1", name="town", owner_member_id="o", link_conn_id="c-link",
            status="active", created_at=now,
        )  # fmt: skip
        for n, member_id in enumerate(["o", "m1", "m2"]):
            store.RelayMember.create(
                group_id="g1", member_id=member_id, role="member", display_name=member_id,
                conn_id=f"c-{member_id}", request_id=f"req-{n}", status="connected",
                created_at=now,
            )  # fmt: skip
        store.add_command("group:g1", "join_relay", "c-r1", b"{}")
        store.add_command("group:g2", "join_relay", "c-other", b"{}")
    with store.transaction():
        group = store.group("g1")
        assert (group.name, group.kind, group.status) == ("town", "relay", "connected")
        assert store.group("nope") is None
        assert store.group_member_on("g1", "c-bob").member_id == "bob"
        assert store.group_member_on("g2", "c-bob") is None
        assert store.group_relay_on("g1", "c-r1").relay_id == "r1"
        assert store.served_group("g1").link_conn_id == "c-link"
        assert [m.member_id for m in store.roster("g1")] == ["o", "m1", "m2"]
        assert store.roster_member_on("g1", "c-m2").member_id == "m2"
        assert [c.conn_id for c in store.pending_commands("group:g1")] == ["c-r1"]
        assert [c.owner for c in store.pending_commands_on("c-other")] == ["group:g2"]
        group.status = "left"
        group.save()
    with store.transaction(read_only=True):
        assert store.group("g1").status == "left"
