"""Short links: link data set on a contact address, resolved by anyone with the link."""

from __future__ import annotations

import pytest

from actors.agent import events as ev
from actors.client import AgentError
from protocol.links import ShortLink, parse_short_link
from protocol.queue import QueueMode
from protocol.server import QueueServer


def test_link_data_round_trip_and_join_through_it(server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    address = a_events.wait_for(ev.Inv, corr_id="addr").link

    short_link = alice.set_link_data(address_conn, b"group profile: cats")
    assert short_link.startswith("duplex:/l/")
    link, user_data = bob.get_link_data(short_link)
    assert (link, user_data) == (address, b"group profile: cats")
    # setting again keeps the same short link and replaces the data
    assert alice.set_link_data(address_conn, b"v2") == short_link
    bob.get_link_data_async("lookup", short_link)
    resolved = b_events.wait_for(ev.LData, corr_id="lookup")
    assert (resolved.link, resolved.user_data) == (address, b"v2")

    bob.join_connection_async("knock", link, b"bob")
    assert a_events.wait_for(ev.Req, conn_id=address_conn).info == b"bob"


def test_unknown_or_forged_links_are_errors(server: QueueServer, open_client) -> None:
    alice, a_events = open_client("alice", [server])
    bob, b_events = open_client("bob", [server])
    address_conn = alice.create_connection_async("addr", QueueMode.CONTACT)
    a_events.wait_for(ev.Inv, corr_id="addr")
    real = parse_short_link(alice.set_link_data(address_conn, b"secret"))

    never_set = ShortLink.generate(real.server).to_uri()
    bob.get_link_data_async("missing", never_set)
    assert b_events.wait_for(ev.Err, corr_id="missing").code == "AUTH"
    with pytest.raises(AgentError):
        bob.get_link_data(never_set)

    invitation_conn, _ = alice.create_connection()
    with pytest.raises(AgentError) as refused:
        alice.set_link_data(invitation_conn, b"x")
    assert refused.value.code == "PROHIBITED"
