"""Tests of storage.server: the queue server's store of queues, messages and identity.

Every test but the registry check takes `database_url`, so it runs on SQLite and, with
DUPLEX_TEST_POSTGRES_URL set, on a fresh PostgreSQL database too.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from protocol.errors import StorageError
from protocol.queue import QueueMode
from storage import Database, open_database
from storage import server as server_module
from storage.server import (
    SERVER_MIGRATIONS,
    AppendOutcome,
    DuplicateLinkId,
    QueueRecord,
    QueueStatus,
    ServerStore,
    StoredMessage,
)

THREAD_WAIT_S = 30.0
NO_EXPIRY = 0  # expire_before_ts that expires nothing: every test timestamp is above it


def _id() -> bytes:
    return secrets.token_bytes(24)


def _key() -> bytes:
    return secrets.token_bytes(32)


def _record(**changes: object) -> QueueRecord:
    record = QueueRecord(
        rcv_id=_id(),
        snd_id=_id(),
        rcv_auth_key=_key(),
        rcv_dh_key=_key(),
        srv_dh_private=_key(),
        srv_dh_public=_key(),
        mode=QueueMode.MESSAGING,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _message(ts: int = 1_000, body: bytes | None = None) -> StoredMessage:
    return StoredMessage(msg_id=_id(), ts=ts, enc_body=body or secrets.token_bytes(64))


def _marker(ts: int = 1_000) -> StoredMessage:
    return StoredMessage(msg_id=_id(), ts=ts, enc_body=b"marker", quota_marker=True)


OpenStore = Callable[[], ServerStore]


@pytest.fixture
def open_store(database_url: str) -> Iterator[OpenStore]:
    """Opens the test's database (again) as a new ServerStore; closes them all afterwards."""
    opened: list[Database] = []

    def _open() -> ServerStore:
        for earlier in opened:
            earlier.close()  # a restart: the old process's connections are gone
        database = open_database(database_url, migrations=SERVER_MIGRATIONS)
        opened.append(database)
        return ServerStore(database)

    yield _open
    for database in opened:
        database.close()


@pytest.fixture
def store(open_store: OpenStore) -> ServerStore:
    return open_store()


def _assert_all_bytes(record: QueueRecord) -> None:
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name in ("mode", "status") or value is None:
            continue
        assert type(value) is bytes, f"{field.name} is {type(value).__name__}"


# --------------------------------------------------------------------------- queues


def test_server_migrations_are_registered() -> None:
    assert server_module.SERVER_LAYER.migrations == SERVER_MIGRATIONS
    assert all(step.version in range(300, 400) for step in SERVER_MIGRATIONS)


def test_lookups_find_the_queue_by_each_id_with_every_field_as_bytes(
    store: ServerStore,
) -> None:
    record = _record(mode=QueueMode.CONTACT, snd_auth_key=_key(), link_id=_id(), link_data=b"d")
    assert store.create_queue(record) == record
    store.create_queue(_record())

    for found in (
        store.queue_by_rcv_id(record.rcv_id),
        store.queue_by_snd_id(record.snd_id),
        store.queue_by_link_id(record.link_id or b""),
    ):
        assert found == record
        assert found is not None
        _assert_all_bytes(found)
        assert found.mode is QueueMode.CONTACT
        assert found.status is QueueStatus.ACTIVE
    # An id of one kind never finds a queue as another kind.
    assert store.queue_by_rcv_id(record.snd_id) is None
    assert store.queue_by_snd_id(record.rcv_id) is None
    assert store.queue_by_link_id(record.rcv_id) is None
    assert store.queue_by_rcv_id(_id()) is None


def test_create_is_idempotent_by_recipient_key(store: ServerStore) -> None:
    first = store.create_queue(_record())
    retry = _record(rcv_auth_key=first.rcv_auth_key)  # a NEW retried: new ids, same key

    assert store.create_queue(retry) == first
    assert store.queue_by_rcv_id(retry.rcv_id) is None
    assert store.queue_by_snd_id(retry.snd_id) is None
    assert store.stats() == {"queues": 1, "messages": 0}

    other = store.create_queue(_record())
    assert other != first
    assert store.stats()["queues"] == 2


def _warm_pool(database: Database, threads: int) -> None:
    """Open `threads` pooled PostgreSQL connections, so that racing threads do not start
    staggered by connecting. (SQLite connects fast, and holding several of its write
    transactions at once, as this does, would wait on its write lock.)"""
    if database.kind != "postgresql":
        return
    barrier = threading.Barrier(threads)

    def hold() -> None:
        with database.transaction() as db:
            db.execute_sql("SELECT 1")
            barrier.wait(THREAD_WAIT_S)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(hold) for _ in range(threads)]:
            future.result(THREAD_WAIT_S)


def test_concurrent_creates_with_one_recipient_key_make_one_queue(store: ServerStore) -> None:
    threads, rounds = 8, 3
    _warm_pool(store.database, threads)
    barrier = threading.Barrier(threads)

    def create(record: QueueRecord) -> QueueRecord:
        barrier.wait(THREAD_WAIT_S)
        return store.create_queue(record)

    with ThreadPoolExecutor(threads) as pool:
        for done in range(rounds):
            key = _key()
            candidates = [_record(rcv_auth_key=key) for _ in range(threads)]
            results = list(pool.map(create, candidates, timeout=THREAD_WAIT_S))

            assert len(set(results)) == 1
            assert results[0] in candidates
            assert store.stats()["queues"] == done + 1
            assert store.queue_by_rcv_id(results[0].rcv_id) == results[0]


def test_sender_key_is_set_only_once_and_suspend_turns_only_that_queue_off(
    store: ServerStore,
) -> None:
    record = store.create_queue(_record())
    other = store.create_queue(_record())
    first, second = _key(), _key()

    after = store.set_sender_key(record.rcv_id, first)
    assert after == dataclasses.replace(record, snd_auth_key=first)
    assert store.set_sender_key(record.rcv_id, first) == after  # idempotent with the same key
    assert store.set_sender_key(record.rcv_id, second) == after  # another key changes nothing
    assert store.queue_by_rcv_id(record.rcv_id) == after
    assert store.set_sender_key(_id(), first) is None

    assert store.suspend(record.rcv_id) is True
    assert store.suspend(record.rcv_id) is True  # already off: still there
    suspended = store.queue_by_rcv_id(record.rcv_id)
    assert suspended == dataclasses.replace(after, status=QueueStatus.OFF)
    assert store.queue_by_rcv_id(other.rcv_id) == other
    assert store.suspend(_id()) is False


def test_delete_removes_the_queue_and_its_messages_only(store: ServerStore) -> None:
    doomed = store.create_queue(_record(link_id=_id(), link_data=b"l"))
    kept = store.create_queue(_record())
    for _ in range(3):
        store.append_message(doomed.rcv_id, _message(), _marker(), 10, NO_EXPIRY)
    kept_message = _message()
    store.append_message(kept.rcv_id, kept_message, _marker(), 10, NO_EXPIRY)

    assert store.delete_queue(doomed.rcv_id) is True

    assert store.queue_by_rcv_id(doomed.rcv_id) is None
    assert store.queue_by_snd_id(doomed.snd_id) is None
    assert store.queue_by_link_id(doomed.link_id or b"") is None
    assert store.message_count(doomed.rcv_id) == 0
    assert store.first_message(doomed.rcv_id) is None
    assert store.first_message(kept.rcv_id) == kept_message
    assert store.stats() == {"queues": 1, "messages": 1}
    assert store.delete_queue(doomed.rcv_id) is False

    # A SEND that raced the DEL is ordered before it: answered, and gone with the queue.
    outcome = store.append_message(doomed.rcv_id, _message(), _marker(), 10, NO_EXPIRY)
    assert outcome is AppendOutcome.STORED
    assert store.stats() == {"queues": 1, "messages": 1}


def test_link_ids_are_unique_and_a_refused_set_changes_nothing(store: ServerStore) -> None:
    owner = store.create_queue(_record(mode=QueueMode.CONTACT))
    other = store.create_queue(_record(mode=QueueMode.CONTACT))
    link, other_link = _id(), _id()
    store.set_link(owner.rcv_id, link, b"owner data")
    store.set_link(other.rcv_id, other_link, b"other data")

    with pytest.raises(DuplicateLinkId) as raised:
        store.set_link(other.rcv_id, link, b"stolen")
    assert raised.value.code == "DUPLICATE_LINK"
    assert isinstance(raised.value, StorageError)

    assert store.queue_by_link_id(link) == dataclasses.replace(
        owner, link_id=link, link_data=b"owner data"
    )
    assert store.queue_by_link_id(other_link) == dataclasses.replace(
        other, link_id=other_link, link_data=b"other data"
    )
    with pytest.raises(DuplicateLinkId):
        store.create_queue(_record(link_id=link, link_data=b"new queue"))
    assert store.stats()["queues"] == 2

    # The owner may set its own link again (a retried LSET) with new data.
    store.set_link(owner.rcv_id, link, b"new data")
    found = store.queue_by_link_id(link)
    assert found is not None
    assert found.link_data == b"new data"

    store.delete_link(owner.rcv_id)
    assert store.queue_by_link_id(link) is None
    unlinked = store.queue_by_rcv_id(owner.rcv_id)
    assert unlinked is not None
    assert (unlinked.link_id, unlinked.link_data) == (None, None)
    store.set_link(other.rcv_id, link, b"now free")  # a deleted link id may be taken
    assert store.queue_by_link_id(link) == dataclasses.replace(
        other, link_id=link, link_data=b"now free"
    )
    assert store.queue_by_link_id(other_link) is None


# --------------------------------------------------------------------------- messages


def test_messages_come_out_in_insertion_order_not_timestamp_order(store: ServerStore) -> None:
    record = store.create_queue(_record())
    # A clock that steps back must not reorder the queue.
    messages = [_message(ts=ts) for ts in (5_000, 3_000, 4_000, 1_000)]
    for message in messages:
        outcome = store.append_message(record.rcv_id, message, _marker(), 10, NO_EXPIRY)
        assert outcome is AppendOutcome.STORED

    assert store.message_count(record.rcv_id) == 4
    first = store.first_message(record.rcv_id)
    assert first == messages[0]
    assert first is not None
    assert type(first.msg_id) is bytes
    assert type(first.enc_body) is bytes
    delivered = []
    current = first
    while current is not None:
        delivered.append(current)
        acked, current = store.ack_message(record.rcv_id, current.msg_id)
        assert acked
    assert delivered == messages
    assert store.first_message(record.rcv_id) is None


def test_quota_stores_a_marker_then_refuses_until_drained(store: ServerStore) -> None:
    record = store.create_queue(_record())
    quota = 3
    messages = [_message() for _ in range(quota)]
    marker = _marker()

    def append(message: StoredMessage, marker: StoredMessage | None = None) -> AppendOutcome:
        return store.append_message(record.rcv_id, message, marker or _marker(), quota, NO_EXPIRY)

    assert [append(message) for message in messages] == [AppendOutcome.STORED] * quota
    refused = _message()
    assert append(refused, marker) is AppendOutcome.QUOTA_MARKER
    assert append(_message()) is AppendOutcome.QUOTA
    assert append(_message()) is AppendOutcome.QUOTA
    assert store.message_count(record.rcv_id) == quota + 1

    # Acks below the quota do not reopen the queue while the marker waits.
    assert store.ack_message(record.rcv_id, messages[0].msg_id) == (True, messages[1])
    assert append(_message()) is AppendOutcome.QUOTA
    assert store.ack_message(record.rcv_id, messages[1].msg_id) == (True, messages[2])
    acked, next_message = store.ack_message(record.rcv_id, messages[2].msg_id)
    assert acked
    assert next_message == marker  # the marker, not the refused message's content
    assert next_message is not None
    assert next_message.quota_marker is True
    assert append(_message()) is AppendOutcome.QUOTA

    assert store.ack_message(record.rcv_id, marker.msg_id) == (True, None)
    again = _message()
    assert append(again) is AppendOutcome.STORED
    assert store.first_message(record.rcv_id) == again
    assert store.message_count(record.rcv_id) == 1


def test_a_marker_given_as_a_function_is_made_only_for_a_full_queue(store: ServerStore) -> None:
    record = store.create_queue(_record())
    made: list[StoredMessage] = []

    def marker() -> StoredMessage:
        made.append(_marker())
        return made[-1]

    def append() -> AppendOutcome:
        return store.append_message(record.rcv_id, _message(), marker, 2, NO_EXPIRY)

    assert [append(), append()] == [AppendOutcome.STORED] * 2
    assert made == []
    assert append() is AppendOutcome.QUOTA_MARKER
    assert append() is AppendOutcome.QUOTA
    assert len(made) == 1  # made once, when stored; not for the refused SEND after it
    first = store.first_message(record.rcv_id)
    assert first is not None
    assert store.ack_message(record.rcv_id, first.msg_id)[0]
    second = store.first_message(record.rcv_id)
    assert second is not None
    assert store.ack_message(record.rcv_id, second.msg_id) == (True, made[0])


def test_concurrent_appends_never_exceed_the_quota(store: ServerStore) -> None:
    record = store.create_queue(_record())
    threads, per_thread, quota = 8, 5, 12
    _warm_pool(store.database, threads)
    barrier = threading.Barrier(threads)

    def send_many(_: int) -> list[AppendOutcome]:
        barrier.wait(THREAD_WAIT_S)
        return [
            store.append_message(record.rcv_id, _message(), _marker(), quota, NO_EXPIRY)
            for _ in range(per_thread)
        ]

    with ThreadPoolExecutor(threads) as pool:
        outcomes = Counter(
            outcome
            for batch in pool.map(send_many, range(threads), timeout=THREAD_WAIT_S)
            for outcome in batch
        )

    assert outcomes == {
        AppendOutcome.STORED: quota,
        AppendOutcome.QUOTA_MARKER: 1,
        AppendOutcome.QUOTA: threads * per_thread - quota - 1,
    }
    assert store.message_count(record.rcv_id) == quota + 1


def test_append_expires_this_queues_old_messages_and_markers(store: ServerStore) -> None:
    record = store.create_queue(_record())
    other = store.create_queue(_record())
    old = [_message(ts=ts) for ts in (100, 200)]
    young = _message(ts=300)
    for message in [*old, young]:
        store.append_message(record.rcv_id, message, _marker(), 10, NO_EXPIRY)
    other_old = _message(ts=100)
    store.append_message(other.rcv_id, other_old, _marker(), 10, NO_EXPIRY)

    new = _message(ts=400)
    assert store.append_message(record.rcv_id, new, _marker(), 10, 250) is AppendOutcome.STORED

    assert store.message_count(record.rcv_id) == 2
    assert store.first_message(record.rcv_id) == young
    assert store.ack_message(record.rcv_id, young.msg_id) == (True, new)
    assert store.first_message(other.rcv_id) == other_old

    # A full queue: its messages expire before its younger marker, then the marker does.
    full = store.create_queue(_record())
    for _ in range(2):
        store.append_message(full.rcv_id, _message(ts=100), _marker(ts=100), 2, NO_EXPIRY)
    assert (
        store.append_message(full.rcv_id, _message(ts=200), _marker(ts=200), 2, NO_EXPIRY)
        is AppendOutcome.QUOTA_MARKER
    )
    assert (
        store.append_message(full.rcv_id, _message(ts=160), _marker(), 2, 155)
        is AppendOutcome.QUOTA
    )
    assert store.message_count(full.rcv_id) == 1

    fresh = _message(ts=500)
    assert store.append_message(full.rcv_id, fresh, _marker(), 2, 250) is AppendOutcome.STORED
    assert store.first_message(full.rcv_id) == fresh
    assert store.message_count(full.rcv_id) == 1


def test_expire_messages_spans_queues_markers_and_batches(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "EXPIRE_BATCH", 2)  # several transactions
    first = store.create_queue(_record())
    second = store.create_queue(_record())
    first_messages = [_message(ts=ts) for ts in (100, 200, 250, 900)]
    for message in first_messages:
        store.append_message(first.rcv_id, message, _marker(), 10, NO_EXPIRY)
    for _ in range(2):
        store.append_message(second.rcv_id, _message(ts=150), _marker(ts=150), 2, NO_EXPIRY)
    marker = _marker(ts=250)
    outcome = store.append_message(second.rcv_id, _message(ts=250), marker, 2, NO_EXPIRY)
    assert outcome is AppendOutcome.QUOTA_MARKER
    survivor = _message(ts=1_000)
    store.append_message(first.rcv_id, survivor, _marker(), 10, NO_EXPIRY)

    assert store.expire_messages(260) == 6  # 3 + 2 messages and the marker
    assert store.stats() == {"queues": 2, "messages": 2}
    assert store.first_message(second.rcv_id) is None
    assert store.first_message(first.rcv_id) == first_messages[-1]
    assert store.ack_message(first.rcv_id, first_messages[-1].msg_id) == (True, survivor)
    assert store.expire_messages(260) == 0
    # With its marker gone the queue takes messages again.
    assert (
        store.append_message(second.rcv_id, _message(ts=2_000), _marker(), 2, 260)
        is AppendOutcome.STORED
    )


def test_ack_of_anything_but_the_oldest_deletes_nothing(store: ServerStore) -> None:
    record = store.create_queue(_record())
    other = store.create_queue(_record())
    first, second = _message(), _message()
    for message in (first, second):
        store.append_message(record.rcv_id, message, _marker(), 10, NO_EXPIRY)
    other_message = _message()
    store.append_message(other.rcv_id, other_message, _marker(), 10, NO_EXPIRY)

    assert store.ack_message(record.rcv_id, second.msg_id) == (False, None)
    assert store.ack_message(record.rcv_id, _id()) == (False, None)
    assert store.ack_message(record.rcv_id, other_message.msg_id) == (False, None)
    assert store.ack_message(_id(), first.msg_id) == (False, None)
    assert store.message_count(record.rcv_id) == 2
    assert store.message_count(other.rcv_id) == 1

    assert store.ack_message(record.rcv_id, first.msg_id) == (True, second)
    assert store.ack_message(record.rcv_id, first.msg_id) == (False, None)  # a repeated ACK
    assert store.first_message(record.rcv_id) == second


# --------------------------------------------------------------------------- restarts


def test_identity_queues_and_messages_survive_a_restart(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store()
    assert store.load_identity() is None
    certificate, key = b"-----BEGIN CERTIFICATE-----\n\x00\xff", b"-----BEGIN PRIVATE KEY-----"
    store.save_identity(certificate, key)
    assert store.load_identity() == (certificate, key)

    store.save_identity(certificate, key)  # the same again: quietly fine
    with caplog.at_level(logging.WARNING, logger=server_module.__name__):
        store.save_identity(b"another certificate", b"another key")
    assert any("identity already saved" in r.getMessage() for r in caplog.records)
    assert store.load_identity() == (certificate, key)

    secured = store.create_queue(_record())
    contact = store.create_queue(_record(mode=QueueMode.CONTACT))
    store.set_sender_key(secured.rcv_id, sender_key := _key())
    store.set_link(contact.rcv_id, link := _id(), b"link data")
    store.suspend(contact.rcv_id)
    messages = [_message(body=secrets.token_bytes(16 * 1024)) for _ in range(3)]
    for message in messages:
        store.append_message(secured.rcv_id, message, _marker(), 10, NO_EXPIRY)
    expected = {
        secured.rcv_id: dataclasses.replace(secured, snd_auth_key=sender_key),
        contact.rcv_id: dataclasses.replace(
            contact, link_id=link, link_data=b"link data", status=QueueStatus.OFF
        ),
    }

    restarted = open_store()  # closes the first database: the old process is gone
    loaded = restarted.load_identity()
    assert loaded == (certificate, key)
    assert loaded is not None
    assert all(type(part) is bytes for part in loaded)
    for rcv_id, record in expected.items():
        assert restarted.queue_by_rcv_id(rcv_id) == record
    assert restarted.stats() == {"queues": 2, "messages": 3}
    assert restarted.first_message(secured.rcv_id) == messages[0]
    assert restarted.ack_message(secured.rcv_id, messages[0].msg_id) == (True, messages[1])
    # New messages still queue behind the old ones after the restart.
    later = _message()
    restarted.append_message(secured.rcv_id, later, _marker(), 10, NO_EXPIRY)
    assert restarted.ack_message(secured.rcv_id, messages[1].msg_id) == (True, messages[2])
    assert restarted.ack_message(secured.rcv_id, messages[2].msg_id) == (True, later)
