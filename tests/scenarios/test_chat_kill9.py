"""kill -9 mid-join: the joining client, an existing member and the host, each in turn, run
in a child process that SIGKILLs itself at a persisted step of the introduction protocol
(tests/scenarios/chat_child.py); the test reopens its database and the group settles with
no user action and every step acted on once (counted from stored state).

The points are those where a kill leaves work half done: a step's state committed but its
chat command or chat message not yet handed to the agent (after its effects), or a completion
committed but not acknowledged, with the agent's next event (CON) in flight (after emit), or
a completion not yet handled at all (before run), or an agent event the agent tells only once
(CONF, CON) lost before the chat handled it."""

from __future__ import annotations

import pytest

from actors.agent import faults
from tests.scenarios.chats import (
    assert_acted_once,
    exchange,
    host_and_member,
    invite,
    start_killed,
    wait_killed,
    wait_settled,
)

CASES = [
    ("i", faults.AFTER_EMIT, "allow_intro"),  # M allowed; CON in flight
    ("m", faults.AFTER_EFFECTS, "x.grp.mem.fwd"),  # its join of I's invitation not made yet
    ("host", faults.AFTER_EFFECTS, "x.grp.mem.inv"),  # the forward to M not handed over
    ("host", faults.AFTER_EMIT, "allow_member"),  # I allowed; CON in flight
    # the agent stored a chat message and its OK, the chat still holds the outbox row: the
    # next process hands it over again, and the agent sends it once
    ("host", faults.AFTER_EFFECTS, "send"),
    # an agent event told once and lost with the process: asked for again at the next boot
    ("host", faults.BEFORE_RUN, "CONF"),  # I's join of H's link
    ("i", faults.BEFORE_RUN, "CONF"),  # M's join of I's invitation
    ("m", faults.BEFORE_RUN, "CON"),  # its connection to I
]


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_killed_mid_join(case, tmp_path, server, open_chat) -> None:
    who, *fault = case
    group_id, (host, h_events), (m, _), (i, i_events) = host_and_member(server, open_chat)
    invite(host, h_events, group_id, i, i_events)
    clients = {"host": host, "m": m, "i": i}
    clients[who].close()
    child = start_killed(tmp_path, who, server, fault, join=group_id if who == "i" else "")
    if who != "i":
        i.join_group(group_id)
    wait_killed(child)
    clients[who], _ = open_chat(who, [server])
    everyone = list(clients.values())
    wait_settled(everyone, group_id)
    assert_acted_once(everyone, group_id, server)
    exchange(everyone, group_id)
