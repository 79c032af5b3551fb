"""Test actors for the kernel tests: they record what every activation saw into a Probe
that outlives activations (the stand-in for what a real actor would persist)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from actors.kernel import Actor, ActorContext, DeadLetter, IoResult


@dataclass(frozen=True)
class Record:
    value: Any


@dataclass(frozen=True)
class Crash:
    reason: str = "on purpose"


@dataclass(frozen=True)
class StopNormally:
    pass


@dataclass(frozen=True)
class Exit:
    """Raise SystemExit inside a handler: must crash only this actor."""


class Probe:
    """A thread-safe event log shared by all activations of the test actors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[Any, ...]] = []
        self.crash_on_start: dict[str, int] = {}
        self.work: dict[str, list[str]] = {}

    def add(self, *event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str, address: str | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e for e in self.events if e[0] == kind and (address is None or e[1] == address)]

    def values(self, address: str) -> list[Any]:
        return [e[2] for e in self.of("msg", address)]

    def starts(self, address: str) -> int:
        return len(self.of("start", address))


class Worker(Actor):
    kind = "worker"

    def __init__(self, ctx: ActorContext, probe: Probe) -> None:
        super().__init__(ctx)
        self.probe = probe

    def started(self) -> None:
        self.probe.add("start", self.address, self.ctx.activation)
        left = self.probe.crash_on_start.get(self.address, 0)
        if left:
            self.probe.crash_on_start[self.address] = left - 1
            raise RuntimeError("crash in started() on purpose")

    def receive(self, message: Any) -> Any:
        match message:
            case Record(value=value):
                self.probe.add("msg", self.address, value)
                return value
            case Crash(reason=reason):
                raise RuntimeError(reason)
            case Exit():
                raise SystemExit(3)
            case StopNormally():
                self.stop()
            case IoResult():
                self.probe.add("io", self.address, message)
            case ("io", coroutine_fn):
                return self.submit_io(coroutine_fn)
            case ("after", delay, inner):
                return self.send_after(delay, inner)
            case _:
                return super().receive(message)
        return None

    def stopped(self) -> None:
        self.probe.add("stop", self.address)

    def summary(self) -> dict[str, Any]:
        return {"seen": len(self.probe.values(self.address))}


class WorkQueue(Actor):
    """Processes the items in probe.work[address] one by one; 'poison' always crashes it."""

    kind = "work-queue"

    def __init__(self, ctx: ActorContext, probe: Probe) -> None:
        super().__init__(ctx)
        self.probe = probe

    def started(self) -> None:
        if self.probe.work.get(self.address):
            self.tell_self("next")

    def receive(self, message: Any) -> Any:
        if message != "next":
            return super().receive(message)
        pending = self.probe.work[self.address]
        if not pending:
            return None
        item = pending[0]
        self.run_work_item(item, lambda: self._do(item))
        pending.pop(0)  # done or dead-lettered: either way it leaves the queue
        self.tell_self("next")
        return None

    def _do(self, item: str) -> None:
        self.probe.add("attempt", self.address, item)
        if item == "poison":
            raise RuntimeError("poison work item")
        self.probe.add("done", self.address, item)

    def on_dead_letter(self, letter: DeadLetter) -> None:
        self.probe.add("dead", self.address, letter.item, letter.attempts)
