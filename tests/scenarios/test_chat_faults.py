"""Group joins that converge by themselves through faults: an actor crash at every persisted
step of the introduction protocol, and a queue server down while members join.

Each case ends settled (every member connected to every other, no chat command pending,
nothing of the agent's left unacknowledged) with every step acted on once, counted from the
stored state of every client and the server (tests/scenarios/chats.py). That a settled group
carries messages is checked after the outage here and in the kill -9 tests."""

from __future__ import annotations

import pytest

from actors.agent import faults
from actors.chat import events as cev
from protocol.server import QueueServer
from tests.scenarios.chats import (
    assert_acted_once,
    exchange,
    host_and_member,
    invite,
    wait_settled,
    wait_until,
)

POINTS = [faults.BEFORE_RUN, faults.AFTER_EFFECTS, faults.AFTER_EMIT]

# The persisted steps of one member (I) joining a group of its host (H) and one member (M),
# in protocol order: chat messages by their event, chat commands by their function.
STEPS = [
    "x.grp.inv",  # I: the invitation arrives (contact)
    "join_group",  # I: JOINED of its join of H's link
    "allow_member",  # H: OK of its allow of I
    "x.grp.mem.new",  # M: I is announced
    "x.grp.mem.intro",  # I: M is introduced
    "create_intro_inv",  # I: INV of its invitation for M
    "x.grp.mem.inv",  # H: I's invitation for M
    "x.grp.mem.fwd",  # M: I's invitation, forwarded
    "join_intro",  # M: JOINED of its join of I's invitation
    "allow_intro",  # I: OK of its allow of M
    "x.grp.mem.con",  # H: I or M reports the other connected
]


def chat_restarts(*clients) -> int:
    """Restarts of the chat's actors (a crash the supervisor recovered from)."""
    return sum(
        node.restarts
        for client in clients
        for node in client.tree().walk()
        if node.address.startswith("client/chat/")
    )


@pytest.fixture
def small_group(server: QueueServer, open_chat):
    """H hosts a group with member M connected; I is open, not H's contact yet."""
    return host_and_member(server, open_chat)


# Agent events the chat handles in a unit of its own (not acknowledged, so no point after
# it): a crash before its unit loses the event, which the restarted owner asks the agent for
# again (Replay); one after its commit leaves its effects to the reconcile.
AGENT_EVENTS = ["CONF", "CON"]  # H's CONF of I's join comes first; CON: H's or I's
CASES = [
    *(pytest.param(point, kind, id=f"{point}-{kind}") for point in POINTS for kind in STEPS),
    *(
        pytest.param(point, kind, id=f"{point}-{kind}")
        for point in (faults.BEFORE_RUN, faults.AFTER_EFFECTS)
        for kind in AGENT_EVENTS
    ),
]


@pytest.mark.parametrize(("point", "kind"), CASES)
def test_a_crash_at_each_step_of_a_join(point, kind, server, small_group) -> None:
    group_id, (host, h_events), (m, _), (i, i_events) = small_group
    before = chat_restarts(host, m, i)
    try:
        if kind == "x.grp.inv":  # the invitation is the step
            faults.arm(point, kind)
            invite(host, h_events, group_id, i, i_events)
        else:  # H and I are contacts before: the step is the join's, not theirs
            invite(host, h_events, group_id, i, i_events)
            faults.arm(point, kind)
        i.join_group(group_id)
        clients = [host, m, i]
        wait_settled(clients, group_id)
    finally:
        faults.disarm_all()
    assert chat_restarts(host, m, i) == before + 1  # the crash happened, once
    assert_acted_once(clients, group_id, server)
    assert len(i_events.of(cev.GroupInvitation, group_id=group_id)) >= 1


def waiting_for_server(client) -> bool:
    """The client's agent knows its server is down and holds work for it."""
    return any(
        node.kind == "server-session" and not node.state.get("up") and node.state.get("waiting")
        for node in client.tree().walk()
    )


def test_the_server_down_while_members_join(start_server, open_chat) -> None:
    server = start_server()
    port = server.address.port
    host, h_events = open_chat("host", [server])
    group_id = host.create_group("club")
    clients = [host]
    for n in range(2):  # two members joined before
        client, events = open_chat(f"m{n}", [server])
        invite(host, h_events, group_id, client, events)
        client.join_group(group_id)
        clients.append(client)
    wait_settled(clients, group_id)
    joining = []
    for n in range(2, 4):  # two more invited, and joining when the server stops
        client, events = open_chat(f"m{n}", [server])
        invite(host, h_events, group_id, client, events)
        joining.append((client, events))
    first, first_events = joining[0]
    first.join_group(group_id)
    first_events.wait_for(cev.GroupConnected, group_id=group_id, timeout=15)
    joining[1][0].join_group(group_id)
    server.stop()  # m2 is being introduced, m3 is joining the host
    clients += [client for client, _ in joining]
    wait_until(lambda: waiting_for_server(clients[-1]), what="m3's join held")
    server = start_server(port=port)  # the same server comes back (same store, address)
    wait_settled(clients, group_id)
    assert_acted_once(clients, group_id, server)
    exchange(clients, group_id)
