"""How a group ends, on real queue servers: a member leaves, the owner removes a member, a
plain member's forged removal is refused, the owner deletes the group; and each converges
through an actor crash or a closed client with no user action.

"Ended" is read from stored state (tests/scenarios/chats.py `wait_ended`): the group's and
the members' statuses, the connections of what ended deleted on the chat's side and the
agent's, no chat command pending and nothing of the agent's left unacknowledged."""

from __future__ import annotations

import logging

import pytest

from actors.agent import events as aev
from actors.agent import faults
from actors.chat import events as cev
from actors.chat.chat import owner_address
from actors.chat.model import Owner, OwnerKind
from actors.chat.services import AgentEventArrived
from protocol.chat import (
    GroupRole,
    XGrpDel,
    XGrpMemDel,
    XMsgNew,
    encode_chat_message,
    new_message_id,
)
from protocol.errors import AgentError, ChatRefused
from tests.scenarios.chats import (
    Stored,
    conn_to,
    content,
    exchange,
    group_of,
    member_ids,
    received,
    wait_ended,
    wait_until,
)

CONNECTED, LEFT, REMOVED, DELETED = "connected", "left", "removed", "deleted"


def refusals(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "chat message refused"]


def assert_refused_to_send(client, group_id: str) -> None:
    with pytest.raises(AgentError) as refused:
        client.send_group_message(group_id, "still here?")
    assert refused.value.code == "GROUP_ENDED"


def deliver_late(client, group_id: str, conn_id: str, body: bytes) -> None:
    """Hand `client`'s group a chat message as the agent would have on `conn_id` (a copy
    that arrives after the connection's ending): the route a peer's message takes."""
    event = aev.Msg(conn_id, 1_000_000, body)
    client.runtime.tell(owner_address(Owner(OwnerKind.GROUP, group_id)), AgentEventArrived(event))


def test_a_member_leaves(server, open_chat, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="actors.chat.owner")
    group_id, everyone = group_of(server, open_chat, ["a", "b"])
    (host, h_events), (a, a_events), (b, _) = everyone
    ids = member_ids([host, a, b], group_id)
    a_to_b = conn_to(a, group_id, ids["b"])
    before = len(received(b, group_id))

    b.leave_group(group_id)
    b.leave_group(group_id)  # again: nothing more
    for client, events in ((host, h_events), (a, a_events)):
        events.wait_for(cev.MemberLeft, group_id=group_id, member_id=ids["b"])
        others = {
            ids[n]: CONNECTED for n in ("host", "a") if client.group(group_id).member_id != ids[n]
        }
        wait_ended(client, group_id, CONNECTED, {**others, ids["b"]: LEFT})
    wait_ended(b, group_id, LEFT, {ids["host"]: CONNECTED, ids["a"]: CONNECTED})
    assert_refused_to_send(b, group_id)

    # a message of b that arrives late changes nothing, and no one sends to it any more
    rows = content(a)
    late = encode_chat_message(XMsgNew(new_message_id(), "I am back"))
    deliver_late(a, group_id, a_to_b, late)
    wait_until(lambda: refusals(caplog), what="b's late message refused")
    assert refusals(caplog)[0].code == ChatRefused.code
    assert content(a) == rows
    exchange([host, a], group_id)
    assert len(received(b, group_id)) == before
    assert len(a_events.of(cev.MemberLeft)) == 1


def test_the_owner_removes_a_member(server, open_chat) -> None:
    group_id, everyone = group_of(server, open_chat, ["a", "r"])
    (host, _), (a, a_events), (r, r_events) = everyone
    ids = member_ids([host, a, r], group_id)

    host.remove_member(group_id, ids["r"])
    host.remove_member(group_id, ids["r"])  # again: nothing more
    event = a_events.wait_for(cev.MemberRemoved, group_id=group_id, member_id=ids["r"])
    assert event.by_member_id == ids["host"]
    r_events.wait_for(cev.GroupRemoved, group_id=group_id, by_member_id=ids["host"])
    wait_ended(host, group_id, CONNECTED, {ids["a"]: CONNECTED, ids["r"]: REMOVED})
    wait_ended(a, group_id, CONNECTED, {ids["host"]: CONNECTED, ids["r"]: REMOVED})
    wait_ended(r, group_id, REMOVED, {ids["host"]: CONNECTED, ids["a"]: CONNECTED})
    assert_refused_to_send(r, group_id)
    with pytest.raises(AgentError) as refused:
        r.leave_group(group_id)
    assert refused.value.code == "GROUP_ENDED"
    before = len(received(r, group_id))
    exchange([host, a], group_id)
    assert len(received(r, group_id)) == before


def test_an_admin_removes_a_member_but_not_the_owner(server, open_chat) -> None:
    group_id, everyone = group_of(server, open_chat, ["adm", "r"], {"adm": GroupRole.ADMIN})
    (host, h_events), (adm, _), (r, r_events) = everyone
    ids = member_ids([host, adm, r], group_id)
    with pytest.raises(AgentError) as refused:
        adm.remove_member(group_id, ids["host"])  # an owner is above an admin
    assert refused.value.code == "PROHIBITED"

    adm.remove_member(group_id, ids["r"])
    h_events.wait_for(cev.MemberRemoved, group_id=group_id, by_member_id=ids["adm"])
    r_events.wait_for(cev.GroupRemoved, group_id=group_id, by_member_id=ids["adm"])
    wait_ended(host, group_id, CONNECTED, {ids["adm"]: CONNECTED, ids["r"]: REMOVED})
    wait_ended(adm, group_id, CONNECTED, {ids["host"]: CONNECTED, ids["r"]: REMOVED})
    wait_ended(r, group_id, REMOVED, {ids["host"]: CONNECTED, ids["adm"]: CONNECTED})


def test_a_plain_member_cannot_remove_anyone(server, open_chat, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="actors.chat.owner")
    group_id, everyone = group_of(server, open_chat, ["a", "p"])
    (host, h_events), (a, a_events), (p, _) = everyone
    ids = member_ids([host, a, p], group_id)
    with pytest.raises(AgentError) as refused:
        p.remove_member(group_id, ids["a"])
    assert refused.value.code == "PROHIBITED"
    with pytest.raises(AgentError) as refused:
        p.delete_group(group_id)
    assert refused.value.code == "PROHIBITED"

    before = {"host": content(host), "a": content(a)}
    told = {"host": len(h_events.of(object)), "a": len(a_events.of(object))}
    p_to_a, p_to_h = conn_to(p, group_id, ids["a"]), conn_to(p, group_id, ids["host"])
    forged = [  # P, through its agent, below its own chat
        (p_to_a, XGrpMemDel(ids["a"])),  # "you are removed"
        (p_to_a, XGrpMemDel(ids["host"])),  # the owner removed
        (p_to_h, XGrpMemDel(ids["a"])),
        (p_to_h, XGrpMemDel(ids["host"])),
        (p_to_a, XGrpDel()),
    ]
    for conn_id, message in forged:
        p.agent.send_message(conn_id, encode_chat_message(message))
    wait_until(lambda: len(refusals(caplog)) >= len(forged), what="every forged ending refused")
    assert {r.code for r in refusals(caplog)} == {ChatRefused.code}
    wait_until(lambda: {"host": content(host), "a": content(a)} == before, what="no change")
    assert told == {"host": len(h_events.of(object)), "a": len(a_events.of(object))}
    exchange([host, a, p], group_id)


def test_the_owner_deletes_the_group(server, open_chat) -> None:
    group_id, everyone = group_of(server, open_chat, ["a", "b"])
    clients = [client for client, _ in everyone]
    ids = member_ids(clients, group_id)
    host = clients[0]

    host.delete_group(group_id)
    host.delete_group(group_id)  # again: nothing more
    for _, events in everyone[1:]:
        events.wait_for(cev.GroupDeleted, group_id=group_id, by_member_id=ids["host"])
    for client in clients:
        me = client.group(group_id).member_id
        others = {member_id: CONNECTED for member_id in ids.values() if member_id != me}
        wait_ended(client, group_id, DELETED, others)
        assert_refused_to_send(client, group_id)
    # every member connection's queue is gone from the server: the contacts' stay
    queues = sum(Stored.of(client).rcv_queues for client in clients)
    assert queues == 4  # host-a and host-b, each end
    wait_until(lambda: server.store.stats()["queues"] == queues, what="the server's queues")


def chat_restarts(*clients) -> int:
    """Restarts of the chat's actors (a crash the supervisor recovered from)."""
    return sum(
        node.restarts
        for client in clients
        for node in client.tree().walk()
        if node.address.startswith("client/chat/")
    )


# The persisted steps of an ending, by the unit's name: the user's call, a peer's ending
# message, the completion of a connection's delete. In-process fault points are per step, not
# per client: the first client to reach the step crashes there.
CRASHES = [
    ("leave", faults.AFTER_EFFECTS, "leave_group"),  # stored; nothing handed to the agent
    ("leave", faults.BEFORE_RUN, "x.grp.leave"),  # the message is told again (Replay)
    ("leave", faults.AFTER_EFFECTS, "x.grp.leave"),  # b LEFT; its delete not submitted
    ("leave", faults.BEFORE_RUN, "delete_member_conn"),  # the OK is told again
    ("leave", faults.AFTER_EMIT, "delete_member_conn"),  # handled, not acknowledged
    ("remove", faults.AFTER_EFFECTS, "x.grp.mem.del"),
    ("delete", faults.BEFORE_RUN, "x.grp.del"),
]


@pytest.mark.parametrize(("ending", "point", "step"), CRASHES, ids=["-".join(c) for c in CRASHES])
def test_an_ending_converges_through_an_actor_crash(ending, point, step, server, open_chat):
    group_id, everyone = group_of(server, open_chat, ["a", "b"])
    (host, _), (a, _), (b, _) = everyone
    ids = member_ids([host, a, b], group_id)
    before = chat_restarts(host, a, b)
    faults.arm(point, step)
    call_failed = False
    try:
        try:
            if ending == "leave":
                b.leave_group(group_id)
            elif ending == "remove":
                host.remove_member(group_id, ids["b"])
            else:
                host.delete_group(group_id)
        except faults.InjectedCrash:  # the call's own unit failed after its commit
            call_failed = True  # the caller sees it; what it stored goes on by itself
        expected = expected_ends(ending, ids)
        for client in (host, a, b):
            wait_ended(client, group_id, *expected[client.services.profile.display_name])
    finally:
        faults.disarm_all()
    if step == "leave_group":  # an ask that fails does not crash its actor
        assert call_failed and chat_restarts(host, a, b) == before
    else:
        assert chat_restarts(host, a, b) == before + 1  # the crash happened, once


def expected_ends(ending: str, ids: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """What host, a and b end up holding after b leaves, the host removes b, or the host
    deletes the group: (group status, {member id: status})."""
    gone = LEFT if ending == "leave" else REMOVED
    if ending == "delete":
        return {
            me: (DELETED, {ids[n]: CONNECTED for n in ids if n != me}) for me in ("host", "a", "b")
        }
    return {
        "host": (CONNECTED, {ids["a"]: CONNECTED, ids["b"]: gone}),
        "a": (CONNECTED, {ids["host"]: CONNECTED, ids["b"]: gone}),
        "b": (gone, {ids["host"]: CONNECTED, ids["a"]: CONNECTED}),
    }


@pytest.mark.parametrize("ending", ["leave", "remove"])
def test_an_ending_reaches_a_closed_client_once_it_is_reopened(ending, server, open_chat):
    """b leaves while a is closed, or the host removes b while b is closed: the client
    reopened learns it from its queues and converges."""
    group_id, everyone = group_of(server, open_chat, ["a", "b"])
    (host, _), (a, _), (b, _) = everyone
    ids = member_ids([host, a, b], group_id)
    closed = "a" if ending == "leave" else "b"
    {"a": a, "b": b}[closed].close()
    if ending == "leave":
        b.leave_group(group_id)
    else:
        host.remove_member(group_id, ids["b"])
    expected = expected_ends(ending, ids)
    live = [c for c in (host, a, b) if c.services.profile.display_name != closed]
    for client in live:
        wait_ended(client, group_id, *expected[client.services.profile.display_name])
    reopened, events = open_chat(closed, [server])
    wait_ended(reopened, group_id, *expected[closed])
    told = cev.MemberLeft if ending == "leave" else cev.GroupRemoved
    events.wait_for(told, group_id=group_id)
    exchange([host, a if closed == "b" else reopened], group_id)
