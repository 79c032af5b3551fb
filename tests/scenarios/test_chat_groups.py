"""Peer-to-peer groups on real queue servers: contacts, a host adding members, every member
connected to every other, group messages received exactly once in the sender's order."""

from __future__ import annotations

from actors.chat import events as cev
from tests.scenarios.chats import (
    assert_acted_once,
    befriend,
    invite,
    received,
    wait_settled,
    wait_until,
)


def test_contacts_connect_and_exchange_messages(server, open_chat) -> None:
    alice, a_events = open_chat("alice", [server])
    bob, b_events = open_chat("bob", [server])
    a_contact, b_contact = befriend(alice, a_events, bob, b_events)
    assert a_events.of(cev.ContactConnected)[0].display_name == "bob"
    alice.send_contact_message(a_contact, "hi bob")
    message = b_events.wait_for(cev.NewMessage, chat_id=b_contact)
    assert message.text == "hi bob"


def test_a_host_adds_five_members_and_everyone_connects_to_everyone(server, open_chat) -> None:
    host, h_events = open_chat("host", [server])
    group_id = host.create_group("club")
    everyone = [(host, h_events)]
    member_ids = [host.group(group_id).member_id]
    for n in range(5):
        client, events = open_chat(f"m{n}", [server])
        member_ids.append(invite(host, h_events, group_id, client, events))
        client.join_group(group_id)
        events.wait_for(cev.GroupConnected, group_id=group_id, timeout=15)
        everyone.append((client, events))
    clients = [client for client, _ in everyone]
    wait_settled(clients, group_id)
    assert_acted_once(clients, group_id, server)
    for client, member_id in zip(clients, member_ids, strict=True):
        assert client.group(group_id).member_id == member_id

    sent: dict[str, list[str]] = {}  # author's member id → msg ids, in the order sent
    for round_ in range(3):
        for n, client in enumerate(clients):
            msg_id = client.send_group_message(group_id, f"{n}:{round_}")
            sent.setdefault(member_ids[n], []).append(msg_id)
    total = len(clients) - 1
    for n, (client, events) in enumerate(everyone):
        wait_until(
            lambda client=client: len(received(client, group_id)) == 3 * total,
            what=f"every message at member {n}",
            explain=lambda client=client: received(client, group_id),
        )
        got = received(client, group_id)
        assert len(set(got)) == len(got)  # exactly once
        for author, msg_ids in sent.items():
            if author != member_ids[n]:
                assert [m for a, m in got if a == author] == msg_ids  # in the sender's order
        # told once each, just after the unit that stored it committed: wait for the last
        want = len(got)
        told = wait_until(
            lambda events=events, want=want: (
                found if len(found := events.of(cev.NewMessage, chat_id=group_id)) >= want else None
            ),
            what=f"every message told at member {n}",
        )
        assert sorted(e.msg_id for e in told) == sorted(m for _, m in got)
    wait_settled(clients, group_id)
