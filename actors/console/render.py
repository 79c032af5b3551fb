"""How the console draws what an endpoint sends, with rich: one line per actor (`node_label`,
`render_tree`, what `duplex tree` prints), the colours of statuses and state values, the
detail pane of an inspected actor (`describe`) and the event log's lines for what changed
between two snapshots (`changes`). Pure functions of the wire's values: no terminal, no app.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree as RichTree

from actors.debug.wire import Inspection, Snapshot
from actors.kernel import TreeNode

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
