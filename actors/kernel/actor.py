"""The `Actor` base: a pykka thread with an address, a supervisor, timers and counters.

Theory of operation
-------------------
Nobody holds a pykka `ActorRef`: refs die with an activation, addresses do not. Every message
goes through the runtime's `Directory` (see directory.py), which delivers it to the live
activation, buffers it while the address starts, restarts or passivates, or activates a
virtual actor for it. Subclasses implement four hooks (and an optional fifth), never
pykka's own:

* ``started()``  loads the actor's state from storage; a restart is a new activation that
  calls it again, so whatever it loads is what survives a crash. An exception here is a
  crash like any other (pykka would otherwise stop the actor silently).
* ``receive(message)``  handles one message; its return value answers an `ask`.
* ``stopped()``  runs on a clean stop or passivation, not after a crash.
* ``summary()``  a few fields for the supervision tree; read from other threads, so it only
  reads plain attributes.
* ``inspect()``  optional: more detail for an operator (the debug console), computed on the
  actor's own thread when `Runtime.inspect` asks, so it may read anything the actor owns.

Operators (the debug console, through `Runtime.crash` / `restart` / `passivate` /
`inspect`) reach an activation only through kernel messages in its mailbox: a
`CrashRequested` is a crash like any other, and `Inspect` is answered by ``describe()``.

A crash (an exception escaping ``started`` or ``receive`` for a `tell`) salvages the
messages still in the mailbox into the directory's buffer, records the work item being done,
and tells the supervisor `ChildExited`. An exception while answering an `ask` goes back to
the asker and the actor keeps running. A `BaseException` is turned into a crash of this
actor alone: pykka would otherwise stop every actor in the process.

Readiness: a supervised (non-virtual) activation is *ready* once ``started()`` returned;
it then tells its supervisor `ChildStarted`, and the supervisor starts its next child (see
supervisor.py). A supervisor is ready once all its children are. Virtual actors do not
report: nothing waits for them.

I/O: ``submit_io(fn, *args, on_result=None)`` runs ``fn(*args)`` on the trio thread and
returns a request id; the outcome comes back to this address as exactly one
``IoResult(request_id, value | error)`` (see io.py for why it is always exactly one). With
``on_result``, the result is handed to that callable on this actor's thread, in place of
``receive``; without it, ``receive`` gets the `IoResult`. Callbacks belong to the
activation that registered them: after a crash, a result for an id the new activation did
not submit goes to its ``receive`` (the base ``receive`` drops it with a debug log), so an
actor that only uses callbacks needs no ``case IoResult()``. An activation waiting for I/O
results does not passivate (its callbacks would be lost with it).

A crash cannot call ``stopped()`` (pykka does not), so an activation that holds something
outside the runtime's actors (a thread, a socket) releases it in ``crashed()``.

Work items (``run_work_item``) give dead letters: the directory counts the crashes that
happened while an item was in hand, and once an item reached ``max_attempts`` the next
activation calls ``on_dead_letter`` for it instead of running it again.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, final

import pykka

from actors.kernel.messages import (
    Ask,
    ChildExited,
    ChildStarted,
    CrashRequested,
    ExitReason,
    IdleCheck,
    Inspect,
    IoResult,
    Passivate,
    TimerFired,
)
from actors.kernel.timers import TimerHandle

if TYPE_CHECKING:
    from actors.kernel.runtime import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")

IoCallback = Callable[[IoResult], Any]


class ActorCrash(Exception):
    """Raised in place of a `BaseException` from a handler, and when `started` fails."""


@dataclass(frozen=True, slots=True)
class ActorContext:
    """What an activation is given: who it is, who supervises it, and the runtime's services.

    `activation` counts the activations of this address so far (0 for the first one);
    `key` is the last part of a virtual actor's address (its identity, e.g. a connection id).
    """

    runtime: Runtime
    address: str
    parent: str | None
    activation: int = 0
    virtual: bool = False
    passivate_after: float | None = None

    @property
    def key(self) -> str:
        return self.address.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What `on_dead_letter` is told: the work item, how often it crashed, the last error."""

    item: str
    attempts: int
    error: str | None


class Actor(pykka.ThreadingActor):
    """Base of every duplex actor. See the module docstring for the contract."""

    kind: ClassVar[str] = "actor"
    # The messages handled before `receive`; a type lookup in a frozenset keeps the common
    # path (an application message) to one membership test. Subclasses of the kernel extend
    # it (supervisors) so that an application's `receive` can never swallow them.
    _kernel_types: ClassVar[frozenset[type]] = frozenset(
        {TimerFired, Ask, IdleCheck, Passivate, IoResult, ChildStarted, CrashRequested}
    )

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.address = ctx.address
        self.runtime = ctx.runtime
        self.handled = 0
        self.last_activity = time.monotonic()
        self.current_work_item: str | None = None
        self.is_started = False
        self.is_ready = False
        self._io_pending: dict[int, IoCallback | None] = {}
        self._timers: weakref.WeakSet[TimerHandle] = weakref.WeakSet()
        self._idle_timer: TimerHandle | None = None

    # ------------------------------------------------------------------ hooks to override

    def started(self) -> None:
        """Load state and resume pending work. Runs on every activation."""

    def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an `ask`."""
        if type(message) is IoResult:
            # A result no callback of this activation claimed: submitted by an earlier
            # activation (before a crash), whose callbacks died with it.
            log.debug(
                "I/O result nobody waits for",
                extra={"address": self.address, "request_id": message.request_id},
            )
            return None
        log.warning("unexpected message", extra={"address": self.address, "msg": repr(message)})
        return None

    def stopped(self) -> None:
        """Clean up after a clean stop or passivation (not after a crash)."""

    def crashed(self, error: BaseException | None) -> None:
        """Release what this activation holds outside the actors (a thread, a socket) after
        a crash, when `stopped()` is not called. Runs on the actor's thread before its
        supervisor hears of the crash; an exception here is logged, not raised."""

    def summary(self) -> dict[str, Any]:
        """A few state fields for the supervision tree (read from another thread)."""
        return {}

    def inspect(self) -> dict[str, Any]:
        """More about this activation for an operator than `summary` (pending work, last
        errors…), as plain data; runs on the actor's own thread (see `describe`)."""
        return {}

    def may_passivate(self) -> bool:
        """Whether this virtual actor may stop now; say no while timers carry pending work."""
        return True

    def on_dead_letter(self, letter: DeadLetter) -> None:
        """A work item crashed the actor `max_attempts` times: mark it failed durably."""
        log.error(
            "work item dead-lettered",
            extra={"address": self.address, "item": letter.item, "attempts": letter.attempts},
        )

    # ------------------------------------------------------------------ services

    def tell(self, address: str, message: Any) -> None:
        """Send `message` to whatever activation serves `address` (never blocks)."""
        self.runtime.directory.tell(address, message)

    def tell_self(self, message: Any) -> None:
        self.runtime.directory.tell(self.address, message)

    def send_after(self, delay: float, message: Any) -> TimerHandle:
        """Tell `message` to this actor after `delay` seconds; `cancel()` the handle to drop it.

        A timer dies with its activation: after a crash or passivation, the message is dropped
        and the next activation re-arms what its stored state says is due.
        """
        wrapped = TimerFired(self.actor_urn, message)
        directory = self.runtime.directory
        address = self.address
        handle = self.runtime.scheduler.call_later(delay, lambda: directory.tell(address, wrapped))
        self._timers.add(handle)
        return handle

    def submit_io(
        self,
        coroutine_fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        on_result: IoCallback | None = None,
    ) -> int:
        """Run `coroutine_fn(*args)` on the trio thread; returns the request id.

        Exactly one `IoResult` with that id comes back to this address (an `IoError` one if
        the I/O thread is restarting or stopped, or the task could not start). With
        `on_result`, this activation calls `on_result(result)` on its own thread in place
        of `receive`; without it, `receive` gets the result. Call it from the actor's own
        thread (a handler, `started`, a callback).
        """
        request_id = self.runtime.next_request_id()
        # Registered before submitting: the result may be in the mailbox before we return.
        self._io_pending[request_id] = on_result
        self.runtime.submit_io(self.address, coroutine_fn, *args, request_id=request_id)
        return request_id

    @property
    def io_pending(self) -> int:
        """How many submitted I/O requests of this activation have no result yet."""
        return len(self._io_pending)

    def transaction(self) -> AbstractContextManager[Any]:
        """A short transaction on the runtime's database, from this actor's thread."""
        return self.runtime.database.transaction()

    def run_work_item(self, item: str, work: Callable[[], T]) -> T | None:
        """Run `work` as work item `item`, or dead-letter it if it crashed us too often.

        Returns `work()`'s value, or None when the item was dead-lettered.
        """
        directory = self.runtime.directory
        attempts, error = directory.crash_count(self.address, item)
        if attempts >= self.runtime.config.max_attempts:
            directory.forget_crashes(self.address, item)
            self.on_dead_letter(DeadLetter(item, attempts, error))
            return None
        self.current_work_item = item
        result = work()
        self.current_work_item = None
        if attempts:
            directory.forget_crashes(self.address, item)
        return result

    def passivate(self) -> bool:
        """Stop this virtual actor cleanly unless messages are waiting; True if stopping."""
        if self.runtime.directory.begin_passivation(self):
            self._cancel_timers()
            self.stop()
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        """Counters for the tree; safe to call from another thread."""
        try:
            summary = self.summary()
        except Exception as exc:  # noqa: BLE001 (the tree must render even if one summary is broken)
            summary = {"summary_error": repr(exc)}
        return {
            "kind": self.kind,
            "activation": self.ctx.activation,
            "mailbox": self.actor_inbox.qsize(),
            "handled": self.handled,
            "work_item": self.current_work_item,
            "io_pending": len(self._io_pending),
            "state": summary,
        }

    def describe(self) -> dict[str, Any]:
        """The snapshot, the kernel's bookkeeping of this activation and `inspect()`: the
        answer to `Inspect`, on this actor's own thread."""
        description = self.snapshot()
        description.update(
            urn=self.actor_urn,
            parent=self.ctx.parent,
            virtual=self.ctx.virtual,
            ready=self.is_ready,
            idle_seconds=round(time.monotonic() - self.last_activity, 3),
        )
        try:
            description["details"] = self.inspect()
        except Exception as exc:  # noqa: BLE001 (an operator still gets the rest)
            description["details"] = {"inspect_error": repr(exc)}
        return description

    # ------------------------------------------------------------------ pykka's hooks (final)

    @final
    def on_start(self) -> None:
        try:
            self.started()
        except BaseException as exc:
            self._crashed(exc)
            raise ActorCrash(f"{self.address}: started() failed: {exc!r}") from exc
        self.is_started = True
        if self.ctx.virtual and self.ctx.passivate_after:
            self._idle_timer = self.send_after(self.ctx.passivate_after, IdleCheck())
        self._after_started()

    @final
    def on_receive(self, message: Any) -> Any:
        self.handled += 1
        try:
            return self._dispatch(message)
        except Exception:
            raise
        except BaseException as exc:
            # pykka stops every actor in the process on a BaseException: make it a crash
            # of this one (from receive, a callback, or a hook such as may_passivate).
            raise ActorCrash(f"{self.address}: {exc!r} in a handler") from exc

    @final
    def on_failure(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        self._crashed(exc)

    @final
    def on_stop(self) -> None:
        self._cancel_timers()
        try:
            self.stopped()
        finally:
            self.runtime.directory.actor_stopped(self)

    # ------------------------------------------------------------------ internals

    def _dispatch(self, message: Any) -> Any:
        if type(message) in self._kernel_types:
            return self._kernel_message(message)
        self.last_activity = time.monotonic()
        return self.receive(message)

    def _kernel_message(self, message: Any) -> Any:
        if type(message) is TimerFired:
            if message.urn != self.actor_urn:
                return None
            return self._dispatch(message.message)
        if type(message) is IoResult:
            self.last_activity = time.monotonic()
            callback = self._io_pending.pop(message.request_id, None)
            if callback is not None:
                return callback(message)
            return self.receive(message)
        if type(message) is Ask:
            inspecting = type(message.message) is Inspect
            if not inspecting:  # an operator looking is not activity (passivation)
                self.last_activity = time.monotonic()
            try:
                message.future.set(self.describe() if inspecting else self.receive(message.message))
            except BaseException:  # noqa: BLE001 (the asker gets it; the actor keeps serving)
                message.future.set_exception()
            return None
        if type(message) is IdleCheck:
            return self._check_idle()
        if type(message) is CrashRequested:
            raise ActorCrash(f"{self.address}: {message.reason}")
        if type(message) is Passivate:
            self._passivate_on(message)
        if type(message) is ChildStarted:
            log.debug("readiness of a child nobody waits for", extra={"address": self.address})
        return None

    def _passivate_on(self, message: Passivate) -> None:
        may = self._may_passivate_now()
        if may and self.passivate():
            return
        requested = message.reason == Passivate.REQUESTED
        if may and requested and message.retries < Passivate.REQUEST_RETRIES:
            # Only messages waiting stopped it: ask again behind them.
            self.actor_ref.tell(Passivate(message.reason, message.retries + 1))
            return
        self.runtime.directory.passivation_refused(self.address)

    def _may_passivate_now(self) -> bool:
        # Waiting for I/O is not idleness: a passivated activation's callbacks die with it.
        return not self._io_pending and self.may_passivate()

    def _after_started(self) -> None:
        """`started()` returned: an actor is ready now; a supervisor once its children are."""
        self._announce_ready()

    def _announce_ready(self) -> None:
        """This activation is ready: tell the supervisor, which starts the next child."""
        if self.is_ready:
            return
        self.is_ready = True
        if self.ctx.parent is not None and not self.ctx.virtual:
            self.runtime.directory.tell(self.ctx.parent, ChildStarted(self.address, self.actor_urn))

    def _check_idle(self) -> None:
        limit = self.ctx.passivate_after or 0.0
        idle = time.monotonic() - self.last_activity
        if idle >= limit and self._may_passivate_now() and self.passivate():
            return
        self._idle_timer = self.send_after(max(limit - idle, limit / 4), IdleCheck())

    def _cancel_timers(self) -> None:
        for handle in list(self._timers):
            handle.cancel()

    def _crashed(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        try:
            self.crashed(exc)
        except BaseException:  # the crash must still reach the supervisor
            log.exception("crashed() failed", extra={"address": self.address})
        error = repr(exc)
        self.runtime.directory.actor_crashed(self, error, self.current_work_item)
        notice = ChildExited(self.address, self.actor_urn, ExitReason.CRASH, error)
        if self.ctx.parent is None:
            self.runtime.root_exited(notice)
        else:
            self.runtime.directory.tell(self.ctx.parent, notice)
