"""`QueueClient`: one pinned, pipelined, self-healing session to one queue server (trio).

Theory of operation
-------------------
A client is created with the server's address and a nursery of the caller's trio loop (the
runtime's I/O thread). It connects lazily, on the first request or subscription:

1. TCP, then TLS *without* CA checks (queue servers are self-signed) and then the pin: the
   SHA-256 of the presented certificate must equal the address's fingerprint, or the
   connection is closed before a single byte of the protocol is sent (`ServerIdentityError`);
2. the websocket handshake, the server's hello (its session id, which every signature
   covers), our hello;
3. the resubscription of every queue this client was subscribed to, pipelined in one batch.

Requests are pipelined: each gets a fresh corr id and waits for the reply with that corr id,
with its own timeout (`CommandTimeout`). Frames with an empty corr id are pushes (`MSG`,
`END`) and go to `on_push(entity_id, reply)`; a `MSG` that answers a request on a subscribed
queue (`ACK` and `SUB` answer with the next message) goes there too, so the owner of a queue
sees every delivery through one path. A ping every `ping_interval` proves the connection
alive. When the connection drops, every waiting request fails with `NetworkError`, `on_state`
is told, and the client reconnects with exponential backoff as long as it has subscriptions
or waiting requests.

Errors carry `temporary`: `NetworkError`, `CommandTimeout`, `ERR QUOTA` and `ERR INTERNAL`
may succeed later; `AUTH`, `CMD …`, `LARGE_MSG`, `NO_MSG` and a wrong fingerprint will not.
"""

from __future__ import annotations

import itertools
import logging
import math
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio
import trio_websocket

from protocol import crypto
from protocol.address import ServerAddress
from protocol.errors import (
    CommandTimeout,
    NetworkError,
    QueueFault,
    ServerError,
    ServerIdentityError,
)
from protocol.queue import (
    PROTOCOL_VERSION,
    WEBSOCKET_MAX_MESSAGE,
    ClientHello,
    Command,
    End,
    Err,
    Ids,
    Msg,
    New,
    Ping,
    Reply,
    Sub,
    WireError,
    decode_server_frame,
    decode_server_hello,
    encode,
    encode_transmission,
    signed_payload,
)
from protocol.transport import MESSAGE_QUEUE, RECEIVE_BYTES, SharedStream, encode_frames

log = logging.getLogger(__name__)

PushHandler = Callable[[bytes, Reply], None]
_CONNECTION_GONE = (
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)
StateHandler = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    command_timeout: float = 15.0
    connect_timeout: float = 10.0
    ping_interval: float = 30.0
    backoff_initial: float = 0.05
    backoff_max: float = 10.0
    tls: bool = True


class _Connection:
    """One live websocket with its session id; replaced on every reconnect.

    Requests do not write to the websocket themselves: they queue their frame in `outbox`
    and the connection's writer frames whatever is queued in one pass and sends it as one
    write (protocol/transport.py). A burst of pipelined requests then costs one TLS record
    and one system call, and a request cancelled by its timeout can never leave half a
    frame on the stream.
    """

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: SharedStream, session_id: bytes
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.session_id = session_id
        self.outbox, self._frames = trio.open_memory_channel[bytes](math.inf)

    async def write(self) -> None:
        """Send queued frames until the connection is closed (run as its own task)."""
        async for first in self._frames:
            frames = [first]
            while True:
                try:
                    frames.append(self._frames.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self.ws.closed:
                return
            await self.stream.send_all(encode_frames(frames, mask=True))


class QueueClient:
    """A session to one queue server; see the module docstring."""

    def __init__(
        self,
        address: ServerAddress,
        nursery: trio.Nursery,
        *,
        on_push: PushHandler | None = None,
        on_state: StateHandler | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self.address = address
        self.config = config or ClientConfig()
        self._nursery = nursery
        self._on_push = on_push or (lambda entity, reply: None)
        self._on_state = on_state or (lambda connected: None)
        self._corr_ids = itertools.count(1)
        self._waiting: dict[bytes, _Waiter] = {}
        self._subscriptions: dict[bytes, crypto.SigningKey] = {}
        self._subscribing: set[bytes] = set()
        self._connection: _Connection | None = None
        self._connection_scope: trio.CancelScope | None = None
        self._running = False
        self._closed = False
        self._wanted = trio.Event()  # set when someone needs a connection
        self._attempt_done = trio.Event()  # set after every connection attempt
        self._last_error: QueueFault | None = None
        self._paused = False
        self._resumed = trio.Event()
        self._resumed.set()
        self.reconnects = 0

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def subscriptions(self) -> frozenset[bytes]:
        return frozenset(self._subscriptions)

    async def request(
        self,
        command: Command,
        *,
        entity_id: bytes = b"",
        key: crypto.SigningKey | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one command and return its reply; `ERR` raises `ServerError`."""
        wait = self.config.command_timeout if timeout is None else timeout
        with trio.move_on_after(wait) as scope:
            reply = await self._exchange(command, entity_id, key)
        if scope.cancelled_caught:
            raise CommandTimeout(
                f"{type(command).__name__} to {self.address} got no reply in {wait}s"
            )
        if isinstance(reply, Err):
            raise ServerError(reply.code.value)
        if isinstance(command, New) and command.subscribe and isinstance(reply, Ids) and key:
            self._subscriptions[reply.rcv_id] = key  # NEW subscribed this session already
        return reply

    async def subscribe(self, rcv_id: bytes, key: crypto.SigningKey) -> None:
        """SUB a queue and keep it subscribed across reconnects; its MSGs go to `on_push`.

        A network failure leaves the queue wanted: the next connection subscribes it. A
        server's refusal (AUTH: the queue is gone) forgets it.
        """
        self._subscriptions[rcv_id] = key
        self._subscribing.add(rcv_id)
        try:
            await self.request(Sub(), entity_id=rcv_id, key=key)
        except ServerError:
            self._subscriptions.pop(rcv_id, None)
            raise
        finally:
            self._subscribing.discard(rcv_id)

    async def subscribe_many(
        self, queues: Iterable[tuple[bytes, crypto.SigningKey]]
    ) -> dict[bytes, QueueFault | None]:
        """Subscribe a batch, pipelined; returns the failure (or None) per queue."""
        results: dict[bytes, QueueFault | None] = {}

        async def one(rcv_id: bytes, key: crypto.SigningKey) -> None:
            try:
                await self.subscribe(rcv_id, key)
                results[rcv_id] = None
            except QueueFault as exc:
                results[rcv_id] = exc

        async with trio.open_nursery() as nursery:
            for rcv_id, key in queues:
                nursery.start_soon(one, rcv_id, key)
        return results

    def forget_subscription(self, rcv_id: bytes) -> None:
        """Stop resubscribing a queue (after DEL, or when its owner goes away)."""
        self._subscriptions.pop(rcv_id, None)

    @property
    def paused(self) -> bool:
        return self._paused

    def drop_connection(self, *, pause: bool = False) -> None:
        """Drop the live connection as a network failure would: waiting requests get
        `NetworkError` and the client reconnects with its backoff. With `pause` it does not
        reconnect, and requests fail at once with `NetworkError`, until `resume()`. For
        fault drills (the debug console); call it from the client's trio loop."""
        if pause and not self._paused:
            self._paused = True
            self._resumed = trio.Event()
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    def resume(self) -> None:
        """End a `drop_connection(pause=True)`: connect again when someone needs it."""
        self._paused = False
        self._resumed.set()

    async def aclose(self) -> None:
        """Drop the connection and stop reconnecting; waiting requests get NetworkError."""
        self._closed = True
        self._fail_waiting(NetworkError("client closed"))
        self._resumed.set()
        self._wanted.set()
        if self._connection_scope is not None:
            self._connection_scope.cancel()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ requests

    async def _exchange(
        self, command: Command, entity_id: bytes, key: crypto.SigningKey | None
    ) -> Reply:
        connection = await self._connected()
        corr_id = next(self._corr_ids).to_bytes(8, "big")
        body = encode(command)
        signature = b""
        if key is not None:
            signature = key.sign(signed_payload(connection.session_id, corr_id, entity_id, body))
        waiter = _Waiter()
        self._waiting[corr_id] = waiter
        try:
            try:
                connection.outbox.send_nowait(
                    encode_transmission(corr_id, entity_id, body, signature)
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise NetworkError(f"connection to {self.address} lost") from exc
            outcome = await waiter.wait()
        finally:
            self._waiting.pop(corr_id, None)
        if isinstance(outcome, QueueFault):
            raise outcome
        return outcome

    async def _connected(self) -> _Connection:
        """The live connection, connecting first if needed; NetworkError if that fails."""
        if self._closed:
            raise NetworkError("client closed")
        if self._paused:
            raise NetworkError(f"the session to {self.address} is paused")
        while self._connection is None:
            if not self._running:
                self._running = True
                self._nursery.start_soon(self._maintain)
            attempt = self._attempt_done
            self._wanted.set()
            await attempt.wait()
            if self._connection is None:
                raise self._last_error or NetworkError(f"cannot connect to {self.address}")
        return self._connection

    # ------------------------------------------------------------------ the connection task

    async def _maintain(self) -> None:
        """Connect, serve, reconnect with backoff, while anyone needs the connection."""
        failures = 0
        try:
            while not self._closed:
                await self._wanted.wait()
                await self._resumed.wait()
                if self._closed:
                    return
                try:
                    await self._serve_one_connection()
                    failures = 0
                except* QueueFault as group:
                    self._connection_failed(group.exceptions[0])
                    failures += 1
                except* _CONNECTION_GONE as group:
                    self._connection_failed(NetworkError(f"{self.address}: {group.exceptions[0]}"))
                    failures += 1
                finally:
                    self._finish_attempt()
                if self._closed:
                    return
                if not self._subscriptions and not self._waiting:
                    self._wanted = trio.Event()  # idle: reconnect only when asked again
                    continue
                await trio.sleep(self._backoff(failures))
        finally:
            self._running = False

    def _connection_failed(self, error: BaseException) -> None:
        assert isinstance(error, QueueFault)
        self._last_error = error
        log.info(
            "queue server unreachable", extra={"server": str(self.address), "error": str(error)}
        )

    def _backoff(self, failures: int) -> float:
        if failures == 0:
            return self.config.backoff_initial
        delay = self.config.backoff_initial * math.pow(2, min(failures, 20))
        return min(delay, self.config.backoff_max)

    def _finish_attempt(self) -> None:
        self._attempt_done.set()
        self._attempt_done = trio.Event()

    async def _serve_one_connection(self) -> None:
        async with trio.open_nursery() as nursery:
            connection = await self._open(nursery)
            self._connection = connection
            self._connection_scope = nursery.cancel_scope
            self.reconnects += 1
            self._finish_attempt()
            self._on_state(True)
            try:
                nursery.start_soon(connection.write)
                nursery.start_soon(self._resubscribe)
                nursery.start_soon(self._ping_loop, connection)
                await self._read_loop(connection)
            finally:
                connection.outbox.close()
                self._connection = None
                self._fail_waiting(NetworkError(f"connection to {self.address} lost"))
                self._on_state(False)
                # Cancelling ends the websocket's reader task, which closes the TCP stream; a
                # close handshake would need that very task, so none is attempted.
                nursery.cancel_scope.cancel()

    async def _open(self, nursery: trio.Nursery) -> _Connection:
        host, port = self.address.host, self.address.port
        try:
            with trio.fail_after(self.config.connect_timeout):
                tcp = await trio.open_tcp_stream(host, port)
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
                if self.config.tls:
                    stream = trio.SSLStream(tcp, _pinning_context(), server_hostname=host)
                    await stream.do_handshake()
                    presented = stream.getpeercert(binary_form=True) or b""
                    if crypto.fingerprint(presented) != self.address.fingerprint:
                        await stream.aclose()
                        raise ServerIdentityError(
                            f"{host}:{port} presented a certificate that is not {self.address}"
                        )
                held = SharedStream(stream)
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    held,
                    host,
                    "/",
                    message_queue_size=MESSAGE_QUEUE,
                    max_message_size=WEBSOCKET_MAX_MESSAGE,
                    receive_buffer_size=RECEIVE_BYTES,
                )
                hello = decode_server_hello(await ws.get_message())
                if not hello.min_version <= PROTOCOL_VERSION <= hello.max_version:
                    raise ServerError("CMD SYNTAX", "no protocol version in common")
                await ws.send_message(encode(ClientHello(PROTOCOL_VERSION)))
                return _Connection(ws, held, hello.session_id)
        except trio.TooSlowError as exc:
            raise NetworkError(f"connecting to {host}:{port} timed out") from exc
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise NetworkError(f"cannot connect to {host}:{port}: {exc}") from exc
        except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            raise NetworkError(f"websocket to {host}:{port} failed: {exc}") from exc
        except WireError as exc:
            raise NetworkError(f"{host}:{port} does not speak the queue protocol") from exc

    async def _read_loop(self, connection: _Connection) -> None:
        while True:
            try:
                frame = await connection.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if not isinstance(frame, bytes):
                continue
            try:
                transmission, reply = decode_server_frame(frame)
            except WireError:
                log.warning("malformed frame from server", extra={"server": str(self.address)})
                continue
            entity = transmission.entity_id
            if isinstance(reply, Msg | End) and (
                not transmission.corr_id
                or (isinstance(reply, Msg) and entity in self._subscriptions)
            ):
                if isinstance(reply, End):
                    self._subscriptions.pop(entity, None)
                self._dispatch_push(entity, reply)
            waiter = self._waiting.get(transmission.corr_id)
            if waiter is not None:
                waiter.set(reply)

    def _dispatch_push(self, entity: bytes, reply: Reply) -> None:
        try:
            self._on_push(entity, reply)
        except Exception:
            log.exception("push handler failed", extra={"server": str(self.address)})

    async def _resubscribe(self) -> None:
        # A queue whose SUB is on its way already must not be subscribed twice: each SUB
        # makes the server deliver the waiting message again.
        queues = [(r, k) for r, k in self._subscriptions.items() if r not in self._subscribing]
        if queues:
            failures = await self.subscribe_many(queues)
            lost = [rcv_id for rcv_id, error in failures.items() if isinstance(error, ServerError)]
            if lost:
                log.warning(
                    "queues not resubscribed",
                    extra={"server": str(self.address), "count": len(lost)},
                )

    async def _ping_loop(self, connection: _Connection) -> None:
        while True:
            await trio.sleep(self.config.ping_interval)
            try:
                await self.request(Ping(), timeout=self.config.command_timeout)
            except QueueFault:
                log.info("ping failed, reconnecting", extra={"server": str(self.address)})
                await connection.ws.aclose()
                return

    def _fail_waiting(self, error: QueueFault) -> None:
        for waiter in list(self._waiting.values()):
            waiter.set(error)


class _Waiter:
    """Where one request's outcome arrives: the first reply or failure set wins."""

    __slots__ = ("_done", "_outcome")

    def __init__(self) -> None:
        # An Event, not a memory channel: requests are the hot path and a channel pair
        # costs several times as much to make.
        self._done = trio.Event()
        self._outcome: Reply | QueueFault | None = None

    def set(self, outcome: Reply | QueueFault) -> None:
        if not self._done.is_set():
            self._outcome = outcome
            self._done.set()

    async def wait(self) -> Reply | QueueFault:
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome


def _pinning_context() -> ssl.SSLContext:
    # No CA and no hostname check: the pin on the certificate's fingerprint replaces both.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context
