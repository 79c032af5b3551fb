"""`QueueServer`: the queue protocol served over TLS websockets with trio.

A thin shell around `QueueBroker` (protocol/server/broker.py): it accepts TCP connections,
runs TLS (1.3 only: an older client gets a `protocol_version` alert at once), the websocket
handshake (on the configured path only) and the hello (a random session id), runs each
received burst of frames through the broker and writes the frames it returns to their
sessions. SQLite's short transactions run on the trio thread (a thread hop costs more than
they do); a networked database's run in worker threads, one frame at a time.

A burst is what one session sent that has arrived together: it is prepared (decoded, its
queues looked up), its signatures are verified on a thread of the server's own (Ed25519
releases the GIL, so the loop serves other sessions meanwhile), and it is applied in one
store transaction whose frames are posted only after the commit: an `OK` still means stored.

Bounded memory per session
--------------------------
A session costs at most a few hundred KiB, whatever its client does:

* what it sends: the websocket queues at most `receive_queue` parsed frames, and a frame
  header that announces more than the websocket's limit closes the connection before the
  body is read (`FrameGuard`);
* what it is sent: its outbox is bounded in bytes. Replies to its own commands always go in,
  but the session's next burst is not read while the outbox holds more than
  `outbox_bytes`; a `MSG` pushed to it while it is that full is not queued at all — the
  queue is left *pending* and its message is delivered when the outbox has drained;
* a writer that cannot hand its frames to the network for `send_timeout` seconds (a client
  that does not read) closes the TCP connection at once, without a goodbye, and the
  session's subscriptions are released (undelivered messages wait for its next SUB).

A session is closed as abusive after `max_consecutive_errors` undecodable frames in a row or
`auth_failures` AUTH refusals within `auth_failure_window` seconds (successes in between
do not reset that count); the replies it was already given are sent first.

The certificate is generated on first start and kept in the store, so the address —
`duplex://<sha256 of cert>@host:port` — survives restarts and clients can pin it.

Embedding: `QueueServer.start(db="sqlite:///server.db", port=0)` runs the server on its own
thread and returns once it listens; `.address`, `.stop()`, and `with` work. In a trio program,
`await nursery.start(server.serve)` runs it in the caller's loop. `duplex server` is the CLI.
For an operator (`duplex server --debug`), `debug_snapshot()` reads the live sessions and
counters and `drop_session(key)` closes one session; both from another thread, by way of
the server's trio thread (protocol/server/operator.py has the views).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

from protocol import crypto
from protocol.address import ServerAddress
from protocol.errors import ConfigurationError, StorageError
from protocol.queue import (
    SUPPORTED_VERSIONS,
    WEBSOCKET_MAX_MESSAGE,
    ServerHello,
    WireError,
    decode_client_hello,
    encode,
)
from protocol.server import identity
from protocol.server.broker import Outgoing, Prepared, QueueBroker, Session, verify_prepared
from protocol.server.guard import FrameGuard, FrameRefused
from protocol.server.limits import (
    Limits,
)
from protocol.server.operator import ServerView, SessionView, session_key
from protocol.transport import RECEIVE_BYTES, SharedStream, encode_frames
from storage.database import Database, open_database
from storage.server import SERVER_LAYER, ServerStore

log = logging.getLogger(__name__)

_FAREWELL_TIMEOUT = 1.0  # seconds a closing session's writer has to flush its last replies
_WRITE_CHUNK = 64 * 1024  # bytes framed and sent in one write at most
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_PENDING_BATCH = 16  # pending MSGs delivered at once when a session's outbox has room
_CONNECTION_GONE = (
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,  # reset by the peer, or a TLS failure that trio did not wrap
    FrameRefused,
)


@dataclass(frozen=True, slots=True)
class ServerConfig(Limits):
    """Tunables of a queue server; tests shrink the times. `duplex server --help` has the
    limits as flags.

    The limits (messages and body bytes per queue, body bytes in the store, message
    lifetime, queues one session may create per window, AUTH refusals per window that close
    a session) are the fields it inherits from `Limits` (protocol/server/limits.py)."""

    max_consecutive_errors: int = 64  # undecodable frames; then the session is closed

    expire_interval: float = 60.0  # also how often the SQLite log is truncated (scrub)
    idle_timeout: float = 300.0  # a session silent this long is closed (clients ping)
    hello_timeout: float = 10.0  # for TLS, the websocket handshake and the hello together
    # Memory per session: bytes queued for it before its next burst waits and pushes to it
    # are deferred; frames parsed ahead of it. A write that cannot go out for `send_timeout`
    # seconds closes the connection.
    outbox_bytes: int = 256 * 1024
    receive_queue: int = 16
    send_timeout: float = 15.0
    # The kernel's send buffer of a connection (SO_SNDBUF; None: the system's, which grows to
    # megabytes): what a client that does not read can hold of the server's kernel memory.
    socket_send_buffer: int | None = 256 * 1024
    path: str = "/"  # the websocket path; another one is refused (HTTP 404)
    worker_threads: int = 8
    tls: bool = True
    # Run the store's short transactions on the trio thread instead of a worker thread.
    # A thread hop costs more than a local SQLite commit (bench/server.py measured it), so
    # None means: in the loop for SQLite, in worker threads for a networked PostgreSQL.
    store_in_loop: bool | None = None

    def limits(self) -> Limits:
        """The limits alone, as the broker takes them."""
        return Limits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Limits)})


class _Outbox:
    """Frames waiting for one session's writer, counted in bytes until they are sent."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.frames: collections.deque[bytes] = collections.deque()
        self.bytes = 0  # queued and being written
        self.closed = False
        self.too_slow = False
        self.scope: trio.CancelScope | None = None  # the session's, cancelled when too slow
        self._queued = trio.Event()
        self._room = trio.Event()

    def full(self) -> bool:
        return self.bytes > self.budget

    def put(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.bytes += len(frame)
        self._queued.set()

    def take(self, limit: int) -> list[bytes]:
        """Queued frames, at least one if there is any, up to `limit` bytes."""
        taken: list[bytes] = []
        size = 0
        frames = self.frames
        while frames and (not taken or size + len(frames[0]) <= limit):
            frame = frames.popleft()
            taken.append(frame)
            size += len(frame)
        if not frames:
            self._queued = trio.Event()
        return taken

    async def wait_queued(self) -> None:
        if not self.frames and not self.closed:
            await self._queued.wait()

    def sent(self, size: int) -> None:
        self.bytes -= size
        if not self.full():
            self._room.set()

    async def wait_for_room(self) -> None:
        while self.full() and not self.closed:
            self._room = trio.Event()
            await self._room.wait()

    def close(self) -> None:
        self.closed = True
        self._queued.set()
        self._room.set()


class _GuardedStream(SharedStream):
    """The server's stream: what the client sends passes the `FrameGuard` first."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.guard = FrameGuard(WEBSOCKET_MAX_MESSAGE)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        try:
            self.guard.feed(data)
        except FrameRefused as exc:
            log.warning("refusing an oversized frame", extra={"reason": str(exc)})
            await trio.aclose_forcefully(self.inner)
            raise trio.BrokenResourceError(str(exc)) from exc
        return data


def _start_failure(error: BaseException | None) -> str:
    """Why the server thread did not start, in words: the first error inside trio's nested
    ExceptionGroups (``Address already in use``), not the groups' repr."""
    if error is None:
        return "it was not listening in time"
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


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
        self.broker = QueueBroker(self.store, limits=self.config.limits(), clock=clock)
        self.host = host
        self.port = port
        self._owns_database = owns_database
        self._certificate_der, self._ssl_context = self._load_identity()
        self._address: ServerAddress | None = None
        self._sessions: dict[Session, _Connected] = {}  # past their hello, not yet closed
        self._limiter = trio.CapacityLimiter(self.config.worker_threads)
        self._verifier: concurrent.futures.ThreadPoolExecutor | None = None
        in_loop = self.config.store_in_loop
        self._store_in_loop = database.kind == "sqlite" if in_loop is None else in_loop
        self._burst = self.config.receive_queue + 1
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
        passphrase: str | None = None,
    ) -> QueueServer:
        """Run a server on a background thread; returns once it accepts connections.

        `db` is a database URL (opened and closed by the server) or an open `Database`.
        With `passphrase` a SQLite store — its TLS identity key included — is encrypted
        (SQLCipher). `clock` (seconds since the epoch) is for tests of expiry.
        """
        if isinstance(db, str):
            database = open_database(db, layers=[SERVER_LAYER], passphrase=passphrase)
        else:
            database = db
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
                f"queue server did not start on {host}:{port}: "
                f"{_start_failure(server._thread_error)}"
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

    @property
    def session_count(self) -> int:
        """Sessions past their hello and not yet closed."""
        return len(self._sessions)

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

    # ------------------------------------------------------------------ for an operator

    def debug_snapshot(self, *, count_store: bool = False) -> ServerView:
        """The server and its live sessions now (protocol/server/operator.py), for a debug
        endpoint. A blocking call, for a thread that runs no trio loop (trio refuses the
        call from one): the view is built on the server's trio thread, from what it holds
        in memory, while this thread waits. With
        `count_store`, the store's full counts of queues and messages are queried too (on
        this thread: not for every snapshot of a large store).

        `ConfigurationError` if the server is not running; `StorageError` from the count."""
        view = self._on_server_thread(self._view)
        if count_store:
            counts = self.store.stats()
            view = dataclasses.replace(view, queues=counts["queues"], messages=counts["messages"])
        return view

    def drop_session(self, key: str) -> bool:
        """Close the session named `key` (`SessionView.key`) as a lost connection would end
        it: its subscriptions are released (undelivered messages wait for its next SUB) and
        the websocket is closed; a client reconnects by itself. False if no live session
        has that key. Blocking, from a thread that runs no trio loop, as `debug_snapshot`."""
        return self._on_server_thread(functools.partial(self._drop, key))

    def _on_server_thread(self, read: Callable[[], Any]) -> Any:
        token = self._token
        if token is None or self._address is None:
            raise ConfigurationError("the queue server is not running")
        try:
            return trio.from_thread.run_sync(read, trio_token=token)
        except trio.RunFinishedError:
            raise ConfigurationError("the queue server is not running") from None

    def _view(self) -> ServerView:
        now, clock_now = time.time(), self.broker.clock()
        sessions = tuple(
            _session_view(session, connected, clock_now)
            for session, connected in self._sessions.items()
        )
        stats = self.broker.stats
        return ServerView(
            address=str(self.address),
            taken_at=now,
            sessions=sessions,
            subscribed_queues=self.broker.subscriber_count(),
            commands=stats.commands,
            errors=stats.errors,
            delivered=stats.delivered,
            stored_bytes=self.store.stored_bytes,
        )

    def _drop(self, key: str) -> bool:
        session = next((s for s in self._sessions if session_key(s) == key), None)
        if session is None:
            return False
        log.info("dropping a session at an operator's request", extra={"session": repr(session)})
        self._close_session(session)
        outbox = session.outbox
        if outbox is not None and outbox.scope is not None:
            # Its reader and writer stop; the websocket is then closed with a goodbye, as
            # for an idle session (not reset, as for a client that does not read).
            outbox.scope.cancel()
        return True

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
        session = self.broker.new_session()
        stream: _GuardedStream | None = None
        if self.config.socket_send_buffer is not None:
            with contextlib.suppress(OSError):
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer)
        try:
            transport = await self._handshake_tls(tcp)
            if transport is None:
                return
            stream = _GuardedStream(transport)
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
            self._sessions.pop(session, None)
            self._close_session(session)
            outbox = session.outbox
            if outbox is not None and outbox.too_slow:
                # A client that does not read gets no goodbye (it would not read that either),
                # and what it left unread is dropped at once (a reset, not a FIN queued
                # behind megabytes that the kernel would keep trying to deliver).
                with contextlib.suppress(OSError):
                    tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                await trio.aclose_forcefully(stream or tcp)
            elif stream is None:
                await trio.aclose_forcefully(tcp)
            else:
                with trio.move_on_after(1) as cleanup:
                    cleanup.shield = True
                    await stream.aclose()
                if cleanup.cancelled_caught:
                    await trio.aclose_forcefully(stream)

    async def _handshake_tls(self, tcp: trio.SocketStream) -> trio.abc.Stream | None:
        """The TLS stream after its handshake; None (connection closed) if it failed."""
        if self._ssl_context is None:
            return tcp
        tls = trio.SSLStream(tcp, self._ssl_context, server_side=True)
        with trio.move_on_after(self.config.hello_timeout):
            try:
                await tls.do_handshake()
                return tls
            except trio.BrokenResourceError:
                # trio drops what OpenSSL wrote when the handshake failed: the alert that
                # tells the client why (protocol_version for TLS below 1.3). Send it.
                outgoing = getattr(tls, "_outgoing", None)
                alert = outgoing.read() if outgoing is not None else b""
                if alert:
                    with trio.move_on_after(1), contextlib.suppress(*_CONNECTION_GONE):
                        await tcp.send_all(alert)
        await trio.aclose_forcefully(tcp)
        return None

    async def _accept_session(
        self, nursery: trio.Nursery, stream: _GuardedStream, session: Session
    ) -> None:
        ws: trio_websocket.WebSocketConnection | None = None
        with trio.move_on_after(self.config.hello_timeout):
            request = await trio_websocket.wrap_server_stream(
                nursery,
                stream,
                message_queue_size=self.config.receive_queue,
                max_message_size=WEBSOCKET_MAX_MESSAGE,
                receive_buffer_size=RECEIVE_BYTES,
            )
            if request.path != self.config.path:
                await request.reject(404)
                return
            ws = await request.accept()
        if ws is None:
            return  # no websocket handshake within the hello timeout
        try:
            await self._run_session(ws, stream, session)
        finally:
            outbox = session.outbox
            if outbox is None or not outbox.too_slow:
                with trio.move_on_after(1):
                    await ws.aclose()

    async def _run_session(
        self, ws: trio_websocket.WebSocketConnection, stream: SharedStream, session: Session
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
        self._sessions[session] = _Connected(_peer(stream), time.time())
        outbox = _Outbox(self.config.outbox_bytes)
        session.outbox = outbox
        async with trio.open_nursery() as nursery:
            outbox.scope = nursery.cancel_scope
            nursery.start_soon(self._write_session, ws, stream, session)
            try:
                await self._read_session(ws, session)
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            # Closed from this side (idle or abusive): the replies already made still go out,
            # then the writer closes the websocket; a peer that does not read them is not
            # waited for long.
            outbox.close()
            nursery.cancel_scope.deadline = trio.current_time() + _FAREWELL_TIMEOUT

    def _close_session(self, session: Session) -> None:
        # In memory only and under a lock held for microseconds: no worker thread needed,
        # and none could be started here once the session's task is being cancelled.
        self.broker.close_session(session)
        outbox = session.outbox
        if outbox is not None:
            outbox.close()

    def _too_slow(self, session: Session, why: str) -> None:
        """Drop a session whose client does not read: its connection is closed at once."""
        outbox = session.outbox
        if outbox is None or outbox.too_slow:
            return
        log.warning("session too slow, closing it", extra={"session": repr(session), "why": why})
        outbox.too_slow = True
        self._close_session(session)
        if outbox.scope is not None:
            outbox.scope.cancel()

    async def _read_session(self, ws: trio_websocket.WebSocketConnection, session: Session) -> None:
        outbox: _Outbox = session.outbox
        while True:
            if outbox.full():
                # Its replies are not read: read nothing more from it until they are.
                with trio.move_on_after(self.config.send_timeout):
                    await outbox.wait_for_room()
                if outbox.full():
                    self._too_slow(session, "its replies were not read")
                    return
            with trio.move_on_after(self.config.idle_timeout) as idle:
                frame = await ws.get_message()
            if idle.cancelled_caught:
                log.info("closing idle session", extra={"session": repr(session)})
                return
            frames = [_binary(frame), *_received(ws, self._burst - 1)]
            if not self._store_in_loop:
                for frame in frames:
                    outgoing = await trio.to_thread.run_sync(
                        self.broker.handle, session, frame, limiter=self._limiter
                    )
                    if self._deliver(session, outgoing):
                        return
                continue
            prepared = [self.broker.prepare(session, frame) for frame in frames]
            checks = [p for p in prepared if p.check is not None]
            if len(checks) > 1:
                # Verified on a thread of our own, where Ed25519 does not hold the GIL: the
                # loop serves the other sessions meanwhile.
                await self._verify(checks)
            if self._deliver(session, self._apply_burst(session, prepared)):
                return

    async def _verify(self, prepared: list[Prepared]) -> None:
        """Verify the prepared frames' signatures on the verifier thread."""
        assert self._verifier is not None
        future = self._verifier.submit(verify_prepared, prepared)
        token, done = trio.lowlevel.current_trio_token(), trio.Event()
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        with trio.CancelScope(shield=True):  # a burst takes milliseconds: wait for it
            await done.wait()
        future.result()

    def _apply_burst(self, session: Session, prepared: list[Prepared]) -> list[Outgoing]:
        """A burst (fewer frames if the session turns abusive) in one transaction: its one
        commit is most of what a SEND or ACK costs the store.

        Nothing is posted before the commit, so an OK still means stored. If the commit
        fails, nothing of the burst is stored, but the broker's memory may say otherwise
        (a MSG counted as delivered, a queue cached that was never committed): the sessions
        it would have written to are closed and the cached queues forgotten, so they start
        again from the store when they reconnect.
        """
        if len(prepared) == 1:  # its own transactions are as cheap
            return self.broker.apply(session, prepared[0])
        outgoing: list[Outgoing] = []
        try:
            with self.database.transaction():
                for p in prepared:
                    outgoing += self.broker.apply(session, p)
                    if self._abusive(session):
                        break
        except StorageError:
            self.broker.forget_cached_queues()
            for other in {item.session for item in outgoing} - {session}:
                self._close_session(other)
            with contextlib.suppress(StorageError):
                self.store.recount_bytes()
            raise
        return outgoing

    def _deliver(self, session: Session, outgoing: list[Outgoing]) -> bool:
        """Post the frames; True if `session` is to be closed as abusive."""
        for item in outgoing:
            self._post(item)
        if self._abusive(session):
            log.warning("closing abusive session", extra={"session": repr(session)})
            return True
        return False

    def _abusive(self, session: Session) -> bool:
        return session.abusive or session.consecutive_errors > self.config.max_consecutive_errors

    def _post(self, item: Outgoing) -> None:
        session = item.session
        outbox: _Outbox | None = session.outbox
        if outbox is None or session.closed or outbox.closed:
            return  # gone: what it was sent stays stored and is delivered on its next SUB
        if item.pushed is not None and outbox.full():
            self.broker.defer(item)  # delivered when the outbox has room again
            return
        outbox.put(item.frame)
        if outbox.bytes > 4 * outbox.budget:  # only replies and ENDs get here: a flood
            self._too_slow(session, "its outbox overflowed")

    async def _write_session(
        self, ws: trio_websocket.WebSocketConnection, stream: SharedStream, session: Session
    ) -> None:
        """Send what the session's outbox holds, framed in one pass per write, until it is
        closed; deliver its pending MSGs when it has room. A write that does not go out
        within `send_timeout` closes the connection (`_too_slow`)."""
        outbox: _Outbox = session.outbox
        while True:
            await outbox.wait_queued()
            frames = outbox.take(_WRITE_CHUNK)
            if not frames:
                break  # closed, and everything was sent
            if ws.closed:
                return
            size = sum(len(frame) for frame in frames)
            with trio.move_on_after(self.config.send_timeout) as write:
                await stream.send_all(encode_frames(frames, mask=False))
            if write.cancelled_caught:
                self._too_slow(session, "a write did not go out")
                return
            outbox.sent(size)
            if session.pending and not outbox.full() and not outbox.closed:
                await self._deliver_pending(session)
        with trio.move_on_after(_FAREWELL_TIMEOUT):
            await ws.aclose()

    async def _deliver_pending(self, session: Session) -> None:
        if self._store_in_loop:
            outgoing = self.broker.deliver_pending(session, _PENDING_BATCH)
        else:
            outgoing = await trio.to_thread.run_sync(
                self.broker.deliver_pending, session, _PENDING_BATCH, limiter=self._limiter
            )
        for item in outgoing:
            self._post(item)

    async def _expire_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval)
            await self.expire_now()

    async def expire_now(self) -> int:
        """Delete expired messages and scrub the store's files (the periodic sweep, which
        runs every `expire_interval` seconds); returns how many messages were deleted."""
        cutoff = int((self.broker.clock() - self.config.message_ttl) * 1000)
        removed = await trio.to_thread.run_sync(self.store.expire_messages, cutoff)
        if removed:
            log.info("expired messages", extra={"count": removed})
        try:
            await trio.to_thread.run_sync(self.store.scrub)
        except StorageError:
            log.warning("scrubbing the store failed", exc_info=True)
        return removed

    # ------------------------------------------------------------------ identity

    def _load_identity(self) -> tuple[bytes, Any]:
        saved = self.store.load_identity()
        if saved is None:
            self.store.save_identity(*identity.self_signed_certificate())
            saved = self.store.load_identity()
            assert saved is not None
        certificate_pem, key_pem = saved
        der = identity.certificate_der(certificate_pem)
        if not self.config.tls:
            return der, None
        return der, identity.server_tls_context(certificate_pem, key_pem)


@dataclass(frozen=True, slots=True)
class _Connected:
    """What the shell knows of a session's connection that the broker does not."""

    peer: str
    at: float  # seconds since the epoch


def _peer(stream: SharedStream) -> str:
    """host:port of the client behind a session's stream (TLS over TCP, or TCP alone)."""
    transport = stream.inner
    tcp = getattr(transport, "transport_stream", transport)  # under TLS
    try:
        host, port = tcp.socket.getpeername()[:2]
    except (AttributeError, OSError):  # not a socket, or already reset
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _session_view(session: Session, connected: _Connected, now: float) -> SessionView:
    outbox: _Outbox | None = session.outbox
    return SessionView(
        key=session_key(session),
        peer=connected.peer,
        connected_at=connected.at,
        # len() of a set another thread changes (the broker's, on worker threads for a
        # networked store) is one step under the GIL: never a torn read.
        subscriptions=len(session.subscriptions),
        pending=len(session.pending),
        buffered_bytes=outbox.bytes if outbox is not None else 0,
        consecutive_errors=session.consecutive_errors,
        auth_failures=session.auth_failures.count(now),
        closing=session.closed,
    )


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
