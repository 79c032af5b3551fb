"""The demo's stage: what the acts share — the narration and its checks, the two queue servers
(kept in the work directory with their ports, so a second run finds them again), the chat
clients of the cast (an owner, its members and two chat relays, opened and reopened from
their files), what each client was told, and reads of what each client stored (messages,
members, contacts, a relay's address and rosters).

Everything the demo claims is read back from the clients' own databases or events, never
assumed from what was asked of them.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from actors.agent.services import AgentConfig, RetryPolicy
from actors.chat import events as ce
from actors.chat_client import ChatClient
from protocol.client import ClientConfig
from protocol.errors import DuplexError
from protocol.server import QueueServer

# Quick retries and reconnects: the demo stops a server on purpose and should not wait out a
# production backoff to show that it came back.
DEMO_AGENT = AgentConfig(
    retry=RetryPolicy(initial=0.05, slow_after=0.5, factor=1.5, maximum=0.3),
    quota_retry=0.5,
    sync_timeout=15.0,
    client=ClientConfig(
        command_timeout=3.0, connect_timeout=1.0, backoff_initial=0.02, backoff_max=0.3
    ),
)
OWNER = "owner"
MEMBER_NAMES = ("ann", "bob", "cat", "dan", "eve")
SERVER_NAMES = ("a", "b")
# A chat relay on each server (its queues there), so a relay group has one relay left to
# deliver through when either server or either relay is down.
RELAY_SERVERS = {"relay-a": "a", "relay-b": "b"}
STATE_FILE = "demo.json"
WAIT = 30.0  # seconds any one claim may take to come true before it counts as failed


class ActFailed(Exception):
    """An act could not go on: the acts after it need what it failed to show."""


class Checks:
    """Prints each claim with a mark and remembers the ones that did not hold."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed: list[str] = []

    def check(self, claim: str, held: bool) -> bool:
        mark = "[green]✓[/]" if held else "[red]✗[/]"
        self.console.print(f"  {mark} {claim}")
        if not held:
            self.failed.append(claim)
        return held

    def must(self, claim: str, held: bool) -> None:
        """A claim the next steps depend on: the act stops if it does not hold."""
        if not self.check(claim, held):
            raise ActFailed(claim)


def until(condition: Callable[[], Any], timeout: float = WAIT) -> bool:
    """Poll `condition` until it is true; False if `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Inbox:
    """Every chat event one client told, kept in order, for claims about what it was told."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.seen: list[Any] = []

    def drain(self) -> list[Any]:
        while True:
            try:
                self.seen.append(self.client.chat_events.get_nowait())
            except queue.Empty:
                return self.seen

    def of(self, kind: type, **fields: Any) -> list[Any]:
        return [
            e
            for e in self.drain()
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        ]

    def wait_for(self, kind: type, timeout: float = WAIT, **fields: Any) -> Any:
        found: list[Any] = []
        until(lambda: found.extend(self.of(kind, **fields)) or found, timeout)
        return found[0] if found else None

    def told_messages(self, chat_id: str) -> list[str]:
        """The msg ids of the NEW_MESSAGE events told for `chat_id`, in order."""
        return [e.msg_id for e in self.of(ce.NewMessage, chat_id=chat_id)]


@dataclass
class Servers:
    """The two queue servers on loopback, each on its SQLite file in the work directory; the
    ports they listen on are kept in the state file, so a second run serves the same
    addresses (the TLS identity is in each server's database) and the links the clients
    stored still lead somewhere."""

    workdir: Path
    console: Console
    running: dict[str, QueueServer] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"sqlite:///{self.workdir / f'server-{name}.db'}"

    def start(self, name: str, stored_port: int | None = None) -> QueueServer:
        port = stored_port or self.ports.get(name, 0)
        try:
            server = QueueServer.start(self.url(name), port=port)
        except DuplexError:
            if not port:
                raise
            self.console.print(
                f"  [yellow]![/] port {port} of server {name} (from the previous run) is taken: "
                "it listens on a new port, so links stored earlier lead nowhere"
            )
            server = QueueServer.start(self.url(name), port=0)
        self.running[name] = server
        self.ports[name] = server.address.port
        self.reused[name] = bool(port) and server.address.port == port
        return server

    def stop(self, name: str) -> None:
        server = self.running.pop(name, None)
        if server is not None:
            server.stop()

    def address(self, name: str) -> str:
        return str(self.running[name].address)

    def name_of(self, address: str) -> str:
        return next((n for n, s in self.running.items() if str(s.address) == address), "?")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@dataclass
class Stage:
    """What every act reads and changes; see the module docstring."""

    workdir: Path
    console: Console
    checks: Checks
    members: tuple[str, ...]
    debug: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    servers: Servers = field(init=False)
    clients: dict[str, ChatClient] = field(default_factory=dict)
    inboxes: dict[str, Inbox] = field(default_factory=dict)
    contacts: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (at owner, at it)
    group_id: str = ""
    relay_group_id: str = ""
    crashed: list[tuple[str, str]] = field(default_factory=list)  # (client name, address)

    def __post_init__(self) -> None:
        self.servers = Servers(self.workdir, self.console)
        path = self.workdir / STATE_FILE
        self.state = json.loads(path.read_text()) if path.exists() else {}

    @property
    def second_run(self) -> bool:
        return bool(self.state.get("runs"))

    def save_state(self) -> None:
        self.state["servers"] = dict(self.servers.ports)
        (self.workdir / STATE_FILE).write_text(json.dumps(self.state, indent=2) + "\n")

    # ------------------------------------------------------------------ the cast

    @property
    def names(self) -> tuple[str, ...]:
        """The chat users: the owner and its members, who write to the groups."""
        return (OWNER, *self.members)

    @property
    def relays(self) -> tuple[str, ...]:
        return tuple(RELAY_SERVERS)

    @property
    def cast(self) -> tuple[str, ...]:
        """Every chat client of the demo: the users and the relays serving their groups."""
        return (*self.names, *self.relays)

    def servers_of(self, name: str) -> list[str]:
        """The owner makes its queues on server a, the members on server b: both carry
        traffic, and either may be stopped to hold messages on their way. Each relay is on
        the server its name says."""
        if name in RELAY_SERVERS:
            return [self.servers.address(RELAY_SERVERS[name])]
        return [self.servers.address("a" if name == OWNER else "b")]

    def open_client(self, name: str) -> ChatClient:
        client = ChatClient.open(
            f"sqlite:///{self.workdir / name}.db",
            self.servers_of(name),
            name=name,
            config=DEMO_AGENT,
            debug=self.debug,
        )
        self.clients[name] = client
        self.inboxes[name] = Inbox(client)
        return client

    def close_client(self, name: str) -> None:
        client = self.clients.pop(name, None)
        if client is not None:
            client.close()

    def close_all(self) -> None:
        for name in list(self.clients):
            self.close_client(name)

    @property
    def owner(self) -> ChatClient:
        return self.clients[OWNER]

    # ------------------------------------------------------------------ what was stored

    def received(self, name: str, chat_id: str) -> list[str]:
        """The msg ids `name` stored as received in chat `chat_id`, in order."""
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            rows = store.Message.select(store.Message.msg_id).where(
                (store.Message.chat_id == chat_id) & ~store.Message.sent
            )
            return [row.msg_id for row in rows.order_by(store.Message.id)]

    def connected_members(self, name: str, group_id: str) -> int:
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            group = store.Group.get_or_none(store.Group.group_id == group_id)
            if group is None or group.status != "connected":
                return -1
            query = store.Member.select().where(
                (store.Member.group_id == group_id) & (store.Member.status == "connected")
            )
            return query.count()

    def contact_rows(self, name: str) -> dict[str, tuple[str, str, str]]:
        """`name`'s contacts by display name: (contact id, connection id, status)."""
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            return {
                c.display_name: (c.contact_id, c.conn_id, c.status)
                for c in store.Contact.select().order_by(store.Contact.created_at)
                if c.display_name
            }

    def conn_to_member(self, name: str, group_id: str, member_id: str) -> str | None:
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            member = store.Member.get_or_none(
                (store.Member.group_id == group_id) & (store.Member.member_id == member_id)
            )
        return member.conn_id if member is not None else None

    def member_conns(self, name: str, group_id: str) -> list[str]:
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            rows = store.Member.select().where(
                (store.Member.group_id == group_id) & store.Member.conn_id.is_null(False)
            )
            return [row.conn_id for row in rows]

    def relay_address(self, relay: str) -> str | None:
        """The relay address `relay` stored (its link), if it made one."""
        store = self.clients[relay].services.store
        with store.transaction(read_only=True):
            row = store.Address.get_or_none(store.Address.relay & store.Address.link.is_null(False))
            return row.link if row is not None else None

    def roster(self, relay: str, group_id: str) -> list[str]:
        """The statuses of the roster `relay` stored for a group it serves (the owner's
        first, then each joiner's)."""
        store = self.clients[relay].services.store
        with store.transaction(read_only=True):
            rows = store.RelayMember.select().where(store.RelayMember.group_id == group_id)
            return [row.status for row in rows.order_by(store.RelayMember.id)]

    def relay_conns(self, name: str, group_id: str) -> list[str]:
        """The connections `name` made to the relays of relay group `group_id`."""
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            rows = store.GroupRelay.select().where(store.GroupRelay.group_id == group_id)
            return [row.conn_id for row in rows]

    def taken_from(self, name: str, relay: str, group_id: str) -> int:
        """How far `name` took the messages `relay` sent it in relay group `group_id`: the
        agent sequence number of the last one its chat processed (a copy dropped as a
        duplicate counts too: it was taken). -1 if they are not connected through it."""
        served = self.clients[relay].services.store
        with served.transaction(read_only=True):
            row = served.RelayGroup.get_or_none(served.RelayGroup.group_id == group_id)
            relay_link = row.relay_link if row is not None else None
        store = self.clients[name].services.store
        with store.transaction(read_only=True):
            ours = store.GroupRelay.get_or_none(
                (store.GroupRelay.group_id == group_id)
                & (store.GroupRelay.relay_link == relay_link)
            )
            taken = store.connection(ours.conn_id) if ours is not None else None
            return taken.last_msg_id if taken is not None else -1

    def delivered_once(
        self, sent: dict[str, list[str]], chat_id: str, among: Sequence[str] | None = None
    ) -> tuple[bool, str]:
        """Every message in `sent` (author name → msg ids, in the order sent) was stored and
        told exactly once at every other open client (of `among`, by default the owner and
        the members), in its author's order; and what went wrong if not."""
        wrong = []
        for name in [n for n in among or self.names if n in self.clients]:
            others = {author: ids for author, ids in sent.items() if author != name}
            stored = self.received(name, chat_id)
            told = self.inboxes[name].told_messages(chat_id)
            if not (_each_once_in_order(stored, others) and _each_once_in_order(told, others)):
                want, theirs = sum(map(len, others.values())), _all(others)
                wrong.append(
                    f"{name}: stored {sum(m in theirs for m in stored)}, "
                    f"told {sum(m in theirs for m in told)} of {want}"
                )
        return not wrong, "; ".join(wrong)

    def wait_delivered(
        self, sent: dict[str, list[str]], chat_id: str, among: Sequence[str] | None = None
    ) -> tuple[bool, str]:
        until(lambda: self.delivered_once(sent, chat_id, among)[0])
        time.sleep(0.1)  # a copy told twice would show now
        return self.delivered_once(sent, chat_id, among)


def _all(sent: dict[str, list[str]]) -> set[str]:
    return {m for ids in sent.values() for m in ids}


def _each_once_in_order(got: list[str], sent: dict[str, list[str]]) -> bool:
    """`got` holds each author's messages of `sent` once, in the order the author sent them
    (with whatever else between them)."""
    return all([m for m in got if m in set(ids)] == ids for ids in sent.values())
