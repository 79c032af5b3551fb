"""Every queue command's success and error paths against a real server on loopback."""

from __future__ import annotations

import contextlib

import pytest
import trio

from protocol import crypto
from protocol.errors import ServerError, StorageError
from protocol.queue import (
    MAX_BODY,
    Ack,
    Del,
    End,
    Err,
    ErrorCode,
    Get,
    Ids,
    Key,
    LDel,
    LGet,
    Lnk,
    LSet,
    Msg,
    MsgFlag,
    Off,
    Ok,
    Ping,
    Pong,
    QueueMode,
    Send,
    SKey,
    Sub,
    decode_server_frame,
    encode,
    encode_transmission,
)
from protocol.server import QueueServer, ServerConfig
from protocol.server.broker import Prepared
from protocol.server.shell import _Outbox
from storage.database import open_database
from storage.server import SERVER_LAYER
from tests.protocol.queues import QueueOwner, RawSession


async def expect_error(code: str, awaitable) -> None:
    with pytest.raises(ServerError) as raised:
        await awaitable
    assert raised.value.code == code


async def test_new_is_idempotent_by_recipient_key(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    first = await owner.create(client)
    again = await client.request(owner.new(), key=owner.auth)
    assert again == first
    assert server.store.stats()["queues"] == 1
    other = await QueueOwner().create(client)
    assert other.rcv_id != first.rcv_id and other.snd_id != first.snd_id
    assert len({first.rcv_id, first.snd_id}) == 2


async def test_new_signed_by_another_key_is_auth(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await expect_error("AUTH", client.request(owner.new(), key=crypto.SigningKey.generate()))
    assert server.store.stats()["queues"] == 0


async def test_send_msg_ack_in_order_with_server_encryption(
    server: QueueServer, open_client
) -> None:
    recipient, inbox = open_client(server)
    sender, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(recipient, subscribe=True)
    for body in (b"one", b"two", b"three"):
        assert await sender.request(Send(0, body), entity_id=owner.snd_id) == Ok()

    received = []
    entity, message = await inbox.next()
    while True:
        assert entity == owner.rcv_id and isinstance(message, Msg)
        content = owner.open(message)
        assert b"one" not in message.enc_body  # what comes out is not what went in
        received.append(content.body)
        reply = await recipient.request(Ack(message.msg_id), entity_id=owner.rcv_id, key=owner.auth)
        if reply == Ok():
            break
        entity, message = await inbox.next()  # the ACK's answer is the next MSG
    assert received == [b"one", b"two", b"three"]
    assert server.store.message_count(owner.rcv_id) == 0


async def test_ack_of_the_wrong_message_is_no_msg(server: QueueServer, open_client) -> None:
    client, inbox = open_client(server)
    owner = QueueOwner()
    await owner.create(client, subscribe=True)
    await client.request(Send(0, b"a"), entity_id=owner.snd_id)
    await client.request(Send(0, b"b"), entity_id=owner.snd_id)
    _, first = await inbox.next()
    assert isinstance(first, Msg)
    await expect_error(
        "NO_MSG", client.request(Ack(bytes(24)), entity_id=owner.rcv_id, key=owner.auth)
    )
    assert server.store.message_count(owner.rcv_id) == 2  # nothing deleted
    await client.request(Ack(first.msg_id), entity_id=owner.rcv_id, key=owner.auth)
    await expect_error(
        "NO_MSG", client.request(Ack(first.msg_id), entity_id=owner.rcv_id, key=owner.auth)
    )


async def test_one_unacked_message_per_subscription(server: QueueServer, open_client) -> None:
    client, inbox = open_client(server)
    owner = QueueOwner()
    await owner.create(client, subscribe=True)
    for body in (b"1", b"2", b"3"):
        await client.request(Send(0, body), entity_id=owner.snd_id)
    _, first = await inbox.next()
    await inbox.expect_nothing()  # the next one waits for the ACK
    assert owner.open(first).body == b"1"


async def test_sub_takeover_sends_end_to_the_old_session(server: QueueServer, open_client) -> None:
    old, old_inbox = open_client(server)
    new, new_inbox = open_client(server)
    owner = QueueOwner()
    await owner.create(old, subscribe=True)
    await old.request(Send(0, b"waiting"), entity_id=owner.snd_id)
    _, delivered = await old_inbox.next()
    assert isinstance(delivered, Msg)

    await new.subscribe(owner.rcv_id, owner.auth)
    entity, end = await old_inbox.next()
    assert entity == owner.rcv_id and end == End()
    assert owner.rcv_id not in old.subscriptions
    _, redelivered = await new_inbox.next()  # unacked: delivered again to the new session
    assert isinstance(redelivered, Msg) and redelivered.msg_id == delivered.msg_id


async def test_get_reads_without_subscribing(server: QueueServer, open_client) -> None:
    client, inbox = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    assert await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    await client.request(Send(0, b"x"), entity_id=owner.snd_id)
    await inbox.expect_nothing()
    message = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
    assert isinstance(message, Msg) and owner.open(message).body == b"x"
    assert await client.request(Ack(message.msg_id), entity_id=owner.rcv_id, key=owner.auth) == Ok()


async def test_key_secures_the_queue(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    sender_key, other_key = crypto.SigningKey.generate(), crypto.SigningKey.generate()
    # before securing, an unsigned SEND is the confirmation path
    assert await client.request(Send(0, b"conf"), entity_id=owner.snd_id) == Ok()
    assert (
        await client.request(Key(sender_key.public), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    )
    assert (
        await client.request(Key(sender_key.public), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    )  # idempotent
    await expect_error(
        "AUTH", client.request(Key(other_key.public), entity_id=owner.rcv_id, key=owner.auth)
    )
    await expect_error("AUTH", client.request(Send(0, b"x"), entity_id=owner.snd_id))
    await expect_error("AUTH", client.request(Send(0, b"x"), entity_id=owner.snd_id, key=other_key))
    assert await client.request(Send(0, b"ok"), entity_id=owner.snd_id, key=sender_key) == Ok()
    assert server.store.message_count(owner.rcv_id) == 2


async def test_skey_lets_the_sender_secure_and_conflicts_with_key(
    server: QueueServer, open_client
) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    sender_key = crypto.SigningKey.generate()
    assert (
        await client.request(SKey(sender_key.public), entity_id=owner.snd_id, key=sender_key)
        == Ok()
    )
    assert (
        await client.request(SKey(sender_key.public), entity_id=owner.snd_id, key=sender_key)
        == Ok()
    )
    intruder = crypto.SigningKey.generate()
    await expect_error(
        "AUTH", client.request(SKey(intruder.public), entity_id=owner.snd_id, key=intruder)
    )
    await expect_error(
        "AUTH", client.request(Key(intruder.public), entity_id=owner.rcv_id, key=owner.auth)
    )
    assert (
        await client.request(Key(sender_key.public), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    )
    # SKEY must be signed by the key it sets
    await expect_error(
        "AUTH", client.request(SKey(sender_key.public), entity_id=owner.snd_id, key=intruder)
    )


async def test_contact_queues_take_unsigned_sends_only(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner(mode=QueueMode.CONTACT)
    await owner.create(client)
    for _ in range(2):
        assert await client.request(Send(0, b"knock"), entity_id=owner.snd_id) == Ok()
    key = crypto.SigningKey.generate()
    await expect_error(
        "CMD HAS_AUTH", client.request(Send(0, b"x"), entity_id=owner.snd_id, key=key)
    )
    await expect_error(
        "CMD PROHIBITED", client.request(SKey(key.public), entity_id=owner.snd_id, key=key)
    )
    await expect_error(
        "CMD PROHIBITED", client.request(Key(key.public), entity_id=owner.rcv_id, key=owner.auth)
    )


async def test_quota_marker_then_quota_until_drained(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)  # the fixture's server has quota 4
    owner = QueueOwner()
    await owner.create(client)
    for i in range(4):
        await client.request(Send(0, b"m%d" % i), entity_id=owner.snd_id)
    await expect_error("QUOTA", client.request(Send(0, b"over"), entity_id=owner.snd_id))
    await expect_error("QUOTA", client.request(Send(0, b"still"), entity_id=owner.snd_id))
    assert server.store.message_count(owner.rcv_id) == 5  # four messages and the marker

    bodies, flags = [], []
    for _ in range(5):
        message = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
        assert isinstance(message, Msg)
        content = owner.open(message)
        bodies.append(content.body)
        flags.append(content.flags)
        if len(bodies) == 3:  # not drained yet: still QUOTA
            await expect_error("QUOTA", client.request(Send(0, b"x"), entity_id=owner.snd_id))
        await client.request(Ack(message.msg_id), entity_id=owner.rcv_id, key=owner.auth)
    assert bodies == [b"m0", b"m1", b"m2", b"m3", b""]
    assert flags[-1] == MsgFlag.QUOTA_MARKER and not any(flags[:-1])
    assert await client.request(Send(0, b"again"), entity_id=owner.snd_id) == Ok()


async def test_messages_expire_after_the_ttl(start_server, open_client) -> None:
    now = [1_000_000.0]
    server = start_server(clock=lambda: now[0])
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    await client.request(Send(0, b"old"), entity_id=owner.snd_id)
    now[0] += 22 * 24 * 3600  # past the 21-day default
    await client.request(Send(0, b"new"), entity_id=owner.snd_id)  # expiry on SEND
    message = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
    assert isinstance(message, Msg) and owner.open(message).body == b"new"
    now[0] += 22 * 24 * 3600
    cutoff = int((now[0] - server.config.message_ttl) * 1000)
    assert server.store.expire_messages(cutoff) == 1  # the periodic sweep's store call
    assert server.store.message_count(owner.rcv_id) == 0


async def test_large_message_is_refused_and_the_session_goes_on(
    server: QueueServer, open_client
) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    await expect_error(
        "LARGE_MSG", client.request(Send(0, bytes(MAX_BODY + 1)), entity_id=owner.snd_id)
    )
    assert await client.request(Send(0, bytes(MAX_BODY)), entity_id=owner.snd_id) == Ok()
    assert server.store.message_count(owner.rcv_id) == 1


async def test_auth_is_one_reply_for_unknown_id_and_bad_signature(
    server: QueueServer, open_client
) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    stranger = crypto.SigningKey.generate()
    for entity, key in ((owner.rcv_id, stranger), (bytes(24), owner.auth), (bytes(24), stranger)):
        for command in (Sub(), Get(), Del(), Off()):
            await expect_error("AUTH", client.request(command, entity_id=entity, key=key))
    assert server.store.stats()["queues"] == 1


async def test_a_command_replayed_on_another_session_is_auth(
    server: QueueServer, open_client, nursery: trio.Nursery
) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    first = await RawSession.open(nursery, server.address)
    second = await RawSession.open(nursery, server.address)
    frame = first.frame(Del(), owner.rcv_id, owner.auth)
    assert await second.exchange(frame) == Err(ErrorCode.AUTH)  # captured, replayed elsewhere
    assert server.store.queue_by_rcv_id(owner.rcv_id) is not None
    assert await first.exchange(frame) == Ok()  # on its own session it is valid
    assert server.store.queue_by_rcv_id(owner.rcv_id) is None


async def test_off_and_del(server: QueueServer, open_client) -> None:
    subscriber, inbox = open_client(server)
    owner_client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(subscriber, subscribe=True)
    await owner_client.request(Send(0, b"before"), entity_id=owner.snd_id)
    await inbox.next()
    assert await owner_client.request(Off(), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    await expect_error("AUTH", owner_client.request(Send(0, b"x"), entity_id=owner.snd_id))

    assert await owner_client.request(Del(), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    entity, end = await inbox.next()
    assert (entity, end) == (owner.rcv_id, End())
    assert server.store.queue_by_rcv_id(owner.rcv_id) is None
    assert server.store.message_count(owner.rcv_id) == 0
    await expect_error("AUTH", owner_client.request(Sub(), entity_id=owner.rcv_id, key=owner.auth))


async def test_link_data_set_read_and_deleted(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner(mode=QueueMode.CONTACT)
    await owner.create(client)
    link_id = crypto.random_bytes(24)
    assert (
        await client.request(
            LSet(link_id, b"sealed link data"), entity_id=owner.rcv_id, key=owner.auth
        )
        == Ok()
    )
    assert await client.request(LGet(link_id)) == Lnk(owner.snd_id, b"sealed link data")
    assert await client.request(LDel(), entity_id=owner.rcv_id, key=owner.auth) == Ok()
    await expect_error("AUTH", client.request(LGet(link_id)))

    messaging = QueueOwner()
    await messaging.create(client)
    await expect_error(
        "CMD PROHIBITED",
        client.request(LSet(link_id, b"d"), entity_id=messaging.rcv_id, key=messaging.auth),
    )
    taken = QueueOwner(mode=QueueMode.CONTACT)
    await taken.create(client)
    await client.request(LSet(link_id, b"mine"), entity_id=owner.rcv_id, key=owner.auth)
    await expect_error(
        "AUTH", client.request(LSet(link_id, b"theirs"), entity_id=taken.rcv_id, key=taken.auth)
    )
    assert await client.request(LGet(link_id)) == Lnk(owner.snd_id, b"mine")


async def test_malformed_commands_get_their_error_with_the_corr_id(
    server: QueueServer, nursery: trio.Nursery
) -> None:
    raw = await RawSession.open(nursery, server.address)
    owner = QueueOwner()
    assert isinstance(await raw.command(owner.new(), key=owner.auth), Ids)
    key = crypto.SigningKey.generate()
    cases = [
        (raw.frame(Sub(), bytes(24)), ErrorCode.CMD_NO_AUTH),
        (raw.frame(Sub(), b"", key), ErrorCode.CMD_NO_ENTITY),
        (raw.frame(Ping(), b"", key), ErrorCode.CMD_HAS_AUTH),
        (raw.frame(owner.new()), ErrorCode.CMD_NO_AUTH),
        (encode_transmission(b"c-unknown", b"", encode(Pong())), ErrorCode.CMD_UNKNOWN),
        (encode_transmission(b"c-garbage", b"", b"\xc1\xc1"), ErrorCode.CMD_SYNTAX),
        (encode_transmission(b"c-short-id", bytes(5), encode(Sub())), ErrorCode.CMD_SYNTAX),
    ]
    for frame, code in cases:
        await raw.send_raw(frame)
        transmission, reply = await raw.receive()
        assert reply == Err(code), (frame, reply)
        if code is not ErrorCode.CMD_SYNTAX or transmission.corr_id:
            assert transmission.corr_id  # answered under the request's corr id
    assert await raw.command(Ping()) == Pong()  # the session is still serving


# ---------------------------------------------------------------------- bursts


async def test_a_pipelined_burst_keeps_order_quota_and_signatures(
    server: QueueServer, nursery: trio.Nursery
) -> None:
    """Frames that arrive together are verified together and stored in one transaction;
    each still gets its own answer, in order, as if it had come alone."""
    recipient = await RawSession.open(nursery, server.address)
    sender = await RawSession.open(nursery, server.address)
    owner = QueueOwner()
    ids = await recipient.command(owner.new(subscribe=True), key=owner.auth)
    assert isinstance(ids, Ids)
    owner.ids = ids
    snd_key, stranger = crypto.SigningKey.generate(), crypto.SigningKey.generate()
    assert await sender.command(SKey(snd_key.public), owner.snd_id, snd_key) == Ok()

    # quota 4: four stored, the fifth stores the marker, the rest are refused; a SEND signed
    # by someone else in the middle is AUTH and changes nothing
    frames = [sender.frame(Send(0, b"m%d" % i), owner.snd_id, snd_key) for i in range(6)]
    frames.insert(2, sender.frame(Send(0, b"forged"), owner.snd_id, stranger))
    frames.insert(4, sender.frame(Ping()))
    for frame in frames:
        await sender.send_raw(frame)
    replies = [(await sender.receive())[1] for _ in frames]
    quota, auth = Err(ErrorCode.QUOTA), Err(ErrorCode.AUTH)
    assert replies == [Ok(), Ok(), auth, Ok(), Pong(), Ok(), quota, quota]
    assert server.store.message_count(owner.rcv_id) == 5  # four and the marker

    bodies = []
    for _ in range(5):
        transmission, message = await recipient.receive()
        assert transmission.entity_id == owner.rcv_id and isinstance(message, Msg)
        bodies.append(owner.open(message).body)
        await recipient.send_raw(recipient.frame(Ack(message.msg_id), owner.rcv_id, owner.auth))
    assert (await recipient.receive())[1] == Ok()  # the ACK of the marker: nothing left
    assert bodies == [b"m0", b"m1", b"m2", b"m3", b""]


async def test_a_group_whose_commit_fails_answers_nothing_and_stores_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durability rule for a burst: no frame of it is posted before its commit. When the
    commit fails, the sessions it would have written to are closed (the broker's memory may
    be ahead of the store) and the next burst starts from the store."""
    database = open_database(f"sqlite:///{tmp_path / 'commit.db'}", layers=[SERVER_LAYER])
    server = QueueServer(database, config=ServerConfig(tls=False), owns_database=True)
    sessions = {name: server.broker.new_session() for name in ("recipient", "sender")}
    outboxes = {name: _Outbox(1 << 20) for name in sessions}
    for name, session in sessions.items():
        session.outbox = outboxes[name]
    # Frames are signed for these sessions by RawSession's codec; no websocket is needed.
    recipient = RawSession(None, sessions["recipient"].session_id)  # type: ignore[arg-type]
    sender = RawSession(None, sessions["sender"].session_id)  # type: ignore[arg-type]
    owner = QueueOwner()
    for item in server.broker.handle(
        sessions["recipient"], recipient.frame(owner.new(subscribe=True), key=owner.auth)
    ):
        _, ids = decode_server_frame(item.frame)
    assert isinstance(ids, Ids)
    sends = [sender.frame(Send(0, b"m%d" % i), ids.snd_id) for i in range(3)]

    real = database.transaction
    depth = 0

    @contextlib.contextmanager
    def commit_fails(**kwargs):
        nonlocal depth
        depth += 1
        try:
            if depth > 1:  # the store's own calls, nested in the group's transaction
                with real(**kwargs) as db:
                    yield db
                return
            try:
                with real(**kwargs) as db:
                    yield db
                    raise _InjectedFailure  # rolls the group back
            except _InjectedFailure:
                raise StorageError("commit failed (injected)") from None
        finally:
            depth -= 1

    monkeypatch.setattr(database, "transaction", commit_fails)

    def burst() -> list[Prepared]:
        return [server.broker.prepare(sessions["sender"], frame) for frame in sends]

    with pytest.raises(StorageError):
        server._apply_burst(sessions["sender"], burst())
    monkeypatch.setattr(database, "transaction", real)

    assert server.store.message_count(ids.rcv_id) == 0
    assert not outboxes["sender"].frames  # no OK for what was not stored
    assert outboxes["recipient"].closed and not outboxes["recipient"].frames  # no MSG
    assert sessions["recipient"].closed

    # The next burst is stored and answered; the queue waits for its recipient's next SUB.
    outgoing = server._apply_burst(sessions["sender"], burst())
    assert [decode_server_frame(item.frame)[1] for item in outgoing] == [Ok(), Ok(), Ok()]
    assert server.store.message_count(ids.rcv_id) == 3
    server.stop()


class _InjectedFailure(Exception):
    pass
