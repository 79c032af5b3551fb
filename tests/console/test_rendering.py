"""What the console and `duplex tree` draw from a snapshot: colours by meaning, one line
per actor, the event log's account of what changed between two snapshots, and a help
screen that names every key the console binds and every status colour it draws."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding

from actors.console import HELP, STATUS_STYLES, ConsoleApp, changes, node_label, value_style
from actors.kernel import TreeNode


def test_state_values_are_coloured_by_what_they_mean() -> None:
    assert value_style("status", "ready") == "green"
    assert value_style("status", "connecting") == "yellow"
    assert value_style("status", "failed") == "red"
    assert value_style("rcv_switch", "qadd_sent") == "yellow"
    assert value_style("rcv_switch", "qkey_failed") == "red"
    assert value_style("up", True) == "green" and value_style("up", False) == "red"
    assert value_style("paused", True) == "bold red" and value_style("paused", False) == "dim"
    assert value_style("queues", 3) == ""
    assert value_style("switch", [None, None]) == "dim"  # no queue rotation under way
    assert value_style("switch", ["sent_qadd", None]) == "yellow"
    assert value_style("pending_commands", []) == "dim"


def test_a_line_shows_the_counters_first_and_a_passivated_actor_without_a_mailbox() -> None:
    crashed = TreeNode(
        "client/agent/conns/c1",
        "connection",
        "live",
        state={"status": "ready"},
        mailbox=2,
        restarts=1,
        last_error="ActorCrash('client/agent/conns/c1: on purpose')",
    )
    text = node_label(crashed).plain
    assert text.startswith("c1 connection live  mailbox=2  restarts=1  status=ready")
    assert text.endswith("last_error=ActorCrash('on purpose')")
    passivated = node_label(TreeNode("client/agent/conns/c2", "connection", "passivated"))
    assert passivated.plain == "c2 connection passivated"


def test_the_event_log_says_what_changed() -> None:
    def tree(*children: TreeNode) -> TreeNode:
        return TreeNode("client", "supervisor", "live", children=list(children))

    before = tree(TreeNode("client/a", "worker", "live"), TreeNode("client/gone", "worker", "live"))
    after = tree(
        TreeNode("client/a", "worker", "live", restarts=1, last_error="RuntimeError('x')"),
        TreeNode("client/new", "worker", "restarting"),
    )
    lines = changes(before, after)
    assert any("client/a restarted (1)" in line and "RuntimeError('x')" in line for line in lines)
    assert any(line.endswith("client/new [dim]worker[/] restarting") for line in lines)
    assert any(line.endswith("client/gone") for line in lines)


def test_the_event_log_tells_a_session_going_down_but_not_its_counters() -> None:
    session = "client/agent/servers/AAAAAAAAAAAAAAAAAAAAAAAA@127.0.0.1:5223"

    def tree(**state: object) -> TreeNode:
        node = TreeNode(session, "server-session", "live", state=state)
        return TreeNode("client", "supervisor", "live", children=[node])

    lines = changes(tree(up=True, queues=1), tree(up=False, queues=2))
    assert lines == ["  client/agent/servers/AAAAAAAA…@127.0.0.1:5223 up: True → [red]False[/]"]


# How the help names a key textual calls by name.
_KEY_NAMES = {"slash": "/", "question_mark": "?"}


def test_the_help_names_every_key_and_every_status_colour() -> None:
    help_text = Text.from_markup(HELP).plain
    keys = [b.key for b in ConsoleApp.BINDINGS if isinstance(b, Binding)]
    assert len(keys) == len(ConsoleApp.BINDINGS)
    for key in keys:
        assert f"{_KEY_NAMES.get(key, key)} " in help_text, key
    for status in STATUS_STYLES:
        assert status in help_text, status
    # both kinds of target, and what each shows
    for shown in ("server-session", "connection", "conns", "switch", "relay-groups", "groups"):
        assert shown in help_text, shown
    for shown in ("duplex server --debug", "client-session", "subscriptions", "closing"):
        assert shown in help_text, shown
