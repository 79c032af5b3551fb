"""Supervisors with OTP semantics on top of pykka, which has none.

A `Supervisor` owns an ordered list of `ChildSpec`s and restarts children that end:

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
backoff. Children are named by address, never by ref, so a restart changes nothing for the
actors that talk to them; messages sent meanwhile wait in the directory's buffer.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.kernel.actor import Actor, ActorContext
from actors.kernel.directory import ActorFactory, EntryState, VirtualKind
from actors.kernel.messages import ChildExited, ExitReason, RestartChildren, RestartVirtual

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


@dataclass(slots=True)
class _Down:
    """Children waiting for a restart timer, with the epoch that timer carries."""

    names: set[str] = field(default_factory=set)
    epoch: int = 0


class Supervisor(Actor):
    """Supervises an ordered list of children; see the module docstring."""

    kind = "supervisor"

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
        self._restarts = _RestartTracker(intensity)
        self._removed: set[str] = set()
        self._down = _Down()

    @property
    def running_children(self) -> list[str]:
        """Child addresses the supervisor still keeps (removed temporary/transient ones not)."""
        return [a for a in self.child_addresses if a not in self._removed]

    def started(self) -> None:
        for address, spec in self._by_address.items():
            self.runtime.directory.start(address, self.address, spec.factory)

    def stopped(self) -> None:
        self._stop_children(self.child_addresses)

    def summary(self) -> dict[str, Any]:
        return {"strategy": self.strategy.value, "children": len(self.specs)}

    def receive(self, message: Any) -> Any:
        match message:
            case ChildExited():
                self._child_exited(message)
            case RestartChildren(names=names, epoch=epoch) if epoch == self._down.epoch:
                self._start_children(names)
            case RestartChildren():
                pass  # a newer strategy application superseded this timer
            case _:
                return super().receive(message)
        return None

    # ------------------------------------------------------------------ internals

    def _child_exited(self, notice: ChildExited) -> None:
        spec = self._by_address.get(notice.address)
        if spec is None or notice.address in self._removed or self._is_stale(notice):
            return
        if notice.reason is ExitReason.NORMAL and spec.restart is not Restart.PERMANENT:
            self._remove(notice.address, "ended normally")
            return
        if notice.reason is ExitReason.CRASH and spec.restart is Restart.TEMPORARY:
            self._remove(notice.address, "temporary child crashed")
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
        names = tuple(self._by_address[a].name for a in affected)
        self._down.epoch += 1
        self._down.names.update(names)
        delay = self.intensity.backoff(count)
        if delay:
            self.send_after(delay, RestartChildren(names, self._down.epoch))
        else:
            self._start_children(names)

    def _is_stale(self, notice: ChildExited) -> bool:
        view = self.runtime.directory.view(notice.address)
        if view is None:
            return True
        return view.actor is not None and view.actor.actor_urn != notice.urn

    def _affected(self, address: str) -> list[str]:
        live = self.running_children
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [address]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return live
        return live[live.index(address) :]

    def _start_children(self, names: Sequence[str]) -> None:
        for spec in self.specs:
            if spec.name in names:
                self._down.names.discard(spec.name)
                address = f"{self.address}/{spec.name}"
                self.runtime.directory.start(address, self.address, spec.factory)

    def _stop_children(self, addresses: Sequence[str]) -> None:
        for address in reversed(addresses):
            spec = self._by_address[address]
            self.runtime.directory.stop(address, spec.shutdown_timeout)

    def _remove(self, address: str, reason: str) -> None:
        self._removed.add(address)
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

    def stopped(self) -> None:
        self.runtime.directory.stop_children_of(self.address)

    def summary(self) -> dict[str, Any]:
        children = self.runtime.directory.virtual_children(self.address)
        return {
            "live": sum(1 for c in children if c.state is EntryState.ACTIVE),
            "restarting": sum(1 for c in children if c.state is EntryState.PENDING),
        }

    def receive(self, message: Any) -> Any:
        match message:
            case ChildExited(reason=ExitReason.CRASH):
                self._child_crashed(message)
            case ChildExited():
                pass  # a virtual actor that stops cleanly is passivated, not dead
            case RestartVirtual(address=address):
                self.runtime.directory.restart(address)
            case _:
                return super().receive(message)
        return None

    def _child_crashed(self, notice: ChildExited) -> None:
        view = self.runtime.directory.view(notice.address)
        if view is None or (view.actor is not None and view.actor.actor_urn != notice.urn):
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
