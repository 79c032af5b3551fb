"""A relay group ends for one of its members: the member leaves (x.grp.leave to each relay;
every relay stops forwarding to it and deletes its connection; the member's connections to the
relays are deleted and its group is LEFT), and the others go on without it."""

from __future__ import annotations

import pytest

from actors.chat.model import GroupStatus, RelayStatus, RosterStatus
from protocol.errors import AgentError
from tests.scenarios.chats import received, wait_idle, wait_until
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

    def let_go() -> bool:
        return all(
            _status(relay, gid, leaver_id) == RosterStatus.LEFT
            and relay.agent.connection_status(conn_id) is None
            for relay, conn_id in at_relays
        ) and all(leaves.agent.connection_status(c) is None for c in its_conns)

    wait_until(let_go, what="every relay let the member go, and every connection deleted")

    before = len(received(leaves, gid))
    exchange_rounds([owner, stays], gid, rounds=2)  # the others go on
    wait_idle([owner, stays, leaves, *group.relays], servers=servers)
    assert len(received(leaves, gid)) == before  # nothing reached it after it left
    assert leaves.group(gid).status == GroupStatus.LEFT


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
