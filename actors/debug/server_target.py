"""`QueueServerTarget`: a queue server as a debug endpoint shows and drives it.

A queue server is no actor runtime, but the console reads it the same way: a tree whose
root (`server`, kind `queue-server`) carries the server's figures as state fields
(sessions, subscribed queues, queues and messages in the store, stored bytes) and whose
children (`server/<session key>`, kind `client-session`) are its live client sessions,
each with its peer address, subscriptions, pending deliveries and unsent bytes.

Commands: inspect the server or a session (its details), and drop a session (its
connection is closed; a client reconnects by itself). Crash, restart, passivate, pause and
resume are actor drills: refused `NOT_APPLICABLE`.

Everything is read through the server's operator API (`QueueServer.debug_snapshot`,
`drop_session`), which builds frozen views on the server's trio thread: nothing here
touches the server's mutable state. The store's full counts are a query, so they are
refreshed at most every `store_counts_every` seconds, however many consoles watch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from actors.debug.target import Reply, TargetView
from actors.debug.wire import (
    Command,
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
)
from actors.kernel import TreeNode
from protocol.errors import DuplexError
from protocol.server import QueueServer, ServerView, SessionView

log = logging.getLogger(__name__)

ROOT = "server"
SERVER_KIND = "queue-server"
SESSION_KIND = "client-session"

_NO_ACTORS = "a queue server has no actors to {what}: its sessions can be inspected or dropped (d)"


class QueueServerTarget:
    """A `DebugTarget` over one running `QueueServer`; see the module docstring."""

    name = SERVER_KIND

    def __init__(self, server: QueueServer, *, store_counts_every: float = 2.0) -> None:
        self.server = server
        self.store_counts_every = store_counts_every
        self._counts_lock = threading.Lock()
        self._counted_at = -float("inf")  # time.monotonic() of the last store count
        self._counts: tuple[int | None, int | None] = (None, None)  # queues, messages

    # ------------------------------------------------------------------ the tree

    def snapshot(self) -> TargetView:
        view = self._view()
        return TargetView(
            server_tree(view),
            {
                "sessions": len(view.sessions),
                "subscribed_queues": view.subscribed_queues,
                "commands": view.commands,
                "errors": view.errors,
                "delivered": view.delivered,
            },
        )

    def _view(self) -> ServerView:
        """The server's view, with the store's counts of at most `store_counts_every` ago."""
        with self._counts_lock:
            due = time.monotonic() - self._counted_at >= self.store_counts_every
            if due:
                self._counted_at = time.monotonic()  # one counter at a time, not each console
        view = self.server.debug_snapshot(count_store=due)
        with self._counts_lock:
            if due:
                self._counts = (view.queues, view.messages)
            queues, messages = self._counts
        return dataclasses.replace(view, queues=queues, messages=messages)

    # ------------------------------------------------------------------ commands

    def execute(self, command: Command) -> Reply:
        """Run one command against the server; every outcome is a typed reply."""
        try:
            match command:
                case InspectActor(id=i, address=address):
                    return self._inspect(i, address)
                case DropSession(id=i, address=address, pause=False):
                    return self._drop(i, address)
                case DropSession(pause=True) | ResumeSession():
                    detail = "a queue server cannot pause a client's session, only drop it (d)"
                    return Refused(command.id, RefusalCode.NOT_APPLICABLE, detail)
                case CrashActor() | RestartActor() | PassivateActor():
                    what = {CrashActor: "crash", RestartActor: "restart"}.get(
                        type(command), "passivate"
                    )
                    detail = _NO_ACTORS.format(what=what)
                    return Refused(command.id, RefusalCode.NOT_APPLICABLE, detail)
        except DuplexError as exc:  # the server stopped, or its store did not answer
            return Refused(command.id, RefusalCode.FAILED, exc.message)
        raise AssertionError(f"unhandled command {command!r}")  # the union is matched whole

    def _inspect(self, command_id: int, address: str) -> Reply:
        view = self._view()
        if address == ROOT:
            node = server_tree(view)
            details = {
                "address": view.address,
                "errors": view.errors,
                "delivered": view.delivered,
                **dataclasses.asdict(self.server.config.limits()),
            }
            return Inspection(command_id, address, node.status, _described(node, details))
        session = _session_at(view, address)
        if session is None:
            return Refused(command_id, RefusalCode.NO_ACTOR, f"no live session at {address}")
        node = session_node(session, view.taken_at)
        details = {
            **dataclasses.asdict(session),
            "connected_for": round(view.taken_at - session.connected_at, 1),
        }
        return Inspection(command_id, address, node.status, _described(node, details))

    def _drop(self, command_id: int, address: str) -> Reply:
        if address == ROOT:
            detail = "the server itself is no session: Ctrl-C on `duplex server` stops it"
            return Refused(command_id, RefusalCode.NOT_APPLICABLE, detail)
        key = _session_key(address)
        if key is None or not self.server.drop_session(key):
            return Refused(command_id, RefusalCode.NO_ACTOR, f"no live session at {address}")
        return Done(command_id, address, "connection closed: the client reconnects by itself")


# ---------------------------------------------------------------------- views as trees


def server_tree(view: ServerView) -> TreeNode:
    """The server as the root, its sessions (oldest first) as children."""
    state: dict[str, Any] = {
        "listening": view.address.rpartition("@")[2],
        "sessions": len(view.sessions),
        "subscribed": view.subscribed_queues,
        "queues": view.queues,
        "messages": view.messages,
        "stored_bytes": view.stored_bytes,
    }
    sessions = sorted(view.sessions, key=lambda s: s.connected_at)
    return TreeNode(
        address=ROOT,
        kind=SERVER_KIND,
        status="live",
        state=state,
        handled=view.commands,
        children=[session_node(session, view.taken_at) for session in sessions],
    )


def session_node(session: SessionView, now: float) -> TreeNode:
    state: dict[str, Any] = {
        "peer": session.peer,
        "subscriptions": session.subscriptions,
        "pending": session.pending,
        "buffered_bytes": session.buffered_bytes,
        "connected_for": f"{max(0.0, now - session.connected_at):.0f}s",
    }
    if session.auth_failures:
        state["auth_failures"] = session.auth_failures
    return TreeNode(
        address=f"{ROOT}/{session.key}",
        kind=SESSION_KIND,
        status="closing" if session.closing else "live",
        state=state,
    )


def _described(node: TreeNode, details: dict[str, Any]) -> dict[str, Any]:
    """An inspection's description: the node's own fields, then `details`."""
    seen = node.as_dict()
    del seen["children"]
    return {**seen, "details": details}


def _session_key(address: str) -> str | None:
    parent, _, key = address.rpartition("/")
    return key if parent == ROOT and key else None


def _session_at(view: ServerView, address: str) -> SessionView | None:
    key = _session_key(address)
    return next((s for s in view.sessions if s.key == key), None)
