"""Test actors for the kernel tests: they record what every activation saw into a Probe
that outlives activations (the stand-in for what a real actor would persist)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from actors.kernel import Actor, ActorContext, DeadLetter, IoActor, IoResult

GATE_DEADLINE = 20.0  # a gate nobody opens fails the test instead of hanging it


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
        # started() of these addresses waits for the event (the test opens it)
        self.start_gates: dict[str, threading.Event] = {}
        # addresses whose readiness every started() records (ordered start)
        self.watch: list[str] = []
        # coroutine functions started() submits (I/O from started(), e.g. at boot)
        self.submit_on_start: dict[str, Any] = {}

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

    def order(self) -> list[tuple[str, int]]:
        """(address, activation) of every started() call, in the order they began."""
        return [(e[1], e[2]) for e in self.of("start")]

    def ready_seen_by(self, address: str) -> list[tuple[str, ...]]:
        """For each activation of `address`: the watched addresses ready when it started."""
        return [e[2] for e in self.of("saw", address)]


def is_ready(runtime: Any, address: str) -> bool:
    view = runtime.directory.view(address)
    return view is not None and view.actor is not None and view.actor.is_ready


def gated(event: threading.Event, value: Any = 42) -> Any:
    """A coroutine function that returns `value` once `event` is set (polled in trio)."""

    async def wait_for_gate() -> Any:
        import trio

        deadline = trio.current_time() + GATE_DEADLINE
        while not event.is_set():
            if trio.current_time() > deadline:
                raise TimeoutError("the test never opened the gate")
            await trio.sleep(0.002)
        return value

    return wait_for_gate


class Worker(Actor):
    kind = "worker"

    def __init__(self, ctx: ActorContext, probe: Probe) -> None:
        super().__init__(ctx)
        self.probe = probe

    def started(self) -> None:
        self.probe.add("start", self.address, self.ctx.activation)
        seen = tuple(a for a in self.probe.watch if is_ready(self.runtime, a))
        self.probe.add("saw", self.address, seen)
        gate = self.probe.start_gates.get(self.address)
        if gate is not None and not gate.wait(GATE_DEADLINE):
            raise TimeoutError("the test never opened the start gate")
        coroutine_fn = self.probe.submit_on_start.get(self.address)
        if coroutine_fn is not None:
            self.probe.add("submitted", self.address, self.submit_io(coroutine_fn))
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
            case ("io-cb", coroutine_fn):
                return self.submit_io(coroutine_fn, on_result=self._on_result)
            case ("stop-then-block", event):
                self.stop()  # pykka queues its stop request behind what is in the mailbox
                self.probe.add("blocked", self.address)
                if not event.wait(GATE_DEADLINE):
                    raise TimeoutError("the test never opened the gate")
            case ("block", event):
                self.probe.add("blocked", self.address)
                if not event.wait(GATE_DEADLINE):
                    raise TimeoutError("the test never opened the gate")
            case ("block-then-crash", event):
                self.probe.add("blocked", self.address)
                event.wait(GATE_DEADLINE)
                raise RuntimeError("crash after the block, on purpose")
            case ("after", delay, inner):
                return self.send_after(delay, inner)
            case _:
                return super().receive(message)
        return None

    def _on_result(self, result: IoResult) -> None:
        self.probe.add("cb", self.address, result)

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


class IoControl:
    """Failure injection for `GatedIo`: crash its next starts, hold later activations."""

    def __init__(self) -> None:
        self.crash_on_start = 0
        self.hold_from_activation: int | None = None
        self.gate = threading.Event()


class GatedIo(IoActor):
    """The runtime's `io` child with failures on demand: `Crash` crashes it; its started()
    crashes `control.crash_on_start` times, and activations from
    `control.hold_from_activation` on wait for `control.gate` before starting trio."""

    def __init__(self, ctx: ActorContext, control: IoControl) -> None:
        super().__init__(ctx)
        self.control = control

    def started(self) -> None:
        control = self.control
        if control.crash_on_start:
            control.crash_on_start -= 1
            raise RuntimeError("io crashed in started() on purpose")
        hold = control.hold_from_activation
        held = hold is not None and self.ctx.activation >= hold
        if held and not control.gate.wait(GATE_DEADLINE):
            raise TimeoutError("the test never opened the io gate")
        super().started()

    def receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(message.reason)
        return super().receive(message)
