"""The queue server: the queue protocol served over TLS websockets, on a store.

The only part of `protocol/` that may import `storage/` (docs/architecture.md); it
never imports `actors/`, and the agent never imports it.

Modules: `shell` (QueueServer, the trio shell: TLS, websockets, sessions, limits),
`broker` (sans-io command processing: one frame in, frames for sessions out), `operator`
(the read-only views of a running server, `QueueServer.debug_snapshot()`). The public
names are re-exported here: ``from protocol.server import QueueServer, ServerConfig``.
"""

from protocol.server.broker import QueueBroker, Session
from protocol.server.operator import ServerView, SessionView
from protocol.server.shell import QueueServer, ServerConfig

__all__ = ["QueueBroker", "QueueServer", "ServerConfig", "ServerView", "Session", "SessionView"]
