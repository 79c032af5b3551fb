"""The runtime's clock: one thread that fires delayed callbacks, cancellable.

Actors use it through `Actor.send_after`; a fired timer only tells a message to an address,
so the callback is cheap and the actor handles the message on its own thread. One thread
for every timer of the runtime keeps the thread count flat however many retries are pending
(a `threading.Timer` each would cost a thread each). It lives outside the trio loop on
purpose: timers must keep firing while the I/O actor restarts.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class TimerHandle:
    """A scheduled callback; `cancel()` is idempotent and safe from any thread."""

    __slots__ = ("__weakref__", "callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        # Drop the callback now: it holds the message, and a cancelled handle may wait in
        # the heap until its deadline (an idle timer: a minute) before it is popped.
        self.cancelled = True
        self.callback = _nothing


def _nothing() -> None:
    pass


class Scheduler:
    """A heap of deadlines served by one thread; callbacks must be short and never block."""

    def __init__(self, name: str = "duplex-clock") -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._pushes = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback)
        with self._wakeup:
            if self._stopping:
                handle.cancelled = True
                return handle
            heapq.heappush(self._heap, (handle.deadline, next(self._sequence), handle))
            self._pushes += 1
            if self._pushes % 4096 == 0 and len(self._heap) > 4096:
                # Passivated actors leave their cancelled idle timers behind: compact.
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)
            if self._heap[0][2] is handle:
                self._wakeup.notify()
        return handle

    def pending(self) -> int:
        with self._wakeup:
            return sum(1 for _, _, handle in self._heap if not handle.cancelled)

    def stop(self, timeout: float = 5.0) -> None:
        with self._wakeup:
            self._stopping = True
            self._heap.clear()
            self._wakeup.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and (
                    not self._heap or self._heap[0][0] > time.monotonic()
                ):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                if self._stopping:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                handle.callback()
            except Exception:
                # A timer callback only tells a message; if that fails the clock must go on
                # for every other actor, so the failure is logged, not raised.
                log.exception("timer callback failed")
