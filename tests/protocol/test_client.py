"""QueueClient against real servers: pinning, pipelining, restarts, reconnects, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_websocket

from protocol.address import ServerAddress
from protocol.client import ClientConfig, QueueClient
from protocol.errors import NetworkError, ServerError, ServerIdentityError
from protocol.queue import Ack, Get, Ids, Msg, Ok, Ping, Pong, Send
from protocol.server import QueueServer
from tests.protocol.conftest import FAST_CLIENT
from tests.protocol.queues import Inbox, QueueOwner


async def test_a_wrong_fingerprint_is_refused_before_any_command(
    server: QueueServer, nursery: trio.Nursery
) -> None:
    real = server.address
    impostor = ServerAddress(bytes(32), real.host, real.port)
    client = QueueClient(impostor, nursery, config=FAST_CLIENT)
    with pytest.raises(ServerIdentityError) as refused:
        await client.request(Ping())
    assert not refused.value.temporary
    assert server.broker.stats.commands == 0  # not one transmission reached the server
    await client.aclose()


async def test_an_unreachable_server_is_a_temporary_network_error(
    nursery: trio.Nursery,
) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there any more
    client = QueueClient(ServerAddress(bytes(32), "127.0.0.1", port), nursery, config=FAST_CLIENT)
    with pytest.raises(NetworkError) as failed:
        await client.request(Ping())
    assert failed.value.temporary
    await client.aclose()


async def test_a_silent_server_is_a_timeout(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def accept_and_ignore() -> None:
        async with listeners[0]:
            stream = await listeners[0].accept()
            await trio.sleep_forever()
            await stream.aclose()

    nursery.start_soon(accept_and_ignore)
    config = ClientConfig(connect_timeout=0.2, command_timeout=5.0)
    client = QueueClient(ServerAddress(bytes(32), "127.0.0.1", port), nursery, config=config)
    with pytest.raises(NetworkError, match="timed out"):
        await client.request(Ping())
    await client.aclose()


async def test_pipelined_requests_are_matched_by_corr_id(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owners = [QueueOwner() for _ in range(50)]
    results: dict[int, Ids] = {}

    async def create(i: int) -> None:
        results[i] = await owners[i].create(client)

    async with trio.open_nursery() as batch:
        for i in range(len(owners)):
            batch.start_soon(create, i)
    assert len({r.rcv_id for r in results.values()}) == 50
    for i, owner in enumerate(owners):  # each reply went to the request that asked for it
        assert server.store.queue_by_rcv_id(results[i].rcv_id).rcv_auth_key == owner.auth.public


async def test_a_restarted_server_keeps_its_address_queues_and_unacked_messages(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    owner = QueueOwner()
    with QueueServer.start(url) as first:
        address = first.address
        client = QueueClient(address, nursery, config=FAST_CLIENT)
        await owner.create(client)
        for body in (b"kept-1", b"kept-2"):
            await client.request(Send(0, body), entity_id=owner.snd_id)
        delivered = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
        assert isinstance(delivered, Msg)  # delivered, never acknowledged
        await client.aclose()

    with QueueServer.start(url, port=address.port) as second:
        assert second.address == address  # same certificate, same pin
        client = QueueClient(address, nursery, config=FAST_CLIENT)
        again = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
        assert isinstance(again, Msg) and again.msg_id == delivered.msg_id
        assert owner.open(again).body == b"kept-1"
        following = await client.request(Ack(again.msg_id), entity_id=owner.rcv_id, key=owner.auth)
        assert following == Ok()  # not subscribed: the next one waits for GET
        last = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
        assert isinstance(last, Msg) and owner.open(last).body == b"kept-2"
        await client.aclose()


async def test_the_client_reconnects_and_resubscribes_after_a_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    states: list[bool] = []
    inbox = Inbox()
    owner = QueueOwner()
    first = QueueServer.start(url)
    address = first.address
    recipient = QueueClient(
        address, nursery, on_push=inbox.push, on_state=states.append, config=FAST_CLIENT
    )
    await owner.create(recipient)
    await recipient.subscribe(owner.rcv_id, owner.auth)
    first.stop()

    with trio.fail_after(5):
        while recipient.connected:
            await trio.sleep(0.01)
    with pytest.raises(NetworkError):
        await recipient.request(Ping())  # down: a temporary error, not a hang

    with QueueServer.start(url, port=address.port) as second:
        sender = QueueClient(address, nursery, config=FAST_CLIENT)
        assert await sender.request(Send(0, b"after restart"), entity_id=owner.snd_id) == Ok()
        entity, message = await inbox.next(timeout=10)  # no call from us: it resubscribed
        assert entity == owner.rcv_id and isinstance(message, Msg)
        assert owner.open(message).body == b"after restart"
        assert states[0] is True and False in states and states[-1] is True
        assert second.broker.subscriber_count() == 1
        assert await recipient.request(Ping()) == Pong()
        await sender.aclose()
        await recipient.aclose()


async def test_errors_say_whether_a_retry_can_help(server: QueueServer, open_client) -> None:
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    with pytest.raises(ServerError) as auth:
        await client.request(Get(), entity_id=owner.rcv_id, key=QueueOwner().auth)
    assert auth.value.code == "AUTH" and not auth.value.temporary
    for _ in range(4):
        await client.request(Send(0, b"x"), entity_id=owner.snd_id)
    with pytest.raises(ServerError) as quota:
        await client.request(Send(0, b"x"), entity_id=owner.snd_id)
    assert quota.value.code == "QUOTA" and quota.value.temporary


async def test_idle_sessions_are_closed_and_pings_keep_clients_alive(
    start_server, nursery: trio.Nursery
) -> None:
    from protocol.server import ServerConfig
    from tests.protocol.queues import RawSession

    server = start_server(config=ServerConfig(idle_timeout=0.3))
    silent = await RawSession.open(nursery, server.address)
    pinging = QueueClient(
        server.address, nursery, config=ClientConfig(ping_interval=0.05, backoff_initial=0.01)
    )
    owner = QueueOwner()
    await owner.create(pinging)
    await pinging.subscribe(owner.rcv_id, owner.auth)  # a subscriber keeps its connection
    with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
        await silent.ws.get_message()  # the server closed the silent session
    assert pinging.connected and pinging.reconnects == 1  # pings kept this one open
    await pinging.aclose()


async def test_a_dropped_connection_comes_back_and_a_paused_one_waits_for_resume(
    server: QueueServer, nursery: trio.Nursery
) -> None:
    states: list[bool] = []
    inbox = Inbox()
    owner = QueueOwner()
    recipient = QueueClient(
        server.address, nursery, on_push=inbox.push, on_state=states.append, config=FAST_CLIENT
    )
    sender = QueueClient(server.address, nursery, config=FAST_CLIENT)
    await owner.create(recipient)
    await recipient.subscribe(owner.rcv_id, owner.auth)

    recipient.drop_connection()  # a network failure: it reconnects and resubscribes
    with trio.fail_after(5):
        while recipient.reconnects < 2 or not recipient.connected:
            await trio.sleep(0.01)
    assert states == [True, False, True]
    await sender.request(Send(0, b"after the drop"), entity_id=owner.snd_id)
    _, message = await inbox.next(timeout=5)
    assert isinstance(message, Msg) and owner.open(message).body == b"after the drop"
    await recipient.request(Ack(message.msg_id), entity_id=owner.rcv_id, key=owner.auth)

    recipient.drop_connection(pause=True)
    assert recipient.paused
    with pytest.raises(NetworkError, match="paused"):
        await recipient.request(Ping())  # at once, not after a timeout
    await sender.request(Send(0, b"while paused"), entity_id=owner.snd_id)
    await inbox.expect_nothing()
    assert not recipient.connected and recipient.reconnects == 2

    recipient.resume()
    _, message = await inbox.next(timeout=5)  # reconnected and resubscribed by itself
    assert isinstance(message, Msg) and owner.open(message).body == b"while paused"
    assert await recipient.request(Ping()) == Pong()
    await sender.aclose()
    await recipient.aclose()
