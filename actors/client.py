"""`Client`: the embedded runtime's synchronous, thread-safe facade (the agent part).

    client = Client.open("sqlite:///alice.db", servers=[server_address])
    conn_id, link = client.create_connection()            # sync: waits, raises on error
    conn_id = client.join_connection_async("cmd-7", link, b"my info")   # async: at once
    event = client.agent_events.get(timeout=5)             # INV, JOINED, CONF, CON, MSG …
    client.ack_command_event("cmd-7")                      # the event may now be forgotten
    client.close()

Every network-touching call has two forms. The async form persists the command and returns
the connection id at once; its completion arrives as an event carrying the `corr_id`, is
retried through temporary failures, survives crashes, and is re-emitted until
`ack_command_event`. The sync form does the same work once and waits: it raises
`AgentError` (or a `QueueFault`) so that a user can retry. `ack_message` is durable in
both forms: it returns once the ACK is stored; the connection delivers it to the server
with retries, also after a restart.

Every error raised here is a `DuplexError`; the kernel's own errors are mapped at this edge
(`ActorUnavailable`, `AskTimeout`).

With `debug=True` the client also serves the debug endpoint (actors/debug): `duplex console`
and `duplex tree` connect to `client.debug_endpoint.url_with_token`, or to its `url` with
its `token_file`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pykka

from actors.agent import events as ev
from actors.agent.agent import (
    AcceptContact,
    AgentActor,
    AllowConnection,
    CreateConnection,
    DeleteConnection,
    GetLinkData,
    JoinConnection,
    RejectContact,
    SetLinkData,
)
from actors.agent.connection import (
    AbortSwitch,
    AckMessage,
    GetInfo,
    GetStatus,
    SendMessage,
    StartSwitch,
)
from actors.agent.model import CommandOrigin
from actors.agent.services import AgentConfig, AgentServices, EventStream, QueueClients
from actors.agent.sessions import connection_address
from actors.debug import DebugEndpoint
from actors.kernel import ActorUnavailable as KernelUnavailable
from actors.kernel import AskTimeout as KernelAskTimeout
from actors.kernel import ChildSpec, KernelError, Runtime, RuntimeConfig, TreeNode
from protocol.address import b64url
from protocol.errors import ActorUnavailable, AgentError, AskTimeout, DuplexError, RuntimeFault
from protocol.queue import QueueMode
from storage.agent import AGENT_LAYER, AgentStore
from storage.database import Database, open_database

AGENT = "client/agent"

log = logging.getLogger(__name__)


class Client:
    """A running agent on its own database; see the module docstring."""

    def __init__(
        self, runtime: Runtime, services: AgentServices, database: Database, owns_database: bool
    ) -> None:
        self.runtime = runtime
        self.services = services
        self.database = database
        self._owns_database = owns_database
        self.agent_events: EventStream = services.events
        self.debug_endpoint: DebugEndpoint | None = None

    @classmethod
    def open(
        cls,
        db: str | Database,
        servers: Sequence[str],
        *,
        config: AgentConfig | None = None,
        runtime_config: RuntimeConfig | None = None,
        passphrase: str | None = None,
        debug: bool = False,
    ) -> Client:
        """Open (or create) a client database and resume everything it had in progress.

        `db` is a URL (`sqlite:///path`, `postgresql://…`) or a `Database` opened for the
        agent layer. With `passphrase`, a SQLite file is encrypted with SQLCipher (the
        `duplex[encrypted]` extra); a wrong one raises `WrongPassphrase` and changes nothing.
        With `debug`, the debug endpoint is served too (`debug_endpoint`).
        """
        if isinstance(db, str):
            database = open_database(db, layers=[AGENT_LAYER], passphrase=passphrase)
        else:
            database = db
        config = config or AgentConfig()
        runtime = Runtime(config=runtime_config, database=database)
        services = AgentServices(
            store=AgentStore(database),
            servers=tuple(str(s) for s in servers),
            config=config,
            events=EventStream(),
            clients=QueueClients(runtime, config.client),
        )
        runtime.services["agent"] = services
        client = cls(runtime, services, database, owns_database=isinstance(db, str))
        try:
            with mapped_kernel_errors():
                runtime.boot([ChildSpec("agent", AgentActor)])
                if debug:
                    client.debug_endpoint = DebugEndpoint.start(runtime)
        except BaseException:
            client.close()
            raise
        return client

    # ------------------------------------------------------------------ connections

    def create_connection(
        self, mode: QueueMode = QueueMode.MESSAGING, conn_id: str | None = None
    ) -> tuple[str, str]:
        """Create a connection and its link (an invitation, or a contact address); a layer
        above may choose its `conn_id` (1-64 of A-Z a-z 0-9 _ -)."""
        event = self._sync(lambda corr: CreateConnection(corr, mode, _SYNC, conn_id))
        assert isinstance(event, ev.Inv)
        return event.conn_id, event.link

    def create_connection_async(self, corr_id: str, mode: QueueMode = QueueMode.MESSAGING) -> str:
        return self._ask(CreateConnection(corr_id, mode))

    def join_connection(self, link: str, info: bytes = b"") -> str:
        return self._sync(lambda corr: JoinConnection(corr, link, info, _SYNC)).conn_id

    def join_connection_async(self, corr_id: str, link: str, info: bytes = b"") -> str:
        return self._ask(JoinConnection(corr_id, link, info))

    def allow_connection(self, conn_id: str, conf_id: str, info: bytes = b"") -> None:
        self._sync(lambda corr: AllowConnection(corr, conn_id, conf_id, info, _SYNC))

    def allow_connection_async(
        self, corr_id: str, conn_id: str, conf_id: str, info: bytes = b""
    ) -> str:
        return self._ask(AllowConnection(corr_id, conn_id, conf_id, info))

    def accept_contact(self, inv_id: str, info: bytes = b"") -> str:
        return self._sync(lambda corr: AcceptContact(corr, inv_id, info, _SYNC)).conn_id

    def accept_contact_async(self, corr_id: str, inv_id: str, info: bytes = b"") -> str:
        return self._ask(AcceptContact(corr_id, inv_id, info))

    def reject_contact(self, inv_id: str) -> None:
        self._ask(RejectContact(inv_id))

    def delete_connection(self, conn_id: str, wait_delivery: bool = False) -> None:
        """Delete the connection (its queues on the servers, then its rows).

        With `wait_delivery`, the messages it stored for delivery go first: the delete waits
        until each was sent (`SENT`) or dropped (`MERR`, e.g. `EXPIRED` past the message
        TTL), refusing new sends meanwhile (`AgentError` code `DELETING`). This form waits at
        most `sync_timeout` (then `AskTimeout`, and the delete goes on): a wait that may be
        long, such as for a server that is down, is for the async form."""
        self._sync(lambda corr: DeleteConnection(corr, conn_id, _SYNC, wait_delivery))

    def delete_connection_async(
        self, corr_id: str, conn_id: str, wait_delivery: bool = False
    ) -> str:
        """As `delete_connection`; `OK` with `corr_id` once the connection is gone. With
        `wait_delivery` that may be long after (the wait survives restarts)."""
        return self._ask(DeleteConnection(corr_id, conn_id, wait_delivery=wait_delivery))

    def set_link_data(self, conn_id: str, user_data: bytes = b"") -> str:
        """Publish `user_data` behind a short link to a contact address; returns the link."""
        return self._sync(lambda corr: SetLinkData(corr, conn_id, user_data, _SYNC)).short_link

    def set_link_data_async(self, corr_id: str, conn_id: str, user_data: bytes = b"") -> str:
        return self._ask(SetLinkData(corr_id, conn_id, user_data))

    def get_link_data(self, short_link: str) -> tuple[str, bytes]:
        """Resolve a short link: (the connection link, the user data behind it)."""
        event = self._sync(lambda corr: GetLinkData(corr, short_link, _SYNC))
        return event.link, event.user_data

    def get_link_data_async(self, corr_id: str, short_link: str) -> str:
        return self._ask(GetLinkData(corr_id, short_link))

    def connection_status(self, conn_id: str) -> ev.ConnectionStatus | None:
        """The connection's summary, or None if there is no such connection."""
        return self._ask(GetStatus(), connection_address(conn_id))

    def connection_info(self, conn_id: str) -> ev.ConnectionInfo:
        """The connection's queues and where a queue rotation stands (AgentError if none)."""
        return self._ask(GetInfo(), connection_address(conn_id))

    # ------------------------------------------------------------------ queue rotation

    def switch_connection(self, conn_id: str, server: str | None = None) -> ev.ConnectionInfo:
        """Rotate the connection's receive queue to `server` (by default another of this
        client's servers, when it has one); returns once the switch has started, with the
        connection's info. The rest runs in the background and is told as SWITCH events."""
        address = connection_address(conn_id)
        return self._sync(lambda corr: StartSwitch(corr, server, _SYNC), address).info

    def switch_connection_async(self, corr_id: str, conn_id: str, server: str | None = None) -> str:
        return self._ask(StartSwitch(corr_id, server), connection_address(conn_id))

    def abort_switch(self, conn_id: str) -> ev.ConnectionInfo:
        """Undo a switch the peer does not know of yet (`can_abort_switch`); PROHIBITED after."""
        return self._ask(AbortSwitch(), connection_address(conn_id))

    # ------------------------------------------------------------------ messages

    def send_message(self, conn_id: str, body: bytes) -> int:
        """Store `body` for delivery on the connection; returns its message id."""
        return self._ask(SendMessage(body), connection_address(conn_id))

    def send_message_async(self, corr_id: str, conn_id: str, body: bytes) -> str:
        """As `send_message`, acknowledged: `OK` with `corr_id` is told once the message is
        stored for delivery (kept until `ack_command_event`). The same `corr_id` again
        stores nothing new and tells its `OK` again, so a caller unsure whether a message
        was handed over (after a crash) may hand it over again: it is sent once."""
        self._ask(SendMessage(body, corr_id), connection_address(conn_id))
        return conn_id

    def ack_message(self, conn_id: str, msg_id: int) -> None:
        """The user processed MSG `msg_id`: returns once the ACK is stored. The connection
        delivers it to the server (which then hands out the next message), with retries."""
        self._ask(AckMessage(msg_id), connection_address(conn_id))

    def ack_message_async(self, corr_id: str, conn_id: str, msg_id: int) -> str:
        """As `ack_message`; `OK` with `corr_id` is told once the server took the ACK."""
        self._ask(AckMessage(msg_id, corr_id), connection_address(conn_id))
        return conn_id

    def ack_command_event(self, corr_id: str) -> None:
        """The completion event of `corr_id` was processed: forget it (returns once it is).

        A command with a stored event is done: no connection actor holds or changes its row
        any more, so the row is deleted here, in one transaction on the caller's thread."""
        self.services.store.forget_command_event(corr_id)

    # ------------------------------------------------------------------ runtime

    def tree(self) -> TreeNode:
        return self.runtime.tree()

    def close(self) -> None:
        """Close the queue sessions, stop the runtime (no thread of it is left running) and
        close the database if this client opened it. Idempotent."""
        if self.debug_endpoint is not None:
            self.debug_endpoint.stop()
        if self.runtime.io_running:
            try:
                self.runtime.io.run(self.services.clients.close_all, timeout=5)
            except (KernelError, DuplexError, OSError) as exc:  # closing anyway
                log.warning("closing the queue sessions failed", extra={"error": repr(exc)})
        self.runtime.shutdown()
        if self._owns_database:
            self.database.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _ask(self, message: Any, address: str = AGENT) -> Any:
        with mapped_kernel_errors():
            return self.runtime.ask(address, message)

    def _sync(self, build: Any, address: str = AGENT) -> Any:
        corr_id = f"sync-{b64url(os.urandom(12))}"
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        with self.services.waiters_lock:
            self.services.waiters[corr_id] = future
        try:
            self._ask(build(corr_id), address)
            deadline = time.monotonic() + self.services.config.sync_timeout
            try:
                return future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout as exc:
                raise AskTimeout("the command did not finish in time") from exc
        finally:
            self.services.take_waiter(corr_id)


_SYNC = CommandOrigin.SYNC


@contextlib.contextmanager
def mapped_kernel_errors() -> Iterator[None]:
    """The kernel's errors as duplex errors (the kernel knows nothing of duplex)."""
    try:
        yield
    except KernelUnavailable as exc:
        raise ActorUnavailable(str(exc)) from exc
    except KernelAskTimeout as exc:
        raise AskTimeout(str(exc)) from exc
    except KernelError as exc:
        raise RuntimeFault(str(exc)) from exc


__all__ = ["AgentError", "Client"]
