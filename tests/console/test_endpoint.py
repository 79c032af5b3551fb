"""The debug endpoint of a live client: its token (private file, refusals that change
nothing), typed answers to every command and to garbage, the session drills, and
`duplex tree` (rich and --json) through the real CLI."""

from __future__ import annotations

import json
import stat

import pytest
import trio
import trio_websocket

from actors import cli
from actors.agent import events as ev
from actors.debug import DebugEndpoint, open_session
from actors.debug.wire import (
    POLICY_VIOLATION,
    CrashActor,
    Done,
    DropSession,
    InspectActor,
    Inspection,
    PassivateActor,
    RefusalCode,
    Refused,
    RestartActor,
    ResumeSession,
    Snapshot,
)
from protocol.errors import ConfigurationError
from tests.console.conftest import DebuggedClient
from tests.scenarios.agents import Events


def test_the_token_file_is_the_users_alone_and_goes_with_the_client(
    debugged: DebuggedClient,
) -> None:
    endpoint = debugged.endpoint
    assert endpoint.url.startswith("ws://127.0.0.1:") and endpoint.token not in endpoint.url
    assert endpoint.token_file is not None
    assert stat.S_IMODE(endpoint.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(endpoint.token_file.parent.stat().st_mode) == 0o700
    assert endpoint.token_file.read_text().strip() == endpoint.token
    debugged.client.close()
    assert not endpoint.token_file.exists()


async def refused_at_once(url: str, first: str | None = None) -> int:
    """Connect to `url` (sending `first` if given); the close code the endpoint chose."""
    async with trio_websocket.open_websocket_url(url) as ws:
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            if first is not None:
                await ws.send_message(first)  # may find the connection closed already
            while True:
                await ws.get_message()  # nothing, not even a snapshot, before the close
    return closed.value.reason.code


async def test_a_wrong_or_missing_token_is_refused_and_changes_nothing(
    debugged: DebuggedClient,
) -> None:
    endpoint = debugged.endpoint
    crash = f'{{"type":"crash","id":1,"address":"{debugged.conn_address}"}}'
    assert await refused_at_once(endpoint.url + "not-the-token") == POLICY_VIOLATION
    assert await refused_at_once(endpoint.url + "not-the-token", crash) == POLICY_VIOLATION
    assert await refused_at_once(endpoint.url, crash) == POLICY_VIOLATION  # no token at all
    assert await refused_at_once(endpoint.url, '{"type":"hello","token":""}') == POLICY_VIOLATION
    wrong = '{"type":"hello","token":"' + endpoint.token[:-1] + 'x"}'
    assert await refused_at_once(endpoint.url, wrong) == POLICY_VIOLATION
    assert await refused_at_once(endpoint.url, "garbage") == POLICY_VIOLATION

    silent = DebugEndpoint.start(debugged.client.runtime, hello_timeout=0.2)
    try:
        assert await refused_at_once(silent.url) == POLICY_VIOLATION  # says nothing: closed
    finally:
        silent.stop()

    assert debugged.client.runtime.directory.counters["crashes"] == 0
    node = debugged.client.tree().find(debugged.conn_address)
    assert node is not None and node.restarts == 0 and node.status == "live"
    with pytest.raises(ConfigurationError, match="refused the token"):
        async with open_session(endpoint.url + "not-the-token"):
            pass


async def test_every_command_and_every_garbage_gets_a_typed_answer(
    debugged: DebuggedClient,
) -> None:
    async with open_session(debugged.endpoint.url, debugged.endpoint.token_file) as session:
        assert session.welcome.runtime == "client"
        sent = [
            "not json",
            '{"type":"explode","id":7}',
            '{"type":"crash","id":8}',
            '{"type":"crash","id":9,"address":"client/agent","extra":1}',
            '{"type":"hello","token":"again"}',
            '["a list"]',
        ]
        for raw in sent:
            await session._ws.send_message(raw)
        for command in (
            CrashActor(10, "client"),
            CrashActor(11, "client/nobody"),
            PassivateActor(12, "client/agent"),
            DropSession(13, "client/agent"),
            RestartActor(14, "client"),
            InspectActor(15, "client/agent/conns/nobody"),
        ):
            await session.send(command)
        answers: dict[int, Refused] = {}
        bad_requests = 0
        with trio.fail_after(10):
            while len(answers) < 6 or bad_requests < len(sent):
                message = await session.receive()
                if isinstance(message, Refused) and message.code is RefusalCode.BAD_REQUEST:
                    bad_requests += 1
                elif not isinstance(message, Snapshot):
                    assert isinstance(message, Refused), message
                    answers[message.id] = message
        assert {i: a.code for i, a in answers.items()} == {
            10: RefusalCode.NOT_APPLICABLE,
            11: RefusalCode.NO_ACTOR,
            12: RefusalCode.NOT_APPLICABLE,
            13: RefusalCode.NOT_APPLICABLE,
            14: RefusalCode.NOT_APPLICABLE,
            15: RefusalCode.NO_ACTOR,
        }
        # still admitted, still streaming, and the runtime untouched
        await session.next_snapshot()
    assert debugged.client.runtime.directory.counters["crashes"] == 0
    assert not debugged.client.runtime.failed.is_set()


async def answer(session, command) -> Done | Inspection | Refused:  # type: ignore[no-untyped-def]
    await session.send(command)
    with trio.fail_after(10):
        while True:
            message = await session.receive()
            if not isinstance(message, Snapshot) and message.id == command.id:
                return message


async def snapshot_where(session, condition, what: str) -> Snapshot:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        while True:
            snapshot = await session.next_snapshot()
            if condition(snapshot):
                return snapshot
    raise AssertionError(what)


async def test_inspect_crash_restart_and_the_session_drills(debugged: DebuggedClient) -> None:
    conn, session_actor = debugged.conn_address, debugged.session_address
    events = Events(debugged.client)
    async with open_session(debugged.endpoint.url_with_token) as session:
        inspection = await answer(session, InspectActor(1, conn))
        assert isinstance(inspection, Inspection) and inspection.status == "live"
        description = inspection.description
        assert description["kind"] == "connection" and description["restarts"] == 0
        assert description["state"]["status"] == "new" and "mailbox" in description
        details = description["details"]  # ConnectionActor.inspect
        assert details["mode"] == "invitation" and details["pending_commands"] == []
        assert details["unacknowledged_events"] == []  # a sync create stores no event
        assert len(details["receive_queues"]) == 1 and details["send_queues"] == []

        assert isinstance(await answer(session, CrashActor(2, conn)), Done)
        crashed = await snapshot_where(
            session, lambda s: s.tree.find(conn).restarts == 1, "restarted after the crash"
        )
        assert "debug console" in (crashed.tree.find(conn).last_error or "")
        assert isinstance(await answer(session, RestartActor(3, "client/agent/conns")), Done)
        await snapshot_where(
            session, lambda s: s.tree.find("client/agent/conns").restarts == 1, "restarted"
        )

        assert isinstance(await answer(session, DropSession(4, session_actor)), Done)
        events.wait_for(ev.Down)
        events.wait_for(ev.Up)  # it reconnected by itself

        assert isinstance(await answer(session, DropSession(5, session_actor, pause=True)), Done)
        await snapshot_where(
            session, lambda s: s.tree.find(session_actor).state.get("paused"), "paused"
        )
        assert isinstance(await answer(session, ResumeSession(6, session_actor)), Done)
        await snapshot_where(
            session,
            lambda s: not s.tree.find(session_actor).state.get("paused"),
            "resumed",
        )
    # the connection still works after all that: its link can be joined and used
    assert debugged.client.connection_status(debugged.conn_id) is not None


def test_duplex_tree_prints_the_tree_and_its_json(
    debugged: DebuggedClient, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = debugged.endpoint
    assert cli.main(["tree", "--json", "--token-file", str(endpoint.token_file), endpoint.url]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["type"] == "snapshot"
    tree = snapshot["tree"]
    assert tree["address"] == "client" and tree["status"] == "live"
    addresses = {}

    def walk(node: dict) -> None:
        addresses[node["address"]] = node
        for child in node["children"]:
            walk(child)

    walk(tree)
    assert {"client/io", "client/agent", "client/agent/conns", "client/agent/servers"} <= set(
        addresses
    )
    conn = addresses[debugged.conn_address]
    assert conn["kind"] == "connection" and conn["state"]["status"] == "new"
    assert addresses[debugged.session_address]["state"]["up"] is True
    assert snapshot["counters"]["crashes"] == 0

    assert cli.main(["tree", endpoint.url_with_token]) == 0
    printed = capsys.readouterr().out
    assert "agent" in printed and "connection" in printed and "server-session" in printed
    assert "crashes 0" in printed

    assert cli.main(["tree", endpoint.url + "wrong"]) == 1
    assert "refused the token" in capsys.readouterr().err
    assert cli.main(["tree", endpoint.url]) == 1
    assert "no token" in capsys.readouterr().err


async def test_the_endpoint_outlives_a_crash_of_the_io_actor(debugged: DebuggedClient) -> None:
    async with open_session(debugged.endpoint.url_with_token) as session:
        assert isinstance(await answer(session, CrashActor(1, "client/io")), Done)
        # one_for_all at the root: io and the agent restart; the endpoint keeps streaming
        restarted = await snapshot_where(
            session,
            lambda s: (
                s.tree.find("client/io").restarts >= 1
                and all(n.status == "live" for n in s.tree.children)
            ),
            "the tree back up",
        )
        assert restarted.tree.find("client/agent") is not None


async def test_connections_beyond_the_cap_are_told_to_try_later(
    debugged: DebuggedClient,
) -> None:
    from actors.debug.endpoint import MAX_CONNECTIONS, TRY_AGAIN_LATER

    endpoint = debugged.endpoint
    async with trio.open_nursery() as nursery:
        waiting = [
            await trio_websocket.connect_websocket_url(nursery, endpoint.url)
            for _ in range(MAX_CONNECTIONS)  # say nothing: each waits for its Hello
        ]
        assert await refused_at_once(endpoint.url_with_token) == TRY_AGAIN_LATER
        for ws in waiting:
            await ws.aclose()
    async with open_session(endpoint.url_with_token) as session:  # room again
        await session.next_snapshot()
