"""`ServerSessionActor`: one per queue server, between its QueueClient and the connections.

It receives the client's pushes (`MSG`, `END`) and connection state changes as messages
(told from the trio thread), routes each push to the `ConnectionActor` that owns the queue,
and, when the server comes back, tells every connection that was waiting on it to retry at
once instead of at its next timer. While connections wait and the server is down it probes
the server with PING on a backoff, so a recovery is noticed even with nothing subscribed
(and after a restart, when the waiting connections' stored retry times may be far ahead).
At boot it subscribes every receive queue of its server in one pipelined batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from actors.kernel import Actor, ActorContext, IoResult
from protocol import crypto
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
class _Probe:
    """The session's own timer: PING the server to learn whether it is back."""


@dataclass(frozen=True, slots=True)
class ServerUp:
    server: str


class ServerSessionActor(Actor):
    kind = "server-session"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.server = "duplex://" + ctx.key
        self.services = ctx.runtime.services["agent"]
        self.routes: dict[bytes, str] = {}
        self.waiting: set[str] = set()
        self.connected = False
        self.pushes = 0
        self.probes = 0
        self.probing = False

    def may_passivate(self) -> bool:
        return not self.waiting and not self.routes

    def summary(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "queues": len(self.routes),
            "waiting": len(self.waiting),
        }

    def receive(self, message: Any) -> Any:
        match message:
            case SessionPush(rcv_id=rcv_id):
                self._route(rcv_id, message)
            case ServerState(connected=connected):
                self.connected = connected
                if connected:
                    self._server_is_up()
            case Track(rcv_id=rcv_id, conn_id=conn_id):
                self.routes[rcv_id] = conn_id
            case Forget(rcv_id=rcv_id):
                self.routes.pop(rcv_id, None)
                self.submit_io(self._forget, rcv_id)
            case WaitingForServer(conn_id=conn_id):
                self.waiting.add(conn_id)
                if not self.probing:
                    self.probing = True
                    self.probes = 0
                    self.tell_self(_Probe())
            case _Probe():
                self.submit_io(self._ping)
            case SubscribeAll(queues=queues):
                for rcv_id, _, conn_id in queues:
                    self.routes[rcv_id] = conn_id
                keys = [(rcv_id, crypto.SigningKey.from_private(k)) for rcv_id, k, _ in queues]
                self.submit_io(self._subscribe_all, keys)
            case IoResult(value="pong"):
                self._server_is_up()
            case IoResult(value=None, error=error) if error is not None and self.probing:
                self.probes += 1
                retry = self.services.config.retry
                self.send_after(retry.delay(self.probes, self.probes * retry.initial), _Probe())
            case IoResult(error=error) if error is not None:
                log.info(
                    "subscription batch failed", extra={"server": self.server, "error": repr(error)}
                )
            case IoResult():
                pass
            case _:
                return super().receive(message)
        return None

    def _route(self, rcv_id: bytes, push: SessionPush) -> None:
        self.pushes += 1
        conn_id = self.routes.get(rcv_id)
        if conn_id is None:
            conn_id = self.services.store.conn_of_rcv_queue(rcv_id)
            if conn_id is None:
                log.warning("push for an unknown queue", extra={"server": self.server})
                return
            self.routes[rcv_id] = conn_id
        self.tell(connection_address(conn_id), push)

    async def _subscribe_all(self, keys: list[tuple[bytes, crypto.SigningKey]]) -> int:
        client = self.services.clients.get(self.server)
        failures = await client.subscribe_many(keys)
        return sum(1 for error in failures.values() if error is not None)

    def _server_is_up(self) -> None:
        self.probing = False
        for conn_id in sorted(self.waiting):
            self.tell(connection_address(conn_id), ServerUp(self.server))
        self.waiting.clear()

    async def _ping(self) -> str:
        await self.services.clients.get(self.server).request(Ping())
        return "pong"

    async def _forget(self, rcv_id: bytes) -> None:
        self.services.clients.get(self.server).forget_subscription(rcv_id)
