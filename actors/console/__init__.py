"""`duplex tree` and `duplex console`: a running runtime's supervision tree, read through its
debug endpoint (actors/debug), printed once with rich or watched live in a textual app.

`tree_main` prints one snapshot (a rich tree, or its JSON with `--json`) for scripts.
`ConsoleApp` shows the live tree (supervisors, actors, live / restarting / passivated,
mailbox depth, restarts, state fields coloured by what they mean), a detail pane with what
the selected actor says of itself, an event log (what changed between snapshots, and the
answers to commands), a filter, and keys for the endpoint's commands: crash, restart,
passivate, drop or pause a queue-server session. Both only talk to the endpoint: nothing
here touches a runtime directly.

The package: `render` draws with rich (the tree's lines, colours, the detail pane, the event
log's lines: pure functions, what `duplex tree` prints too), `app` is the textual app, `help`
its help screen; this module holds the two commands and what the others offer.
"""

from __future__ import annotations

import argparse
import sys

import msgspec
from rich.console import Console

from actors.console.app import ConsoleApp
from actors.console.help import HELP, HelpScreen
from actors.console.render import (
    STATUS_STYLES,
    changes,
    counters_line,
    describe,
    node_label,
    render_tree,
    value_style,
)
from actors.debug.link import fetch_snapshot
from protocol.errors import DuplexError

__all__ = [
    "HELP",
    "STATUS_STYLES",
    "ConsoleApp",
    "HelpScreen",
    "changes",
    "console_main",
    "describe",
    "node_label",
    "render_tree",
    "tree_main",
    "value_style",
]


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


def console_main(args: argparse.Namespace) -> int:
    """`duplex console ENDPOINT [--token-file FILE]`: the live console until `q`."""
    try:
        app = ConsoleApp(args.endpoint, token_file=args.token_file)
    except DuplexError as exc:
        print(f"duplex console: {exc.message}", file=sys.stderr)
        return 1
    app.run()
    return 0
