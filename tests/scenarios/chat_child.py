"""A chat client process for the kill -9 tests: opens a chat database and serves it until
its fault point kills it.

    python -m tests.scenarios.chat_child '<json spec>'

The spec names the database, the servers, the profile name, and an optional `join` (a group
id to `join_group` once open), `connect` (a prepared relay group's id to
`connect_prepared_group` once open) or `leave` (a group id to `leave_group` once open).
With DUPLEX_FAULTS=point:kind:kill in the environment the process kills itself with SIGKILL
at that point; if that has not happened by `deadline` seconds it exits 3 (the test fails:
the step it waited for never came).
"""

from __future__ import annotations

import json
import sys
import threading

from actors.chat_client import ChatClient
from tests.scenarios.agents import FAST


def main() -> int:
    spec = json.loads(sys.argv[1])
    chat = ChatClient.open(spec["db"], spec["servers"], name=spec["name"], config=FAST)
    if spec.get("join"):
        chat.join_group(spec["join"])
    if spec.get("connect"):
        chat.connect_prepared_group(spec["connect"])
    if spec.get("leave"):
        chat.leave_group(spec["leave"])
    threading.Event().wait(spec.get("deadline", 30.0))  # the fault point ends us before
    chat.close()
    return 3


if __name__ == "__main__":
    sys.exit(main())
