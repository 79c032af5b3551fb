"""The agent's public surface for the actors above it (the chat): what they may tell it.

Actors never ask each other, so a layer above the agent tells it commands and learns their
outcome as events (each carrying the command's corr id), like the async forms of `Client`:

* `Submit(CreateConnection(...) | JoinConnection(...) | SetLinkData(...) | …)` to `AGENT`:
  the command is
  stored and run; a refusal (a bad link, no such connection) comes back as `ERR`;
* `Submit(DeleteConnection(corr_id, conn_id, wait_delivery=True))` after a last message to
  a peer (a leave, a removal): the connection first delivers what it stored — each message
  `SENT`, or `MERR` once past the message TTL — then deletes, and `OK` comes only then, maybe
  long after (the wait survives restarts; the command TTL does not cut it short).
  Meanwhile sends to it are refused with code `DELETING` (logged, for a told send). Without
  `wait_delivery` the connection goes at once, with what it had not sent yet;
* `Tell(SendMessage(body, corr_id) | AckMessage(msg_id) | AckCommandEvent(corr_id) |
  Replay())` to `connection_address(conn_id)`; a send with a corr id is acknowledged (`OK`
  once it is stored for delivery; the same corr id again is sent once: hand a message over
  again whenever a crash leaves you unsure); `Replay` asks the connection to tell again what
  was not acknowledged (completion events, received messages), for a layer above that
  restarted.

Connection ids of create/join/accept may be chosen by the caller, so that its own rows exist
before any event of the connection can arrive. Events are `actors.agent.events`.
"""

from actors.agent.agent import (
    AcceptContact,
    AllowConnection,
    CreateConnection,
    DeleteConnection,
    GetLinkData,
    JoinConnection,
    SetLinkData,
    Submit,
)
from actors.agent.connection import AckCommandEvent, AckMessage, SendMessage
from actors.agent.model import Replay, Tell
from actors.agent.sessions import connection_address

AGENT = "client/agent"

__all__ = [
    "AGENT",
    "AcceptContact",
    "AckCommandEvent",
    "AckMessage",
    "AllowConnection",
    "CreateConnection",
    "DeleteConnection",
    "GetLinkData",
    "JoinConnection",
    "Replay",
    "SendMessage",
    "SetLinkData",
    "Submit",
    "Tell",
    "connection_address",
]
