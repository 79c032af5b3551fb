"""`DebugTarget`: what a debug endpoint serves — a tree to show and commands to run.

The endpoint (endpoint.py) owns the websocket, the token and the snapshot stream; a target
owns what is shown and what a command does. Two exist: `RuntimeTarget`
(runtime_target.py), an actor runtime's supervision tree and its operator commands, and
`QueueServerTarget` (server_target.py), a queue server as a root with its client sessions
as children. The console sees the same wire either way (wire.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from actors.debug.wire import Command, Done, Inspection, Refused
from actors.kernel import TreeNode


@dataclass(frozen=True, slots=True)
class TargetView:
    """One look at a target: its tree and its counters (what a `Snapshot` carries)."""

    tree: TreeNode
    counters: dict[str, int]


# What a command is answered with; the endpoint adds Welcome and Snapshot itself.
Reply = Done | Inspection | Refused


class DebugTarget(Protocol):
    """What a `DebugEndpoint` serves. `snapshot` and `execute` are called on the endpoint's
    worker threads, several at once (one snapshot stream per console, a few commands per
    console): a target reads its subject's state safely from any thread, and answers every
    command, whatever happens, with a typed reply (a failure is a `Refused`)."""

    @property
    def name(self) -> str:
        """What the endpoint's `Welcome` names (a runtime's name, `queue-server`)."""
        ...

    def snapshot(self) -> TargetView: ...

    def execute(self, command: Command) -> Reply: ...
