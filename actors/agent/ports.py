"""The narrow interfaces between `ConnectionActor` and its collaborators.

The actor owns its collaborators (commands, delivery, inbound, handshake, rotation) and
hands each a `ConnectionPort`: what a collaborator may ask of the actor. Collaborators never
import the actor or each other; when one needs another (the inbound side hands a QADD to the
rotation), the actor passes it in, typed by one of the protocols below. An import-linter
contract (pyproject.toml) keeps it that way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from actors.agent.events import AgentEvent
from actors.agent.model import CommandKind, CommandPayload, Lane, MessageKind
from actors.agent.services import AgentConfig
from actors.agent.state import ConnectionState
from protocol import crypto
from protocol.errors import ServerError
from protocol.queue import Command
from storage.agent import AgentCommand, AgentRcvQueue, AgentSndMessage, AgentSndQueue, AgentStore

OnDone = Callable[[Any], None]
OnFail = Callable[[BaseException], None]
EventLike = AgentEvent | Callable[[], AgentEvent]
# What runs a command's next step, given the command and its decoded payload.
Handler = Callable[[AgentCommand, Any], None]
# A permanent failure handled by the command's owner (True), or left to the default ERR.
FailureHook = Callable[[AgentCommand, str, str], bool]
# A delivery outcome of one kind of message (see delivery.py for when each runs).
DeliveryHook = Callable[[AgentSndQueue, AgentSndMessage], None]


def unreachable(error: BaseException) -> bool:
    """Whether a failed request failed for lack of its server (network, timeout, the I/O
    thread restarting) rather than by the server's answer: a refusal (`ERR QUOTA`, `ERR
    INTERNAL`) comes from a server that is up. Only the first waits for the server's `UP`
    (`server_unavailable`); a refusal is retried on the retry policy, for an `UP` from a
    server that answers comes at once (its PING succeeds) and would retry it at once, again
    and again."""
    return not isinstance(error, ServerError)


@dataclass(frozen=True, slots=True)
class QueueRequest:
    """One request to a queue server, signed with `key` when given."""

    server: str
    command: Command
    entity: bytes = b""
    key: crypto.SigningKey | None = None


class ConnectionPort(Protocol):
    """What a collaborator may ask of its connection actor."""

    conn_id: str
    state: ConnectionState
    store: AgentStore
    config: AgentConfig
    servers: Sequence[str]

    def emit(self, event: AgentEvent) -> None:
        """Tell the program above (in order, after whatever was emitted before)."""

    def submit(
        self,
        lane: Lane,
        request: QueueRequest,
        on_done: OnDone,
        on_fail: OnFail,
        command: AgentCommand | None = None,
    ) -> None:
        """Run `request` on the I/O thread; `on_done(reply)` or `on_fail(error)` runs on the
        actor's thread. The lane is busy until then. If `command` ended meanwhile (an
        abort), the outcome is dropped."""

    def lane_busy(self, lane: Lane) -> bool: ...

    def wake_at(self, at: float) -> None:
        """Look for due work again at `at` (epoch seconds) at the latest."""

    def server_unavailable(self, server: str) -> None:
        """A step failed on `server` for lack of it (`unreachable`): be told when it
        answers again, which makes the connection's work there retry at once."""

    def track(self, queue: AgentRcvQueue) -> None:
        """Route the pushes of this (now created) receive queue to this connection."""

    def forget(self, queue: AgentRcvQueue) -> None:
        """Stop routing and subscribing this (deleted) receive queue."""

    def resolve_waiter(self, corr_id: str, event: AgentEvent) -> None:
        """Hand a synchronous command's outcome to the caller waiting for it."""


# ---------------------------------------------------------------------- collaborators


class Commands(Protocol):
    """The command runner (commands.py), as the others see it."""

    def register(
        self, kind: CommandKind, handler: Handler, on_failure: FailureHook | None = None
    ) -> None: ...

    def complete(
        self,
        command: AgentCommand,
        event: EventLike | None,
        effects: Callable[[], None] | None = None,
        extra_events: Sequence[EventLike] = (),
    ) -> None: ...

    def complete_soon(
        self,
        command: AgentCommand,
        event: EventLike | None,
        effects: Callable[[], None] | None = None,
    ) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def fail(self, command: AgentCommand, code: str, message: str) -> None: ...

    def step_failed(self, command: AgentCommand, server: str) -> OnFail: ...

    def add_internal(self, payload: CommandPayload, server: str | None) -> AgentCommand: ...

    def public_corr_id(self, command: AgentCommand) -> str | None: ...

    def save_payload(self, command: AgentCommand, payload: CommandPayload) -> None: ...


class Chain(Protocol):
    """The delivery side (delivery.py): the connection's outgoing hash chain."""

    on_sent: dict[MessageKind, DeliveryHook]
    after_sent: dict[MessageKind, DeliveryHook]
    on_dropped: dict[MessageKind, DeliveryHook]
    after_dropped: dict[MessageKind, DeliveryHook]
    after_settled: list[Callable[[], None]]

    def enqueue(self, queue: AgentSndQueue, payload: Any, kind: Any) -> Any: ...

    def seal_chain_message(self, queue: AgentSndQueue, payload: Any) -> bytes: ...

    def queue_internal(self, payload: Any, kind: Any) -> None: ...

    def resume_after_qcont(self) -> None: ...


class Rotation(Protocol):
    """The queue rotation (rotation.py), as the inbound side sees it."""

    def hold_if_switching(self, queue: AgentRcvQueue, reply: Any) -> bool: ...

    def chain_message(self, payload: Any) -> list[EventLike]: ...


class Handshake(Protocol):
    """The handshake (handshake.py), as the inbound side sees it."""

    def confirmation(
        self, queue: AgentRcvQueue, msg_id: bytes, sender: bytes, message: Any
    ) -> None: ...

    def invitation(self, queue: AgentRcvQueue, msg_id: bytes, message: Any) -> None: ...

    def conn_info(self, payload: Any) -> list[EventLike]: ...
