"""The chat's shared services: its store, its event stream, the user's profile, and the
port through which every chat actor reaches the agent (by tells, through its public API).

One `ChatServices` per runtime, reachable as `runtime.services["chat"]`. `AgentSink` is what
the agent emits into when a chat sits above it: each agent event becomes a message to the
`ChatActor`, which routes it to the event's owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.agent import api
from actors.agent.events import AgentEvent
from protocol.chat import Profile
from storage.chat import ChatStore

if TYPE_CHECKING:
    from actors.kernel import Runtime

CHAT = "client/chat"


@dataclass(frozen=True, slots=True)
class AgentEventArrived:
    """An agent event, on its way to the chat actor that owns its connection."""

    event: AgentEvent


class AgentSink:
    """Where the agent's events go when a chat owns them: the chat actor's mailbox."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def put(self, event: AgentEvent) -> None:
        self._runtime.tell(CHAT, AgentEventArrived(event))


class AgentPort:
    """The agent's public API, told from chat actors (never asked)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def submit(self, command: Any) -> None:
        self._runtime.tell(api.AGENT, api.Submit(command))

    def set_link_data(self, corr_id: str, conn_id: str, user_data: bytes) -> None:
        """Publish `user_data` behind the short link of contact connection `conn_id`: LINK
        (with the short link) or ERR follows, with `corr_id`."""
        self.submit(api.SetLinkData(corr_id, conn_id, user_data))

    def get_link_data(self, corr_id: str, short_link: str) -> None:
        """Read a short link: LDATA (the address link and the user data) or ERR follows."""
        self.submit(api.GetLinkData(corr_id, short_link))

    def send(self, conn_id: str, body: bytes, corr_id: str) -> None:
        """An acknowledged send: `OK` (or `ERR`) with `corr_id` follows."""
        self._to(conn_id, api.SendMessage(body, corr_id))

    def ack_event(self, conn_id: str, corr_id: str) -> None:
        self._to(conn_id, api.AckCommandEvent(corr_id))

    def ack_message(self, conn_id: str, msg_id: int) -> None:
        self._to(conn_id, api.AckMessage(msg_id))

    def replay(self, conn_id: str) -> None:
        self._to(conn_id, api.Replay())

    def _to(self, conn_id: str, message: Any) -> None:
        self._runtime.tell(api.connection_address(conn_id), api.Tell(message))


@dataclass(eq=False)
class ChatServices:
    store: ChatStore
    agent: AgentPort
    events: Any  # an EventStream of chat events
    profile: Profile
    # owner → the connection whose agent event its last activation was handling when it
    # crashed (the next activation asks that connection to tell again: owner.py)
    lost_events: dict[str, str] = field(default_factory=dict)
    # owners activated in this process (the first activation asks the agent to tell again
    # what a process before may have lost: owner.py)
    resumed: set[str] = field(default_factory=set)
