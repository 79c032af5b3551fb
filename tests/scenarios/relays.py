"""Helpers for the relay group scenarios: chat relays on their own relay addresses, an owner
whose group link lists them, members that joined through it, and what each relay stored.

`relay_group` makes the network (the relays spread over the given servers, round robin);
`join` prepares and connects a member and waits until every relay is connected to it;
`roster` reads a relay's stored roster of a group (the relay's view, not the member's);
`exchange_rounds` sends rounds of group messages and checks that each client received every
other client's messages exactly once, in each author's order (from the stored rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.chat import events as cev
from actors.chat.model import RosterStatus
from actors.chat_client import ChatClient
from protocol.server import QueueServer
from tests.scenarios.agents import Events
from tests.scenarios.chats import received, wait_until


@dataclass
class RelayGroup:
    group_id: str
    link: str
    owner: ChatClient
    owner_events: Events
    relays: list[ChatClient]
    addresses: list[str]


def open_relays(
    open_chat: Callable[..., Any], servers: Sequence[QueueServer], count: int, first: int = 0
) -> tuple[list[ChatClient], list[str]]:
    """`count` chat relays named relay<first>, relay<first + 1> …, relay n on
    servers[n % len(servers)]; their relay addresses."""
    relays, addresses = [], []
    for n in range(count):
        relay, events = open_chat(f"relay{first + n}", [servers[n % len(servers)]])
        address_id = relay.create_relay_address()
        addresses.append(events.wait_for(cev.AddressLink, address_id=address_id).link)
        relays.append(relay)
    return relays, addresses


def relay_group(
    open_chat: Callable[..., Any], servers: Sequence[QueueServer], count: int = 3
) -> RelayGroup:
    """An owner's relay group served by `count` relays, its link listing all of them."""
    relays, addresses = open_relays(open_chat, servers, count)
    owner, events = open_chat("owner", [servers[0]])
    group_id = owner.create_relay_group("town", relays=addresses)
    ready = events.wait(
        lambda e: isinstance(e, cev.GroupLinkReady) and e.relays == count,
        timeout=20,
        what=f"the group link listing {count} relays",
    )
    return RelayGroup(group_id, ready.link, owner, events, relays, addresses)


def relays_connected(client: ChatClient, group_id: str) -> int:
    view = client.group(group_id)
    return 0 if view is None else view.active_relays


def join(
    group: RelayGroup,
    open_chat: Callable[..., Any],
    name: str,
    server: QueueServer,
    *,
    incognito: bool = False,
    wait_all: bool = True,
) -> tuple[ChatClient, Events]:
    """A member joins through the group link (prepare, then connect); with `wait_all`, until
    every relay is connected to it at both ends."""
    client, events = open_chat(name, [server])
    assert client.prepare_group(group.link) == group.group_id
    client.connect_prepared_group(group.group_id, incognito=incognito)
    events.wait_for(cev.GroupConnected, group_id=group.group_id, timeout=20)
    if wait_all:
        member_id = client.group(group.group_id).member_id
        wait_until(
            lambda: (
                relays_connected(client, group.group_id) == len(group.relays)
                and all(
                    _roster_status(relay, group.group_id, member_id) == RosterStatus.CONNECTED
                    for relay in group.relays
                )
            ),
            what=f"{name} connected to every relay",
            explain=lambda: client.group(group.group_id),
        )
    return client, events


@dataclass(frozen=True)
class RosterRow:
    member_id: str
    display_name: str
    full_name: str
    status: str


def roster(relay: ChatClient, group_id: str) -> list[RosterRow]:
    """The roster a relay stored for a group it serves."""
    store = relay.services.store
    with store.transaction(read_only=True):
        rows = store.RelayMember.select().where(store.RelayMember.group_id == group_id)
        return [
            RosterRow(r.member_id, r.display_name, r.full_name, r.status)
            for r in rows.order_by(store.RelayMember.id)
        ]


def _roster_status(relay: ChatClient, group_id: str, member_id: str) -> str | None:
    return next((r.status for r in roster(relay, group_id) if r.member_id == member_id), None)


def exchange_rounds(
    clients: Sequence[ChatClient], group_id: str, rounds: int, timeout: float = 30.0
) -> None:
    """Each client sends `rounds` messages, round after round; each then holds every other
    client's messages exactly once, in each author's order (from its stored messages)."""
    ids = {id(c): c.group(group_id).member_id for c in clients}
    before = {id(c): len(received(c, group_id)) for c in clients}
    sent: dict[str, list[str]] = {}
    for round_ in range(rounds):
        for n, client in enumerate(clients):
            msg_id = client.send_group_message(group_id, f"{n}:{round_}")
            sent.setdefault(ids[id(client)], []).append(msg_id)
    for client in clients:
        want = before[id(client)] + rounds * (len(clients) - 1)
        name = client.services.profile.display_name
        wait_until(
            lambda c=client, w=want: len(received(c, group_id)) >= w,
            timeout,
            what=f"every group message at {name}",
            explain=lambda c=client, w=want: (len(received(c, group_id)), w),
        )
        got = received(client, group_id)[before[id(client)] :]
        assert len(got) == len({m for _, m in got}) == want - before[id(client)], name
        for author, msg_ids in sent.items():
            if author != ids[id(client)]:
                assert [m for a, m in got if a == author] == msg_ids, (name, author)
