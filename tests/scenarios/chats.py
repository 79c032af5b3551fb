"""Helpers for chat scenario tests: chat clients on real SQLite files and their events."""

from __future__ import annotations

from actors.chat import events as cev
from actors.chat_client import ChatClient
from tests.scenarios.agents import Events


def chat_events(client: ChatClient) -> Events:
    """Everything a chat client told, kept; `wait_for` polls for a matching event."""
    return Events(client, client.chat_events)


def befriend(a: ChatClient, a_events: Events, b: ChatClient, b_events: Events) -> tuple[str, str]:
    """A invites B as a contact; returns (B's contact id at A, A's contact id at B)."""
    a_contact = a.create_contact_link()
    link = a_events.wait_for(cev.ContactLink, contact_id=a_contact).link
    b_contact = b.join_contact(link)
    a_events.wait_for(cev.ContactConnected, contact_id=a_contact, timeout=15)
    b_events.wait_for(cev.ContactConnected, contact_id=b_contact, timeout=15)
    return a_contact, b_contact
