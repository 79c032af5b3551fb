"""Messages the kernel itself sends between actors, supervisors and the I/O bridge.

All of them are immutable. Application actors see only `IoResult` (the answer to work they
handed to the trio thread); the others are handled by the `Actor` and `Supervisor` base
classes before `receive` is called.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import pykka


class ExitReason(enum.Enum):
    """Why an activation ended: a clean stop or an exception (in `started` or a handler)."""

    NORMAL = "normal"
    CRASH = "crash"


@dataclass(frozen=True, slots=True)
class ChildExited:
    """Told to a supervisor when one activation of a child ends.

    `urn` names the activation, so a late notice about an activation that was already
    replaced is recognised and ignored.
    """

    address: str
    urn: str
    reason: ExitReason
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RestartChildren:
    """A supervisor's own timer: restart these children now that the backoff has passed."""

    names: tuple[str, ...]
    epoch: int


@dataclass(frozen=True, slots=True)
class RestartVirtual:
    """A virtual-kind supervisor's own timer: activate this address again after a crash."""

    address: str


@dataclass(frozen=True, slots=True)
class Passivate:
    """Asks a virtual actor to stop cleanly if it may (idle, or evicted by the live cap)."""

    reason: str


@dataclass(frozen=True, slots=True)
class IdleCheck:
    """A virtual actor's own timer: passivate if nothing arrived for `passivate_after`."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """Wraps a `send_after` message; dropped when the activation that set it is gone."""

    urn: str
    message: Any


@dataclass(frozen=True, slots=True)
class Ask:
    """An `ask` from the runtime's edge: the answer (or the exception) goes to `future`."""

    message: Any
    future: pykka.Future[Any] = field(compare=False)


class IoError(Exception):
    """Raised by `IoResult.unwrap` when the coroutine was cancelled or could not run."""


@dataclass(frozen=True, slots=True)
class IoResult:
    """The outcome of a coroutine an actor submitted to the I/O bridge.

    Exactly one of `value` / `error` is meaningful: `error` is the exception the coroutine
    raised (or an `IoError` when it was cancelled or never started).
    """

    request_id: int
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The value, or raise the coroutine's exception."""
        if self.error is not None:
            raise self.error
        return self.value
