"""Fault injection at the agent's persisted steps, for the crash-recovery tests and benches.

A fault point is a named place in a command's life (`BEFORE_RUN`, `AFTER_EFFECTS`,
`AFTER_EMIT`) for one command kind. Tests arm it in-process (`arm`), which raises
`InjectedCrash` there — an actor crash its supervisor restarts — or through the environment
variable ``DUPLEX_FAULTS=point:kind:kill[,…]`` in a child process, which kills that process
with SIGKILL there. Disarmed, a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

BEFORE_RUN = "before_run"  # the command is about to do its next step
AFTER_EFFECTS = "after_effects"  # its effects and event are committed, not yet emitted
AFTER_EMIT = "after_emit"  # its event was emitted, not yet acknowledged by the chat

_lock = threading.Lock()
_armed: dict[tuple[str, str], int] = {}


class InjectedCrash(Exception):
    """Raised at an armed fault point: a crash on purpose."""


def _from_environment() -> set[tuple[str, str]]:
    kills = set()
    for item in filter(None, os.environ.get("DUPLEX_FAULTS", "").split(",")):
        point, kind, action = item.split(":")
        if action == "kill":
            kills.add((point, kind))
    return kills


_kills = _from_environment()


def arm(point: str, kind: str, times: int = 1) -> None:
    """Raise InjectedCrash the next `times` times `point` is reached for `kind`."""
    with _lock:
        _armed[(point, kind)] = times


def disarm_all() -> None:
    with _lock:
        _armed.clear()


def hit(point: str, kind: str) -> None:
    """Called by the agent at each fault point."""
    if (point, kind) in _kills:
        os.kill(os.getpid(), signal.SIGKILL)
    if not _armed:
        return
    with _lock:
        left = _armed.get((point, kind), 0)
        if not left:
            return
        _armed[(point, kind)] = left - 1
    raise InjectedCrash(f"injected crash at {point} of {kind}")
