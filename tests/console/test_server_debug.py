"""The debug endpoint of a queue server (`duplex server --debug`): a real server on loopback
with a real agent client's session, read by `duplex tree --json`; a dropped session comes
back by itself; the actor drills are refused as not applicable; a wrong token changes
nothing; and the CLI prints the endpoint's lines and stops it with the server on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from textual.pilot import Pilot

from actors import cli
from actors.agent import events as ev
from actors.client import Client
from actors.console import ConsoleApp
from actors.debug import DebugEndpoint, fetch_snapshot, open_session
from actors.debug.server_target import QueueServerTarget
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
from protocol.address import ServerAddress
from protocol.server import QueueServer
from tests.console.test_console import event_log, label, press, until
from tests.console.test_endpoint import answer, refused_at_once, snapshot_where
from tests.helpers import eventually
from tests.scenarios.agents import FAST, Events

DUPLEX = [sys.executable, "-m", "actors.cli"]


@dataclass
class DebuggedServer:
    server: QueueServer
    endpoint: DebugEndpoint
    client: Client

    def tree(self) -> dict[str, Any]:
        """`duplex tree --json` through the real CLI: the snapshot's tree, as JSON."""
        return self.tree_json()["tree"]

    def tree_json(self) -> dict[str, Any]:
        argv = ["tree", "--json", "--token-file", str(self.endpoint.token_file), self.endpoint.url]
        completed = _captured(lambda: cli.main(argv))
        assert completed[0] == 0, completed
        return json.loads(completed[1])

    def session_keys(self) -> list[str]:
        """The server's live sessions (blocking: from an async test, on a worker thread)."""
        return [s.key for s in self.server.debug_snapshot().sessions]


def _captured(run: Callable[[], int]) -> tuple[int, str]:
    """What `run` printed on stdout, without pytest's capsys (used from a helper)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run()
    return code, out.getvalue()


@pytest.fixture
def debugged_server(
    tmp_path: Path, start_server: Callable[..., QueueServer]
) -> Iterator[DebuggedServer]:
    server = start_server()
    endpoint = DebugEndpoint.start(QueueServerTarget(server), interval=0.05)
    client = Client.open(f"sqlite:///{tmp_path / 'alice.db'}", [str(server.address)], config=FAST)
    try:
        client.create_connection()  # a queue on the server, subscribed by alice's session
        debugged = DebuggedServer(server, endpoint, client)
        eventually(
            lambda: [s.subscriptions for s in server.debug_snapshot().sessions] == [1],
            what="alice's one session, subscribed",
            explain=server.debug_snapshot,
        )
        yield debugged
    finally:
        client.close()
        endpoint.stop()


def test_duplex_tree_shows_the_server_and_its_client_session(
    debugged_server: DebuggedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = debugged_server.tree_json()
    assert snapshot["type"] == "snapshot" and snapshot["counters"]["sessions"] == 1
    tree = snapshot["tree"]
    assert tree["address"] == "server" and tree["kind"] == "queue-server"
    assert tree["status"] == "live"
    address = debugged_server.server.address
    assert tree["state"]["listening"] == f"127.0.0.1:{address.port}"
    assert tree["state"]["sessions"] == 1 and tree["state"]["subscribed"] == 1
    assert tree["state"]["queues"] == 1 and tree["state"]["messages"] == 0
    [session] = tree["children"]
    assert session["kind"] == "client-session" and session["status"] == "live"
    assert session["address"] == f"server/{debugged_server.session_keys()[0]}"
    assert session["state"]["peer"].startswith("127.0.0.1:")
    assert session["state"]["subscriptions"] == 1 and session["state"]["pending"] == 0

    endpoint = debugged_server.endpoint
    assert cli.main(["tree", endpoint.url_with_token]) == 0  # rich, for a person
    printed = capsys.readouterr().out
    assert "queue-server" in printed and "client-session" in printed and "peer=" in printed


async def test_a_dropped_session_reconnects_and_actor_drills_are_refused(
    debugged_server: DebuggedServer,
) -> None:
    [old_key] = await trio.to_thread.run_sync(debugged_server.session_keys)
    old = f"server/{old_key}"
    events = Events(debugged_server.client)
    async with open_session(debugged_server.endpoint.url_with_token) as session:
        assert session.welcome.runtime == "queue-server"

        root = await answer(session, InspectActor(1, "server"))
        assert isinstance(root, Inspection) and root.description["kind"] == "queue-server"
        assert root.description["details"]["quota"] == 128  # the limits it serves with
        inspected = await answer(session, InspectActor(2, old))
        assert isinstance(inspected, Inspection) and inspected.status == "live"
        details = inspected.description["details"]
        assert details["key"] == old_key and details["subscriptions"] == 1
        assert details["peer"].startswith("127.0.0.1:")

        for command in (
            CrashActor(3, old),
            RestartActor(4, old),
            PassivateActor(5, old),
            DropSession(6, old, pause=True),
            ResumeSession(7, old),
            DropSession(8, "server"),
        ):
            refused = await answer(session, command)
            assert isinstance(refused, Refused), refused
            assert refused.code is RefusalCode.NOT_APPLICABLE, refused
        for command in (InspectActor(9, "server/nobody"), DropSession(10, "server/nobody")):
            refused = await answer(session, command)
            assert isinstance(refused, Refused) and refused.code is RefusalCode.NO_ACTOR
        assert await trio.to_thread.run_sync(debugged_server.session_keys) == [old_key]  # untouched

        dropped = await answer(session, DropSession(11, old))
        assert isinstance(dropped, Done) and "reconnects" in dropped.detail
        back = await snapshot_where(
            session,
            lambda s: (
                old not in {c.address for c in s.tree.children}
                and any(c.state["subscriptions"] == 1 for c in s.tree.children)
            ),
            "a new session of the client, subscribed again",
        )
        assert isinstance(back, Snapshot) and len(back.tree.children) == 1
    await trio.to_thread.run_sync(events.wait_for, ev.Down)
    await trio.to_thread.run_sync(events.wait_for, ev.Up)  # the client saw it, and came back


async def test_a_wrong_token_is_refused_and_changes_nothing(
    debugged_server: DebuggedServer,
) -> None:
    endpoint = debugged_server.endpoint
    [key] = await trio.to_thread.run_sync(debugged_server.session_keys)
    drop = f'{{"type":"drop_session","id":1,"address":"server/{key}"}}'
    assert await refused_at_once(endpoint.url + "not-the-token", drop) == POLICY_VIOLATION
    assert await refused_at_once(endpoint.url, drop) == POLICY_VIOLATION  # no token at all
    wrong = '{"type":"hello","token":"' + endpoint.token[:-1] + 'x"}'
    assert await refused_at_once(endpoint.url, wrong) == POLICY_VIOLATION
    await trio.sleep(0.2)  # a drop would have closed the session by now
    assert await trio.to_thread.run_sync(debugged_server.session_keys) == [key]
    assert stat.S_IMODE(endpoint.token_file.stat().st_mode) == 0o600  # type: ignore[union-attr]


class _Lines:
    """A child's stdout lines, read on a thread of their own so a wait has a deadline (a
    select on the pipe would miss lines already in the file's buffer)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
            self._lines.put(None)  # it stopped

        threading.Thread(target=pump, daemon=True).start()

    def next(self, deadline: float) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("duplex server said nothing more in time") from None
        assert line is not None, "duplex server stopped early"
        return line


def test_duplex_server_debug_prints_the_endpoint_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    command = [*DUPLEX, "server", "--db", f"sqlite:///{tmp_path}/server.db", "--port", "0"]
    server = subprocess.Popen(
        [*command, "--debug"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where the token's directory goes
    )
    try:
        output, deadline = _Lines(server), time.monotonic() + 30
        lines = [output.next(deadline)]
        while not lines[-1].startswith("  debug token file: "):
            lines.append(output.next(deadline))
        address = ServerAddress.parse(lines[0])  # still the address alone on the first line
        assert lines[-3] == "  Ctrl-C stops it"
        url = lines[-2].removeprefix("  debug endpoint: ")
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/")
        token_file = Path(lines[-1].removeprefix("  debug token file: "))
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

        snapshot = fetch_snapshot(url, token_file)
        assert snapshot.tree.kind == "queue-server" and snapshot.tree.children == []
        assert snapshot.tree.state["listening"] == f"127.0.0.1:{address.port}"

        server.send_signal(signal.SIGINT)
        assert server.wait(10) == 0
        assert not token_file.exists()  # stopped with the server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stderr is not None and server.stderr.read() == ""


def test_the_console_watches_a_server_and_refuses_its_actor_keys(
    debugged_server: DebuggedServer,
) -> None:
    asyncio.run(drive_console(debugged_server))


async def drive_console(debugged: DebuggedServer) -> None:
    [key] = debugged.session_keys()  # not on the app's loop yet: a plain thread
    session = f"server/{key}"
    app = ConsoleApp(debugged.endpoint.url_with_token, inspect_every=0.2)
    async with app.run_test(size=(160, 36)) as pilot:
        await until(pilot, lambda: session in app.shown, "the client's session shown")
        assert "queue-server" in label(app, "server") and "sessions=1" in label(app, "server")
        assert "client-session" in label(app, session) and "subscriptions=1" in label(app, session)
        assert "connected to runtime queue-server" in event_log(app)

        await press(pilot, "down")
        await until(pilot, lambda: app.selected == session, "the session selected")
        await until(
            pilot,
            lambda: app.inspection is not None and app.inspection.address == session,
            "its inspection shown",
        )
        assert app.inspection is not None
        assert app.inspection.description["details"]["key"] == key

        for key_pressed, command in (
            ("c", "CrashActor"),
            ("r", "RestartActor"),
            ("p", "PassivateActor"),
            ("z", "DropSession"),  # pause
        ):
            await _on_a_session(pilot)
            await press(pilot, key_pressed)
            await until(
                pilot,
                lambda command=command: f"refused {command} (NOT_APPLICABLE)" in event_log(app),
                f"{key_pressed} refused",
            )

        session = await _on_a_session(pilot)
        await press(pilot, "d")
        await until(pilot, lambda: "the client reconnects by itself" in event_log(app), "dropped")
        await until(
            pilot,
            lambda: (
                session not in app.shown
                and any(
                    "client-session" in label(app, a) and "subscriptions=1" in label(app, a)
                    for a in app.shown
                )
            ),
            "the client's new session shown in its place",
        )


async def _on_a_session(pilot: Pilot[Any]) -> str:
    """Select the client's session (again) and return its address. On busy cores the
    client's session may be lost and made again (a new key): the tree is rebuilt without the
    old line and the cursor falls back to the server, as it would for a user, who selects
    the new session to go on."""
    app = pilot.app
    assert isinstance(app, ConsoleApp)
    deadline = time.monotonic() + 10

    def on_session() -> bool:
        return (app.selected or "").startswith("server/") and app.selected in app.shown

    while not on_session():
        assert time.monotonic() < deadline, f"no session to select; shown {list(app.shown)}"
        await press(pilot, "down")
        await until(pilot, lambda: on_session() or app.selected == "server", "moved", 2)
    assert app.selected is not None
    return app.selected
