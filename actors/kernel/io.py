"""The I/O bridge: one trio thread per runtime, and the `IoActor` that owns it in the tree.

Actors never block on the network. They hand a coroutine function to `IoBridge.submit`
(through `Actor.submit_io`) and carry on; the coroutine runs as a task in the bridge's
nursery and its outcome is told back to the submitting address as an `IoResult`.

Two trio facts shape this module: an exception inside a `run_sync_soon` callback kills the
whole trio run, so every callback the bridge schedules is wrapped so that it cannot raise
(a failure becomes an `IoResult` error for the requester); and awaiting or blocking on a
pykka future inside trio breaks the loop, so results leave trio only as `tell`s.

The contract, which nothing in this module may break: every submission produces exactly one
`IoResult`, told to the submitting address, whatever happens:

* the coroutine returns or raises: its value or its exception (any `BaseException` too,
  which is then re-raised in the loop);
* the loop is not running (the io actor is restarting, the bridge stopped or never
  started): `IoError` at once, from the submitting thread (`Runtime.submit_io`, `submit`);
* the loop took the request but could not spawn it (the nursery closed as the loop
  stops): `IoError` from inside the loop (`_spawn` cannot raise); `fn` that is not a
  coroutine function fails inside the task, like a coroutine that raises;
* the task was cancelled (the bridge stopped under it: shutdown, or an io activation
  replaced after a crash): `IoError("cancelled")`. trio guarantees that a `run_sync_soon`
  that did not raise `RunFinishedError` runs before the loop exits, so a request accepted
  while the loop stops reaches one of the cases above.

Where the result goes is the directory's business: the live activation, the buffer of an
address that is between activations, or a dead letter for an address that is gone.

On shutdown the nursery is cancelled: every task still running is told
`IoResult(error=IoError("cancelled"))`, and the thread ends with no task left behind. An io
activation that crashes stops its bridge in `crashed()`, so the next activation starts a
fresh loop and nothing runs on a loop nobody owns.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import trio

from actors.kernel.actor import Actor, ActorContext
from actors.kernel.errors import ActorUnavailable, AskTimeout, IoError
from actors.kernel.messages import IoResult

if TYPE_CHECKING:
    from actors.kernel.directory import Directory

log = logging.getLogger(__name__)

CoroutineFn = Callable[..., Coroutine[Any, Any, Any]]


class IoBridge:
    """A trio loop on its own thread that runs actors' coroutines and tells the results."""

    def __init__(self, directory: Directory, name: str = "duplex-io") -> None:
        self._directory = directory
        self._name = name
        self._request_ids = itertools.count(1)
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._stop_requested: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self.tasks_running = 0
        self.tasks_done = 0
        self.crash: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._thread_main, name=self._name)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ActorUnavailable(f"the I/O thread did not start within {timeout}s")
        if self.crash is not None:
            raise ActorUnavailable(f"the I/O thread failed to start: {self.crash!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every running task (each reports `IoError`) and end the thread."""
        token, stop_requested = self._token, self._stop_requested
        if token is not None and stop_requested is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop_requested.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the I/O thread did not stop in time", extra={"timeout": timeout})

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def nursery(self) -> trio.Nursery:
        """The loop's nursery, for long-lived tasks started from inside the loop (sessions)."""
        if self._nursery is None:
            raise ActorUnavailable("the I/O thread is not running")
        return self._nursery

    # ------------------------------------------------------------------ submitting work

    def submit(
        self, reply_to: str, coroutine_fn: CoroutineFn, *args: Any, request_id: int | None = None
    ) -> int:
        """Run `coroutine_fn(*args)` in the loop; tell `IoResult` to `reply_to` when done."""
        if request_id is None:
            request_id = next(self._request_ids)
        try:
            self._run_soon(self._spawn, reply_to, request_id, coroutine_fn, args)
        except ActorUnavailable as exc:
            self._directory.tell(reply_to, IoResult(request_id, error=IoError(str(exc))))
        return request_id

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain callback in the loop; if it raises, the error is logged, not fatal."""

        def guarded() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("I/O callback failed")

        self._run_soon(guarded)

    def run(self, coroutine_fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float) -> Any:
        """Block the calling (non-trio) thread until `coroutine_fn(*args)` returns.

        For the edges only: the embedded API and tests. Actors use `submit`.
        """
        done = threading.Event()
        outcome: list[Any] = []

        async def runner() -> None:
            try:
                outcome.append((True, await coroutine_fn(*args)))
            except Exception as exc:  # noqa: BLE001 (re-raised in the calling thread)
                outcome.append((False, exc))
            finally:
                done.set()

        self._run_soon(self._spawn_plain, runner)
        if not done.wait(timeout):
            raise AskTimeout(f"I/O call did not finish within {timeout}s")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    # ------------------------------------------------------------------ inside the loop

    def _run_soon(self, fn: Callable[..., None], *args: Any) -> None:
        token = self._token
        if token is None:
            raise ActorUnavailable("the I/O thread is not running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError as exc:
            raise ActorUnavailable("the I/O thread has stopped") from exc

    def _spawn(self, reply_to: str, request_id: int, fn: CoroutineFn, args: tuple) -> None:
        try:
            nursery = self._nursery
            if nursery is None:
                raise IoError("the I/O thread is stopping")
            nursery.start_soon(self._run_request, reply_to, request_id, fn, args)
        except BaseException as exc:  # noqa: BLE001 (raising in run_sync_soon kills the loop)
            error = exc if isinstance(exc, IoError) else IoError(f"could not start: {exc!r}")
            self._directory.tell(reply_to, IoResult(request_id, error=error))

    def _spawn_plain(self, runner: Callable[[], Awaitable[None]]) -> None:
        try:
            nursery = self._nursery
            if nursery is None:
                raise IoError("the I/O thread is stopping")
            nursery.start_soon(runner)
        except BaseException:  # raising in run_sync_soon kills the loop
            log.exception("could not start an I/O call")

    async def _run_request(
        self, reply_to: str, request_id: int, fn: CoroutineFn, args: tuple
    ) -> None:
        self.tasks_running += 1
        try:
            value = await fn(*args)
        except trio.Cancelled:
            self._directory.tell(reply_to, IoResult(request_id, error=IoError("cancelled")))
            raise
        except Exception as exc:  # noqa: BLE001 (the requester gets it as an IoResult)
            self._directory.tell(reply_to, IoResult(request_id, error=exc))
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit…: it ends the loop, but the requester hears.
            self._directory.tell(reply_to, IoResult(request_id, error=IoError(repr(exc))))
            raise
        else:
            self._directory.tell(reply_to, IoResult(request_id, value=value))
        finally:
            self.tasks_running -= 1
            self.tasks_done += 1

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.crash = exc
            log.exception("the I/O thread crashed")
        finally:
            self._token = None
            self._ready.set()

    async def _main(self) -> None:
        self._stop_requested = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop_requested.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None


class IoActor(Actor):
    """The `io` node of the tree: starts the runtime's trio thread and stops it."""

    kind = "io"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.bridge = IoBridge(ctx.runtime.directory, name=f"{ctx.address}-trio")

    def started(self) -> None:
        self.bridge.start()
        self.runtime.attach_io(self.bridge)

    def stopped(self) -> None:
        self.runtime.detach_io(self.bridge)
        self.bridge.stop()

    def crashed(self, error: BaseException | None) -> None:
        # Before the supervisor hears of the crash: submissions from now on get an IoError
        # at once, and the tasks of this loop are cancelled (each reports), instead of
        # running on a loop that the next activation would replace anyway.
        self.runtime.detach_io(self.bridge)
        self.bridge.stop()

    def summary(self) -> dict[str, Any]:
        return {
            "trio": "running" if self.bridge.alive else "stopped",
            "tasks": self.bridge.tasks_running,
            "done": self.bridge.tasks_done,
        }
