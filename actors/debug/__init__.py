"""The debug endpoint of a runtime and the console's side of it (the face room, like
actors/client.py; the kernel never imports it).

* wire.py      the messages, typed msgspec Structs (commands, snapshots, replies);
* endpoint.py  `DebugEndpoint`: the websocket a runtime serves with `Client.open(debug=True)`;
* link.py      `open_session`, `fetch_snapshot` and `DebugLink`: what `duplex tree` and
               `duplex console` connect with.
"""

from actors.debug.endpoint import DebugEndpoint
from actors.debug.link import DebugLink, DebugSession, fetch_snapshot, open_session

__all__ = ["DebugEndpoint", "DebugLink", "DebugSession", "fetch_snapshot", "open_session"]
