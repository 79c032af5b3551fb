"""Contact addresses with auto-accept: the auto-reply is sent exactly once per contact, also
when the accepting client is killed after the agent emitted JOINED (the completion of its
accept) and before the chat acknowledged it, or after the chat handled it and before the
acknowledgement. Counted at the receiver (messages stored, events told) and in the sender's
stored messages."""

from __future__ import annotations

import pytest

from actors.agent import faults
from actors.chat import events as cev
from tests.scenarios.chats import Stored, start_killed, wait_idle, wait_killed

REPLY = "hello from alice"


def texts(client, *, sent: bool) -> list[str]:
    """The texts of `client`'s contact messages, sent or received, as stored."""
    chat = client.services.store
    with chat.transaction(read_only=True):
        rows = chat.Message.select().where(
            (chat.Message.chat_kind == "contact") & (chat.Message.sent == sent)
        )
        return [row.text for row in rows]


def knock(bob, b_events, link: str) -> str:
    """Bob joins alice's address; returns his contact id once it is connected."""
    contact = bob.join_contact(link)
    b_events.wait_for(cev.ContactConnected, contact_id=contact, timeout=15)
    return contact


def assert_replied_once(alice, bob, b_events, contact: str) -> None:
    wait_idle([alice, bob])
    b_events.wait_for(cev.NewMessage, chat_id=contact, text=REPLY, timeout=15)
    assert texts(bob, sent=False).count(REPLY) == 1
    assert len(b_events.of(cev.NewMessage, chat_id=contact)) == 1
    received = [m for m in Stored.of(bob).messages if m[0] == contact]
    assert len(received) == 1, received


def test_the_auto_reply_is_sent_once_per_contact(server, open_chat) -> None:
    alice, a_events = open_chat("alice", [server])
    address = alice.create_address(auto_accept=True, auto_reply=REPLY)
    link = a_events.wait_for(cev.AddressLink, address_id=address).link
    for name in ("bob", "carol"):
        client, events = open_chat(name, [server])
        contact = knock(client, events, link)
        assert_replied_once(alice, client, events, contact)
    assert texts(alice, sent=True) == [REPLY, REPLY]  # one per contact
    assert len(a_events.of(cev.ContactConnected)) == 2


@pytest.mark.parametrize(
    "fault",
    [(faults.AFTER_EMIT, "join"), (faults.AFTER_EMIT, "accept_contact")],
    ids=["agent-emitted-JOINED", "chat-handled-JOINED"],
)
def test_the_auto_reply_is_sent_once_across_kill_9(fault, tmp_path, server, open_chat) -> None:
    alice, a_events = open_chat("alice", [server])
    address = alice.create_address(auto_accept=True, auto_reply=REPLY)
    link = a_events.wait_for(cev.AddressLink, address_id=address).link
    alice.close()
    child = start_killed(tmp_path, "alice", server, fault)  # accepts bob, killed at JOINED
    bob, b_events = open_chat("bob", [server])
    contact = bob.join_contact(link)
    wait_killed(child)
    alice, _ = open_chat("alice", [server])
    b_events.wait_for(cev.ContactConnected, contact_id=contact, timeout=15)
    assert_replied_once(alice, bob, b_events, contact)
    assert texts(alice, sent=True) == [REPLY]
