"""The agent's shared services: configuration, store, queue clients, event sink, waiters.

One `AgentServices` per runtime, reachable from every agent actor as
`runtime.services["agent"]`. The `QueueClients` registry lives on the trio side: its clients
are only touched by coroutines running in the runtime's I/O thread. Its push routes (which
connection owns a receive queue) are written by each server's session actor and read by the
trio thread, which tells a push straight to the owning connection when it knows it.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pykka

from actors.agent.sessions import ServerState, SessionPush, connection_address, session_address
from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import ClientConfig, QueueClient
from protocol.errors import ConfigurationError
from protocol.queue import Command, Reply
from storage.agent import AgentStore

if TYPE_CHECKING:
    from actors.kernel import Runtime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of temporary errors: `initial` s, growing by `factor` once `slow_after` s have
    passed since the first failure, at most `maximum` s."""

    initial: float = 2.0
    slow_after: float = 10.0
    factor: float = 1.5
    maximum: float = 120.0

    def delay(self, attempts: int, failing_for: float) -> float:
        if failing_for < self.slow_after:
            return self.initial
        grown = self.initial * self.factor ** max(0, attempts - 1)
        return min(grown, self.maximum)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    retry: RetryPolicy = RetryPolicy()
    command_ttl: float = 48 * 3600.0
    message_ttl: float = 48 * 3600.0
    quota_retry: float = 60.0  # after QUOTA, until the peer's QCONT arrives
    sync_timeout: float = 30.0
    client: ClientConfig = ClientConfig()


class EventStream:
    """The events of one runtime, in order: a blocking iterator with `get(timeout)`."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def put(self, event: Any) -> None:
        self._queue.put(event)

    def get(self, timeout: float | None = None) -> Any:
        """The next event; raises `queue.Empty` after `timeout` seconds."""
        return self._queue.get(timeout=timeout)

    def get_nowait(self) -> Any:
        return self._queue.get_nowait()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Any:
        return self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()


class QueueClients:
    """One QueueClient per server on the runtime's trio loop (use only from that loop), and
    the push routes of each server (`routes`)."""

    def __init__(self, runtime: Runtime, config: ClientConfig) -> None:
        self._runtime = runtime
        self._config = config
        self._clients: dict[str, QueueClient] = {}
        self._bridge: object | None = None
        self._routes: dict[str, dict[bytes, str]] = {}

    def routes(self, server: str) -> dict[bytes, str]:
        """`server`'s receive queue id → the id of the connection that owns it.

        Only that server's session actor writes it (it learns a route from `Track`, the
        boot's subscriptions or the store, and publishes it only after it told the push it
        learnt it from), and the trio thread reads it (single dict operations, atomic under
        the GIL). A push of a queue with a known route goes straight to its connection;
        any other goes through the session. Either way a queue's MSGs stay in order: the
        server hands out a queue's next MSG only after the ACK of the one before."""
        return self._routes.setdefault(server, {})

    def get(self, server: str) -> QueueClient:
        bridge = self._runtime.io
        if bridge is not self._bridge:  # the io actor restarted: old clients died with it
            self._clients.clear()
            self._bridge = bridge
        client = self._clients.get(server)
        if client is None:
            tell = self._runtime.directory.tell
            address = session_address(server)
            routes = self.routes(server)

            def on_push(entity: bytes, reply: Reply) -> None:
                conn_id = routes.get(entity)
                target = address if conn_id is None else connection_address(conn_id)
                tell(target, SessionPush(entity, reply))

            client = QueueClient(
                ServerAddress.parse(server),
                bridge.nursery,
                on_push=on_push,
                on_state=lambda connected: tell(address, ServerState(connected)),
                config=self._config,
            )
            self._clients[server] = client
        return client

    def is_paused(self, server: str) -> bool:
        """Whether a fault drill holds the session to `server` down (any thread may ask)."""
        client = self._clients.get(server)
        return client is not None and client.paused

    async def request(
        self,
        server: str,
        command: Command,
        entity_id: bytes = b"",
        key: crypto.SigningKey | None = None,
    ) -> Reply:
        return await self.get(server).request(command, entity_id=entity_id, key=key)

    async def close_all(self) -> None:
        for client in list(self._clients.values()):
            await client.aclose()
        self._clients.clear()


@dataclass(eq=False)
class AgentServices:
    """Everything agent actors share within one runtime."""

    store: AgentStore
    servers: Sequence[str]
    config: AgentConfig
    events: EventStream
    clients: QueueClients
    waiters: dict[str, pykka.Future[Any]] = field(default_factory=dict)
    waiters_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigurationError("the agent needs at least one queue server address")
        for server in self.servers:
            ServerAddress.parse(server)  # a clear error now rather than at the first NEW

    def pick_server(self) -> str:
        return random.choice(list(self.servers))

    def take_waiter(self, corr_id: str) -> pykka.Future[Any] | None:
        with self.waiters_lock:
            return self.waiters.pop(corr_id, None)
