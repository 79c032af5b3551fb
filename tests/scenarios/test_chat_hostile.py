"""Garbage and hostile chat messages from connected peers: each is refused with a typed error
(`ChatWireError` for what does not decode, `ChatRefused` for what the receiver's state does
not allow), acknowledged so that it cannot stall the connection, and changes nothing stored;
the connections keep working.

The peers send through their agents (`ChatClient.agent.send_message`), below their own chat,
so that what arrives is exactly the bytes the test chose."""

from __future__ import annotations

import logging

from actors.chat import events as cev
from protocol.chat import (
    GroupRole,
    MemberInfo,
    Profile,
    XGrpDel,
    XGrpMemCon,
    XGrpMemFwd,
    XGrpMemIntro,
    XGrpMemInv,
    encode_chat_message,
    new_member_id,
)
from protocol.errors import ChatRefused, ChatWireError
from tests.scenarios.chats import (
    befriend,
    conn_to,
    content,
    exchange,
    host_and_member,
    invite,
    wait_idle,
    wait_settled,
    wait_until,
)

GHOST = MemberInfo(new_member_id(), GroupRole.MEMBER, Profile("ghost"))
LINK = "duplex:/invitation#forged"
WIRE, REFUSED = ChatWireError.code, ChatRefused.code


def contact_conn(client, contact_id: str) -> str:
    store = client.services.store
    with store.transaction(read_only=True):
        return store.Contact.get(store.Contact.contact_id == contact_id).conn_id


def test_garbage_and_hostile_messages_are_refused_and_change_nothing(
    server, open_chat, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="actors.chat.owner")
    group_id, (host, h_events), (m, m_events), (p, p_events) = host_and_member(server, open_chat)
    invite(host, h_events, group_id, p, p_events)  # P: a member, and the hostile one
    p.join_group(group_id)
    q, q_events = open_chat("q", [server])  # Q: M's contact, in no group
    m_contact, q_contact = befriend(m, m_events, q, q_events)
    clients = [host, m, p]
    wait_settled(clients, group_id)
    wait_idle([q])
    ids = {c: c.group(group_id).member_id for c in clients}
    before = {"host": content(host), "m": content(m)}
    told = {"host": len(h_events.of(object)), "m": len(m_events.of(object))}

    p_to_m, p_to_h = conn_to(p, group_id, ids[m]), conn_to(p, group_id, ids[host])
    q_to_m = contact_conn(q, q_contact)
    hostile = [  # (who sends, on which connection, what, the refusal's code)
        (p, p_to_m, b"\x00\xff not a chat message", WIRE),  # undecodable
        (p, p_to_m, b'{"v":1,"event":"x.grp.surprise","params":{}}', WIRE),  # unknown type
        (p, p_to_m, b'{"v":9,"event":"x.msg.new","params":{}}', WIRE),  # unknown version
        (p, p_to_m, encode_chat_message(XGrpMemIntro(GHOST)), REFUSED),  # P is not the host
        (p, p_to_m, encode_chat_message(XGrpMemFwd(GHOST, LINK)), REFUSED),
        (p, p_to_m, encode_chat_message(XGrpDel()), REFUSED),
        # an introduction for a group Q is not in, on a contact connection
        (q, q_to_m, encode_chat_message(XGrpMemIntro(GHOST)), REFUSED),
        (q, q_to_m, encode_chat_message(XGrpMemFwd(GHOST, LINK)), REFUSED),
        # forged member ids: no introduction of P to these members
        (p, p_to_h, encode_chat_message(XGrpMemInv(new_member_id(), LINK)), REFUSED),
        (p, p_to_h, encode_chat_message(XGrpMemCon(new_member_id())), REFUSED),
        (p, p_to_h, encode_chat_message(XGrpMemInv(ids[host], LINK)), REFUSED),  # the host
    ]
    for sender, conn_id, body, _ in hostile:
        sender.agent.send_message(conn_id, body)

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "chat message refused"]

    wait_until(lambda: len(refusals()) >= len(hostile), what="every hostile message refused")
    wait_idle([host, m, p, q])  # each was acknowledged: nothing waits in the agents
    by_conn: dict[str, list[str]] = {}
    for record in refusals():
        by_conn.setdefault(record.conn_id, []).append(record.code)
    peer_conn = {  # the receiver's side of each connection
        p_to_m: conn_to(m, group_id, ids[p]),
        q_to_m: contact_conn(m, m_contact),
        p_to_h: conn_to(host, group_id, ids[p]),
    }
    for conn_id, receiver_conn in peer_conn.items():
        codes = [code for _, c, _, code in hostile if c == conn_id]
        assert by_conn.get(receiver_conn) == codes, (by_conn, codes)
    assert len(refusals()) == len(hostile)
    assert {"host": content(host), "m": content(m)} == before  # nothing changed
    assert told == {"host": len(h_events.of(object)), "m": len(m_events.of(object))}

    # the connections keep working, both ways
    exchange(clients, group_id)
    q.send_contact_message(q_contact, "still friends?")
    m_events.wait_for(cev.NewMessage, chat_id=m_contact, text="still friends?")
    m.send_contact_message(m_contact, "yes")
    q_events.wait_for(cev.NewMessage, chat_id=q_contact, text="yes")
