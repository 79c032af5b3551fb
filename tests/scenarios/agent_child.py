"""A client process for the kill -9 tests: runs one async command and waits for its event.

    python -m tests.scenarios.agent_child '<json spec>'

The spec names the database, the servers, the command and its arguments. With
DUPLEX_FAULTS=point:kind:kill in the environment the process kills itself with SIGKILL at
that point; otherwise it prints the completion event as a JSON line and exits 0. The command
`ack_then_kill` acknowledges a message (the sync form) and kills the process with SIGKILL
the moment the call returned.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import msgspec

from actors.client import Client
from protocol.queue import QueueMode
from tests.scenarios.agents import FAST, Events


def main() -> int:
    spec = json.loads(sys.argv[1])
    client = Client.open(spec["db"], spec["servers"], config=FAST)
    events = Events(client)
    corr_id = spec["corr_id"]
    args = spec.get("args", {})
    if spec["command"] == "ack_then_kill":
        client.ack_message(args["conn_id"], args["msg_id"])
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        match spec["command"]:
            case "create":
                client.create_connection_async(corr_id, QueueMode(args.get("mode", "m")))
            case "join":
                client.join_connection_async(corr_id, args["link"], b"child")
            case "allow":
                client.allow_connection_async(corr_id, args["conn_id"], args["conf_id"], b"")
            case "accept":
                client.accept_contact_async(corr_id, args["inv_id"], b"")
            case "ack":
                client.ack_message_async(corr_id, args["conn_id"], args["msg_id"])
            case "delete":
                client.delete_connection_async(corr_id, args["conn_id"])
        event = events.wait(lambda e: getattr(e, "corr_id", None) == corr_id, timeout=20)
        print(msgspec.json.encode(event).decode(), flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
