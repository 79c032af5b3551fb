"""A relay group's relays change after it was made: the owner adds a relay (invited as at the
start; the group link lists it once its relay link is verified) and removes one (the link is
published again without it, the owner's connection to it is deleted, and the relay passes its
removal on to its members, which drop it, and serves the group no more); members who join
afterwards join exactly the relays the link lists then. Bad requests are typed errors that
change nothing."""

from __future__ import annotations

import dataclasses

import pytest

from actors.chat import events as cev
from actors.chat.model import RelayStatus, RosterStatus, ServedStatus
from protocol.errors import AgentError
from tests.scenarios.chats import received, wait_until
from tests.scenarios.relays import join, open_relays, relay_group, roster


def test_the_owner_adds_and_removes_relays_and_the_link_follows(start_server, open_chat) -> None:
    servers = [start_server("a"), start_server("b")]
    group = relay_group(open_chat, servers, count=2)
    gid, owner, events = group.group_id, group.owner, group.owner_events
    (third,), (third_address,) = open_relays(open_chat, servers[1:], 1, first=2)

    owner.add_group_relay(gid, third_address)
    ready = events.wait(
        lambda e: isinstance(e, cev.GroupLinkReady) and e.relays == 3,
        timeout=20,
        what="the group link listing the added relay",
    )
    assert ready.link == group.link  # the same link, its data published again
    view = owner.group(gid)
    assert view.relays_active == "3/3 relays active"
    assert third_address in {r.address for r in view.relays}
    group.relays.append(third)
    early, _ = join(group, open_chat, "early", servers[0])  # through all three
    assert early.group(gid).relays_active == "3/3 relays active"
    assert [r.member_id for r in roster(third, gid)][1:] == [early.group(gid).member_id]

    with pytest.raises(AgentError) as duplicate:
        owner.add_group_relay(gid, third_address)
    assert duplicate.value.code == "DUPLICATE"
    with pytest.raises(AgentError) as unknown:
        owner.remove_group_relay(gid, "duplex-relay-address-of-nobody")
    assert unknown.value.code == "NO_RELAY"

    removed_address = group.addresses[0]
    owner.remove_group_relay(gid, removed_address)
    events.wait(
        lambda e: isinstance(e, cev.GroupLinkReady) and e.relays == 2,
        timeout=20,
        what="the group link published without the removed relay",
    )
    view = owner.group(gid)
    assert view.relays_active == "2/2 relays active"
    assert removed_address not in {r.address for r in view.relays}
    with pytest.raises(AgentError):  # removed already: no relay of the group has it now
        owner.remove_group_relay(gid, removed_address)
    wait_until(
        lambda: owner.agent.connection_status(_removed_conn(owner, gid)) is None,
        what="the owner's connection to the removed relay deleted",
    )
    removed, listed = group.relays[0], group.relays[1:]
    # it passed its removal on: early dropped it and keeps the other two; it serves no more
    wait_until(
        lambda: (
            early.group(gid).relays_active == "2/2 relays active"  # REMOVED: not in the view
            and early.agent.connection_status(_removed_conn(early, gid)) is None
            and _served_status(removed, gid) == ServedStatus.REMOVED
            and {r.status for r in roster(removed, gid)} == {RosterStatus.LEFT}
        ),
        what="the removed relay let everyone go, and early dropped it",
        explain=lambda: (early.group(gid), roster(removed, gid)),
    )

    now = dataclasses.replace(group, relays=listed, addresses=group.addresses[1:])
    late, _ = join(now, open_chat, "late", servers[1])  # through the two listed now
    assert late.group(gid).relays_active == "2/2 relays active"
    assert all(r.member_id != late.group(gid).member_id for r in roster(removed, gid))

    owner.remove_group_relay(gid, group.addresses[1])
    with pytest.raises(AgentError) as last:
        owner.remove_group_relay(gid, third_address)
    assert last.value.code == "PROHIBITED"  # the link would list no relay
    assert owner.group(gid).relays_active == "1/1 relays active"

    msg_id = owner.send_group_message(gid, "still here")
    for member, name in ((early, "early"), (late, "late")):
        wait_until(
            lambda m=member: msg_id in _received_ids(m, gid),
            what=f"the owner's message at {name}, through the relay left",
        )


def _removed_conn(client, group_id: str) -> str:
    store = client.services.store
    with store.transaction(read_only=True):
        rows = store.GroupRelay.select().where(
            (store.GroupRelay.group_id == group_id)
            & (store.GroupRelay.status == RelayStatus.REMOVED)
        )
        return rows.get().conn_id


def _served_status(relay, group_id: str) -> str:
    store = relay.services.store
    with store.transaction(read_only=True):
        return store.RelayGroup.get(store.RelayGroup.group_id == group_id).status


def _received_ids(client, group_id: str) -> set[str]:
    return {msg_id for _, msg_id in received(client, group_id)}
