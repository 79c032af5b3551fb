"""Relay groups on real queue servers: chat relays serving an owner's group, members joining
through its group link (prepare, then connect to every relay), and group messages forwarded
by every relay, received by every member exactly once, in each author's order."""

from __future__ import annotations

from actors.chat import events as cev
from actors.chat.model import GroupKind, GroupStatus, RelayStatus, RosterStatus
from tests.scenarios.chats import wait_idle
from tests.scenarios.relays import exchange_rounds, join, relay_group, roster

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
    for events in [group.owner_events, *(events for _, events in joined)]:
        told = [e.msg_id for e in events.of(cev.NewMessage, chat_id=group.group_id)]
        assert len(told) == len(set(told)) == ROUNDS * MEMBERS  # told once each
    # nothing left: no chat command pending, nothing to send or forward, every agent event
    # (the link reads' LDATA included) and message acknowledged
    wait_idle([*everyone, *group.relays], timeout=EXCHANGE_DEADLINE)
