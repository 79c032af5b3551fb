"""Helpers for chat scenario tests: chat clients on real SQLite files, their events, and what
they stored (read from their databases, not from logs), to tell a converged group from one
that only looks converged.

`Stored.of(client)` is a snapshot of a client's chat and agent rows that matter for
convergence; `settled` says whether a set of clients is done with a group: every member
connected to every other, no chat command pending, no outbox or pending row left, no
completion event of the agent left unacknowledged, no received message left unacknowledged,
and every introduction reported done to the host (polled with one SQL statement per client:
the chat's and the agent's tables share a database). `assert_acted_once` then counts what a
join made, which a step acted on twice would multiply: introductions at the host, member
rows, agent connections, queues on the server.

`start_killed` / `wait_killed` run a client's database in a child process that SIGKILLs
itself at a fault point (chat_child.py), for the kill -9 tests.

For the endings of a group (leave, remove, delete): `group_of` makes a settled group of a
host and named members, `wait_ended` polls until every client holds the expected group and
member statuses with the connections of what ended deleted on both the chat's and the
agent's side, and `content` is every chat row of a client (what "changes nothing" compares).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.chat import events as cev
from actors.chat_client import ChatClient
from protocol.chat import GroupRole
from protocol.server import QueueServer
from tests.helpers import eventually
from tests.scenarios.agents import Events


def chat_events(client: ChatClient) -> Events:
    """Everything a chat client told, kept; `wait_for` polls for a matching event."""
    return Events(client, client.chat_events)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    explain: Callable[[], Any] | None = None,
) -> Any:
    """`eventually` with the chat scenarios' longer default and a slower poll (each poll is
    an SQL statement per client)."""
    return eventually(predicate, timeout, what, explain, interval=0.02)


def befriend(a: ChatClient, a_events: Events, b: ChatClient, b_events: Events) -> tuple[str, str]:
    """A invites B as a contact; returns (B's contact id at A, A's contact id at B)."""
    a_contact = a.create_contact_link()
    link = a_events.wait_for(cev.ContactLink, contact_id=a_contact).link
    b_contact = b.join_contact(link)
    a_events.wait_for(cev.ContactConnected, contact_id=a_contact, timeout=15)
    b_events.wait_for(cev.ContactConnected, contact_id=b_contact, timeout=15)
    return a_contact, b_contact


def invite(
    host: ChatClient,
    h_events: Events,
    group_id: str,
    client: ChatClient,
    events: Events,
    *,
    role: GroupRole = GroupRole.MEMBER,
) -> str:
    """The host befriends `client` and adds it to the group as `role`; the invitation
    arrived (not joined yet). Returns the new member's id."""
    h_contact, _ = befriend(host, h_events, client, events)
    member_id = host.add_member(group_id, h_contact, role)
    events.wait_for(cev.GroupInvitation, group_id=group_id, timeout=15)
    return member_id


def host_and_member(server: QueueServer, open_chat: Callable[..., Any]) -> tuple[Any, ...]:
    """H hosts a group with member M connected; I is open, not H's contact yet. Returns
    (group id, (H, events), (M, events), (I, events)); the clients are named host, m, i."""
    host, h_events = open_chat("host", [server])
    group_id = host.create_group("club")
    m, m_events = open_chat("m", [server])
    invite(host, h_events, group_id, m, m_events)
    m.join_group(group_id)
    wait_settled([host, m], group_id)
    i, i_events = open_chat("i", [server])
    return group_id, (host, h_events), (m, m_events), (i, i_events)


def exchange(clients: Sequence[ChatClient], group_id: str) -> None:
    """Each client sends one group message; each receives every other's (once: the ids)."""
    before = {id(c): len(received(c, group_id)) for c in clients}
    for n, client in enumerate(clients):
        client.send_group_message(group_id, f"from {n}")
    for client in clients:
        want = before[id(client)] + len(clients) - 1
        wait_until(
            lambda c=client, w=want: len(set(received(c, group_id))) >= w,
            what="the group messages",
            explain=lambda c=client: received(c, group_id),
        )
        got = received(client, group_id)
        assert len(got) == len(set(got)) == want, got


def start_killed(
    tmp_path: Path,
    name: str,
    server: QueueServer,
    fault: tuple[str, str],
    *,
    join: str = "",
    connect: str = "",
    leave: str = "",
) -> subprocess.Popen:
    """Serve `name`'s chat database (in tmp_path, as `open_chat` names it) in a child
    process that SIGKILLs itself at `fault`, a fault point and a kind (chat_child.py); with
    `join`, the child joins that group first; with `connect`, it connects that prepared
    relay group first; with `leave`, it leaves that group first."""
    spec = {
        "db": f"sqlite:///{tmp_path / name}.db",
        "servers": [str(server.address)],
        "name": name,
        "join": join,
        "connect": connect,
        "leave": leave,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.scenarios.chat_child", json.dumps(spec)],
        env={**os.environ, "DUPLEX_FAULTS": f"{fault[0]}:{fault[1]}:kill"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_killed(child: subprocess.Popen) -> None:
    """The child ended by its SIGKILL (not by its deadline, not by an error)."""
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, (child.returncode, err[-3000:])


# ---------------------------------------------------------------------- stored state


@dataclass(frozen=True)
class Stored:
    """What one client stored that says whether it converged, and how often things were done."""

    group_status: str | None
    members: tuple[tuple[str, str, str | None], ...]  # (member id, status, conn id)
    intros: tuple[tuple[str, str, str], ...]  # at the host: (re, to, status)
    pending_commands: tuple[str, ...]  # functions of chat commands not done yet
    failed_commands: tuple[str, ...]
    outbox: int
    pending_messages: int  # group messages waiting for a member
    unacked_events: int  # agent completion events the chat did not acknowledge
    unacked_messages: int  # received agent messages the chat did not acknowledge
    chat_connections: frozenset[str]  # connections the chat says it owns
    owned: frozenset[str]  # connection ids of contacts, addresses and members
    agent_connections: frozenset[str]
    rcv_queues: int
    messages: tuple[tuple[str, str, str, bool], ...]  # (chat id, msg id, author, sent), in order

    @classmethod
    def of(cls, client: ChatClient, group_id: str | None = None) -> Stored:
        chat = client.services.store
        agent = client.agent.services.store
        with chat.transaction(read_only=True):
            group = chat.Group.get_or_none(chat.Group.group_id == group_id) if group_id else None
            members = tuple(
                (m.member_id, m.status, m.conn_id)
                for m in chat.Member.select()
                .where(chat.Member.group_id == group_id)
                .order_by(chat.Member.id)
            )
            intros = tuple(
                (i.re_member_id, i.to_member_id, i.status)
                for i in chat.Intro.select()
                .where(chat.Intro.group_id == group_id)
                .order_by(chat.Intro.id)
            )
            commands = list(chat.Command.select())
            outbox = chat.Outbox.select().count()
            pending = chat.Pending.select().count()
            chat_connections = frozenset(c.conn_id for c in chat.Connection.select())
            owned = {c.conn_id for c in chat.Contact.select()}
            owned |= {a.conn_id for a in chat.Address.select()}
            owned |= {m.conn_id for m in chat.Member.select() if m.conn_id is not None}
            messages = tuple(
                (m.chat_id, m.msg_id, m.author, m.sent)
                for m in chat.Message.select().order_by(chat.Message.id)
            )
        with agent.transaction(read_only=True):
            unacked_events = agent.Command.select().where(agent.Command.event.is_null(False))
            unacked_events = unacked_events.count()
            unacked_messages = agent.RcvMessage.select().count()
            agent_connections = frozenset(c.conn_id for c in agent.Connection.select())
            rcv_queues = agent.RcvQueue.select().count()
        return cls(
            group_status=group.status if group is not None else None,
            members=members,
            intros=intros,
            pending_commands=tuple(c.function for c in commands if c.status == "pending"),
            failed_commands=tuple(c.function for c in commands if c.status == "failed"),
            outbox=outbox,
            pending_messages=pending,
            unacked_events=unacked_events,
            unacked_messages=unacked_messages,
            chat_connections=chat_connections,
            owned=frozenset(owned),
            agent_connections=agent_connections,
            rcv_queues=rcv_queues,
            messages=messages,
        )

    def idle(self) -> bool:
        """Nothing left to do: no chat command pending, nothing to send, nothing of the
        agent's left unacknowledged."""
        return not (
            self.pending_commands
            or self.outbox
            or self.pending_messages
            or self.unacked_events
            or self.unacked_messages
        )


_PROGRESS = """
SELECT (SELECT status FROM chat_group WHERE group_id = ?),
       (SELECT count(*) FROM chat_member WHERE group_id = ?),
       (SELECT count(*) FROM chat_member WHERE group_id = ? AND status = 'connected'),
       (SELECT count(*) FROM chat_command WHERE status = 'pending'),
       (SELECT count(*) FROM chat_outbox) + (SELECT count(*) FROM chat_pending),
       (SELECT count(*) FROM agent_command WHERE event IS NOT NULL),
       (SELECT count(*) FROM agent_rcv_message),
       (SELECT count(*) FROM chat_intro WHERE group_id = ? AND status != 'connected')
"""


def _progress(client: ChatClient, group_id: str) -> tuple[Any, ...]:
    """`Stored` in one cheap statement, for polling (the chat's and the agent's tables are in
    one database): group status, members, connected members, then what is left to do, and
    (at the host) the introductions not reported done."""
    with client.services.store.transaction(read_only=True) as db:
        return tuple(db.execute_sql(_PROGRESS, (group_id,) * 4).fetchone())


def meshed(clients: Sequence[ChatClient], group_id: str) -> bool:
    """Every client is a connected member that holds every other as a connected member."""
    others = len(clients) - 1
    return all(_progress(c, group_id)[:3] == ("connected", others, others) for c in clients)


def settled(clients: Sequence[ChatClient], group_id: str) -> bool:
    """Meshed, every client idle (see `Stored.idle`), and the host heard of every
    introduction that it is done."""
    others = len(clients) - 1
    done = ("connected", others, others, 0, 0, 0, 0, 0)
    return all(_progress(c, group_id) == done for c in clients)


def wait_settled(
    clients: Sequence[ChatClient], group_id: str, timeout: float = 30.0
) -> list[Stored]:
    """Poll until `settled`; fail with every client's stored state."""

    def explain() -> list[Stored]:
        return [Stored.of(c, group_id) for c in clients]

    wait_until(lambda: settled(clients, group_id), timeout, "a settled group", explain)
    return explain()


def wait_idle(
    clients: Sequence[ChatClient],
    timeout: float = 30.0,
    servers: Sequence[QueueServer] = (),
) -> None:
    """Poll until every client is idle (`Stored.idle`), whatever its groups. With `servers`,
    until they also hold no message: a message sent and not yet delivered leaves nothing to
    do at either client, so idle clients alone do not mean that nothing is in flight."""

    def explain() -> list[Any]:
        return [*(Stored.of(c) for c in clients), *(s.store.stats() for s in servers)]

    def clients_idle() -> bool:
        return all(_progress(c, "")[3:7] == (0, 0, 0, 0) for c in clients)

    def quiet() -> bool:
        # idle, nothing queued, idle again: a message still queued when the clients were
        # first seen idle is received (and waits to be handled) before the second look
        return (
            clients_idle()
            and all(s.store.stats()["messages"] == 0 for s in servers)
            and clients_idle()
        )

    wait_until(quiet, timeout, "idle clients", explain)


def assert_acted_once(
    clients: Sequence[ChatClient], group_id: str, server: QueueServer | None = None
) -> None:
    """Count what the joins made, from stored state (call once `settled`): the host holds
    one introduction per pair of non-host members, all connected; each client holds one row
    per other member and exactly the agent connections the chat owns (a join or create made
    twice would leave one more); no command failed; with `server`, the server holds exactly
    the queues the clients know of (no orphan queue from a duplicated create)."""
    states = [Stored.of(c, group_id) for c in clients]
    host = states[0]
    others = len(clients) - 1
    assert len(host.intros) == others * (others - 1) // 2, host.intros
    assert len({(re, to) for re, to, _ in host.intros}) == len(host.intros), host.intros
    assert all(status == "connected" for _, _, status in host.intros), host.intros
    for client, state in zip(clients, states, strict=True):
        name = client.services.profile.display_name
        ids = [member_id for member_id, _, _ in state.members]
        assert len(ids) == len(set(ids)) == others, (name, state.members)
        conns = [conn for _, _, conn in state.members]
        assert None not in conns and len(set(conns)) == others, (name, state.members)
        assert state.agent_connections == state.chat_connections == state.owned, (name, state)
        assert not state.failed_commands, (name, state.failed_commands)
    if server is not None:
        assert server.store.stats()["queues"] == sum(s.rcv_queues for s in states)


def received(client: ChatClient, group_id: str) -> list[tuple[str, str]]:
    """The group messages `client` received, as (author member id, msg id), in order."""
    chat = client.services.store
    with chat.transaction(read_only=True):
        rows = (
            chat.Message.select(chat.Message.author, chat.Message.msg_id)
            .where(
                (chat.Message.chat_kind == "group")
                & (chat.Message.chat_id == group_id)
                & ~chat.Message.sent
            )
            .order_by(chat.Message.id)
        )
        return [(row.author, row.msg_id) for row in rows]


# ---------------------------------------------------------------------- endings


def group_of(
    server: QueueServer,
    open_chat: Callable[..., Any],
    names: Sequence[str],
    roles: dict[str, GroupRole] | None = None,
) -> tuple[str, list[tuple[Any, Events]]]:
    """A settled group hosted by "host" with a member per name (of its role in `roles`, a
    plain member by default), each added and joined in turn. Returns (group id,
    [(client, events)], the host first)."""
    host, h_events = open_chat("host", [server])
    group_id = host.create_group("club")
    everyone = [(host, h_events)]
    for name in names:
        client, events = open_chat(name, [server])
        role = (roles or {}).get(name, GroupRole.MEMBER)
        invite(host, h_events, group_id, client, events, role=role)
        client.join_group(group_id)
        everyone.append((client, events))
    wait_settled([client for client, _ in everyone], group_id)
    return group_id, everyone


def member_ids(clients: Sequence[ChatClient], group_id: str) -> dict[str, str]:
    """Each client's own member id in the group, by profile name."""
    return {c.services.profile.display_name: c.group(group_id).member_id for c in clients}


_ENDED = """
SELECT (SELECT status FROM chat_group WHERE group_id = ?),
       (SELECT group_concat(member_id || '=' || status || '=' || (conn_id IS NULL), ',')
          FROM chat_member WHERE group_id = ?),
       (SELECT count(*) FROM chat_command WHERE status = 'pending'),
       (SELECT count(*) FROM chat_outbox) + (SELECT count(*) FROM chat_pending),
       (SELECT count(*) FROM agent_command WHERE event IS NOT NULL),
       (SELECT count(*) FROM agent_rcv_message),
       (SELECT count(*) FROM chat_connection
         WHERE conn_id NOT IN (SELECT conn_id FROM agent_connection)),
       (SELECT count(*) FROM agent_connection
         WHERE conn_id NOT IN (SELECT conn_id FROM chat_connection))
"""


def ending_state(client: ChatClient, group_id: str) -> tuple[Any, ...]:
    """(group status, {member id: (status, connection deleted)}, then what is left to do:
    pending commands, outbox and pending rows, unacknowledged agent events and messages,
    connections the chat owns and the agent has not, and the reverse), in one statement."""
    with client.services.store.transaction(read_only=True) as db:
        status, members, *rest = db.execute_sql(_ENDED, (group_id,) * 2).fetchone()
    by_id = {}
    for item in (members or "").split(","):
        if item:
            member_id, member_status, deleted = item.split("=")
            by_id[member_id] = (member_status, deleted == "1")
    return (status, by_id, *rest)


def wait_ended(
    client: ChatClient,
    group_id: str,
    group_status: str,
    members: dict[str, str],
    timeout: float = 20.0,
) -> None:
    """Poll until `client` holds the group in `group_status` and each of `members` (member
    id → status) so, with nothing left to do and its connections as the agent's. A member's
    connection is deleted if the member left or was removed, or if the group ended for us;
    every other connection stays."""
    ended = group_status in ("left", "removed", "deleted")
    want = {
        member_id: (status, ended or status in ("left", "removed"))
        for member_id, status in members.items()
    }

    def done() -> bool:
        status, by_id, *rest = ending_state(client, group_id)
        return status == group_status and by_id == want and rest == [0] * 6

    name = client.services.profile.display_name
    wait_until(done, timeout, f"{name}'s ending", lambda: ending_state(client, group_id))


def content(client: ChatClient) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the chat's own state, table by table. Left out: which agent message a
    connection processed last (a refused message is recorded there, so that it is not
    handled again) and the events kept until they were told."""
    store = client.services.store
    tables = [
        store.Contact,
        store.Address,
        store.Group,
        store.Member,
        store.Intro,
        store.Message,
        store.Pending,
        store.Outbox,
        store.Command,
        store.GroupRelay,
        store.RelayGroup,
        store.RelayMember,
    ]
    with store.transaction(read_only=True):
        return {
            model._meta.table_name: sorted(tuple(row.values()) for row in model.select().dicts())
            for model in tables
        }


def conn_to(client: ChatClient, group_id: str, member_id: str) -> str:
    """`client`'s connection to member `member_id` of the group."""
    store = client.services.store
    with store.transaction(read_only=True):
        member = store.Member.get(
            (store.Member.group_id == group_id) & (store.Member.member_id == member_id)
        )
    return member.conn_id
