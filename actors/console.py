"""`duplex tree` and `duplex console`: a running runtime's supervision tree, read through its
debug endpoint (actors/debug), printed once with rich or watched live in a textual app.

`tree_main` prints one snapshot (a rich tree, or its JSON with `--json`) for scripts.
`ConsoleApp` shows the live tree (supervisors, actors, live / restarting / passivated,
mailbox depth, restarts, state fields coloured by what they mean), a detail pane with what
the selected actor says of itself, an event log (what changed between snapshots, and the
answers to commands), a filter, and keys for the endpoint's commands: crash, restart,
passivate, drop or pause a queue-server session. Both only talk to the endpoint: nothing
here touches a runtime directly.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import deque
from typing import Any, ClassVar

import msgspec
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree as RichTree
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, RichLog, Static, Tree
from textual.widgets.tree import TreeNode as TreeWidgetNode

from actors.debug.link import DebugLink, LinkDown, LinkEvent, LinkUp, fetch_snapshot, redacted
from actors.debug.wire import (
    Command,
    CrashActor,
    Done,
    DropSession,
    InspectActor,
    Inspection,
    PassivateActor,
    Refused,
    RestartActor,
    ResumeSession,
    Snapshot,
)
from actors.kernel import TreeNode
from protocol.errors import DuplexError

STATUS_STYLES = {
    "live": "green",
    "restarting": "bold yellow",
    "passivating": "blue",
    "passivated": "dim cyan",
    "down": "bold red",
}

# What a state field's value means, whatever the actor: connection, contact, group, member
# and introduction statuses, queue-switch phases, server sessions (up). Unknown values plain.
_GOOD = {"ready", "active", "connected", "secured", "completed", "running", "done", "true"}
_BAD = {"failed", "aborted", "deleted", "removed", "left", "stopped", "none", "false"}
_MOVING = {
    "new",
    "joined",
    "confirmed",
    "creating",
    "inviting",
    "joining",
    "accepting",
    "allowing",
    "invited",
    "accepted",
    "announced",
    "introduced",
    "intro-inv",
    "connecting",
    "intro-sent",
    "inv-received",
    "fwd-sent",
    "retiring",
    "pending",
}


def value_style(key: str, value: Any) -> str:
    """The colour of one state field's value: green settled, yellow on its way, red lost."""
    if key == "paused":
        return "bold red" if value else "dim"
    if value is None or (isinstance(value, list | tuple) and all(v is None for v in value)):
        return "dim"  # nothing, an empty list, or a connection's switch that is (None, None)
    word = str(value).lower()
    if word in _BAD or word.endswith(("_failed", "-failed")):
        return "red"
    if word in _GOOD:
        return "green"
    if word in _MOVING or "switch" in key:  # every switch phase but the ends is a move
        return "yellow"
    return ""


def node_label(node: TreeNode) -> Text:
    """One line per actor: name, kind, status, state fields, mailbox, restarts, last error."""
    label = Text()
    label.append(short(node.name), style="bold")
    label.append(f" {node.kind} ", style="dim")
    label.append(node.status, style=STATUS_STYLES.get(node.status, "red"))
    # The kernel's counters first, so a narrow pane still shows them; then the state.
    if node.status != "passivated":
        label.append(f"  mailbox={node.mailbox}", style="bold magenta" if node.mailbox else "dim")
    if node.restarts:
        label.append(f"  restarts={node.restarts}", style="bold yellow")
    for key, value in node.state.items():
        label.append(f"  {key}=", style="dim")
        label.append(str(value), style=value_style(key, value))
    if node.last_error:
        label.append(f"  last_error={_shorter(_error_of(node), 72)}", style="red")
    return label


def short(address: str) -> str:
    """An address with a server session's fingerprint shortened (fingerprint@host:port)."""
    head, slash, name = address.rpartition("/")
    if "@" not in name:
        return address
    fingerprint, _, where = name.partition("@")
    return f"{head}{slash}{fingerprint[:8]}…@{where}"


def render_tree(node: TreeNode) -> RichTree:
    """The whole tree for a terminal (what `duplex tree` prints)."""
    tree = RichTree(node_label(node))
    for child in node.children:
        tree.add(render_tree(child))
    return tree


def counters_line(snapshot: Snapshot) -> str:
    """The counters the target sent, in its order: a runtime's crashes, activations …, a
    queue server's sessions, subscribed queues …"""
    return " · ".join(
        f"{name.replace('_', ' ')} {value}" for name, value in snapshot.counters.items()
    )


# ---------------------------------------------------------------------- duplex tree


def tree_main(args: argparse.Namespace) -> int:
    """`duplex tree ENDPOINT [--token-file FILE] [--json]`: print one snapshot."""
    try:
        snapshot = fetch_snapshot(args.endpoint, args.token_file)
    except DuplexError as exc:
        print(f"duplex tree: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("duplex tree: interrupted", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(msgspec.json.encode(snapshot).decode() + "\n")
        return 0
    console = Console()
    console.print(render_tree(snapshot.tree))
    console.print(f"[dim]{counters_line(snapshot)}[/]")
    return 0


# ---------------------------------------------------------------------- duplex console


def console_main(args: argparse.Namespace) -> int:
    """`duplex console ENDPOINT [--token-file FILE]`: the live console until `q`."""
    try:
        app = ConsoleApp(args.endpoint, token_file=args.token_file)
    except DuplexError as exc:
        print(f"duplex console: {exc.message}", file=sys.stderr)
        return 1
    app.run()
    return 0


class FromEndpoint(Message):
    """A message or link event from the endpoint, posted from the link's thread."""

    def __init__(self, event: LinkEvent) -> None:
        super().__init__()
        self.event = event


# Paragraphs are single lines: the help screen wraps them to its width. What it says of each
# key, view and colour is the code's: tests/console/test_rendering.py checks that every key
# of ConsoleApp.BINDINGS and every status of STATUS_STYLES is in it.
HELP = "\n".join(
    [
        "[b]duplex console[/b]: what a debug endpoint serves, live — a client's actor runtime (a "
        "Client or ChatClient opened with debug=True, [b]duplex demo --console[/b]) or a queue "
        "server ([b]duplex server --debug[/b]). The title bar names the endpoint and its "
        "counters: a runtime's activations, crashes, passivations, dead letters and live virtual "
        "actors; a server's sessions, subscribed queues, commands, errors and deliveries.",
        "",
        "[b]The views[/b]",
        "  [b]supervision tree[/b] (left): one line per actor (or, on a server, per session): "
        "name, kind, status, mailbox depth, restarts, its state fields and its last error.",
        "  [b]actor[/b] (top right): the selected line, inspected again every second: the "
        "kernel's fields (kind, mailbox, handled, activation, restarts, last error, work item, "
        "I/O pending, idle seconds, parent), then what it says of itself (state, details).",
        "  [b]events[/b] (bottom right): what changed between two snapshots, each command sent "
        "and its answer.",
        "  [b]filter[/b] (bottom, after /): only the lines whose address, kind or status holds "
        "the text, with the supervisors above them.",
        "",
        "[b]A client runtime[/b] (root [b]client[/b])",
        "  [b]io[/b]: the trio thread that runs every actor's network work (trio, tasks, done).",
        "  [b]agent[/b] (servers: how many it was given): takes the API calls; below it "
        "[b]conns[/b], one [b]connection[/b] actor per duplex connection — status (new, joined, "
        "confirmed, ready …), commands pending, outbox (messages waiting to go out), in_flight. "
        "Inspected, a connection shows its mode and error, its pending commands with their "
        "attempts, the events told and not acknowledged, its receive and send queues, the "
        "messages received and not acknowledged, and [b]switch[/b]: where a queue rotation "
        "(switch_connection) stands, as (receive phase, send phase).",
        "  [b]servers[/b]: one [b]server-session[/b] actor per queue server — up, queues (receive "
        "queues it routes to their connections), waiting (connections waiting for the server to "
        "answer again), unsubscribed (subscriptions still to retry), paused.",
        "  [b]chat[/b] (a ChatClient): [b]contacts[/b], [b]addresses[/b], [b]groups[/b] and "
        "[b]relay-groups[/b] hold one actor per contact, contact address, group (its members and "
        "their connections are that group's state, not actors) and, at a chat relay, per group it "
        "serves (its roster and forwarding). They show status, mailbox and restarts; their "
        "connections are the agent's.",
        "  Connections, sessions, contacts, groups … are virtual actors: they sit below a "
        "virtual-supervisor (live, restarting), activate on their first message and passivate "
        "when idle; a passivated one stays listed until it activates again.",
        "",
        "[b]A queue server[/b] (root [b]server[/b], kind queue-server)",
        "  [b]server[/b]: where it listens, its sessions, subscribed queues, the queues and "
        "messages in its store (counted every few seconds), stored bytes; inspected, also its "
        "address, commands answered ERR, deliveries and its limits.",
        "  below it one [b]client-session[/b] per connected client, oldest first: peer, "
        "subscriptions, pending (subscribed queues whose message waits for room), buffered_bytes "
        "(not yet sent), connected_for, auth_failures if any; status live, or closing once the "
        "server closes it.",
        "",
        "[b]Keys[/b] (the commands act on the selected line)",
        "  [b]↑ ↓[/b] move   [b]shift+↑ ↓[/b] previous / next sibling   [b]shift+← →[/b] parent / "
        "its next sibling   [b]space[/b] or [b]enter[/b] fold or unfold   [b]shift+space[/b] fold "
        "or unfold it and its siblings",
        "  [b]tab[/b] / [b]shift+tab[/b] the next / previous view (the actor and events views "
        "then scroll with ↑ ↓ pgup pgdn)",
        "  [b]i[/b] inspect it again now (the actor view)",
        "  [b]c[/b] crash it: an exception in its handler; its supervisor restarts it (restarts=1 "
        "…, the error in last_error)",
        "  [b]r[/b] restart it: a clean stop and a fresh activation, siblings untouched",
        "  [b]p[/b] passivate it (virtual actors; one with work waiting stays)",
        "  [b]d[/b] drop a connection: a client's server-session drops its connection to the "
        "queue server and reconnects; a server's client-session is closed by the server and its "
        "client reconnects by itself",
        "  [b]z[/b] pause a client's server-session (its requests fail at once, it stays down) "
        "or, paused, resume it",
        "  On a queue server c, r, p and z are refused (no actors; a server drops sessions, it "
        "does not pause them), as is d on anything but a session: the events view says why.",
        "  [b]/[/b] filter (the keys then type into it; [b]enter[/b] or [b]escape[/b] back to the "
        "tree)   [b]escape[/b] the tree",
        "  [b]?[/b] this help ([b]escape[/b], [b]?[/b] or [b]q[/b] closes it; ↑ ↓ scroll)   "
        "[b]q[/b] or [b]ctrl+q[/b] quit   [b]ctrl+p[/b] textual's command palette",
        "",
        "[b]Colours[/b]",
        "  status: [green]live[/], [bold yellow]restarting[/], [blue]passivating[/], [dim "
        "cyan]passivated[/], [bold red]down[/], anything else [red]red[/] (a server's "
        "[red]closing[/] session)",
        "  [bold magenta]mailbox=N[/] when messages wait (dim when empty), [bold "
        "yellow]restarts=N[/], [red]last_error[/]",
        "  state values: [green]settled[/] (ready, connected, secured, completed, running, "
        "up=True …), [yellow]on its way[/] (new, joined, confirmed, connecting, intro-sent … and "
        "a queue switch under way), [red]failed or gone[/] (failed, …_failed, aborted, deleted, "
        "left, stopped, none, up=False …), [bold red]paused=True[/]; counts plain, nothing or an "
        "empty list [dim]dim[/]",
        "  events: [green]+[/] a new actor or session, [red]-[/] one gone, [yellow]↻[/] a restart "
        "with its error, a status → the new one in its colour, [green]the answer[/] to a command, "
        "[red]refused[/] or [red]disconnected[/] in red",
    ]
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; height: auto; max-height: 90%; border: thick $accent; background: $panel;
    }
    HelpScreen Static { padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "help"
            box.border_subtitle = "↑ ↓ pgup pgdn scroll · escape closes"
            yield Static(HELP, id="help")

    def on_mount(self) -> None:
        self.query_one("#help-box", VerticalScroll).focus()


class ConsoleApp(App[None]):
    """The live console of one debug endpoint; see the module docstring."""

    TITLE = "duplex console"
    CSS = """
    #main { height: 1fr; }
    #tree { width: 2fr; border: round $primary; }
    #side { width: 1fr; }
    #detail-box { height: 3fr; border: round $secondary; }
    #events { height: 2fr; border: round $secondary; }
    #filter { dock: bottom; margin: 0 0 1 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "crash", "Crash"),
        Binding("r", "restart", "Restart"),
        Binding("p", "passivate", "Passivate"),
        Binding("d", "drop_session", "Drop session"),
        Binding("z", "pause_session", "Pause session"),
        Binding("i", "inspect", "Inspect"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "focus_tree", "Tree", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, url: str, token_file: Any = None, inspect_every: float = 1.0) -> None:
        super().__init__()
        self.link = DebugLink(url, self._deliver, token_file=token_file)
        self.endpoint = redacted(url)
        self.inspect_every = inspect_every
        self.snapshot: Snapshot | None = None
        self.inspection: Inspection | None = None  # of the selected actor, the last one
        self.event_lines: deque[str] = deque(maxlen=500)  # the event log's text
        self.selected: str | None = None
        self.filter_text = ""
        self.shown: dict[str, TreeWidgetNode[str]] = {}
        self._shown_order: list[str] = []
        self._collapsed: set[str] = set()
        self._ids = itertools.count(1)
        self._sent: dict[int, Command] = {}

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            tree: Tree[str] = Tree("connecting…", id="tree")
            tree.show_root = True
            tree.guide_depth = 3
            yield tree
            with Vertical(id="side"):
                with VerticalScroll(id="detail-box"):
                    yield Static("select an actor", id="detail")
                yield RichLog(id="events", markup=True, wrap=True, min_width=20, max_lines=500)
        yield Input(placeholder="/ filter: part of an address, a kind or a status", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        # Held, not queried each time: while the help screen is up, a query would look there.
        self.tree_view: Tree[str] = self.query_one("#tree", Tree)
        self.detail = self.query_one("#detail", Static)
        self.detail_box = self.query_one("#detail-box", VerticalScroll)
        self.log_view = self.query_one("#events", RichLog)
        self.filter_input = self.query_one("#filter", Input)
        self.sub_title = f"{self.endpoint} · connecting"
        self.detail_box.border_title = "actor"
        self.log_view.border_title = "events"
        self.tree_view.border_title = "supervision tree"
        self.tree_view.focus()
        self.link.start()
        self.set_interval(self.inspect_every, self.action_inspect)

    def on_unmount(self) -> None:
        self.link.stop()

    # ------------------------------------------------------------------ the link

    def _deliver(self, event: LinkEvent) -> None:  # on the link's thread
        self.post_message(FromEndpoint(event))

    def on_from_endpoint(self, message: FromEndpoint) -> None:
        event = message.event
        match event:
            case Snapshot():
                self._show(event)
            case Inspection():
                self._sent.pop(event.id, None)
                if event.address == self.selected:
                    self._show_inspection(event)
            case Done():
                self._sent.pop(event.id, None)
                self.log_event(f"[green]{short(event.address)}[/]: {event.detail}")
            case Refused():
                command = self._sent.pop(event.id, None)
                what = type(command).__name__ if command is not None else "message"
                self.log_event(f"[red]refused[/] {what} ({event.code.value}): {event.detail}")
            case LinkUp():
                self.sub_title = f"{self.endpoint} · runtime {event.welcome.runtime}"
                self.log_event(f"connected to runtime [b]{event.welcome.runtime}[/]")
            case LinkDown():
                self._sent.clear()  # no answer comes over a connection that is gone
                self.sub_title = f"{self.endpoint} · disconnected"
                again = "" if event.final else " (trying again)"
                self.log_event(f"[red]disconnected[/]: {event.reason}{again}")
            case _:
                pass

    def log_event(self, text: str) -> None:
        self.log_view.write(text)
        self.event_lines.append(Text.from_markup(text).plain)

    def send(self, command: Command) -> None:
        if self.link.send(command):
            self._sent[command.id] = command
        else:
            self.log_event("[red]not connected[/]: command not sent")

    # ------------------------------------------------------------------ the tree

    def _show(self, snapshot: Snapshot) -> None:
        if self.snapshot is not None:
            for line in changes(self.snapshot.tree, snapshot.tree):
                self.log_event(line)
        self.snapshot = snapshot
        self.sub_title = f"{self.endpoint} · {counters_line(snapshot)}"
        visible = self._visible(snapshot.tree)
        order = [node.address for node in snapshot.tree.walk() if node.address in visible]
        if order == self._shown_order:
            for node in snapshot.tree.walk():
                shown = self.shown.get(node.address)
                if shown is not None:
                    shown.set_label(node_label(node))
        else:
            self._rebuild(snapshot.tree, visible, order)

    def _visible(self, root: TreeNode) -> set[str]:
        """Addresses shown under the filter: the matches, their ancestors (and the root)."""
        needle = self.filter_text.lower()
        visible = {root.address}

        def visit(node: TreeNode) -> bool:
            matched = not needle or any(
                needle in text.lower() for text in (node.address, node.kind, node.status)
            )
            for child in node.children:
                matched = visit(child) or matched
            if matched:
                visible.add(node.address)
            return matched

        visit(root)
        return visible

    def _rebuild(self, root: TreeNode, visible: set[str], order: list[str]) -> None:
        tree = self.tree_view
        tree.reset(node_label(root), root.address)
        self.shown = {root.address: tree.root}

        def add(parent: TreeWidgetNode[str], node: TreeNode) -> None:
            for child in node.children:
                if child.address not in visible:
                    continue
                expand = child.address not in self._collapsed
                if any(c.address in visible for c in child.children):
                    shown = parent.add(node_label(child), child.address, expand=expand)
                    add(shown, child)
                else:
                    shown = parent.add_leaf(node_label(child), child.address)
                self.shown[child.address] = shown

        add(tree.root, root)
        tree.root.expand()
        self._shown_order = order
        if self.selected is None:  # the cursor starts on the root: show what it is
            self.selected = root.address
            self.action_inspect()
        self.call_after_refresh(self._restore_cursor)

    def _restore_cursor(self) -> None:
        node = self.shown.get(self.selected or "")
        if node is not None:
            self.tree_view.move_cursor(node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        address = event.node.data
        if address is not None and address != self.selected:
            self.selected = address
            self.action_inspect()

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[str]) -> None:
        if event.node.data is not None:
            self._collapsed.add(event.node.data)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        self._collapsed.discard(event.node.data or "")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        if self.snapshot is not None:
            self._shown_order = []  # rebuild under the new filter
            self._show(self.snapshot)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_focus_tree()

    # ------------------------------------------------------------------ the detail pane

    def _show_inspection(self, inspection: Inspection) -> None:
        self.inspection = inspection
        self.detail.update(describe(inspection))
        self.detail_box.border_title = short(inspection.address)

    # ------------------------------------------------------------------ actions

    def _target(self) -> str | None:
        if self.selected is None:
            self.log_event("[yellow]select an actor first[/]")
        return self.selected

    def _node(self, address: str) -> TreeNode | None:
        return self.snapshot.tree.find(address) if self.snapshot is not None else None

    def action_inspect(self) -> None:
        # One inspection in flight at a time: on a busy machine the endpoint answers slower
        # than the timer asks, and a backlog of inspections would delay every later command
        # (a crash, a drop) and the inspection of what is selected now by whole seconds.
        waiting = any(isinstance(command, InspectActor) for command in self._sent.values())
        if self.selected is not None and self.link.connected and not waiting:
            self.send(InspectActor(next(self._ids), self.selected))

    def action_crash(self) -> None:
        if (address := self._target()) is not None:
            self.log_event(f"crash [b]{short(address)}[/]")
            self.send(CrashActor(next(self._ids), address))

    def action_restart(self) -> None:
        if (address := self._target()) is not None:
            self.log_event(f"restart [b]{short(address)}[/]")
            self.send(RestartActor(next(self._ids), address))

    def action_passivate(self) -> None:
        if (address := self._target()) is not None:
            self.log_event(f"passivate [b]{short(address)}[/]")
            self.send(PassivateActor(next(self._ids), address))

    def action_drop_session(self) -> None:
        if (address := self._target()) is not None:
            self.log_event(f"drop the session of [b]{short(address)}[/]")
            self.send(DropSession(next(self._ids), address))

    def action_pause_session(self) -> None:
        if (address := self._target()) is None:
            return
        node = self._node(address)
        if node is not None and node.state.get("paused"):
            self.log_event(f"resume the session of [b]{short(address)}[/]")
            self.send(ResumeSession(next(self._ids), address))
        else:
            self.log_event(f"pause the session of [b]{short(address)}[/]")
            self.send(DropSession(next(self._ids), address, pause=True))

    def action_focus_filter(self) -> None:
        self.filter_input.focus()

    def action_focus_tree(self) -> None:
        self.tree_view.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


def describe(inspection: Inspection) -> Group:
    """The detail pane: the actor's own fields, then its state and its extra details."""
    fields = dict(inspection.description)
    state = fields.pop("state", {}) or {}
    details = fields.pop("details", {}) or {}
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    status = Text(inspection.status, style=STATUS_STYLES.get(inspection.status, "red"))
    table.add_row("status", status)
    for key in (
        "kind",
        "mailbox",
        "handled",
        "activation",
        "restarts",
        "last_error",
        "work_item",
        "io_pending",
        "idle_seconds",
        "virtual",
        "parent",
    ):
        if key in fields and fields[key] is not None:
            style = "red" if key == "last_error" else ""
            table.add_row(key, Text(str(fields[key]), style=style))
    parts: list[Any] = [table]
    for title, values in (("state", state), ("details", details)):
        if values:
            section = Table.grid(padding=(0, 1))
            section.add_column(style="dim", no_wrap=True)
            section.add_column()
            for key, value in values.items():
                section.add_row(key, Text(_shorter(str(value), 400), style=value_style(key, value)))
            parts += [Text(f"\n{title}", style="bold"), section]
    return Group(*parts)


def changes(before: TreeNode, after: TreeNode) -> list[str]:
    """What the event log says about the difference between two snapshots."""
    old = {node.address: node for node in before.walk()}
    lines = []
    for node in after.walk():
        previous = old.pop(node.address, None)
        if previous is None:
            lines.append(f"[green]+[/] {short(node.address)} [dim]{node.kind}[/] {node.status}")
            continue
        if node.restarts > previous.restarts:
            error = ""
            if node.last_error:
                error = f": [red]{_shorter(_error_of(node), 100)}[/]"
            lines.append(f"[yellow]↻[/] {short(node.address)} restarted ({node.restarts}){error}")
        if node.status != previous.status:
            style = STATUS_STYLES.get(node.status, "red")
            lines.append(f"  {short(node.address)} {previous.status} → [{style}]{node.status}[/]")
        for key, value in node.state.items():
            was = previous.state.get(key, value)
            if value != was and (key in _WATCHED or "switch" in key):
                style = value_style(key, value)
                shown = f"[{style}]{value}[/]" if style else str(value)
                lines.append(f"  {short(node.address)} {key}: {was} → {shown}")
    lines.extend(f"[red]-[/] {short(address)}" for address in old)
    return lines


# State fields whose changes the event log tells (counters change all the time).
_WATCHED = frozenset({"status", "up", "paused"})


def _error_of(node: TreeNode) -> str:
    """The node's last error without its own address (the line names the actor already)."""
    return (node.last_error or "").replace(f"{node.address}: ", "")


def _shorter(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
