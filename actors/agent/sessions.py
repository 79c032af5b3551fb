"""`ServerSessionActor`: one per queue server, between its QueueClient and the connections.

It keeps the push routes of its server (receive queue → owning connection, in
`QueueClients.routes`): the trio thread tells a push of a known queue straight to its
`ConnectionActor`, and any other push here, where the owner is looked up in the store,
told the push, and the route published for the next ones. It hears the client's connection
state changes (told from the trio thread) and knows whether its server answers, and tells
the program so: `DOWN` when a request failed for lack of the server (or the connection
dropped), `UP` when it answers again — each once per transition, with the connections that
have queues or work there. When the server comes back it tells every connection that was
waiting on it to retry at once; while connections wait and the server is down it probes
the server with PING on a backoff, so a recovery is noticed even with nothing subscribed.

At boot it subscribes every receive queue of its server in one pipelined batch. A batch
that fails (the I/O thread restarting, the server not answering) is retried on the backoff
until every queue is subscribed or refused for good: no failure is dropped. I/O results are
matched to what was asked by request id.

For fault drills (the debug console) it drops its server's connection on `DropConnection`,
as a network failure would, or keeps it down until `ResumeConnection`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from actors.agent import events as ev
from actors.kernel import Actor, ActorContext, IoResult
from protocol import crypto
from protocol.errors import QueueFault, ServerError
from protocol.queue import Ping, Reply

log = logging.getLogger(__name__)

SERVERS = "client/agent/servers"
CONNS = "client/agent/conns"


def session_address(server: str) -> str:
    # an address segment holds no "/": drop the scheme of duplex://fp@host:port
    return f"{SERVERS}/{server.removeprefix('duplex://')}"


def connection_address(conn_id: str) -> str:
    return f"{CONNS}/{conn_id}"


@dataclass(frozen=True, slots=True)
class SessionPush:
    rcv_id: bytes
    reply: Reply


@dataclass(frozen=True, slots=True)
class ServerState:
    connected: bool


@dataclass(frozen=True, slots=True)
class SubscribeAll:
    """Boot: subscribe these queues (rcv_id, recipient auth private key, conn_id)."""

    queues: tuple[tuple[bytes, bytes, str], ...]


@dataclass(frozen=True, slots=True)
class Track:
    """A connection owns this receive queue (after NEW): route its pushes there."""

    rcv_id: bytes
    conn_id: str


@dataclass(frozen=True, slots=True)
class Forget:
    rcv_id: bytes


@dataclass(frozen=True, slots=True)
class WaitingForServer:
    """A connection hit a temporary error here; tell it when the server is back."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class ServerUp:
    server: str


@dataclass(frozen=True, slots=True)
class DropConnection:
    """A fault drill: drop the server's connection (the client reconnects with its
    backoff); with `pause`, keep it down, every request failing at once, until resumed."""

    pause: bool = False


@dataclass(frozen=True, slots=True)
class ResumeConnection:
    """End a paused `DropConnection`: connect again."""


@dataclass(frozen=True, slots=True)
class _Probe:
    """The session's own timer: PING the server to learn whether it is back."""


@dataclass(frozen=True, slots=True)
class _Resubscribe:
    """The session's own timer: subscribe again what the last batch could not."""


class _Request(enum.Enum):
    SUBSCRIBE = "subscribe"
    PING = "ping"
    FORGET = "forget"
    DRILL = "drill"


class ServerSessionActor(Actor):
    kind = "server-session"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.server = "duplex://" + ctx.key
        self.services = ctx.runtime.services["agent"]
        # shared with the trio thread, and kept across activations (a route never changes)
        self.routes: dict[bytes, str] = self.services.clients.routes(self.server)
        self.waiting: set[str] = set()
        self.up: bool | None = None  # unknown until the first answer or failure
        self.pushes = 0  # pushes routed here: of queues whose route was not known yet
        self.probes = 0
        self.probing = False
        self._requests: dict[int, _Request] = {}
        self._unsubscribed: dict[bytes, bytes] = {}  # rcv_id → auth private key, to retry
        self._subscribe_failures = 0

    def may_passivate(self) -> bool:
        return not (self.waiting or self.routes or self._unsubscribed or self._requests)

    def summary(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "queues": len(self.routes),
            "waiting": len(self.waiting),
            "unsubscribed": len(self._unsubscribed),
            "paused": self.services.clients.is_paused(self.server),
        }

    def receive(self, message: Any) -> Any:
        match message:
            case SessionPush(rcv_id=rcv_id):
                self._route(rcv_id, message)
            case ServerState(connected=True):
                self._server_is_up()
            case ServerState(connected=False):
                self._server_is_down()
            case Track(rcv_id=rcv_id, conn_id=conn_id):
                self.routes[rcv_id] = conn_id
            case Forget(rcv_id=rcv_id):
                self.routes.pop(rcv_id, None)
                self._unsubscribed.pop(rcv_id, None)
                self._submit(_Request.FORGET, self._forget, rcv_id)
            case WaitingForServer(conn_id=conn_id):
                self.waiting.add(conn_id)
                self._server_is_down()
                if not self.probing:
                    self.probing = True
                    self.probes = 0
                    self.tell_self(_Probe())
            case _Probe():
                self._submit(_Request.PING, self._ping)
            case SubscribeAll(queues=queues):
                for rcv_id, key, conn_id in queues:
                    self.routes[rcv_id] = conn_id
                    self._unsubscribed[rcv_id] = key
                self._subscribe()
            case _Resubscribe():
                self._subscribe()
            case DropConnection(pause=pause):
                self._submit(_Request.DRILL, self._drop, pause)
            case ResumeConnection():
                self._submit(_Request.DRILL, self._resume)
            case IoResult(request_id=request_id):
                what = self._requests.pop(request_id, None)
                if what is not None:
                    self._io_result(what, message)
            case _:
                return super().receive(message)
        return None

    # ------------------------------------------------------------------ I/O

    def _submit(self, what: _Request, coroutine_fn: Any, *args: Any) -> None:
        self._requests[self.submit_io(coroutine_fn, *args)] = what

    def _io_result(self, what: _Request, result: IoResult) -> None:
        if what is _Request.PING:
            if result.ok:
                self._server_is_up()
            elif self.probing:
                self.probes += 1
                retry = self.services.config.retry
                self.send_after(retry.delay(self.probes, self.probes * retry.initial), _Probe())
        elif what is _Request.SUBSCRIBE:
            self._subscribed(result)
        elif not result.ok:
            log.info(
                "session request failed", extra={"request": what.value, "error": repr(result.error)}
            )

    def _subscribe(self) -> None:
        if not self._unsubscribed or _Request.SUBSCRIBE in self._requests.values():
            return
        keys = [
            (rcv_id, crypto.SigningKey.from_private(bytes(key)))
            for rcv_id, key in self._unsubscribed.items()
        ]
        self._submit(_Request.SUBSCRIBE, self._subscribe_all, keys)

    def _subscribed(self, result: IoResult) -> None:
        if result.ok:
            failures: dict[bytes, BaseException | None] = result.value
        else:  # the batch did not run at all (the I/O thread restarting …): all again
            failures = {rcv_id: result.error for rcv_id in self._unsubscribed}
        retry = unreachable = False
        for rcv_id, error in failures.items():
            if error is None:
                self._unsubscribed.pop(rcv_id, None)
            elif isinstance(error, QueueFault) and not error.temporary:
                log.warning("queue refused its subscription", extra={"error": str(error)})
                self._unsubscribed.pop(rcv_id, None)
            else:
                retry = True
                # a refusal (ERR INTERNAL …) comes from a server that is up
                unreachable = unreachable or not isinstance(error, ServerError)
        if retry:
            if unreachable:
                self._server_is_down()
            self._subscribe_failures += 1
            policy = self.services.config.retry
            delay = policy.delay(
                self._subscribe_failures, self._subscribe_failures * policy.initial
            )
            self.send_after(delay, _Resubscribe())
        else:
            self._subscribe_failures = 0

    async def _subscribe_all(
        self, keys: list[tuple[bytes, crypto.SigningKey]]
    ) -> dict[bytes, BaseException | None]:
        client = self.services.clients.get(self.server)
        return dict(await client.subscribe_many(keys))

    async def _ping(self) -> None:
        await self.services.clients.get(self.server).request(Ping())

    async def _forget(self, rcv_id: bytes) -> None:
        self.services.clients.get(self.server).forget_subscription(rcv_id)

    async def _drop(self, pause: bool) -> None:
        self.services.clients.get(self.server).drop_connection(pause=pause)

    async def _resume(self) -> None:
        self.services.clients.get(self.server).resume()

    # ------------------------------------------------------------------ routing and state

    def _route(self, rcv_id: bytes, push: SessionPush) -> None:
        self.pushes += 1
        conn_id = self.routes.get(rcv_id)
        if conn_id is None:
            conn_id = self.services.store.conn_of_rcv_queue(rcv_id)
            if conn_id is None:
                log.warning("push for an unknown queue", extra={"server": self.server})
                return
        self.tell(connection_address(conn_id), push)
        self.routes[rcv_id] = conn_id  # published after the tell: later pushes go after it

    def _affected(self) -> list[str]:
        return sorted(set(self.routes.values()) | self.waiting)

    def _server_is_down(self) -> None:
        if self.up is not False:
            self.up = False
            self.services.events.put(ev.Down(self.server, self._affected()))

    def _server_is_up(self) -> None:
        if self.up is False:
            self.services.events.put(ev.Up(self.server, self._affected()))
        self.up = True
        self.probing = False
        for conn_id in sorted(self.waiting):
            self.tell(connection_address(conn_id), ServerUp(self.server))
        self.waiting.clear()
        if self._unsubscribed:
            self._subscribe()
