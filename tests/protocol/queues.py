"""Test helpers for the queue protocol: servers on loopback, raw sessions, queue owners.

`RawSession` speaks the protocol by hand (hello, raw frames) so tests can send exactly the
bytes they mean — malformed ones, or a signed frame captured on another session.
`QueueOwner` holds a recipient's keys and does the usual steps through a `QueueClient`.
"""

from __future__ import annotations

import itertools
import ssl
from dataclasses import dataclass, field

import trio
import trio_websocket

from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import QueueClient
from protocol.queue import (
    PROTOCOL_VERSION,
    ClientHello,
    Command,
    Ids,
    MessageContent,
    Msg,
    New,
    QueueMode,
    Reply,
    Transmission,
    decode_content,
    decode_server_frame,
    decode_server_hello,
    encode,
    encode_transmission,
    signed_payload,
)


class RawSession:
    """A hand-driven websocket session: send any bytes, read replies in order."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, session_id: bytes) -> None:
        self.ws = ws
        self.session_id = session_id
        self._corr = itertools.count(1)

    @classmethod
    async def open(cls, nursery: trio.Nursery, address: ServerAddress) -> RawSession:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tcp = await trio.open_tcp_stream(address.host, address.port)
        stream = trio.SSLStream(tcp, context, server_hostname=address.host)
        await stream.do_handshake()
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, address.host, "/", max_message_size=1 << 20
        )
        hello = decode_server_hello(await ws.get_message())
        await ws.send_message(encode(ClientHello(PROTOCOL_VERSION)))
        return cls(ws, hello.session_id)

    def corr_id(self) -> bytes:
        return next(self._corr).to_bytes(4, "big")

    def frame(
        self,
        command: Command,
        entity_id: bytes = b"",
        key: crypto.SigningKey | None = None,
        corr_id: bytes | None = None,
    ) -> bytes:
        corr_id = corr_id or self.corr_id()
        body = encode(command)
        signature = b""
        if key is not None:
            signature = key.sign(signed_payload(self.session_id, corr_id, entity_id, body))
        return encode_transmission(corr_id, entity_id, body, signature)

    async def send_raw(self, frame: bytes) -> None:
        await self.ws.send_message(frame)

    async def receive(self, timeout: float = 5.0) -> tuple[Transmission, Reply]:
        with trio.fail_after(timeout):
            return decode_server_frame(await self.ws.get_message())

    async def exchange(self, frame: bytes, timeout: float = 5.0) -> Reply:
        await self.send_raw(frame)
        return (await self.receive(timeout))[1]

    async def command(
        self, command: Command, entity_id: bytes = b"", key: crypto.SigningKey | None = None
    ) -> Reply:
        return await self.exchange(self.frame(command, entity_id, key))

    async def aclose(self) -> None:
        await self.ws.aclose()


@dataclass
class QueueOwner:
    """A recipient's keys for one queue, and what it received."""

    mode: QueueMode = QueueMode.MESSAGING
    auth: crypto.SigningKey = field(default_factory=crypto.SigningKey.generate)
    dh: crypto.DhKey = field(default_factory=crypto.DhKey.generate)
    ids: Ids | None = None

    @property
    def rcv_id(self) -> bytes:
        assert self.ids is not None
        return self.ids.rcv_id

    @property
    def snd_id(self) -> bytes:
        assert self.ids is not None
        return self.ids.snd_id

    def new(self, subscribe: bool = False) -> New:
        return New(self.auth.public, self.dh.public, self.mode, subscribe)

    async def create(self, client: QueueClient, subscribe: bool = False) -> Ids:
        reply = await client.request(self.new(subscribe), key=self.auth)
        assert isinstance(reply, Ids)
        self.ids = reply
        return reply

    def open(self, message: Msg) -> MessageContent:
        assert self.ids is not None
        key = crypto.server_recipient_key(self.ids.srv_dh_key, self.dh)
        return decode_content(crypto.open_with_id(key, message.msg_id, message.enc_body))


class Inbox:
    """Collects a client's pushes; `next()` waits for one with a deadline."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, Reply]] = []
        self._new = trio.Event()

    def push(self, entity_id: bytes, reply: Reply) -> None:
        self.items.append((entity_id, reply))
        self._new.set()

    async def next(self, timeout: float = 5.0) -> tuple[bytes, Reply]:
        with trio.fail_after(timeout):
            while not self.items:
                self._new = trio.Event()
                await self._new.wait()
        return self.items.pop(0)

    async def expect_nothing(self) -> None:
        """Let the loop run a little and check no push arrived (for negative checks)."""
        for _ in range(50):
            await trio.sleep(0.002)
        assert not self.items, self.items
