"""`duplex console` driven with textual's pilot against a live client: the tree shows the
client's actors, a crash makes the restart count rise in the view, a passivated actor is
shown as such, the filter works, and the help screen describes both kinds of target and
scrolls.

Set DUPLEX_WRITE_SCREENSHOT=1 to write the console's screenshot to docs/console.svg (what
the README shows).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Input, Static, Tree

from actors.console import ConsoleApp, HelpScreen
from tests.console.conftest import DebuggedClient

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.svg"


async def until(pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = 10.0):
    """`tests.helpers.eventually` for a running app: poll while the app's loop runs."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            app = pilot.app
            seen = list(getattr(app, "event_lines", []))[-8:]
            raise AssertionError(
                f"{what} not met within {timeout}s; selected {getattr(app, 'selected', None)!r},"
                f" the event log ends with {seen!r}"
            )
        await pilot.pause(0.02)


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Keys as a user types them. Not `pilot.press`: it waits after each key until the
    process's CPU is idle, which a live runtime in the same process (on busy cores) never
    is, so each key would cost up to two seconds; what a key did is polled for instead."""
    for key in keys:
        pilot.app.simulate_key(key)
        await pilot.pause(0.01)


def _cursor_address(app: ConsoleApp) -> str | None:
    node = app.query_one("#tree", Tree).cursor_node
    return None if node is None else node.data


def label(app: ConsoleApp, address: str) -> str:
    node = app.shown.get(address)
    return "" if node is None else node.label.plain  # type: ignore[union-attr]


def event_log(app: ConsoleApp) -> str:
    return "\n".join(app.event_lines)


def test_the_console_shows_the_live_tree_and_drives_the_runtime(debugged: DebuggedClient) -> None:
    asyncio.run(drive(debugged))


async def drive(debugged: DebuggedClient) -> None:
    conn, session = debugged.conn_address, debugged.session_address
    app = ConsoleApp(debugged.endpoint.url_with_token, inspect_every=0.2)
    async with app.run_test(size=(160, 36)) as pilot:
        await until(pilot, lambda: conn in app.shown, "the connection actor shown")
        for address in ("client", "client/io", "client/agent", "client/agent/conns", session):
            assert address in app.shown, address
        assert "connection" in label(app, conn) and "live" in label(app, conn)
        assert "status=new" in label(app, conn)
        assert "server-session" in label(app, session) and "up=True" in label(app, session)
        assert "connected to runtime client" in event_log(app)

        for _ in range(len(app.shown)):  # down the tree, as a user would, to the connection
            if app.selected == conn:
                break
            await press(pilot, "down")
            # the selection follows the cursor through a message: wait for it before the
            # next key, or a busy loop sees the old selection and presses once too often
            await until(pilot, lambda: app.selected == _cursor_address(app), "moved")
        assert app.selected == conn
        inspected = await until(
            pilot,
            lambda: app.inspection if app.inspection and app.inspection.address == conn else None,
            "its inspection shown",
        )
        assert inspected.description["kind"] == "connection"
        assert app.query_one("#detail-box").border_title == conn

        await press(pilot, "c")
        await until(pilot, lambda: "restarts=1" in label(app, conn), "the restart in the view")
        assert "debug console" in label(app, conn)  # its last error
        await until(pilot, lambda: f"{conn} restarted (1)" in event_log(app), "logged")

        await until(
            pilot,
            lambda: app.inspection is not None and app.inspection.description["restarts"] == 1,
            "the new activation inspected",
        )
        if os.environ.get("DUPLEX_WRITE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            app.save_screenshot(SCREENSHOT.name, str(SCREENSHOT.parent))

        await press(pilot, "p")
        await until(pilot, lambda: "passivated" in label(app, conn), "shown as passivated")
        assert "mailbox" not in label(app, conn)
        view = debugged.client.runtime.directory.view(conn)
        assert view is None  # it really is passivated, not just drawn so

        await press(pilot, "slash")
        await until(pilot, lambda: app.focused is app.query_one("#filter", Input), "filter focus")
        app.query_one("#filter", Input).value = "server-session"
        await until(pilot, lambda: conn not in app.shown, "the filter hides the connection")
        assert session in app.shown and "client/agent/servers" in app.shown
        await press(pilot, "escape")
        await until(pilot, lambda: app.focused is app.query_one("#tree", Tree), "tree focus")

        await press(pilot, "question_mark")
        await until(  # pushed, and composed (on a busy machine, a turn or more later)
            pilot,
            lambda: isinstance(app.screen, HelpScreen) and app.screen.query("#help"),
            "the help screen",
        )
        shown = str(app.screen.query_one("#help", Static).render())
        for text in ("A client runtime", "server-session", "A queue server", "client-session"):
            assert text in shown, text
        assert "d drop a connection" in shown and "z pause" in shown and "Colours" in shown
        box = app.screen.query_one("#help-box", VerticalScroll)
        await until(pilot, lambda: app.screen.focused is box, "the help has the keys")
        if box.max_scroll_y > 0:  # at 36 rows it does not fit: it scrolls
            await press(pilot, "end")
            await until(pilot, lambda: box.scroll_y == box.max_scroll_y, "scrolled to its end")
        await press(pilot, "escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")
