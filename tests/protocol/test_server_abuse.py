"""The queue server attacked as an outsider would, on loopback: clients that never
read, existence probes, floods of queues and bytes, old TLS, wrong paths, huge frame headers.

Each attack is bounded in count and time, and each test checks that a legitimate client is
still served while it runs. The timing of refusals is measured by bench/server_abuse.py;
here the *path* is checked: every refusal costs one store lookup and one signature
verification, whether or not the queue exists and whether or not it was cached.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio_websocket

from protocol import crypto
from protocol.address import ServerAddress
from protocol.errors import ServerError
from protocol.queue import (
    ID_SIZE,
    MAX_BODY,
    PROTOCOL_VERSION,
    Ack,
    ClientHello,
    Del,
    Err,
    ErrorCode,
    Get,
    Ids,
    Key,
    Msg,
    Ok,
    Ping,
    Send,
    SKey,
    Sub,
    decode_server_hello,
    encode,
)
from protocol.server import QueueServer, ServerConfig
from protocol.transport import encode_frames
from tests.protocol.queues import QueueOwner, RawSession

# ---------------------------------------------------------------------- helpers


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
    assert condition(), f"{what}: not within {timeout} s"


class Legitimate:
    """A client doing SEND→MSG→ACK cycles on its own queue, timing each one."""

    def __init__(self, client, inbox, owner: QueueOwner) -> None:
        self.client, self.inbox, self.owner = client, inbox, owner
        self.latencies: list[float] = []

    async def cycle(self) -> None:
        started = time.perf_counter()
        assert await self.client.request(Send(0, b"legit"), entity_id=self.owner.snd_id) == Ok()
        message = await self.client.request(Get(), entity_id=self.owner.rcv_id, key=self.owner.auth)
        assert isinstance(message, Msg) and self.owner.open(message).body == b"legit"
        reply = await self.client.request(
            Ack(message.msg_id), entity_id=self.owner.rcv_id, key=self.owner.auth
        )
        assert reply == Ok()
        self.latencies.append(time.perf_counter() - started)

    async def run_until(self, done: trio.Event, pause: float = 0.01) -> None:
        while not done.is_set():
            await self.cycle()
            await trio.sleep(pause)

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] if len(self.latencies) > 1 else 0


async def legitimate(server: QueueServer, open_client) -> Legitimate:
    client, inbox = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    return Legitimate(client, inbox, owner)


# ---------------------------------------------------------------------- 1. clients that never read


class NonReader:
    """A session that reads the server's hello and then never reads again: TLS and the
    websocket handshake by hand, commands sent as one blob of masked frames."""

    def __init__(self, stream: trio.SSLStream, session_id: bytes) -> None:
        self.stream = stream
        self.codec = RawSession(None, session_id)  # type: ignore[arg-type]  # frames only

    @classmethod
    async def open(cls, address: ServerAddress) -> NonReader:
        tcp = await trio.open_tcp_stream(address.host, address.port)
        stream = trio.SSLStream(tcp, _client_context(), server_hostname=address.host)
        key = base64.b64encode(os.urandom(16))
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: queue\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some()
            data = data.partition(b"\r\n\r\n")[2]
            while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):  # the hello: < 126 B
                data += await stream.receive_some()
        hello = decode_server_hello(data[2 : 2 + data[1]])
        await stream.send_all(encode_frames([encode(ClientHello(PROTOCOL_VERSION))], mask=True))
        return cls(stream, hello.session_id)

    async def send(self, frames: list[bytes]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(encode_frames(frames, mask=True))

    async def reset_by_server(self) -> bool:
        """Whether the server has dropped the connection (a read fails or ends at once)."""
        try:
            with trio.fail_after(5):
                while await self.stream.receive_some(1 << 20):
                    pass
        except trio.BrokenResourceError:
            return True
        return True


NON_READERS = 6
GETS_PER_READER = 1500  # 16 KiB answers each: far more than the socket buffers hold


async def test_clients_that_never_read_are_disconnected_and_memory_stays_bounded(
    start_server: Callable[..., QueueServer], open_client, nursery: trio.Nursery, caplog
) -> None:
    """Each attacker subscribes to its queue holding a 16 KiB message, pipelines GETs of it
    and never reads a reply. The server stops reading an attacker's commands once its outbox
    holds `outbox_bytes`, never queues more than a burst of replies beyond that, and when a
    write cannot go out for `send_timeout` it resets the TCP connection and releases the
    subscription. Meanwhile a legitimate client is served."""
    config = ServerConfig(outbox_bytes=64 * 1024, send_timeout=1.0)
    server = start_server("slow", config=config)
    legit = await legitimate(server, open_client)
    await legit.cycle()
    # A queue of its own for each attacker, with one big message in it: were the queue shared,
    # each SUB would take it over, and the GETs of the attackers it was taken from would be
    # answered with small refusals their socket buffers absorb (on busy cores the blobs
    # interleave so, and those sessions were never too slow).
    owner_client, _ = open_client(server)
    victims = [QueueOwner() for _ in range(NON_READERS)]
    for victim in victims:
        await victim.create(owner_client)
        big = Send(0, os.urandom(MAX_BODY))
        assert await owner_client.request(big, entity_id=victim.snd_id) == Ok()
    baseline = server.session_count
    peak_outbox = 0

    def outboxes_watched() -> bool:
        nonlocal peak_outbox
        for session in list(server._sessions):
            if session.outbox is not None:
                peak_outbox = max(peak_outbox, session.outbox.bytes)
        return True

    # With a queue of its own each attacker fills its outbox within a second, so on busy
    # cores the six are not all counted at once: each closing is counted instead.
    attackers = [await NonReader.open(server.address) for _ in range(NON_READERS)]
    for i, (attacker, victim) in enumerate(zip(attackers, victims, strict=True)):
        frames = [attacker.codec.frame(Sub(), victim.rcv_id, victim.auth)]
        frames += [attacker.codec.frame(Get(), victim.rcv_id, victim.auth)] * GETS_PER_READER
        nursery.start_soon(attacker.send, frames, name=f"non-reader {i}")
    done = trio.Event()
    async with trio.open_nursery() as attack:
        attack.start_soon(legit.run_until, done)
        await wait_until(
            lambda: (
                outboxes_watched()
                and server.session_count == baseline
                and _too_slow_closings(caplog) == NON_READERS
            ),
            25,
            "the non-reading sessions were closed",
        )
        served_during_the_attack = len(legit.latencies)
        # a few more cycles for the p99 (the attack may end within 2 cycles on busy cores)
        await wait_until(lambda: len(legit.latencies) >= 3, 10, "three legitimate cycles")
        done.set()
    assert served_during_the_attack >= 1, "the legitimate client was not served meanwhile"
    assert server.broker.subscriber_count() == 0  # the subscriptions were released
    # At most the budget and one burst of replies beyond it (16 KiB MSGs, 17 frames).
    assert 0 < peak_outbox <= config.outbox_bytes + (config.receive_queue + 1) * 17 * 1024
    for attacker in attackers:  # dropped by the server: a read fails or ends at once
        assert await attacker.reset_by_server()
    assert legit.p99() < 0.5, legit.latencies
    await legit.cycle()


def _too_slow_closings(caplog) -> int:
    return sum(1 for r in caplog.records if r.getMessage() == "session too slow, closing it")


async def test_pushes_to_a_busy_session_wait_and_are_all_delivered(
    start_server: Callable[..., QueueServer], open_client
) -> None:
    """A subscriber whose outbox is full gets its pushed MSGs later, not never and not twice:
    a resubscription of many queues that each hold a big message goes through whole."""
    server = start_server("pushes", config=ServerConfig(outbox_bytes=32 * 1024))
    recipient, inbox = open_client(server)
    sender, _ = open_client(server)
    owners = [QueueOwner() for _ in range(24)]
    for owner in owners:
        await owner.create(recipient)
        body = owner.rcv_id + os.urandom(MAX_BODY - ID_SIZE)
        assert await sender.request(Send(0, body), entity_id=owner.snd_id) == Ok()
    failures = await recipient.subscribe_many((owner.rcv_id, owner.auth) for owner in owners)
    assert not any(failures.values())
    seen: dict[bytes, bytes] = {}
    with trio.fail_after(20):
        while len(seen) < len(owners):
            rcv_id, message = await inbox.next(timeout=20)
            assert isinstance(message, Msg) and rcv_id not in seen
            owner = next(o for o in owners if o.rcv_id == rcv_id)
            assert owner.open(message).body.startswith(rcv_id)
            seen[rcv_id] = message.msg_id
    for owner in owners:  # each ACK empties its queue
        reply = await recipient.request(
            Ack(seen[owner.rcv_id]), entity_id=owner.rcv_id, key=owner.auth
        )
        assert reply == Ok()
    await inbox.expect_nothing()


# ---------------------------------------------------------------------- 2. no existence oracle


class VerifyCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = crypto.is_valid_signature

        def counting(*args: bytes) -> bool:
            self.count += 1
            return real(*args)

        monkeypatch.setattr(crypto, "is_valid_signature", counting)


async def test_refusals_cost_the_same_whether_or_not_the_queue_exists(
    start_server: Callable[..., QueueServer], nursery: trio.Nursery, monkeypatch
) -> None:
    """Every AUTH refusal makes exactly one store lookup and one signature verification:
    for an unknown id, for a known queue with a wrong signature whether its record is cached
    or not, and for a signed SEND to a queue that takes only unsigned ones. Alone and in a
    pipelined burst (verified ahead on a thread)."""
    server = start_server("oracle", config=ServerConfig(auth_failures=1_000_000))
    broker = server.broker
    verifies = VerifyCounter(monkeypatch)
    raw = await RawSession.open(nursery, server.address)
    stranger = crypto.SigningKey.generate()
    secured, unsecured = QueueOwner(), QueueOwner()
    for owner in (secured, unsecured):
        ids = await raw.command(owner.new(), key=owner.auth)
        assert isinstance(ids, Ids)
        owner.ids = ids
    sender = crypto.SigningKey.generate()
    assert await raw.command(Key(sender.public), secured.rcv_id, secured.auth) == Ok()

    def probes(known: bool) -> list[bytes]:
        rcv = secured.rcv_id if known else os.urandom(ID_SIZE)
        snd = secured.snd_id if known else os.urandom(ID_SIZE)
        frames = [raw.frame(command, rcv, stranger) for command in (Sub(), Get(), Del())]
        frames.append(raw.frame(Ack(os.urandom(ID_SIZE)), rcv, stranger))
        frames.append(raw.frame(Send(0, b"x"), snd, stranger))
        frames.append(raw.frame(SKey(stranger.public), snd, crypto.SigningKey.generate()))
        if known:  # signed, to a queue that takes unsigned SENDs only
            frames.append(raw.frame(Send(0, b"x"), unsecured.snd_id, stranger))
        else:
            frames.append(raw.frame(Send(0, b"x"), os.urandom(ID_SIZE), stranger))
        return frames

    async def cost(frames: list[bytes], pipelined: bool) -> list[tuple[int, int]]:
        """(store lookups, verifications) per frame; all of them AUTH."""
        costs = []
        if pipelined:
            lookups, verified = broker.stats.store_lookups, verifies.count
            for frame in frames:
                await raw.send_raw(frame)
            for _ in frames:
                assert (await raw.receive())[1] == Err(ErrorCode.AUTH)
            total = (broker.stats.store_lookups - lookups, verifies.count - verified)
            return [total]
        for frame in frames:
            lookups, verified = broker.stats.store_lookups, verifies.count
            assert await raw.exchange(frame) == Err(ErrorCode.AUTH)
            costs.append((broker.stats.store_lookups - lookups, verifies.count - verified))
        return costs

    for pipelined in (False, True):
        broker.forget_cached_queues()  # known but not cached …
        uncached = await cost(probes(known=True), pipelined)
        cached = await cost(probes(known=True), pipelined)  # … and now cached
        unknown = await cost(probes(known=False), pipelined)
        per_frame = [(1, 1)] * len(probes(True)) if not pipelined else [(7, 7)]
        assert unknown == per_frame, (pipelined, unknown)
        assert cached == per_frame, (pipelined, cached)
        assert uncached == per_frame, (pipelined, uncached)
    # The owner's own commands still come from the cache: no lookup at all.
    lookups = broker.stats.store_lookups
    assert await raw.command(Send(0, b"ok"), secured.snd_id, sender) == Ok()
    assert isinstance(await raw.command(Get(), secured.rcv_id, secured.auth), Msg)
    assert broker.stats.store_lookups == lookups


# ---------------------------------------------------------------------- 3. limits


async def test_a_session_creates_a_bounded_number_of_queues_per_window(
    start_server: Callable[..., QueueServer], open_client
) -> None:
    now = [1_000_000.0]
    config = ServerConfig(new_queues=20, new_queue_window=60.0)
    server = start_server("newlimit", config=config, clock=lambda: now[0])
    client, _ = open_client(server)
    for _ in range(20):
        await QueueOwner().create(client)
    with pytest.raises(ServerError) as refused:
        await QueueOwner().create(client)
    assert refused.value.code == "QUOTA" and refused.value.temporary
    other, _ = open_client(server)  # the limit is per session
    await QueueOwner().create(other)
    assert server.store.stats()["queues"] == 21
    now[0] += 61  # the window moved on
    await QueueOwner().create(client)


async def test_queues_and_the_store_are_bounded_in_bytes(
    start_server: Callable[..., QueueServer], open_client
) -> None:
    config = ServerConfig(quota=100, quota_bytes=40_000, store_bytes=70_000)
    server = start_server("bytes", config=config)
    client, _ = open_client(server)
    first, second = QueueOwner(), QueueOwner()
    await first.create(client)
    await second.create(client)
    body = bytes(10_000)
    sent = 0
    with pytest.raises(ServerError) as full:
        while True:
            assert await client.request(Send(0, body), entity_id=first.snd_id) == Ok()
            sent += 1
    assert full.value.code == "QUOTA" and sent == 3  # 4 of 10 kB would pass 40,000 bytes
    # The store holds ~30 kB of the 70 kB: the second queue gets 3 more, then QUOTA too.
    stored = 0
    with pytest.raises(ServerError) as store_full:
        while True:
            assert await client.request(Send(0, body), entity_id=second.snd_id) == Ok()
            stored += 1
    assert store_full.value.code == "QUOTA" and stored == 3
    assert server.store.stored_bytes <= config.store_bytes
    # Each queue ends with its quota marker; reading the first frees room for the second.
    while True:
        message = await client.request(Get(), entity_id=first.rcv_id, key=first.auth)
        if message == Ok():
            break
        await client.request(Ack(message.msg_id), entity_id=first.rcv_id, key=first.auth)
    while True:
        message = await client.request(Get(), entity_id=second.rcv_id, key=second.auth)
        if message == Ok():
            break
        await client.request(Ack(message.msg_id), entity_id=second.rcv_id, key=second.auth)
    assert server.store.stored_bytes == 0
    assert await client.request(Send(0, body), entity_id=second.snd_id) == Ok()


async def test_acknowledged_and_expired_messages_are_gone_from_the_files(
    start_server: Callable[..., QueueServer], open_client, tmp_path: Path
) -> None:
    now = [1_000_000.0]
    server = start_server("scrub", clock=lambda: now[0])
    client, _ = open_client(server)
    owner = QueueOwner()
    await owner.create(client)
    for body in (b"to be acked", b"to expire"):
        assert await client.request(Send(0, body), entity_id=owner.snd_id) == Ok()
    acked = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
    assert isinstance(acked, Msg)
    assert await client.request(Ack(acked.msg_id), entity_id=owner.rcv_id, key=owner.auth) != Err(
        ErrorCode.NO_MSG
    )
    expired = await client.request(Get(), entity_id=owner.rcv_id, key=owner.auth)
    assert isinstance(expired, Msg)
    gone = [acked.enc_body, expired.enc_body]
    now[0] += server.config.message_ttl + 1
    cutoff = int((now[0] - server.config.message_ttl) * 1000)
    assert server.store.expire_messages(cutoff) == 1
    server.store.scrub()
    files = [tmp_path / name for name in ("scrub.db", "scrub.db-wal")]
    for path in files:
        data = path.read_bytes() if path.exists() else b""
        for ciphertext in gone:
            assert ciphertext not in data, path.name


# ---------------------------------------------------------------------- 4. transport


async def test_an_old_tls_client_gets_an_alert_at_once(
    start_server: Callable[..., QueueServer],
) -> None:
    server = start_server("tls12")
    address = server.address

    def handshake() -> tuple[BaseException | None, float]:
        context = _client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        started = time.monotonic()
        with socket.create_connection((address.host, address.port), timeout=10) as sock:
            try:
                with context.wrap_socket(sock) as tls:
                    tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                return exc, time.monotonic() - started
        return None, time.monotonic() - started

    error, seconds = await trio.to_thread.run_sync(handshake)
    assert isinstance(error, ssl.SSLError) and "PROTOCOL_VERSION" in str(error).upper(), error
    assert seconds < 3, seconds


async def _websocket(address: ServerAddress, nursery: trio.Nursery, path: str):
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, _client_context(), server_hostname=address.host)
    await stream.do_handshake()
    return await trio_websocket.wrap_client_stream(nursery, stream, address.host, path)


async def test_another_websocket_path_is_refused(
    start_server: Callable[..., QueueServer], nursery: trio.Nursery
) -> None:
    server = start_server("path")
    statuses = []
    with trio.fail_after(5):
        try:
            async with trio.open_nursery() as handshake:
                await _websocket(server.address, handshake, "/admin")
        except* trio_websocket.ConnectionRejected as refused:
            statuses = [exc.status_code for exc in refused.exceptions]  # type: ignore[attr-defined]
    assert statuses == [404]
    ws = await _websocket(server.address, nursery, "/")
    decode_server_hello(await ws.get_message())
    await ws.aclose()


async def test_a_huge_frame_header_closes_the_connection_before_any_body(
    start_server: Callable[..., QueueServer], open_client, nursery: trio.Nursery
) -> None:
    server = start_server("huge")
    legit = await legitimate(server, open_client)
    await legit.cycle()
    baseline = server.session_count  # the legitimate client's
    address = server.address
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, _client_context(), server_hostname=address.host)
    ws = await trio_websocket.wrap_client_stream(nursery, stream, address.host, "/")
    decode_server_hello(await ws.get_message())
    await ws.send_message(encode(ClientHello(PROTOCOL_VERSION)))
    await wait_until(lambda: server.session_count == baseline + 1, 5, "the session is up")
    # A binary frame announcing 2^63 - 1 bytes, masked, and then nothing: no body follows.
    await stream.send_all(bytes((0x82, 0xFF)) + (2**63 - 1).to_bytes(8, "big") + os.urandom(4))
    await wait_until(lambda: server.session_count == baseline, 5, "the connection was closed")
    with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
        await ws.get_message()
    await legit.cycle()
    assert await legit.client.request(Ping()) is not None


def test_duplex_server_takes_the_limits_as_flags() -> None:
    from actors.cli import _parser, _server_config

    args = _parser().parse_args(
        ["server", "--new-queues", "5", "--quota-bytes", "1000", "--message-ttl", "60"]
    )
    config = _server_config(args, ServerConfig)
    assert isinstance(config, ServerConfig)
    assert (config.new_queues, config.quota_bytes, config.message_ttl) == (5, 1000, 60.0)
    assert config.auth_failures == ServerConfig().auth_failures  # the rest: the defaults
