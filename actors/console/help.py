"""The console's help screen: what every view, key and colour means (`HELP`), in a modal
screen (`HelpScreen`)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

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
