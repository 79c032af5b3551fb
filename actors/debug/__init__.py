"""The debug endpoint of a runtime or a queue server and the console's side of it (the face
room, like actors/client.py; the kernel and the queue server never import it).

* wire.py            the messages, typed msgspec Structs (commands, snapshots, replies);
* target.py          `DebugTarget`: what an endpoint serves (a tree, commands on it);
* runtime_target.py  `RuntimeTarget`: an actor runtime's supervision tree and commands;
* server_target.py   `QueueServerTarget`: a queue server and its client sessions
                     (imported from its module: it brings the queue server in);
* endpoint.py        `DebugEndpoint`: the websocket served for a target, by
                     `Client.open(debug=True)` and `duplex server --debug`;
* link.py            `open_session`, `fetch_snapshot` and `DebugLink`: what `duplex tree` and
                     `duplex console` connect with.
"""

from actors.debug.endpoint import DebugEndpoint
from actors.debug.link import DebugLink, DebugSession, fetch_snapshot, open_session
from actors.debug.runtime_target import RuntimeTarget
from actors.debug.target import DebugTarget, TargetView

__all__ = [
    "DebugEndpoint",
    "DebugLink",
    "DebugSession",
    "DebugTarget",
    "RuntimeTarget",
    "TargetView",
    "fetch_snapshot",
    "open_session",
]
