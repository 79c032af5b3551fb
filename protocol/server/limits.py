"""What one client, one queue and the whole store may use on a queue server; sans-io.

Owns: `Limits` (the numbers, with their defaults, shared by `ServerConfig`, the broker and
`duplex server`'s flags) and `SlidingWindow` (events counted over the last `window`
seconds, which a session keeps for the queues it creates and the AUTH refusals it earns).
Must not: do I/O, read clocks itself (callers pass `now`), or know sessions or sockets.

A refusal for a limit is always a clear reply, never a silent drop: `ERR QUOTA` for a
queue, a session or a store that is full (temporary: the client may retry later), and a
closed session for a client that keeps earning `AUTH` (someone probing for queues or keys).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_QUOTA = 128  # messages a queue may hold
DEFAULT_QUOTA_BYTES = 1 << 20  # bytes of message bodies a queue may hold
DEFAULT_STORE_BYTES = 1 << 30  # bytes of message bodies the whole store may hold
DEFAULT_MESSAGE_TTL = 21 * 24 * 3600.0
DEFAULT_NEW_QUEUES = 1000  # queues one session may create per window …
DEFAULT_NEW_QUEUE_WINDOW = 600.0  # … of this many seconds
# AUTH refusals (unknown entities, bad signatures) one session may earn per window before it
# is closed. A client whose queues were deleted meanwhile resubscribes them in one batch and
# sees one AUTH each, so this is well above a few; successes in between do not reset it.
DEFAULT_AUTH_FAILURES = 100
DEFAULT_AUTH_FAILURE_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The broker's limits; `ServerConfig` carries the same fields (see there)."""

    quota: int = DEFAULT_QUOTA
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    store_bytes: int = DEFAULT_STORE_BYTES
    message_ttl: float = DEFAULT_MESSAGE_TTL
    new_queues: int = DEFAULT_NEW_QUEUES
    new_queue_window: float = DEFAULT_NEW_QUEUE_WINDOW
    auth_failures: int = DEFAULT_AUTH_FAILURES
    auth_failure_window: float = DEFAULT_AUTH_FAILURE_WINDOW


class SlidingWindow:
    """At most `limit` events in any `window` seconds; remembers only the last `limit`.

    `add(now)` records an event; `full(now)` says whether `limit` events lie within the last
    `window` seconds (then one more would exceed the limit). Memory: `limit` floats.
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: collections.deque[float] = collections.deque(maxlen=max(limit, 1))

    def full(self, now: float) -> bool:
        if self.limit <= 0:
            return True
        times = self._times
        return len(times) == self.limit and now - times[0] < self.window

    def add(self, now: float) -> None:
        self._times.append(now)

    def count(self, now: float) -> int:
        """Events within the last `window` seconds; safe from another thread (an operator's
        view): the deque is copied first, in one step under the GIL."""
        return sum(1 for t in tuple(self._times) if now - t < self.window)
