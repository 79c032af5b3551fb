"""Snapshots of the supervision tree and their rendering (rich) for the CLI and the demo.

A `TreeNode` is plain data, safe to hand to another thread, to serialise for the debug
endpoint, or to compare in tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.tree import Tree


@dataclass(slots=True)
class TreeNode:
    address: str
    kind: str
    status: str
    state: dict[str, Any] = field(default_factory=dict)
    mailbox: int = 0
    handled: int = 0
    activation: int = 0
    restarts: int = 0
    last_error: str | None = None
    work_item: str | None = None
    children: list[TreeNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.address.rsplit("/", 1)[-1]

    def walk(self) -> Iterator[TreeNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, address: str) -> TreeNode | None:
        return next((node for node in self.walk() if node.address == address), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The tree as plain text, one line per actor, indented under its supervisor: what
        `print(node)` shows (the dataclass repr is one unreadable line)."""
        lines = [self._plain_label()]
        for index, child in enumerate(self.children):
            last = index == len(self.children) - 1
            head, rest = ("└── ", "    ") if last else ("├── ", "│   ")
            first, *more = child.text().splitlines()
            lines.append(head + first)
            lines.extend(rest + line for line in more)
        return "\n".join(lines)

    __str__ = text

    def _plain_label(self) -> str:
        parts = [f"{self.name} {self.kind} {self.status}"]
        parts.extend(f"{key}={value}" for key, value in self.state.items())
        parts.append(f"handled={self.handled} mailbox={self.mailbox}")
        if self.restarts:
            parts.append(f"restarts={self.restarts}")
        if self.last_error:
            parts.append(f"last_error={self.last_error}")
        return "  ".join(parts)

    def render(self) -> Tree:
        """A rich Tree: one line per actor with its status and counters."""
        tree = Tree(self._label())
        for child in self.children:
            tree.add(child.render())
        return tree

    def _label(self) -> str:
        colour = {"live": "green", "restarting": "yellow", "passivating": "blue"}.get(
            self.status, "red"
        )
        parts = [f"[bold]{self.name}[/] [dim]{self.kind}[/] [{colour}]{self.status}[/]"]
        if self.state:
            parts.append(" ".join(f"{k}={v}" for k, v in self.state.items()))
        parts.append(f"[dim]handled={self.handled} mailbox={self.mailbox}[/]")
        if self.restarts:
            parts.append(f"[yellow]restarts={self.restarts}[/]")
        if self.last_error:
            parts.append(f"[red]last_error={self.last_error}[/]")
        return "  ".join(parts)
