"""Peer-to-peer groups on real queue servers: contacts, a host adding members, every member
connected to every other, group messages received exactly once in the sender's order."""

from __future__ import annotations

from actors.chat import events as cev
from tests.scenarios.chats import befriend


def test_contacts_connect_and_exchange_messages(server, open_chat) -> None:
    alice, a_events = open_chat("alice", [server])
    bob, b_events = open_chat("bob", [server])
    a_contact, b_contact = befriend(alice, a_events, bob, b_events)
    assert a_events.of(cev.ContactConnected)[0].display_name == "bob"
    alice.send_contact_message(a_contact, "hi bob")
    message = b_events.wait_for(cev.NewMessage, chat_id=b_contact)
    assert message.text == "hi bob"


def test_a_host_adds_members_and_everyone_connects_to_everyone(server, open_chat) -> None:
    host, h_events = open_chat("host", [server])
    group_id = host.create_group("club")
    members = []
    for n in range(3):
        client, events = open_chat(f"m{n}", [server])
        h_contact, _ = befriend(host, h_events, client, events)
        host.add_member(group_id, h_contact)
        events.wait_for(cev.GroupInvitation, group_id=group_id, timeout=15)
        client.join_group(group_id)
        events.wait_for(cev.GroupConnected, group_id=group_id, timeout=15)
        members.append((client, events))
    everyone = [(host, h_events), *members]
    for client, events in everyone:
        def all_connected(client=client) -> bool:
            view = client.group(group_id)
            return len(view.members) == 3 and all(m.status == "connected" for m in view.members)

        events.wait(lambda e, f=all_connected: f(), timeout=20, what="every member connected")
    for n, (client, _) in enumerate(everyone):
        client.send_group_message(group_id, f"from {n}")
    for n, (_, events) in enumerate(everyone):
        for other in range(len(everyone)):
            if other != n:
                events.wait_for(cev.NewMessage, chat_id=group_id, text=f"from {other}", timeout=15)
