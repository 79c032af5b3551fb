"""Messages the kernel itself sends between actors, supervisors and the I/O bridge.

All of them are immutable. Application actors see only `IoResult` (the answer to work they
handed to the trio thread, when no callback of the activation claimed it); the others are
handled by the `Actor` and `Supervisor` base classes before `receive` is called.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pykka

from actors.kernel.errors import IoError

__all__ = [
    "Ask",
    "ChildExited",
    "ChildStarted",
    "CrashRequested",
    "ExitReason",
    "IdleCheck",
    "Inspect",
    "IoError",  # defined in errors.py, importable from here as before
    "IoResult",
    "Passivate",
    "RestartChild",
    "RestartChildren",
    "RestartVirtual",
    "TimerFired",
]


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
class ChildStarted:
    """Told to a supervisor when an activation of a (non-virtual) child is ready.

    Ready means its `started()` returned without error; a supervisor is ready once all of
    its own children are. The supervisor starts its next child on this notice, so children
    start one after the other, in order, without the supervisor's thread waiting on them.
    `urn` names the activation, so a notice from an activation already replaced is ignored.
    """

    address: str
    urn: str


@dataclass(frozen=True, slots=True)
class RestartChildren:
    """A supervisor's own timer: these children may start again, the backoff has passed.

    `epoch` is the strategy application that held them back; a child held again by a later
    application (with a longer backoff) is released only by that application's timer.
    """

    names: tuple[str, ...]
    epoch: int


@dataclass(frozen=True, slots=True)
class RestartVirtual:
    """A virtual-kind supervisor's own timer: activate this address again after a crash."""

    address: str


@dataclass(frozen=True, slots=True)
class Passivate:
    """Asks a virtual actor to stop cleanly if it may (idle, or evicted by the live cap).

    An operator's request (`REQUESTED`) that finds messages waiting behind it is made again
    after them, up to `REQUEST_RETRIES` times: a console inspecting the actor every fraction
    of a second must not turn "passivate" into a coin toss."""

    reason: str
    retries: int = 0

    REQUESTED: ClassVar[str] = "requested"
    REQUEST_RETRIES: ClassVar[int] = 20


@dataclass(frozen=True, slots=True)
class IdleCheck:
    """A virtual actor's own timer: passivate if nothing arrived for `passivate_after`."""


@dataclass(frozen=True, slots=True)
class CrashRequested:
    """An operator's command (`Runtime.crash`): the activation crashes on it, as it would on
    an exception in a handler, and its supervisor restarts it."""

    reason: str


@dataclass(frozen=True, slots=True)
class RestartChild:
    """An operator's command to a supervisor (`Runtime.restart`): stop this child cleanly
    and start a fresh activation of it, its siblings untouched."""

    address: str


@dataclass(frozen=True, slots=True)
class Inspect:
    """Asked from the runtime's edge (`Runtime.inspect`): the activation describes itself on
    its own thread (`Actor.describe`)."""


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


@dataclass(frozen=True, slots=True)
class IoResult:
    """The outcome of a coroutine an actor submitted to the I/O bridge.

    Every submission gets exactly one, with the request id `submit_io` returned. Exactly one
    of `value` / `error` is meaningful: `error` is the exception the coroutine raised, or an
    `IoError` when it could not run (the I/O thread restarting or stopped, the task could
    not be spawned) or was cancelled (the I/O thread stopped under it).
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
