"""Helpers for agent scenario tests: clients on real SQLite files, an event log with waits."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from typing import Any

from actors.agent import events as ev
from actors.agent.services import AgentConfig, RetryPolicy
from actors.client import Client
from protocol.client import ClientConfig

FAST = AgentConfig(
    retry=RetryPolicy(initial=0.05, slow_after=0.5, factor=1.5, maximum=0.3),
    quota_retry=0.5,
    sync_timeout=10.0,
    client=ClientConfig(
        command_timeout=2.0, connect_timeout=1.0, backoff_initial=0.02, backoff_max=0.2
    ),
)


class Events:
    """Everything a client emitted, kept; `wait` polls for a matching event."""

    def __init__(self, client: Any, stream: Any = None) -> None:
        self.client = client
        self.stream = stream if stream is not None else client.agent_events
        self.seen: list[Any] = []

    def drain(self) -> None:
        while True:
            try:
                self.seen.append(self.stream.get_nowait())
            except queue.Empty:
                return

    def wait(
        self, predicate: Callable[[Any], bool], timeout: float = 10.0, what: str = "event"
    ) -> Any:
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            self.drain()
            for event in self.seen[start:]:
                if predicate(event):
                    return event
            start = len(self.seen)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout}s; saw {self.seen}")
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.stream.get(timeout=0.05))

    def of(self, kind: type, **fields: Any) -> list[Any]:
        self.drain()
        return [
            e
            for e in self.seen
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        ]

    def wait_for(self, kind: type, timeout: float = 10.0, **fields: Any) -> Any:
        return self.wait(
            lambda e: isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()),
            timeout,
            f"{kind.__name__} {fields}",
        )


def connect(
    a: Client, a_events: Events, b: Client, b_events: Events, tag: str = ""
) -> tuple[str, str]:
    """Invitation handshake with async commands; returns (a_conn, b_conn) once both CON."""
    a_conn = a.create_connection_async(f"create{tag}")
    inv = a_events.wait_for(ev.Inv, corr_id=f"create{tag}")
    b_conn = b.join_connection_async(f"join{tag}", inv.link, b"bob")
    b_events.wait_for(ev.Joined, corr_id=f"join{tag}")
    conf = a_events.wait_for(ev.Conf, conn_id=a_conn)
    a.allow_connection_async(f"allow{tag}", a_conn, conf.conf_id, b"alice")
    a_events.wait_for(ev.Con, conn_id=a_conn)
    b_events.wait_for(ev.Con, conn_id=b_conn)
    return a_conn, b_conn
