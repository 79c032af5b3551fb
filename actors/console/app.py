"""`ConsoleApp`: the live console of one debug endpoint, a textual app — the supervision
tree (kept in step with each snapshot, under a filter), the detail pane of the selected actor
(inspected again every second), the event log, and the keys that send the endpoint's
commands. It reaches the endpoint only through its `DebugLink`."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Input, RichLog, Static, Tree
from textual.widgets.tree import TreeNode as TreeWidgetNode

from actors.console.help import HelpScreen
from actors.console.render import changes, counters_line, describe, node_label, short
from actors.debug.link import DebugLink, LinkDown, LinkEvent, LinkUp, redacted
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


class FromEndpoint(Message):
    """A message or link event from the endpoint, posted from the link's thread."""

    def __init__(self, event: LinkEvent) -> None:
        super().__init__()
        self.event = event


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

    def _command(self, verb: str, command: Callable[[int, str], Command]) -> None:
        """Send `command` (made of an id and the selected address), logged as `verb` it."""
        if (address := self._target()) is not None:
            self.log_event(f"{verb} [b]{short(address)}[/]")
            self.send(command(next(self._ids), address))

    def action_crash(self) -> None:
        self._command("crash", CrashActor)

    def action_restart(self) -> None:
        self._command("restart", RestartActor)

    def action_passivate(self) -> None:
        self._command("passivate", PassivateActor)

    def action_drop_session(self) -> None:
        self._command("drop the session of", DropSession)

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
