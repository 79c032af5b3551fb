"""What an operator sees of a running queue server: `ServerView` and its `SessionView`s.

Owns the read-only views `QueueServer.debug_snapshot()` returns and the key that names a
session to an operator (`session_key`, what `QueueServer.drop_session` takes). The views are
frozen values, built on the server's trio thread from what it already tracks in memory
(sessions, their subscriptions and unsent bytes, the broker's counters) and handed to the
caller's thread: nothing mutable of the server leaves its thread. The store's full counts
(queues, messages) are a query, made on the caller's thread and only when asked for.

This module must not import actors: the debug endpoint that shows these views (the face,
actors/debug/) adapts them; the server knows nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.server.broker import Session

# Hex digits of the session id that name a session to an operator: 64 bits, unique among
# a server's live sessions, and short enough to read (the id itself is 32 random bytes).
SESSION_KEY_HEX = 16


def session_key(session: Session) -> str:
    return session.session_id.hex()[:SESSION_KEY_HEX]


@dataclass(frozen=True, slots=True)
class SessionView:
    """One client session past its hello, as its connection stands now."""

    key: str  # `session_key`: what `drop_session` takes
    peer: str  # the client's address, host:port
    connected_at: float  # seconds since the epoch
    subscriptions: int  # queues it is subscribed to
    pending: int  # subscribed queues whose MSG waits for room in its outbox
    buffered_bytes: int  # frames queued for it and not yet handed to the network
    consecutive_errors: int  # undecodable frames in a row
    auth_failures: int  # AUTH refusals within the current window
    closing: bool  # closed by the server (idle, abusive, too slow, dropped), not yet gone


@dataclass(frozen=True, slots=True)
class ServerView:
    """The server as a whole and its live sessions, at `taken_at`."""

    address: str
    taken_at: float  # seconds since the epoch
    sessions: tuple[SessionView, ...]
    subscribed_queues: int  # queues with a subscriber, over all sessions
    commands: int  # transmissions handled since the start
    errors: int  # of which answered ERR
    delivered: int  # MSGs handed to subscribers
    stored_bytes: int  # message bodies in the store
    # The store's full counts: None unless asked for (a query, not for every snapshot).
    queues: int | None = None
    messages: int | None = None
