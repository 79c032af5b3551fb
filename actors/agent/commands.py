"""`CommandRunner`: a connection's persisted commands, run in lanes, retried, completed once.

Theory of operation
-------------------
Every network-touching API call is a row in `agent_command` before anything is sent. The
runner keeps the connection's pending rows in creation order and runs them in *lanes*: one
lane per queue server (`command_lane(server)`), plus the connection's local lane (server
None) for commands that visit several servers in turn. A lane runs one step at a time, so a
dead server delays only the commands aimed at it.

A command is a small state machine in its collaborator (handshake, inbound, rotation): the
handler registered for its kind looks at what is already persisted and does the next step.
A step's temporary failure is retried on the connection's timer, after the agent's retry
policy's delay, with the attempt count and the next attempt time persisted; a permanent one
— or temporary ones past the command's TTL — ends the command with `ERR`. Temporary failures
are of two sorts. A failure for lack of the server (network, timeout, the I/O thread
restarting) also waits for the server: its session tells `UP` when the server answers again,
and the command retries then rather than at its timer. A server's refusal (`ERR QUOTA`, such
as its per-session new-queue limit, or `ERR INTERNAL`) is an answer from a server that is up:
it waits for its timer only (a server that answers tells `UP` at once, so waiting for `UP`
would retry it at once, again and again), and past the TTL it ends with the server's code
(`ERR QUOTA`); the others end with `ERR TIMEOUT`. A step may
also wait for something that is not a step's outcome (a delete with `wait_delivery` waits
for the outbox to empty): it returns without completing, sets the command's next attempt
time and wakes the actor then, or earlier when what it waits for happens; the command, first
in its lane, holds the lane meanwhile, so the connection's later local commands run after it.

`complete` stores the command's effects and its outcome in **one transaction**: for an async
command (`CommandOrigin.ASYNC`) the event is kept in the row until `ack_command_event`; a
synchronous or internal command's row goes with its effects. A command with a stored event
is never run again; the actor re-emits such events on every activation.

`complete_soon` is the same for a completion that may wait a few milliseconds
(`COMPLETION_DELAY`) for the connection's next transaction opened through `transaction()`,
and go with it: the ACK of a received message completes just as the next message arrives,
whose ACK the user stores a moment later, so one transaction carries both. Its event is told
by the next pump, once that transaction committed; a crash before the commit loses only
the completion, and the command runs again (an ACK the server took already answers NO_MSG,
which completes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import msgspec

from actors.agent import events as ev
from actors.agent import faults
from actors.agent.model import (
    KIND_OF,
    CommandKind,
    CommandOrigin,
    CommandPayload,
    command_lane,
    decode_payload,
)
from actors.agent.ports import (
    ConnectionPort,
    EventLike,
    FailureHook,
    Handler,
    OnFail,
    unreachable,
)
from actors.kernel import IoError
from protocol.errors import (
    AgentError,
    DuplexError,
    NoConnection,
    QueueFault,
    ServerError,
    message_of,
)
from storage.agent import AgentCommand

log = logging.getLogger(__name__)

# Kinds that may run with no connection row: a delete of a connection that is half gone,
# and link lookups, which run on a pseudo-connection.
_WITHOUT_CONNECTION = frozenset({CommandKind.DELETE, CommandKind.GET_LINK})

# How long a `complete_soon` may wait for another transaction of its connection to go with.
COMPLETION_DELAY = 0.005

_Completion = tuple[AgentCommand, "EventLike | None", "Callable[[], None] | None"]


class CommandRunner:
    """A connection's pending commands; see the module docstring."""

    def __init__(self, port: ConnectionPort) -> None:
        self.port = port
        self._handlers: dict[CommandKind, Handler] = {}
        self._failure_hooks: dict[CommandKind, FailureHook] = {}
        self._soon: list[_Completion] = []  # waiting for a transaction (complete_soon)
        self._soon_due = float("inf")
        self._stored: list[tuple[AgentCommand, EventLike | None]] = []  # committed, not told
        # Waiting for their timers after a server's refusal: an UP does not hurry them.
        self._refused: list[AgentCommand] = []

    def register(
        self, kind: CommandKind, handler: Handler, on_failure: FailureHook | None = None
    ) -> None:
        self._handlers[kind] = handler
        if on_failure is not None:
            self._failure_hooks[kind] = on_failure

    # ------------------------------------------------------------------ the pump

    def pump(self, now: float) -> float:
        """Tell the completions committed since, store those that waited long enough, run
        the first due command of every idle lane; the earliest later due time."""
        if self._soon_due <= now or self._stored:
            self.flush(waiting=self._soon_due <= now)
        earliest = self._soon_due if self._soon else float("inf")
        seen = set()
        for command in list(self.port.state.commands):
            lane = command_lane(command.server)
            if lane in seen:
                continue
            seen.add(lane)
            if self.port.lane_busy(lane):
                continue
            if command.next_attempt_at > now:
                earliest = min(earliest, command.next_attempt_at)
                continue
            self.run(command)
        return earliest

    def flush(self, *, waiting: bool = True) -> None:
        """Store the completions waiting (`complete_soon`), unless `waiting` is False, and
        tell those stored."""
        if waiting and self._soon:
            with self.transaction():
                pass
        stored, self._stored = self._stored, []
        for command, event in stored:
            self._announce(command, event)

    @property
    def completing(self) -> bool:
        """Completions not stored or not told yet (the connection must not passivate)."""
        return bool(self._soon or self._stored)

    def server_up(self, server: str, now: float) -> None:
        """`server` answers again: its commands retry now rather than at their timers, but
        for those it refused (it answered them: they wait for their backoff)."""
        for command in self.port.state.commands:
            if command.server == server and not _holds(self._refused, command):
                command.next_attempt_at = min(command.next_attempt_at, now)

    def add(self, command: AgentCommand) -> None:
        """A command the AgentActor stored for this connection."""
        commands = self.port.state.commands
        if all(c.id != command.id for c in commands):
            commands.append(command)
            commands.sort(key=lambda c: c.id)

    def reload(self) -> None:
        """Pick up commands stored by others since the activation began."""
        for command in self.port.store.pending_commands(self.port.conn_id):
            self.add(command)

    def run(self, command: AgentCommand) -> None:
        kind = CommandKind(command.kind)
        state = self.port.state
        if state.conn is None and kind not in _WITHOUT_CONNECTION:
            # This activation may have started before the AgentActor stored the row (a
            # message for the connection raced its creation): look once more before failing.
            state.conn = self.port.store.connection(self.port.conn_id)
        if state.conn is None and kind not in _WITHOUT_CONNECTION:
            self.fail(command, NoConnection.code, "the connection does not exist")
            return
        handler = self._handlers.get(kind)
        if handler is None:
            self.fail(command, "PROHIBITED", f"no handler for command {kind}")
            return
        try:
            payload = decode_payload(kind, bytes(command.payload))
        except msgspec.ValidationError as exc:
            self.fail(command, "INTERNAL", f"unreadable stored payload: {exc}")
            return
        faults.hit(faults.BEFORE_RUN, kind)
        try:
            handler(command, payload)
        except DuplexError as exc:
            self.fail(command, exc.code, exc.message)

    # ------------------------------------------------------------------ failures and retries

    def step_failed(self, command: AgentCommand, server: str) -> OnFail:
        def on_fail(error: BaseException) -> None:
            temporary = isinstance(error, IoError) or (
                isinstance(error, QueueFault) and error.temporary
            )
            if not isinstance(error, QueueFault | IoError):
                log.error(
                    "command step raised",
                    exc_info=error,
                    extra={"conn_id": self.port.conn_id, "kind": command.kind},
                )
            # A synchronous caller is waiting: it learns of the failure and may retry.
            if temporary and command.origin != CommandOrigin.SYNC:
                self._retry(command, server, error)
            else:
                self.fail(command, getattr(error, "code", "INTERNAL"), message_of(error))

        return on_fail

    def _retry(self, command: AgentCommand, server: str, error: BaseException) -> None:
        now = time.time()
        if now > command.deadline:
            if isinstance(error, ServerError):
                message = f"the server still refused it at the command's deadline: {error.message}"
                self.fail(command, error.code, message)
            else:
                self.fail(command, "TIMEOUT", f"still failing after the command TTL: {error}")
            return
        command.attempts += 1
        delay = self.port.config.retry.delay(command.attempts, now - command.created_at)
        command.next_attempt_at = now + delay
        with self.port.store.transaction():
            self.port.store.save_command_attempts(command)
        _drop(self._refused, command)
        if unreachable(error):
            self.port.server_unavailable(server)
        else:
            self._refused.append(command)
        log.info(
            "command will be retried",
            extra={
                "conn_id": self.port.conn_id,
                "kind": command.kind,
                "delay": delay,
                "error": getattr(error, "code", type(error).__name__),
            },
        )

    def fail(self, command: AgentCommand, code: str, message: str) -> None:
        log.info(
            "command failed",
            extra={"conn_id": self.port.conn_id, "kind": command.kind, "code": code},
        )
        hook = self._failure_hooks.get(CommandKind(command.kind))
        if hook is not None and hook(command, code, message):
            return
        corr_id = self.public_corr_id(command)
        self.complete(command, ev.Err(self.port.conn_id, code, message, corr_id))

    # ------------------------------------------------------------------ completion

    def complete(
        self,
        command: AgentCommand,
        event: EventLike | None,
        effects: Callable[[], None] | None = None,
        extra_events: Sequence[EventLike] = (),
    ) -> None:
        """Store the command's effects and its outcome in one transaction, then tell it.

        `event` may be a function, called after the effects (so it can describe them), and
        so may each of `extra_events` (called after the commit).
        """
        with self.port.store.transaction():
            told = self._record(command, event, effects)
        self._announce(command, told, extra_events)

    def complete_soon(
        self,
        command: AgentCommand,
        event: EventLike | None,
        effects: Callable[[], None] | None = None,
    ) -> None:
        """`complete`, with its writes in the connection's next `transaction()` (at most
        `COMPLETION_DELAY` from now) and its event told by the pump after that commit."""
        self._forget(command)  # done: never run again
        if not self._soon:
            self._soon_due = time.time() + COMPLETION_DELAY
            self.port.wake_at(self._soon_due)
        self._soon.append((command, event, effects))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A store transaction that also carries the completions waiting (`complete_soon`);
        the next pump tells them. If the body fails they wait on, for the next one."""
        soon, due = self._soon, self._soon_due
        self._soon, self._soon_due = [], float("inf")
        try:
            with self.port.store.transaction():
                stored = [(completion[0], self._record(*completion)) for completion in soon]
                yield
        except BaseException:
            self._soon, self._soon_due = soon + self._soon, min(due, self._soon_due)
            raise
        self._stored.extend(stored)

    def _record(
        self,
        command: AgentCommand,
        event: EventLike | None,
        effects: Callable[[], None] | None = None,
    ) -> EventLike | None:
        """A completion's writes (inside the caller's transaction); the event to tell."""
        store = self.port.store
        if effects is not None:
            effects()
        if callable(event):
            event = event()
        if CommandOrigin(command.origin) is CommandOrigin.ASYNC and event is not None:
            store.set_command_event(command, ev.encode_event(event))
        else:
            store.delete_command(command)
        return event

    def _announce(
        self, command: AgentCommand, event: EventLike | None, extra_events: Sequence[EventLike] = ()
    ) -> None:
        """Tell a committed completion (and the fault points around it)."""
        self._forget(command)
        kind = CommandKind(command.kind)
        faults.hit(faults.AFTER_EFFECTS, kind)
        origin = CommandOrigin(command.origin)
        if event is not None:
            if origin is CommandOrigin.SYNC:
                self.port.resolve_waiter(command.corr_id, event)
            elif origin is CommandOrigin.ASYNC:
                self.port.emit(event)
        for extra in extra_events:
            self.port.emit(extra() if callable(extra) else extra)
        faults.hit(faults.AFTER_EMIT, kind)

    def _forget(self, command: AgentCommand) -> None:
        """Drop `command` from the pending ones, by identity: a row deleted by a completion
        may give its id to the next command stored in the same transaction (SQLite reuses
        the highest rowid), and rows compare equal by id."""
        _drop(self.port.state.commands, command)
        _drop(self._refused, command)

    # ------------------------------------------------------------------ helpers

    def add_internal(self, payload: CommandPayload, server: str | None) -> AgentCommand:
        """Store an agent-internal command (inside the caller's transaction)."""
        command = self.port.store.insert_command(
            conn_id=self.port.conn_id,
            kind=KIND_OF[type(payload)],
            payload=payload,
            server=server,
            origin=CommandOrigin.INTERNAL,
            corr_id=None,
            ttl=self.port.config.command_ttl,
        )
        self.port.state.commands.append(command)
        return command

    def save_payload(self, command: AgentCommand, payload: CommandPayload) -> None:
        """Persist what a step is about to send inside the payload (its own transaction)."""
        with self.port.store.transaction():
            self.port.store.save_command_payload(command, payload)

    @staticmethod
    def public_corr_id(command: AgentCommand) -> str | None:
        """The corr id the caller gave (None for synchronous and internal commands)."""
        return command.corr_id if command.origin == CommandOrigin.ASYNC else None


def _holds(commands: list[AgentCommand], command: AgentCommand) -> bool:
    """`command in commands`, by identity (see `_forget`)."""
    return any(pending is command for pending in commands)


def _drop(commands: list[AgentCommand], command: AgentCommand) -> None:
    """Remove `command` from `commands`, by identity (see `_forget`)."""
    for index, pending in enumerate(commands):
        if pending is command:
            del commands[index]
            return


def refuse(message: str, code: str = "PROHIBITED") -> AgentError:
    return AgentError(message, code=code)
