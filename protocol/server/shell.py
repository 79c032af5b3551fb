"""`QueueServer`: the queue protocol served over TLS websockets with trio.

A thin shell around `QueueBroker` (protocol/server/broker.py): it accepts TCP connections, runs TLS
and the websocket handshake (trio-websocket over the connection's `HeldStream`), performs
the hello (random session id), runs each received frame through the broker (on the trio
thread for SQLite, whose short transactions cost less than a thread hop; in worker threads
for a networked database), and writes the returned frames to their sessions. Each session
has one writer task fed by a bounded channel, so a slow reader cannot stall anyone else:
when its channel is full the session is closed (it will resubscribe and get its undelivered
messages again). The writer sends everything queued when it wakes as one write: a burst of
replies costs one TLS record and one system call, not one per frame.

A session is closed as abusive after `max_consecutive_errors` undecodable frames or
`max_consecutive_auth_failures` commands answered AUTH in a row (ServerConfig); the replies
it was already given are sent first.

TLS is on unless a test turns it off. The certificate is generated with `cryptography` on
first start and kept in the store, so the address — `duplex://<sha256 of cert>@host:port` —
survives restarts and clients can pin it.

Embedding: `QueueServer.start(db="sqlite:///server.db", port=0)` runs the server on its own
thread and returns once it listens; `.address`, `.stop()`, and `with` work. In a trio program,
`await nursery.start(server.serve)` runs it in the caller's loop. `duplex server` is the CLI.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import MESSAGE_QUEUE, RECEIVE_BYTES, HeldStream, write_frames
from protocol.errors import ConfigurationError, StorageError
from protocol.queue import (
    SUPPORTED_VERSIONS,
    WEBSOCKET_MAX_MESSAGE,
    ServerHello,
    WireError,
    decode_client_hello,
    encode,
)
from protocol.server.broker import (
    DEFAULT_MESSAGE_TTL,
    DEFAULT_QUOTA,
    Outgoing,
    QueueBroker,
    Session,
    SignatureCheck,
    verify_signatures,
)
from storage.database import Database, open_database
from storage.server import SERVER_LAYER, ServerStore

log = logging.getLogger(__name__)

# Frames of one session handled as a burst: verified together, then stored in groups of
# _GROUP per transaction. A group keeps the loop from the other sessions for its duration
# (a few milliseconds), which bounds it.
_BURST = MESSAGE_QUEUE
_GROUP = 8
_FAREWELL_TIMEOUT = 1.0  # seconds a closing session's writer has to flush its last replies
_CONNECTION_GONE = (
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,  # reset by the peer, or a TLS failure that trio did not wrap
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Tunables of a queue server; tests shrink the times."""

    quota: int = DEFAULT_QUOTA
    message_ttl: float = DEFAULT_MESSAGE_TTL
    expire_interval: float = 60.0
    idle_timeout: float = 300.0  # a session silent this long is closed (clients ping)
    hello_timeout: float = 10.0
    max_consecutive_errors: int = 64  # undecodable frames; then the session is closed as abusive
    # Commands refused with AUTH in a row (unknown entities, bad signatures: someone probing)
    # that close the session. A client whose queues were deleted meanwhile resubscribes them
    # in one batch and sees one AUTH each, so this is well above a few, not one.
    max_consecutive_auth_failures: int = 100
    session_buffer: int = 1024  # frames queued for one session before it counts as stuck
    worker_threads: int = 8
    tls: bool = True
    # Run the store's short transactions on the trio thread instead of a worker thread.
    # A thread hop costs more than a local SQLite commit (bench/server.py measured it), so
    # None means: in the loop for SQLite, in worker threads for a networked PostgreSQL.
    store_in_loop: bool | None = None


class QueueServer:
    """A running queue server; see the module docstring."""

    def __init__(
        self,
        database: Database,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ServerConfig | None = None,
        owns_database: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or ServerConfig()
        self.database = database
        self.store = ServerStore(database)
        self.broker = QueueBroker(
            self.store, quota=self.config.quota, message_ttl=self.config.message_ttl, clock=clock
        )
        self.host = host
        self.port = port
        self._owns_database = owns_database
        self._certificate_der, self._ssl_context = self._load_identity()
        self._address: ServerAddress | None = None
        self._sessions: set[Session] = set()
        self._limiter = trio.CapacityLimiter(self.config.worker_threads)
        self._verifier: concurrent.futures.ThreadPoolExecutor | None = None
        in_loop = self.config.store_in_loop
        self._store_in_loop = database.kind == "sqlite" if in_loop is None else in_loop
        self._cancel_scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    # ------------------------------------------------------------------ embedding

    @classmethod
    def start(
        cls,
        db: str | Database,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ServerConfig | None = None,
        clock: Callable[[], float] = time.time,
        ready_timeout: float = 10.0,
    ) -> QueueServer:
        """Run a server on a background thread; returns once it accepts connections.

        `db` is a database URL (opened and closed by the server) or an open `Database`.
        `clock` (seconds since the epoch) is for tests of expiry.
        """
        database = open_database(db, layers=[SERVER_LAYER]) if isinstance(db, str) else db
        server = cls(
            database,
            host=host,
            port=port,
            config=config,
            owns_database=isinstance(db, str),
            clock=clock,
        )
        ready = threading.Event()
        server._thread = threading.Thread(
            target=server._thread_main, args=(ready,), name=f"queue-server-{port}", daemon=True
        )
        server._thread.start()
        if not ready.wait(ready_timeout) or server._address is None:
            server.stop()
            raise ConfigurationError(
                f"queue server did not start on {host}:{port}: {server._thread_error!r}"
            )
        return server

    @property
    def address(self) -> ServerAddress:
        if self._address is None:
            raise ConfigurationError("the queue server is not listening")
        return self._address

    @property
    def fingerprint(self) -> bytes:
        return crypto.fingerprint(self._certificate_der)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session and the listener; idempotent."""
        token, scope = self._token, self._cancel_scope
        if token is not None and scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._owns_database:
            self.database.close()

    def __enter__(self) -> QueueServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.serve)
                ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported to start() and logged
            self._thread_error = exc
            log.exception("queue server stopped with an error")
        finally:
            ready.set()

    # ------------------------------------------------------------------ serving

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (`stop()` cancels it)."""
        # Signatures of bursts are verified here, on a thread of the server's own: trio's
        # worker threads outlive the server by up to ten seconds, idle.
        self._verifier = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="queue-server-verify"
        )
        try:
            await self._serve(task_status)
        finally:
            self._verifier.shutdown(wait=True)  # every session is gone: nothing is queued
            self._verifier = None

    async def _serve(self, task_status: Any) -> None:
        with trio.CancelScope() as scope:
            self._cancel_scope = scope
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(self.port, host=self.host)
                serve = functools.partial(
                    trio.serve_listeners, self._handle_stream, listeners, handler_nursery=nursery
                )
                await nursery.start(serve)
                self.port = listeners[0].socket.getsockname()[1]
                self._address = ServerAddress(self.fingerprint, self.host, self.port)
                nursery.start_soon(self._expire_periodically)
                log.info("queue server listening", extra={"address": str(self._address)})
                task_status.started(self._address)
        self._address = None

    async def _handle_stream(self, tcp: trio.SocketStream) -> None:
        """One connection: TLS, the websocket handshake, then the session until either ends."""
        transport: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            transport = trio.SSLStream(tcp, self._ssl_context, server_side=True)
        stream = HeldStream(transport)
        session = Session()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._accept_session(nursery, stream, session)
                finally:
                    nursery.cancel_scope.cancel()  # the websocket's reader task
        except* _CONNECTION_GONE:
            pass  # the peer went away, or its TLS or websocket handshake failed
        except* Exception:
            # One session's failure must never take the listener (and every session) down.
            log.exception("session failed", extra={"session": repr(session)})
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _accept_session(
        self, nursery: trio.Nursery, stream: HeldStream, session: Session
    ) -> None:
        ws: trio_websocket.WebSocketConnection | None = None
        with trio.move_on_after(self.config.hello_timeout):
            request = await trio_websocket.wrap_server_stream(
                nursery,
                stream,
                message_queue_size=MESSAGE_QUEUE,
                max_message_size=WEBSOCKET_MAX_MESSAGE,
                receive_buffer_size=RECEIVE_BYTES,
            )
            ws = await request.accept()
        if ws is None:
            return  # no websocket handshake within the hello timeout
        try:
            await self._run_session(ws, stream, session)
        finally:
            self._sessions.discard(session)
            self._close_session(session)
            with trio.move_on_after(1):
                await ws.aclose()

    async def _run_session(
        self, ws: trio_websocket.WebSocketConnection, stream: HeldStream, session: Session
    ) -> None:
        low, high = SUPPORTED_VERSIONS
        await ws.send_message(encode(ServerHello(low, high, session.session_id)))
        with trio.move_on_after(self.config.hello_timeout) as hello_scope:
            hello_frame = await ws.get_message()
        if hello_scope.cancelled_caught or not isinstance(hello_frame, bytes):
            return
        try:
            hello = decode_client_hello(hello_frame)
        except WireError:
            return
        if not low <= hello.version <= high:
            return
        self._sessions.add(session)
        send, receive = trio.open_memory_channel[bytes](self.config.session_buffer)
        session.outbox = send
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_session, ws, stream, receive)
            try:
                await self._read_session(ws, session)
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            # Closed from this side (idle or abusive): the replies already made still go out,
            # then the writer closes the websocket; a peer that does not read them is not
            # waited for long.
            send.close()
            nursery.cancel_scope.deadline = trio.current_time() + _FAREWELL_TIMEOUT

    def _close_session(self, session: Session) -> None:
        # In memory only and under a lock held for microseconds: no worker thread needed,
        # and none could be started here once the session's task is being cancelled.
        self.broker.close_session(session)
        outbox = session.outbox
        if outbox is not None:
            outbox.close()

    async def _read_session(self, ws: trio_websocket.WebSocketConnection, session: Session) -> None:
        while True:
            with trio.move_on_after(self.config.idle_timeout) as idle:
                frame = await ws.get_message()
            if idle.cancelled_caught:
                log.info("closing idle session", extra={"session": repr(session)})
                return
            frames = [_binary(frame), *_received(ws, _BURST - 1)]
            if not self._store_in_loop:
                for frame in frames:
                    outgoing = await trio.to_thread.run_sync(
                        self.broker.handle, session, frame, limiter=self._limiter
                    )
                    if self._deliver(session, outgoing):
                        return
                continue
            if len(frames) > 1:
                # Verified on a worker thread, where Ed25519 does not hold the GIL: the loop
                # serves the other sessions meanwhile.
                checks = self.broker.signature_checks(session, frames)
                if len(checks) > 1:
                    session.verified = await self._verify(checks)
            try:
                for start in range(0, len(frames), _GROUP):
                    if start:
                        await trio.lowlevel.checkpoint()  # let the other sessions in
                    if self._deliver(session, self._handle_group(session, frames, start)):
                        return
            finally:
                session.verified.clear()

    async def _verify(self, checks: list[SignatureCheck]) -> dict[SignatureCheck, bool]:
        """The checks' outcomes, made on the verifier thread while the loop serves others."""
        assert self._verifier is not None
        future = self._verifier.submit(verify_signatures, checks)
        token, done = trio.lowlevel.current_trio_token(), trio.Event()
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        with trio.CancelScope(shield=True):  # a burst takes milliseconds: wait for it
            await done.wait()
        return future.result()

    def _handle_group(self, session: Session, frames: list[bytes], start: int) -> list[Outgoing]:
        """Frames `start`… of a burst (at most _GROUP, fewer if the session turns abusive), in
        one transaction: its one commit is most of what a SEND or ACK costs the store.

        Nothing is posted before the commit, so an OK still means stored. If the commit
        fails, nothing of the group is stored, but the broker's memory may say otherwise
        (a MSG counted as delivered, a queue cached that was never committed): the sessions
        it would have written to are closed and the cached queues forgotten, so they start
        again from the store when they reconnect.
        """
        group = frames[start : start + _GROUP]
        if len(group) == 1:  # its own transactions are cheaper than savepoints in one
            return self.broker.handle(session, group[0])
        outgoing: list[Outgoing] = []
        try:
            with self.database.transaction():
                for frame in group:
                    outgoing += self.broker.handle(session, frame)
                    if self._abusive(session):
                        break
        except StorageError:
            self.broker.forget_cached_queues()
            for other in {item.session for item in outgoing} - {session}:
                self._close_session(other)
            raise
        return outgoing

    def _deliver(self, session: Session, outgoing: list[Outgoing]) -> bool:
        """Post the frames; True if `session` is to be closed as abusive."""
        for item in outgoing:
            self._post(item.session, item.frame)
        if self._abusive(session):
            log.warning("closing abusive session", extra={"session": repr(session)})
            return True
        return False

    def _abusive(self, session: Session) -> bool:
        return (
            session.consecutive_errors > self.config.max_consecutive_errors
            or session.consecutive_auth_failures >= self.config.max_consecutive_auth_failures
        )

    def _post(self, session: Session, frame: bytes) -> None:
        outbox = session.outbox
        if outbox is None or session.closed:
            return  # gone: what it was sent stays stored and is delivered on its next SUB
        try:
            outbox.send_nowait(frame)
        except trio.WouldBlock:
            log.warning("session too slow, closing it", extra={"session": repr(session)})
            outbox.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    @staticmethod
    async def _write_session(
        ws: trio_websocket.WebSocketConnection,
        stream: HeldStream,
        frames: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        await write_frames(ws, stream, frames)
        await ws.aclose()  # the channel was closed: a stuck session is dropped

    async def _expire_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval)
            cutoff = int((self.broker.clock() - self.config.message_ttl) * 1000)
            removed = await trio.to_thread.run_sync(self.store.expire_messages, cutoff)
            if removed:
                log.info("expired messages", extra={"count": removed})

    # ------------------------------------------------------------------ identity

    def _load_identity(self) -> tuple[bytes, ssl.SSLContext | None]:
        identity = self.store.load_identity()
        if identity is None:
            self.store.save_identity(*_self_signed_certificate())
            identity = self.store.load_identity()
            assert identity is not None
        certificate_pem, key_pem = identity
        der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(
            serialization.Encoding.DER
        )
        if not self.config.tls:
            return der, None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        # ssl can only load a key from a file: write both to a private temp dir, load, delete.
        with tempfile.TemporaryDirectory(prefix="duplex-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            with open(cert_path, "wb") as f:
                f.write(certificate_pem)
            with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(key_pem)
            context.load_cert_chain(cert_path, key_path)
        return der, context


def _binary(frame: bytes | str) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode("utf-8", "replace")  # garbage too


def _received(ws: trio_websocket.WebSocketConnection, limit: int) -> list[bytes]:
    """Up to `limit` frames the websocket has received already, without waiting.

    trio-websocket has no public way to ask; its reader queues parsed messages on
    `_recv_channel` (0.12). Without that attribute this returns nothing, and frames are
    simply handled one at a time.
    """
    channel = getattr(ws, "_recv_channel", None)
    frames: list[bytes] = []
    while channel is not None and len(frames) < limit:
        try:
            frames.append(_binary(channel.receive_nowait()))
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return frames


def _self_signed_certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duplex queue server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
