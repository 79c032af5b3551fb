"""A relay group ends: for one member, which leaves (x.grp.leave to each relay; every relay
stops forwarding to it and deletes its connection; the member's connections to the relays are
deleted and its group is LEFT) while the others go on without it; and for everyone, when the
owner deletes it (x.grp.del to each relay, which passes it on as x.grp.del.fwd and serves the
group no more; every member's group is DELETED, told once however many relays passed it on;
every connection of the group and its links are deleted). A member killed -9 as it leaves
finishes leaving once reopened."""

from __future__ import annotations

import pytest

from actors.agent import faults
from actors.chat import events as cev
from actors.chat.model import GroupStatus, RelayStatus, RosterStatus, ServedStatus
from protocol.errors import AgentError, GroupLinkError
from tests.scenarios.chats import received, start_killed, wait_idle, wait_killed, wait_until
from tests.scenarios.relays import exchange_rounds, join, relay_group, roster


@pytest.fixture
def servers(start_server):
    return [start_server("a"), start_server("b")]


def test_a_member_leaves_and_the_relays_let_it_go(servers, open_chat) -> None:
    group = relay_group(open_chat, servers)
    gid, owner = group.group_id, group.owner
    stays, _ = join(group, open_chat, "stays", servers[0])
    leaves, _ = join(group, open_chat, "leaves", servers[1])
    exchange_rounds([owner, stays, leaves], gid, rounds=1)
    leaver_id = leaves.group(gid).member_id
    its_conns = [r.conn_id for r in _relay_rows(leaves, gid)]
    at_relays = [(relay, _roster_conn(relay, gid, leaver_id)) for relay in group.relays]

    leaves.leave_group(gid)
    leaves.leave_group(gid)  # left already: nothing more
    view = leaves.group(gid)
    assert view.status == GroupStatus.LEFT
    assert {r.status for r in _relay_rows(leaves, gid)} == {RelayStatus.LEFT}
    with pytest.raises(AgentError) as ended:
        leaves.send_group_message(gid, "anyone?")
    assert ended.value.code == "GROUP_ENDED"

    wait_until(
        lambda: _let_go(leaves, gid, leaver_id, its_conns, at_relays),
        what="every relay let the member go, and every connection deleted",
    )

    before = len(received(leaves, gid))
    exchange_rounds([owner, stays], gid, rounds=2)  # the others go on
    wait_idle([owner, stays, leaves, *group.relays], servers=servers)
    assert len(received(leaves, gid)) == before  # nothing reached it after it left
    assert leaves.group(gid).status == GroupStatus.LEFT


def test_a_member_killed_as_it_leaves_finishes_leaving_once_reopened(
    tmp_path, servers, open_chat
) -> None:
    group = relay_group(open_chat, servers)
    gid = group.group_id
    leaves, _ = join(group, open_chat, "leaves", servers[1])
    leaver_id = leaves.group(gid).member_id
    its_conns = [r.conn_id for r in _relay_rows(leaves, gid)]
    at_relays = [(relay, _roster_conn(relay, gid, leaver_id)) for relay in group.relays]
    leaves.close()
    # the leave is stored (x.grp.leave for each relay, the deletes), nothing handed over yet
    child = start_killed(
        tmp_path, "leaves", servers[1], (faults.AFTER_EFFECTS, "leave_group"), leave=gid
    )
    wait_killed(child)

    leaves, _ = open_chat("leaves", [servers[1]])
    assert leaves.group(gid).status == GroupStatus.LEFT
    wait_until(
        lambda: _let_go(leaves, gid, leaver_id, its_conns, at_relays),
        what="the leave carried out after the reopen: every relay let the member go",
    )
    wait_idle([leaves, *group.relays], servers=servers)


def test_the_owner_deletes_the_group_and_everyone_lets_it_go(servers, open_chat) -> None:
    group = relay_group(open_chat, servers)
    gid, owner = group.group_id, group.owner
    joined = [join(group, open_chat, name, servers[n % 2]) for n, name in enumerate("ab")]
    members = [client for client, _ in joined]
    exchange_rounds([owner, *members], gid, rounds=1)
    with pytest.raises(AgentError) as not_owner:
        members[0].delete_group(gid)
    assert not_owner.value.code == "PROHIBITED"
    owner_id = owner.group(gid).member_id
    connections = {
        client: [r.conn_id for r in _relay_rows(client, gid)] for client in (owner, *members)
    }

    owner.delete_group(gid)
    owner.delete_group(gid)  # deleted already: nothing more
    assert owner.group(gid).status == GroupStatus.DELETED
    for _, events in joined:
        events.wait_for(cev.GroupDeleted, group_id=gid, by_member_id=owner_id, timeout=20)

    def let_go() -> bool:
        gone = all(
            client.group(gid).status == GroupStatus.DELETED
            and all(client.agent.connection_status(c) is None for c in conns)
            for client, conns in connections.items()
        )
        return gone and all(_served_gone(relay, gid) for relay in group.relays)

    wait_until(let_go, what="the group deleted everywhere, every connection of it with it")
    wait_idle([owner, *members, *group.relays], servers=servers)
    for client, events in joined:  # told once, though every relay passed the deletion on
        assert len(events.of(cev.GroupDeleted, group_id=gid)) == 1
        with pytest.raises(AgentError) as ended:
            client.send_group_message(gid, "anyone?")
        assert ended.value.code == "GROUP_ENDED"
    newcomer, _ = open_chat("late", [servers[0]])
    with pytest.raises(GroupLinkError):  # the group link went with the group
        newcomer.prepare_group(group.link)


def _served_gone(relay, group_id: str) -> bool:
    """The relay serves the group no more: DELETED, every roster member LEFT, and the
    connections to them and the relay link's deleted."""
    store = relay.services.store
    with store.transaction(read_only=True):
        served = store.RelayGroup.get(store.RelayGroup.group_id == group_id)
        rows = list(store.RelayMember.select().where(store.RelayMember.group_id == group_id))
    conns = [r.conn_id for r in rows] + [served.link_conn_id]
    return (
        served.status == ServedStatus.DELETED
        and {r.status for r in rows} == {RosterStatus.LEFT}
        and all(relay.agent.connection_status(c) is None for c in conns)
    )


def _let_go(client, group_id: str, member_id: str, its_conns: list, at_relays: list) -> bool:
    """Every relay holds the member as LEFT and deleted its connection to it; the member
    deleted its connections to the relays."""
    return all(
        _status(relay, group_id, member_id) == RosterStatus.LEFT
        and relay.agent.connection_status(conn_id) is None
        for relay, conn_id in at_relays
    ) and all(client.agent.connection_status(c) is None for c in its_conns)


def _relay_rows(client, group_id: str) -> list:
    store = client.services.store
    with store.transaction(read_only=True):
        return list(store.GroupRelay.select().where(store.GroupRelay.group_id == group_id))


def _roster_conn(relay, group_id: str, member_id: str) -> str:
    store = relay.services.store
    with store.transaction(read_only=True):
        row = store.RelayMember.get(
            (store.RelayMember.group_id == group_id) & (store.RelayMember.member_id == member_id)
        )
        return row.conn_id


def _status(relay, group_id: str, member_id: str) -> str | None:
    return next((r.status for r in roster(relay, group_id) if r.member_id == member_id), None)
