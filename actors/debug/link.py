"""The console side of the debug endpoint: find the token, connect, read typed messages.

`open_session` connects once (trio) and is what `duplex tree` uses through
`fetch_snapshot`. `DebugLink` keeps a connection on a trio thread of its own for the
textual console (textual runs asyncio): it hands every message, and every change of the
link's state, to a callback, and reconnects after a drop (not after a refused token).

The endpoint's URL may carry the token in its path (what `DebugEndpoint.url_with_token`
prints); a token file (`DebugEndpoint.token_file`) keeps the token off the command line,
where other users of the machine could read it. Errors name the endpoint without its token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec
import trio
import trio_websocket

from actors.debug.wire import (
    POLICY_VIOLATION,
    Command,
    EndpointMessage,
    Hello,
    Snapshot,
    Welcome,
    decode_endpoint_message,
    encode,
)
from protocol.errors import ConfigurationError, NetworkError

log = logging.getLogger(__name__)

# A snapshot of a large runtime (thousands of connection actors) is a few megabytes.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


def endpoint_target(url: str, token_file: Path | None = None) -> tuple[str, str | None]:
    """(the URL to connect to, the token to send as `Hello`, None if the URL carries it)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname or parts.port is None:
        raise ConfigurationError(
            f"{redacted(url)} is not a debug endpoint URL (ws://127.0.0.1:PORT/TOKEN)"
        )
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the token file {token_file}: {exc}") from exc
        if not lines or not lines[0].strip():
            raise ConfigurationError(f"the token file {token_file} is empty")
        return urlunsplit(parts._replace(path="/", query="", fragment="")), lines[0].strip()
    if parts.path.strip("/"):
        return url, None
    raise ConfigurationError(
        "no token: give the URL the endpoint printed (ws://127.0.0.1:PORT/TOKEN) "
        "or --token-file FILE"
    )


def redacted(url: str) -> str:
    """The URL without its path (where the token travels): safe to print and log."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


class DebugSession:
    """One admitted connection: `welcome`, then `receive()` snapshots and replies."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, welcome: Welcome) -> None:
        self._ws = ws
        self.welcome = welcome

    async def receive(self) -> EndpointMessage:
        return decode_endpoint_message(await self._ws.get_message())

    async def send(self, command: Command) -> None:
        await self._ws.send_message(encode(command))

    async def next_snapshot(self) -> Snapshot:
        while True:
            message = await self.receive()
            if isinstance(message, Snapshot):
                return message


@contextlib.asynccontextmanager
async def open_session(
    url: str, token_file: Path | None = None, timeout: float = 5.0
) -> AsyncIterator[DebugSession]:
    """Connect and be admitted; `ConfigurationError` if the token is refused (or there is
    none), `NetworkError` if the endpoint cannot be reached or does not answer."""
    target, token = endpoint_target(url, token_file)
    where = redacted(url)
    try:
        async with trio_websocket.open_websocket_url(
            target,
            connect_timeout=timeout,
            disconnect_timeout=1,
            max_message_size=MAX_SNAPSHOT_BYTES,
        ) as ws:
            if token is not None:
                await ws.send_message(encode(Hello(token)))
            with trio.move_on_after(timeout) as waiting:
                first = decode_endpoint_message(await ws.get_message())
            if waiting.cancelled_caught or not isinstance(first, Welcome):
                raise NetworkError(f"the debug endpoint at {where} did not welcome us")
            yield DebugSession(ws, first)
    except trio_websocket.ConnectionClosed as exc:
        if exc.reason.code == POLICY_VIOLATION:
            raise ConfigurationError(f"the debug endpoint at {where} refused the token") from exc
        raise NetworkError(f"the debug endpoint at {where} closed: {exc.reason}") from exc
    except (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as exc:
        raise NetworkError(f"cannot reach the debug endpoint at {where}: {exc}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise NetworkError(f"{where} does not speak the debug protocol: {exc}") from exc


def fetch_snapshot(url: str, token_file: Path | None = None, timeout: float = 10.0) -> Snapshot:
    """One snapshot of the runtime behind the endpoint (blocking; not from a trio loop)."""

    async def fetch() -> Snapshot:
        with trio.fail_after(timeout):
            async with open_session(url, token_file, timeout) as session:
                return await session.next_snapshot()

    try:
        return trio.run(fetch)
    except trio.TooSlowError as exc:
        raise NetworkError(f"no snapshot from {redacted(url)} within {timeout}s") from exc
    except BaseExceptionGroup as group:
        # Ctrl-C inside the websocket's nursery comes out wrapped: the caller sees Ctrl-C
        if group.split(KeyboardInterrupt)[1] is None:
            raise KeyboardInterrupt from None
        raise


# ---------------------------------------------------------------------- the console's link


@dataclass(frozen=True, slots=True)
class LinkUp:
    welcome: Welcome


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link is down: `final` when it will not try again (the token was refused)."""

    reason: str
    final: bool


LinkEvent = EndpointMessage | LinkUp | LinkDown


class DebugLink:
    """A connection to an endpoint kept on a trio thread of its own; see the module
    docstring. `deliver` is called on that thread: hand over thread-safely (a textual
    app's `post_message` is)."""

    def __init__(
        self,
        url: str,
        deliver: Callable[[LinkEvent], object],
        token_file: Path | None = None,
        retry_after: float = 1.0,
    ) -> None:
        endpoint_target(url, token_file)  # a bad URL or token file fails here, at once
        self.url = url
        self.token_file = token_file
        self.retry_after = retry_after
        self._deliver = deliver
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._stop_requested: trio.Event | None = None
        self._outbox: trio.MemorySendChannel[Command] | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False

    def start(self) -> None:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.name = "duplex-console-link"
        self._thread.start()
        self._ready.wait(5.0)

    def send(self, command: Command) -> bool:
        """Queue a command for the endpoint (any thread); False if the link is down."""
        token, outbox = self._trio_token, self._outbox
        if not self.connected or token is None or outbox is None:
            return False
        try:
            token.run_sync_soon(outbox.send_nowait, command)
        except trio.RunFinishedError:
            return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        token, stop_requested = self._trio_token, self._stop_requested
        if token is not None and stop_requested is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop_requested.set)
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        self._stop_requested = trio.Event()
        self._outbox, inbox = trio.open_memory_channel[Command](math.inf)
        self._trio_token = trio.lowlevel.current_trio_token()
        self._ready.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_connected, inbox)
            await self._stop_requested.wait()
            nursery.cancel_scope.cancel()

    async def _keep_connected(self, inbox: trio.MemoryReceiveChannel[Command]) -> None:
        while True:
            final = False
            try:
                async with open_session(self.url, self.token_file) as session:
                    self.connected = True
                    self._deliver(LinkUp(session.welcome))
                    await self._serve(session, inbox)
            except* ConfigurationError as group:
                final = True
                self._deliver(LinkDown(_message(group), final=True))
            except* (
                NetworkError,
                trio_websocket.ConnectionClosed,
                trio.BrokenResourceError,
            ) as group:
                self._deliver(LinkDown(_message(group), final=False))
            except* (msgspec.DecodeError, msgspec.ValidationError) as group:
                self._deliver(LinkDown(f"unreadable message: {_message(group)}", final=False))
            finally:
                self.connected = False
            if final:
                return
            await trio.sleep(self.retry_after)

    async def _serve(
        self, session: DebugSession, inbox: trio.MemoryReceiveChannel[Command]
    ) -> None:
        async def forward_commands() -> None:
            async for command in inbox:
                await session.send(command)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward_commands)
            while True:
                self._deliver(await session.receive())


def _message(group: BaseExceptionGroup) -> str:
    error = group.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return getattr(error, "message", None) or str(error)
