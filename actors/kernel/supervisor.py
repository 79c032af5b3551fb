"""Supervisors with OTP semantics on top of pykka, which has none.

A `Supervisor` owns an ordered list of `ChildSpec`s, starts them in that order, and restarts
children that end:

* ordered start: a child starts only once the one before it is *ready* (its `started()`
  returned; a nested supervisor is ready once all its own children are), so a child may
  rely on its elder siblings in its own `started()` (the agent on `io`). The supervisor
  never waits on its thread for that: the child's activation tells it `ChildStarted`, and
  the supervisor starts the next child then. Every child has a directory entry from the
  supervisor's construction on, so messages told to a child still waiting for its turn
  (or to a virtual actor below it) wait for it. The same order holds for restarts: the
  children a strategy restarts start one after the other, and a child to start waits for
  every earlier child still to start (in backoff or starting). A child that crashes while
  starting is a crash like any other (restart, intensity, escalation). The supervisor is
  ready, and tells its own supervisor so, once its first start sequence is complete;
* restart type, per child: ``PERMANENT`` children are restarted whenever they end,
  ``TRANSIENT`` ones only after a crash, ``TEMPORARY`` ones never;
* strategy, per supervisor: ``ONE_FOR_ONE`` restarts the child that ended,
  ``ONE_FOR_ALL`` stops the others (in reverse start order) and restarts them all, and
  ``REST_FOR_ONE`` does that for the children started after the one that ended;
* intensity: more than ``max_restarts`` restarts within ``period`` seconds and the supervisor
  stops its children and crashes itself, so its own supervisor decides (escalation);
* backoff: the first restart in a period is immediate, the next ones wait
  ``backoff_initial * 2**n`` seconds up to ``backoff_max``, so a crash loop cannot spin.

A `VirtualSupervisor` is the ``simple_one_for_one`` kind: its children are virtual actors
activated by the directory on their first message (see directory.py); it restarts the ones
that crash (transient semantics: passivation is a normal end), with the same intensity and
backoff. It is ready as soon as its `started()` returned; its children do not report.
Children are named by address, never by ref, so a restart changes nothing for the actors
that talk to them; messages sent meanwhile wait in the directory's buffer.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.kernel.actor import Actor, ActorContext
from actors.kernel.directory import ActorFactory, EntryState, VirtualKind
from actors.kernel.messages import (
    ChildExited,
    ChildStarted,
    ExitReason,
    RestartChild,
    RestartChildren,
    RestartVirtual,
)

log = logging.getLogger(__name__)


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class SupervisorEscalation(Exception):
    """A supervisor went past its restart intensity and gives up to its own supervisor."""


@dataclass(frozen=True, slots=True)
class Intensity:
    """How many restarts a supervisor tolerates, and how it spaces them."""

    max_restarts: int = 3
    period: float = 5.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0

    def backoff(self, recent_restarts: int) -> float:
        if recent_restarts <= 1:
            return 0.0
        return min(self.backoff_initial * 2 ** (recent_restarts - 2), self.backoff_max)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A child of a supervisor: `factory(ctx)` builds an activation (usually an Actor class)."""

    name: str
    factory: ActorFactory
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"a child name is one non-empty path segment, not {self.name!r}")


def supervisor_spec(
    name: str,
    children: Sequence[ChildSpec],
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: Intensity = Intensity(),
    restart: Restart = Restart.PERMANENT,
) -> ChildSpec:
    """A ChildSpec for a nested supervisor."""
    factory = functools.partial(
        Supervisor, children=tuple(children), strategy=strategy, intensity=intensity
    )
    return ChildSpec(name, factory, restart)


def virtual_supervisor_spec(
    name: str,
    factory: ActorFactory,
    intensity: Intensity = Intensity(max_restarts=20, period=10.0),
    passivate_after: float | None = None,
) -> ChildSpec:
    """A ChildSpec for the supervisor of a virtual kind at `<parent>/<name>/<key>`."""
    sup = functools.partial(
        VirtualSupervisor,
        child_factory=factory,
        intensity=intensity,
        passivate_after=passivate_after,
    )
    return ChildSpec(name, sup)


class _RestartTracker:
    """Restart timestamps within the intensity period."""

    def __init__(self, intensity: Intensity) -> None:
        self.intensity = intensity
        self._times: deque[float] = deque()

    def record(self) -> int:
        """Count a restart now; returns the restarts within the period, this one included."""
        self.recent()
        self._times.append(time.monotonic())
        return len(self._times)

    def recent(self) -> int:
        now = time.monotonic()
        while self._times and now - self._times[0] > self.intensity.period:
            self._times.popleft()
        return len(self._times)

    def exceeded(self, count: int) -> bool:
        return count > self.intensity.max_restarts


class Supervisor(Actor):
    """Supervises an ordered list of children; see the module docstring."""

    kind = "supervisor"
    _kernel_types = Actor._kernel_types | {ChildExited, RestartChildren, RestartChild}

    def __init__(
        self,
        ctx: ActorContext,
        children: Sequence[ChildSpec],
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity = Intensity(),
    ) -> None:
        super().__init__(ctx)
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names under {ctx.address}: {names}")
        self.specs = tuple(children)
        self.strategy = strategy
        self.intensity = intensity
        self.child_addresses = tuple(f"{self.address}/{spec.name}" for spec in self.specs)
        self._by_address = dict(zip(self.child_addresses, self.specs, strict=True))
        self._order = {address: i for i, address in enumerate(self.child_addresses)}
        self._restarts = _RestartTracker(intensity)
        self._removed: set[str] = set()
        # The start sequence: children waiting for their turn; of those, the ones a restart
        # backoff holds back (with the epoch of the timer that releases them); and the one
        # started and not ready yet (with its activation's urn, None if unknown).
        self._to_start: set[str] = set()
        self._held: dict[str, int] = {}
        self._epoch = 0
        self._starting: str | None = None
        self._starting_urn: str | None = None
        # Reserved here, in the parent's thread, not in started(): the parent may tell our
        # children right after starting us, before our thread runs.
        for address, spec in self._by_address.items():
            ctx.runtime.directory.reserve(address, self.address, spec.factory)

    @property
    def running_children(self) -> list[str]:
        """Child addresses the supervisor still keeps (removed temporary/transient ones not)."""
        return [a for a in self.child_addresses if a not in self._removed]

    @property
    def starting(self) -> bool:
        """Whether some children still wait for their turn to start (or to be ready)."""
        return self._starting is not None or bool(self._to_start)

    def started(self) -> None:
        self._to_start.update(self.running_children)
        self._advance()

    def stopped(self) -> None:
        self._stop_children(self.child_addresses)

    def summary(self) -> dict[str, Any]:
        return {"strategy": self.strategy.value, "children": len(self.specs)}

    # ------------------------------------------------------------------ internals

    def _kernel_message(self, message: Any) -> Any:
        kind = type(message)
        if kind is ChildStarted:
            self._child_started(message)
        elif kind is ChildExited:
            self._child_exited(message)
        elif kind is RestartChildren:
            for name in message.names:
                address = f"{self.address}/{name}"
                if self._held.get(address) == message.epoch:
                    del self._held[address]
            self._advance()
        elif kind is RestartChild:
            self._restart_on_request(message.address)
        else:
            return super()._kernel_message(message)
        return None

    def _restart_on_request(self, address: str) -> None:
        """An operator's restart of one child: a clean stop and a fresh activation, no
        strategy applied (nothing crashed) and no restart intensity spent."""
        spec = self._by_address.get(address)
        if spec is None or address in self._removed:
            return
        if address in self._to_start or address == self._starting:
            return  # (re)starting already: that activation is the fresh one
        log.info("restarting child on request", extra={"address": address})
        self.runtime.directory.start(address, self.address, spec.factory)

    def _after_started(self) -> None:
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if self.is_started and not self.starting:
            self._announce_ready()

    def _advance(self) -> None:
        """Start the next child if none is starting and the next one is not held back."""
        directory = self.runtime.directory
        while self._starting is None and self._to_start:
            address = min(self._to_start, key=self._order.__getitem__)
            if address in self._held:
                break
            self._to_start.discard(address)
            actor = directory.start(address, self.address, self._by_address[address].factory)
            self._starting = address
            self._starting_urn = actor.actor_urn if actor is not None else None
        self._maybe_ready()

    def _child_started(self, notice: ChildStarted) -> None:
        if notice.address != self._starting:
            return  # an activation stopped or replaced since
        if self._starting_urn is not None and notice.urn != self._starting_urn:
            return
        self._starting = self._starting_urn = None
        self._advance()

    def _child_exited(self, notice: ChildExited) -> None:
        spec = self._by_address.get(notice.address)
        if spec is None or notice.address in self._removed or self._is_stale(notice):
            return
        if notice.address == self._starting:
            self._starting = self._starting_urn = None
        if notice.reason is ExitReason.NORMAL and spec.restart is not Restart.PERMANENT:
            self._remove(notice.address, "ended normally")
            self._advance()
            return
        if notice.reason is ExitReason.CRASH and spec.restart is Restart.TEMPORARY:
            self._remove(notice.address, "temporary child crashed")
            self._advance()
            return
        log.info(
            "restarting child",
            extra={
                "address": notice.address,
                "reason": notice.reason.value,
                "error": notice.error,
                "strategy": self.strategy.value,
            },
        )
        count = self._restarts.record()
        if self._restarts.exceeded(count):
            self._escalate(notice)
        affected = self._affected(notice.address)
        self._stop_children([a for a in affected if a != notice.address])
        if self._starting in affected:
            self._starting = self._starting_urn = None
        self._to_start.update(affected)
        delay = self.intensity.backoff(count)
        if delay:
            self._epoch += 1
            self._held.update(dict.fromkeys(affected, self._epoch))
            names = tuple(self._by_address[a].name for a in affected)
            self.send_after(delay, RestartChildren(names, self._epoch))
        self._advance()

    def _is_stale(self, notice: ChildExited) -> bool:
        if notice.address in self._to_start:
            return True  # already waiting to start again: this end was dealt with
        view = self.runtime.directory.view(notice.address)
        if view is None:
            return True
        return view.urn is not None and view.urn != notice.urn

    def _affected(self, address: str) -> list[str]:
        live = self.running_children
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [address]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return live
        return live[live.index(address) :]

    def _stop_children(self, addresses: Sequence[str]) -> None:
        for address in reversed(addresses):
            spec = self._by_address[address]
            self.runtime.directory.stop(address, spec.shutdown_timeout)

    def _remove(self, address: str, reason: str) -> None:
        self._removed.add(address)
        self._to_start.discard(address)
        self._held.pop(address, None)
        self.runtime.directory.discard(address, reason)

    def _escalate(self, notice: ChildExited) -> None:
        log.error(
            "restart intensity exceeded, escalating",
            extra={"address": self.address, "child": notice.address, "error": notice.error},
        )
        self._stop_children(self.child_addresses)
        raise SupervisorEscalation(
            f"{self.address}: more than {self.intensity.max_restarts} restarts in "
            f"{self.intensity.period}s (last: {notice.address}: {notice.error})"
        )


class VirtualSupervisor(Actor):
    """Supervises a virtual kind: children `<address>/<key>` live and die on demand."""

    kind = "virtual-supervisor"
    _kernel_types = Actor._kernel_types | {ChildExited, RestartVirtual}

    def __init__(
        self,
        ctx: ActorContext,
        child_factory: ActorFactory,
        intensity: Intensity = Intensity(max_restarts=20, period=10.0),
        passivate_after: float | None = None,
    ) -> None:
        super().__init__(ctx)
        self.child_factory = child_factory
        self.intensity = intensity
        default = ctx.runtime.config.passivate_after
        self.passivate_after = passivate_after if passivate_after is not None else default
        self._restarts = _RestartTracker(intensity)
        self._recent: dict[str, _RestartTracker] = {}
        # Registered here, in the parent's thread, not in started(): the parent may tell
        # its virtual children right after starting this supervisor, before its thread runs.
        ctx.runtime.directory.register_kind(
            VirtualKind(self.address, self.child_factory, self.passivate_after)
        )

    def started(self) -> None:
        # Children that a previous activation left crashed, waiting for its restart timer:
        # timers die with their activation, so without this they would wait (and buffer
        # every message told to them) forever.
        directory = self.runtime.directory
        for view in directory.virtual_children(self.address):
            if view.actor is None and view.state is EntryState.PENDING:
                directory.restart(view.address)

    def stopped(self) -> None:
        self.runtime.directory.stop_children_of(self.address)

    def summary(self) -> dict[str, Any]:
        children = self.runtime.directory.virtual_children(self.address)
        return {
            "live": sum(1 for c in children if c.state is EntryState.ACTIVE),
            "restarting": sum(1 for c in children if c.state is EntryState.PENDING),
        }

    def _kernel_message(self, message: Any) -> Any:
        if type(message) is ChildExited:
            if message.reason is ExitReason.CRASH:
                self._child_crashed(message)
            # else: a virtual actor that stops cleanly is passivated, not dead
        elif type(message) is RestartVirtual:
            self.runtime.directory.restart(message.address)
        else:
            return super()._kernel_message(message)
        return None

    def _child_crashed(self, notice: ChildExited) -> None:
        view = self.runtime.directory.view(notice.address)
        if view is None or (view.urn is not None and view.urn != notice.urn):
            return
        count = self._restarts.record()
        if self._restarts.exceeded(count):
            log.error("restart intensity exceeded, escalating", extra={"address": self.address})
            self.runtime.directory.stop_children_of(self.address)
            raise SupervisorEscalation(
                f"{self.address}: more than {self.intensity.max_restarts} restarts of its "
                f"virtual children in {self.intensity.period}s (last: {notice.address})"
            )
        if len(self._recent) > 1024:  # forget children whose crashes are out of the period
            self._recent = {a: t for a, t in self._recent.items() if t.recent()}
        per_child = self._recent.setdefault(notice.address, _RestartTracker(self.intensity))
        delay = self.intensity.backoff(per_child.record())
        if delay:
            self.send_after(delay, RestartVirtual(notice.address))
        else:
            self.runtime.directory.restart(notice.address)
