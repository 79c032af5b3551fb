"""`DebugEndpoint`: the debug websocket on 127.0.0.1 of a runtime or a queue server, for
`duplex console` and `duplex tree`.

What it shows and what a command does belong to its `DebugTarget` (target.py): an actor
runtime's (`RuntimeTarget`, what `Client.open(debug=True)` serves) or a queue server's
(`QueueServerTarget`, `duplex server --debug`). The endpoint owns the rest: the listener,
the token, admission, the snapshot stream and the typed answers.

It runs on a trio thread of its own, not on the runtime's I/O thread: an operator may crash
or restart the `io` actor from the console, and the endpoint must outlive that. It listens
on loopback only, on a random port, takes at most `MAX_CONNECTIONS` at once, and admits a
connection only with its token (random, `secrets.token_urlsafe`), given in the URL path
(`ws://127.0.0.1:PORT/TOKEN`) or as the first message (`Hello`) within `hello_timeout`;
anything else is closed with code 1008 (policy violation) before a single command is read,
so a wrong or missing token changes nothing. The token is also written to a file only the
user can read (mode 0600, in a directory of mode 0700), removed when the endpoint stops.

An admitted connection gets a `Snapshot` every `interval` and may send commands (see
wire.py), which the target runs on worker threads. Whatever a command raises, and whatever
does not decode, is answered `Refused`: the endpoint never fails on its input.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import trio
import trio_websocket

from actors.debug.runtime_target import RuntimeTarget
from actors.debug.target import DebugTarget, Reply
from actors.debug.wire import (
    MAX_MESSAGE_BYTES,
    POLICY_VIOLATION,
    Command,
    Hello,
    RefusalCode,
    Refused,
    Snapshot,
    Welcome,
    command_id,
    decode_console_message,
    encode,
)
from actors.kernel import ActorUnavailable, Runtime

log = logging.getLogger(__name__)

# Commands of one connection that may run at once (a restart waits for the actor to stop).
_COMMANDS_AT_ONCE = 4
# Connections at once, admitted or not yet: each admitted one costs a tree walk per interval.
MAX_CONNECTIONS = 16
TRY_AGAIN_LATER = 1013  # the websocket close code for "too many connections"


class DebugEndpoint:
    """A running debug endpoint of one target; see the module docstring. A `Runtime` given
    as the target is served as `RuntimeTarget(runtime, inspect_timeout=...)`."""

    def __init__(
        self,
        target: DebugTarget | Runtime,
        *,
        interval: float = 0.25,
        hello_timeout: float = 5.0,
        inspect_timeout: float = 2.0,
        token_dir: Path | None = None,
    ) -> None:
        if isinstance(target, Runtime):
            target = RuntimeTarget(target, inspect_timeout=inspect_timeout)
        self.target: DebugTarget = target
        self.interval = interval
        self.hello_timeout = hello_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.token = secrets.token_urlsafe(32)
        self._token_dir = token_dir
        self._made_dir: Path | None = None
        self.token_file: Path | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._stop_requested: trio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._seq = itertools.count(1)
        self.connections = 0

    @classmethod
    def start(cls, target: DebugTarget | Runtime, **options: object) -> DebugEndpoint:
        """Listen, write the token file, and return once connections are accepted."""
        endpoint = cls(target, **options)  # type: ignore[arg-type]
        endpoint._thread = threading.Thread(
            target=endpoint._thread_main, name=f"{endpoint.target.name}-debug", daemon=True
        )
        endpoint._thread.start()
        if not endpoint._ready.wait(10.0) or endpoint._crash is not None:
            endpoint.stop()
            raise ActorUnavailable(f"the debug endpoint did not start: {endpoint._crash!r}")
        endpoint.token_file = endpoint._write_token_file()
        log.info(
            "debug endpoint listening",
            extra={"url": endpoint.url, "token_file": str(endpoint.token_file)},
        )
        return endpoint

    @property
    def url(self) -> str:
        """Where to connect, without the token (send it as `Hello`, or use `url_with_token`)."""
        return f"ws://{self.host}:{self.port}/"

    @property
    def url_with_token(self) -> str:
        """The URL that admits by itself; anyone who can read it can drive the target."""
        return f"{self.url}{self.token}"

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, stop listening, remove the token file. Idempotent."""
        token, stop_requested = self._trio_token, self._stop_requested
        if token is not None and stop_requested is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop_requested.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.token_file is not None:
            self.token_file.unlink(missing_ok=True)
        if self._made_dir is not None:
            shutil.rmtree(self._made_dir, ignore_errors=True)
            self._made_dir = None

    # ------------------------------------------------------------------ the token file

    def _write_token_file(self) -> Path:
        directory = self._token_dir
        if directory is None:
            directory = self._made_dir = Path(tempfile.mkdtemp(prefix="duplex-debug-"))
        path = Path(directory) / f"debug-{self.port}.token"
        # O_EXCL: never write into a file (or a link) someone else prepared; 0600 from birth.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(self.token + "\n")
        return path

    # ------------------------------------------------------------------ the trio thread

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._crash = exc
            log.exception("the debug endpoint failed")
        finally:
            self._trio_token = None
            self._ready.set()

    async def _main(self) -> None:
        self._stop_requested = trio.Event()
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio_websocket.serve_websocket,
                self._serve,
                self.host,
                0,
                None,
                max_message_size=MAX_MESSAGE_BYTES,
                connect_timeout=5,
                disconnect_timeout=2,
            )
            server = await nursery.start(serve)
            self.port = server.port
            self._trio_token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop_requested.wait()
            nursery.cancel_scope.cancel()

    async def _serve(self, request: trio_websocket.WebSocketRequest) -> None:
        # One connection's end, however it ends, is never the endpoint's.
        try:
            await self._serve_connection(request)
        except* trio_websocket.ConnectionClosed:
            pass  # the console went away
        except* (trio_websocket.HandshakeError, trio.BrokenResourceError, OSError) as group:
            log.info("debug connection failed", extra={"error": repr(group.exceptions[0])})
        except* Exception:
            log.exception("debug connection failed")

    async def _serve_connection(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        if self.connections >= MAX_CONNECTIONS:
            await ws.aclose(code=TRY_AGAIN_LATER, reason="too many debug connections")
            return
        self.connections += 1
        try:
            await self._serve_admitted(request.path, ws)
        finally:
            self.connections -= 1

    async def _serve_admitted(self, path: str, ws: trio_websocket.WebSocketConnection) -> None:
        if not await self._admitted(path, ws):
            await ws.aclose(code=POLICY_VIOLATION, reason="token refused")
            return
        await ws.send_message(encode(Welcome(self.target.name, self.interval)))
        sending = trio.Lock()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stream_snapshots, ws, sending)
            await self._take_commands(ws, sending, nursery)
            nursery.cancel_scope.cancel()

    async def _admitted(self, path: str, ws: trio_websocket.WebSocketConnection) -> bool:
        offered = path.lstrip("/")
        if not offered:
            with trio.move_on_after(self.hello_timeout):
                first = await ws.get_message()
                try:
                    hello = decode_console_message(first)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return False
                if isinstance(hello, Hello):
                    offered = hello.token
        # compare_digest: the time taken says nothing about how much of the token matched
        return bool(offered) and secrets.compare_digest(offered.encode(), self.token.encode())

    async def _stream_snapshots(
        self, ws: trio_websocket.WebSocketConnection, sending: trio.Lock
    ) -> None:
        while True:
            snapshot = await trio.to_thread.run_sync(self.snapshot)
            async with sending:
                await ws.send_message(encode(snapshot))
            await trio.sleep(self.interval)

    async def _take_commands(
        self, ws: trio_websocket.WebSocketConnection, sending: trio.Lock, nursery: trio.Nursery
    ) -> None:
        limiter = trio.CapacityLimiter(_COMMANDS_AT_ONCE)

        async def run(command: Command) -> None:
            reply = await trio.to_thread.run_sync(
                self.execute, command, limiter=limiter, abandon_on_cancel=True
            )
            async with sending:
                await ws.send_message(encode(reply))

        while True:
            data = await ws.get_message()
            try:
                command = decode_console_message(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                refusal = Refused(command_id(data), RefusalCode.BAD_REQUEST, str(exc))
                async with sending:
                    await ws.send_message(encode(refusal))
                continue
            if isinstance(command, Hello):
                refusal = Refused(0, RefusalCode.BAD_REQUEST, "already admitted")
                async with sending:
                    await ws.send_message(encode(refusal))
                continue
            nursery.start_soon(run, command)

    # ------------------------------------------------------------------ on worker threads

    def snapshot(self) -> Snapshot:
        view = self.target.snapshot()
        return Snapshot(next(self._seq), time.time(), view.tree, view.counters)

    def execute(self, command: Command) -> Reply:
        """Run one command against the target; every outcome is a typed reply."""
        try:
            return self.target.execute(command)
        except Exception as exc:  # a target's bug must not end the endpoint either
            log.exception("debug command failed", extra={"command": repr(command)})
            return Refused(command.id, RefusalCode.FAILED, repr(exc))
