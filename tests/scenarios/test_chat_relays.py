"""Relay groups on real queue servers: chat relays serving an owner's group, members joining
through its group link (prepare, then connect to every relay), and group messages forwarded
by every relay, received by every member exactly once, in each author's order; and a relay
that serves more connections than its kernel keeps live."""

from __future__ import annotations

from actors.chat import events as cev
from actors.chat.model import GroupKind, GroupStatus, RelayStatus, RosterStatus
from actors.kernel import RuntimeConfig
from tests.scenarios.chats import wait_idle
from tests.scenarios.relays import RelayGroup, exchange_rounds, join, relay_group, roster

MEMBERS = 20
RELAYS = 3
ROUNDS = 2  # two messages from each author: enough to see each author's order kept
# The exchange is throughput-bound: every message is forwarded by every relay to every other
# client and received there once per relay, ~3,000 agent sends and receipts in this one
# process. Its deadline grows with that count (a liveness bound, not a speed claim: bench/
# measures speed), so that two busy cores beside the suite (`make test-loaded`) do not fail it.
FORWARDS = ROUNDS * (MEMBERS + 1) * MEMBERS * RELAYS
EXCHANGE_DEADLINE = 30.0 + FORWARDS * 0.04


def test_members_join_through_the_relays_and_hear_each_other_once(start_server, open_chat) -> None:
    servers = [start_server("a"), start_server("b")]
    group = relay_group(open_chat, servers, count=RELAYS)
    owner_view = group.owner.group(group.group_id)
    assert owner_view.kind == GroupKind.RELAY
    assert owner_view.relays_active == "3/3 relays active"
    assert {r.status for r in owner_view.relays} == {RelayStatus.ACTIVE}

    joined = [join(group, open_chat, f"m{n}", servers[n % 2]) for n in range(MEMBERS)]
    members = [member for member, _ in joined]
    for _, events in joined:
        assert len(events.of(cev.GroupJoined, group_id=group.group_id)) == 1
        assert len(events.of(cev.GroupConnected, group_id=group.group_id)) == 1
    for member in members:
        view = member.group(group.group_id)
        assert view.status == GroupStatus.CONNECTED
        assert view.relays_active == "3/3 relays active"
    for relay in group.relays:  # each relay's roster: the owner and every member, connected
        rows = roster(relay, group.group_id)
        assert len(rows) == MEMBERS + 1
        assert {r.status for r in rows} == {RosterStatus.CONNECTED}

    everyone = [group.owner, *members]
    exchange_rounds(everyone, group.group_id, rounds=ROUNDS, timeout=EXCHANGE_DEADLINE)
    # nothing left: no chat command pending, nothing to send or forward, every agent event
    # (the link reads' LDATA included) and message acknowledged, every notice told
    wait_idle([*everyone, *group.relays], timeout=EXCHANGE_DEADLINE)
    for events in [group.owner_events, *(events for _, events in joined)]:
        told = [e.msg_id for e in events.of(cev.NewMessage, chat_id=group.group_id)]
        assert len(told) == len(set(told)) == ROUNDS * MEMBERS  # told once each


def test_a_relay_serves_more_than_its_live_cap(start_server, open_chat) -> None:
    """A relay's served groups and their connections are virtual actors: a relay whose
    kernel keeps at most 10 live serves two groups with 14 connections, passivating and
    activating them as messages come, and every member hears every other once, in order."""
    server = start_server("a")
    relay, relay_events = open_chat("relay0", [server], runtime_config=RuntimeConfig(live_cap=10))
    address_id = relay.create_relay_address()
    address = relay_events.wait_for(cev.AddressLink, address_id=address_id).link
    groups = []
    for name in ("north", "south"):
        owner, events = open_chat(f"owner-{name}", [server])
        group_id = owner.create_relay_group(name, relays=[address])
        ready = events.wait_for(cev.GroupLinkReady, group_id=group_id, timeout=20)
        group = RelayGroup(group_id, ready.link, owner, events, [relay], [address])
        members = [join(group, open_chat, f"{name}{n}", server)[0] for n in range(5)]
        groups.append((group, [owner, *members]))
    for group, clients in groups:
        exchange_rounds(clients, group.group_id, rounds=2)
    directory = relay.runtime.directory
    # Nothing idles out in a test this short (passivate_after is a minute): every passivation
    # is the cap at work, evicting the least recently used. The cap is soft for an actor with
    # I/O in flight (it is passivated once idle), so the live count is compared with the
    # connections the relay has, not with the cap.
    assert directory.counters["passivations"] > 0
    store = relay.agent.services.store
    with store.transaction(read_only=True):
        connections = store.Connection.select().count()
    assert connections >= 15 and directory.live_virtual() < connections
    for group, clients in groups:
        assert len(roster(relay, group.group_id)) == len(clients)
